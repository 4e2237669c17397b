"""The one audit report (issue 13): per-issue CSV and JSON, fix lists, the HTML page, and the app's Audit helpers,
on a bundle with a planted exact duplicate and a flipped label (``audit_fixtures``)."""

from __future__ import annotations

import csv
import json
import math
from html.parser import HTMLParser
from pathlib import Path

import pytest
from audit_fixtures import injected_bundle
from lookalike.app.cli import main

ISSUES = ("label", "outlier", "duplicate", "quality", "balance")
VOID = {"meta", "img", "br", "hr", "input", "link", "col", "area", "base", "embed", "source", "track", "wbr"}


@pytest.fixture(scope="module")
def injected(bundle_path, small_dataset, tmp_path_factory):
    return injected_bundle(tmp_path_factory.getbasetemp() / "audit-injected", bundle_path, small_dataset)


def _state(folder: Path) -> dict:
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def audited(injected, small_dataset, tmp_path_factory):
    """``lookalike audit --csv`` on the injected bundle: (output folder, printed text); the data must not change."""
    out = tmp_path_factory.mktemp("audit-out")
    root = small_dataset[0]
    before = _state(root), _state(injected.copy.parent)
    code = main(["audit", str(injected.bundle), "--csv", str(out / "audit.csv"), "--top", "5"])
    assert code == 0
    assert (_state(root), _state(injected.copy.parent)) == before  # nothing here touches the user's files
    return out


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_fix_lists_name_the_planted_duplicate_and_the_flipped_label(injected, audited):
    drop = _rows(audited / "audit-drop.csv")
    assert str(injected.copy) in {row["path"] for row in drop}
    row = next(r for r in drop if r["path"] == str(injected.copy))
    assert row["reason"] == f"exact duplicate of {injected.original}" and row["keeper"] != str(injected.copy)
    assert not {r["keeper"] for r in drop} & {r["path"] for r in drop}  # a keeper is never listed to drop
    relabel = _rows(audited / "audit-relabel.csv")
    flipped = [r for r in relabel if r["path"] == str(injected.flipped)]
    assert flipped and flipped[0]["label"] == "arthur" and flipped[0]["suggested_label"] == "cook"
    assert all(float(r["suspicion"]) >= 0.5 and r["label"] != r["suggested_label"] for r in relabel)


def test_json_per_issue_holds_the_csv_rows(audited):
    for issue in ISSUES:
        table = _rows(audited / ("audit.csv" if issue == "label" else f"audit-{issue}.csv"))
        rows = json.loads((audited / f"audit-{issue}.json").read_text(encoding="utf-8"))
        assert len(rows) == len(table) > 0
        assert list(rows[0]) == list(table[0])
        assert [str(r.get("path", r.get("path_a", r.get("class")))) for r in rows] == [
            t.get("path", t.get("path_a", t.get("class"))) for t in table
        ]


class _Page(HTMLParser):
    """Checks that every element is closed in order, and collects sections, figures and summary rows."""

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.section, self.sections = [], [], None, set()
        self.figures: dict[str, list[dict]] = {}
        self.images: dict[str, int] = {}
        self.summary: dict[str, dict] = {}
        self.cell = None
        self.totals: dict[str, int] = {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag not in VOID:
            self.stack.append(tag)
        if tag == "section":
            self.section = attrs.get("id")
            self.sections.add(self.section)
        if tag == "figure":
            self.figures.setdefault(self.section, []).append(attrs)
        if tag == "img" and attrs.get("src", "").startswith("data:image/jpeg;base64,"):
            self.images[self.section] = self.images.get(self.section, 0) + 1
        if tag == "tr" and "data-issue" in attrs:
            self.summary[attrs["data-issue"]] = {"cells": []}
            self.cell = attrs["data-issue"]
        if tag == "div" and "data-total" in attrs:
            self.totals[self._class] = int(attrs["data-total"])
        if tag == "div" and "data-class" in attrs:
            self._class = attrs["data-class"]

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
            return
        self.stack.pop()
        if tag == "tr":
            self.cell = None

    def handle_data(self, data):
        if self.cell and data.strip() and self.stack and self.stack[-1] == "td":
            self.summary[self.cell]["cells"].append(data.strip())


def test_html_report_is_well_formed_with_one_image_per_item_and_the_csv_numbers(injected, audited):
    page = _Page()
    page.feed((audited / "audit.html").read_text(encoding="utf-8"))
    page.close()
    assert page.errors == [] and page.stack == []
    assert {"summary", "label", "outlier", "duplicate", "quality", "confusion", "balance"} <= page.sections
    for section in ("label", "outlier", "duplicate"):
        assert page.images[section] == len(page.figures[section])  # every listed image is embedded
    # Label suspects: the relabel list, with the same scores.
    relabel = _rows(audited / "audit-relabel.csv")
    listed = {int(f["data-id"]): float(f["data-score"]) for f in page.figures["label"]}
    assert {int(r["id"]) for r in relabel} == set(listed)
    assert all(math.isclose(listed[int(r["id"])], float(r["suspicion"]), abs_tol=1e-3) for r in relabel)
    # Duplicates: every clustered image once, the keeper framed, the planted copy marked drop.
    pairs = _rows(audited / "audit-duplicate.csv")
    clustered = {r["path_a"] for r in pairs} | {r["path_b"] for r in pairs}
    assert len(page.figures["duplicate"]) == len(clustered)
    marks = {Path(f["data-file"]).name: f["data-suggestion"] for f in page.figures["duplicate"]}
    assert marks[injected.copy.name] == "drop" and list(marks.values()).count("keep") >= 1
    # The summary's counts are the CSVs' counts.
    flagged = {issue: int(row["cells"][1]) for issue, row in page.summary.items()}
    assert flagged["label"] == len(relabel) and flagged["duplicate"] == len(pairs)
    balance = _rows(audited / "audit-balance.csv")
    assert page.totals == {r["class"]: int(r["total"]) for r in balance}
    assert flagged["balance"] == sum(r["too_small"] == "True" for r in balance)


def test_app_audit_helpers_give_galleries_with_captions_and_session_decisions(injected, tmp_path):
    from lookalike.app import audit_view
    from lookalike.app.server import ServedFiles
    from lookalike.bundle import Bundle

    bundle = Bundle.load(injected.bundle)
    files = ServedFiles(tmp_path / "served")
    cache = audit_view.ReportCache()
    report = cache.get(bundle)
    assert cache.get(bundle) is report  # computed once per bundle
    entries, shown = audit_view.gallery(files, bundle, audit_view.filter_items(report, "label", min_score=0.5))
    flipped = next(i for i, item in enumerate(shown) if item["file"] == report.relative(injected.flipped))
    path, caption = entries[flipped]
    assert caption.startswith("arthur → cook · ") and Path(path).is_relative_to(files.root)
    assert shown[flipped]["suggestion"] == "cook" and shown[flipped]["score"] >= 0.5
    # Filters: by class, by score.
    only_cook = audit_view.filter_items(report, "outlier", label="cook")
    assert set(only_cook["label"]) <= {"cook"}
    assert audit_view.filter_items(report, "label", min_score=1.01).empty
    _, duplicates = audit_view.gallery(files, bundle, audit_view.filter_items(report, "duplicate"))
    copy = next(item for item in duplicates if item["file"] == report.relative(injected.copy))
    assert copy["caption"].startswith("drop · autogun") and "exact" in copy["caption"]
    # Accept, then dismiss another; the CSV holds both, with file names relative to the dataset (no server path).
    mine = audit_view.decide(None, shown[flipped], "accepted")
    mine = audit_view.decide(mine, copy, "dismissed")
    written = audit_view.write_decisions(files, mine)
    assert written.is_relative_to(files.root / "decisions" / mine["token"])
    rows = _rows(written)
    assert [(r["issue"], r["label"], r["suggestion"], r["decision"]) for r in rows] == [
        ("label", "arthur", "cook", "accepted"),
        ("duplicate", "autogun", "drop", "dismissed"),
    ]
    assert not any(r["file"].startswith("/") for r in rows)
    # Another session's decisions go to another folder and do not include mine.
    theirs = audit_view.decide(None, copy, "accepted")
    assert theirs["token"] != mine["token"]
    assert [r["decision"] for r in _rows(audit_view.write_decisions(files, theirs))] == ["accepted"]
    assert len(_rows(written)) == 2
    with pytest.raises(ValueError, match="got 'maybe'"):
        audit_view.decide(mine, copy, "maybe")


def test_unknown_issue_is_refused_with_the_allowed_ones(injected, capsys):
    assert main(["audit", str(injected.bundle), "--issues", "label,colour"]) == 1
    assert (
        "unknown --issues colour; choose among label,outlier,duplicate,quality,balance or all"
        in capsys.readouterr().err
    )


def test_audit_endpoint_returns_the_summary_and_the_label_gallery(injected):
    import socket

    from gradio_client import Client
    from lookalike.app.server import ServeOptions
    from lookalike.app.ui import serve
    from lookalike.bundle import Bundle

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = serve(Bundle.load(injected.bundle), ServeOptions(port=port), block=False)
    try:
        outputs = Client(f"http://127.0.0.1:{port}/", verbose=False).predict(
            "label", "(all classes)", 0.5, api_name="/audit"
        )
    finally:
        app.close()
    note, summary, gallery = outputs[0], outputs[1], outputs[5]
    assert "judged out of fold" in note
    assert [row[0] for row in summary["data"]] == list(ISSUES)
    captions = [item["caption"] for item in gallery]
    assert any(c.startswith("arthur → cook · ") for c in captions)
    assert all(" → " in c and float(c.rsplit(" · ", 1)[1]) >= 0.5 for c in captions)
