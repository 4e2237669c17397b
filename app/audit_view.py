"""The Audit tab's helpers: galleries of each issue type with filters, and a session's accept/dismiss decisions.

The tab shows the items of :meth:`lookalike.bundle.health_report.HealthReport.items` (the same tables the CLI
prints and the HTML report renders) as galleries of served thumbnails (:class:`~lookalike.app.server.ServedFiles`).
A user accepts or dismisses each suggestion (a label, drop, review); the decisions live in that browser
session's state only and download as a CSV that lookalike writes under its served folder, in a folder named
by a random token of that session. Nothing here touches the user's files, and file names are shown relative
to the dataset folder, never as server paths.
"""

from __future__ import annotations

import csv
import io
import secrets
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..bundle.health_report import SUSPECT_THRESHOLD, HealthReport, health_report
from ..data.files import write_atomic

if TYPE_CHECKING:
    import pandas as pd

    from ..bundle import Bundle
    from .server import ServedFiles

#: Issue types offered by the tab: (title, issue).
ISSUE_CHOICES = [
    ("Label suspects", "label"),
    ("Outliers", "outlier"),
    ("Duplicates", "duplicate"),
    ("Image quality", "quality"),
]
#: Default minimum score of each issue type's filter (label: the suspect threshold).
DEFAULT_MIN_SCORE = {"label": SUSPECT_THRESHOLD, "outlier": 0.0, "duplicate": 0.0, "quality": 0.0}
#: Most thumbnails one gallery shows.
MAX_GALLERY = 96
#: Columns of the decisions CSV.
DECISION_COLUMNS = ("id", "file", "issue", "label", "suggestion", "decision")
DECISIONS = ("accepted", "dismissed")
ALL_CLASSES = "(all classes)"


class ReportCache:
    """One :class:`HealthReport` (every check) per served bundle, computed on first use and shared read-only by
    every session that is served that bundle."""

    def __init__(self):
        self._reports: dict[int, tuple[Bundle, HealthReport]] = {}
        self._lock = threading.Lock()

    def get(self, bundle: Bundle) -> HealthReport:
        """The report of ``bundle`` (computed once; later calls return the same object)."""
        with self._lock:  # one audit at a time: it is CPU-bound, and two sessions asking share the result
            cached = self._reports.get(id(bundle))
            if cached is None or cached[0] is not bundle:
                cached = self._reports[id(bundle)] = (bundle, health_report(bundle))
            return cached[1]


def filter_items(
    report: HealthReport, issue: str, *, label: str | None = None, min_score: float = 0.0, limit: int = MAX_GALLERY
) -> pd.DataFrame:
    """The gallery items of ``issue`` (see :meth:`HealthReport.items`) that pass the filters, at most ``limit``.

    Parameters
    ----------
    report : HealthReport
    issue : {"label", "outlier", "duplicate", "quality"}
    label : str, optional
        Only images of this class (None or :data:`ALL_CLASSES`: every class).
    min_score : float
        Only items scoring at least this (items without a score, quality issues, always pass).
    limit : int

    Raises
    ------
    ValueError
        ``issue`` is not a gallery issue type.
    """
    items = report.items(issue)
    keep = np.ones(len(items), dtype=bool)
    if label and label != ALL_CLASSES:
        keep &= (items["label"] == label).to_numpy()
    scores = items["score"].to_numpy(dtype=float)
    keep &= np.isnan(scores) | (scores >= min_score)
    return items[keep].head(limit).reset_index(drop=True)


def gallery(files: ServedFiles, bundle: Bundle, items: pd.DataFrame) -> tuple[list[tuple[str, str]], list[dict]]:
    """Served thumbnails and captions of ``items``, and the items shown (those with a thumbnail), in order.

    Returns
    -------
    (list of (str, str), list of dict)
        ``(thumbnail path, caption)`` per shown item, for ``gr.Gallery``; and each shown item as a dict with
        ``id, issue, file, label, suggestion, score, caption`` (what a decision records).
    """
    shown, entries = [], []
    for row in items.itertuples(index=False):
        path = files.thumbnail(bundle, row.id) if row.id >= 0 else None
        if path is None:
            continue
        entries.append((path, row.caption))
        shown.append(
            {"id": int(row.id), "issue": row.issue, "file": row.file, "label": row.label,
             "suggestion": row.suggestion, "score": None if np.isnan(row.score) else float(row.score),
             "caption": row.caption}
        )  # fmt: skip
    return entries, shown


def decide(decisions: dict | None, item: dict, decision: str) -> dict:
    """A session's decisions with ``decision`` recorded for ``item`` (a new dict; the last decision on an item wins).

    Parameters
    ----------
    decisions : dict or None
        ``{"token": str, "rows": {"<issue>:<id>": row}}`` of this session; None before its first decision.
    item : dict
        A shown item of :func:`gallery`.
    decision : {"accepted", "dismissed"}

    Raises
    ------
    ValueError
        ``decision`` is neither.
    """
    if decision not in DECISIONS:
        raise ValueError(f"decision must be one of {', '.join(DECISIONS)}; got {decision!r}")
    decisions = decisions or {"token": secrets.token_urlsafe(16), "rows": {}}
    row = {c: item.get(c) for c in DECISION_COLUMNS if c != "decision"} | {"decision": decision}
    return {"token": decisions["token"], "rows": {**decisions["rows"], f"{item['issue']}:{item['id']}": row}}


def decisions_table(decisions: dict | None) -> list[list]:
    """The decisions as rows of :data:`DECISION_COLUMNS`, in the order they were first made."""
    return [[row[c] for c in DECISION_COLUMNS] for row in (decisions or {"rows": {}})["rows"].values()]


def write_decisions(files: ServedFiles, decisions: dict | None) -> Path | None:
    """Write the session's decisions as CSV under the served folder, in the session's own token folder.

    Returns
    -------
    Path or None
        ``<served>/decisions/<token>/audit-decisions.csv`` (written atomically); None before any decision.
    """
    if not decisions or not decisions["rows"]:
        return None
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(DECISION_COLUMNS)
    writer.writerows(decisions_table(decisions))
    folder = files.root / "decisions" / decisions["token"]
    folder.mkdir(parents=True, exist_ok=True)
    return write_atomic(folder / "audit-decisions.csv", buffer.getvalue())


def describe(item: dict) -> str:
    """Markdown line about a selected gallery item and what accepting it means."""
    action = {
        "label": f"relabel **{item['label']}** → **{item['suggestion']}**",
        "duplicate": "keep this copy" if item["suggestion"] == "keep" else "drop this copy (a duplicate)",
    }.get(item["issue"], "flag for review")
    return f"**{item['file']}** ({item['caption']}). Accept: {action}."


def confusion_frame(report: HealthReport, classifier: str = "knn"):
    """The out-of-fold confusion counts as a table (first column ``label``), styled as a heatmap of row shares.

    Returns
    -------
    pandas.io.formats.style.Styler or None
        None when the label audit was not run.
    """
    import pandas as pd

    if report.label is None:
        return None
    counts = report.label.confusion(classifier)
    names = list(report.label.class_names)
    frame = pd.DataFrame(counts, columns=names)
    frame.insert(0, "label", names)
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    return frame.style.background_gradient(cmap="Reds", gmap=share, axis=None, subset=names, vmin=0, vmax=1)


def balance_figure(report: HealthReport):
    """Stacked horizontal bars of images per class and split (classes too small in red); a matplotlib Figure."""
    from matplotlib.figure import Figure

    if report.balance is None:
        return None
    frame = report.balance.to_frame()
    fig = Figure(figsize=(8, min(2 + 0.16 * len(frame), 30)))
    ax = fig.subplots()
    left = np.zeros(len(frame))
    for split in report.balance.split_names:
        ax.barh(frame["class"], frame[split], left=left, label=split)
        left += frame[split].to_numpy()
    for tick, small in zip(ax.get_yticklabels(), frame["too_small"]):
        tick.set_color("#c53030" if small else "black")
    ax.tick_params(axis="y", labelsize=6 if len(frame) > 60 else 8)
    ax.set(xlabel="images", title=f"images per class and split (red: fewer than {report.balance.min_train} train)")
    ax.legend(fontsize=8, loc="lower right")
    ax.margins(y=0.005)
    fig.tight_layout()
    return fig
