"""One data-health report of a bundle: the checks of :mod:`lookalike.bundle.health` and the label audit, run
once, and every table shown from them.

The CLI prints, the HTML report (:mod:`lookalike.app.audit_report`) renders and the app's Audit tab shows the
same tables, built here once:

- :meth:`HealthReport.tables`: the full table of each check (its ``to_frame()``), one row per image or pair;
- :meth:`HealthReport.items`: the images to look at for each issue type, one row per image in a gallery, with
  its score, the suggestion (a label, keep or drop, review) and a caption;
- :meth:`HealthReport.summary`: one row per issue type;
- :meth:`HealthReport.drop_list` and :meth:`HealthReport.relabel_list`: the **fix lists**, files a user may
  drop (duplicates that are not their cluster's keeper, unreadable files) and labels a user may change (label
  suspects). They are suggestions written as CSV; nothing here changes, moves or deletes the user's files.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..data.files import write_atomic
from .health import ISSUES

if TYPE_CHECKING:
    import pandas as pd

    from ..data.quality import QualityReport
    from ..index.balance import BalanceReport
    from ..index.duplicates import DuplicateReport
    from ..index.label_audit import Audit
    from ..index.outliers import OutlierReport
    from ..index.search import EmbeddingIndex
    from .bundle import Bundle

#: A label suspect's suspicion is at least this: the three out-of-fold classifiers, on average, think the label
#: more likely wrong than right (see :meth:`lookalike.index.label_audit.Audit.suspects`).
SUSPECT_THRESHOLD = 0.5
#: Gallery issue types (balance is a chart, not a gallery), in report order.
GALLERY_ISSUES = ("label", "outlier", "duplicate", "quality")
#: Columns of :meth:`HealthReport.items`.
ITEM_COLUMNS = ("issue", "group", "id", "path", "file", "label", "split", "score", "suggestion", "caption")
#: Columns of the fix lists.
DROP_COLUMNS = ("path", "id", "label", "split", "reason", "keeper")
RELABEL_COLUMNS = ("path", "id", "label", "suggested_label", "suspicion")


def parse_issues(value: str) -> tuple[str, ...]:
    """``"label,duplicate"`` or ``"all"`` -> the checks, in report order.

    Raises
    ------
    ValueError
        An unknown check is named; the message lists the allowed ones.
    """
    chosen = {v.strip() for v in value.split(",") if v.strip()} if value != "all" else set(ISSUES)
    unknown = sorted(chosen - set(ISSUES))
    if unknown or not chosen:
        raise ValueError(
            f"unknown --issues {', '.join(unknown) or repr(value)}; choose among {','.join(ISSUES)} or all"
        )
    return tuple(i for i in ISSUES if i in chosen)


@dataclass(frozen=True)
class HealthReport:
    """The chosen checks of one bundle, each as its own report; None for a check that was not run.

    Attributes
    ----------
    issues : tuple of str
        The checks run, among :data:`lookalike.bundle.health.ISSUES`.
    ids : int64 ndarray of shape (n,)
        Stable id of each indexed image (by row).
    paths, labels, splits : tuple of str, length n
        Its file, class and split.
    root : str
        The folder every indexed file lies under; :meth:`items` names files relative to it.
    label, features : Audit, EmbeddingIndex or None
        The label audit and the frozen-feature index it was computed on.
    outlier, duplicate, quality, balance : report or None
    seconds : dict of str to float
        Wall-clock time of each check, in seconds.
    """

    issues: tuple[str, ...]
    ids: np.ndarray
    paths: tuple[str, ...]
    labels: tuple[str, ...]
    splits: tuple[str, ...]
    root: str
    label: Audit | None = None
    features: EmbeddingIndex | None = None
    outlier: OutlierReport | None = None
    duplicate: DuplicateReport | None = None
    quality: QualityReport | None = None
    balance: BalanceReport | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def relative(self, path: str | os.PathLike) -> str:
        """``path`` relative to :attr:`root` (the name a user's dataset knows it by; no server folders)."""
        return os.path.relpath(path, self.root) if self.root else Path(path).name

    def _by_path(self) -> dict[str, tuple[int, str, str]]:
        """``path -> (id, label, split)`` of the indexed images."""
        return {p: (int(i), c, s) for p, i, c, s in zip(self.paths, self.ids.tolist(), self.labels, self.splits)}

    # -- tables ---------------------------------------------------------------------------------------------

    def tables(self) -> dict[str, pd.DataFrame]:
        """The full table of each check run, by issue: what ``--csv`` writes (see each report's ``to_frame``)."""
        tables = {}
        if self.label is not None:
            tables["label"] = self.label.to_frame(self.features)
        if self.outlier is not None:
            tables["outlier"] = self.outlier.to_frame()
        if self.duplicate is not None:
            tables["duplicate"] = self.duplicate.to_frame()
        if self.quality is not None:
            tables["quality"] = self.quality.to_frame()
        if self.balance is not None:
            tables["balance"] = self.balance.to_frame()
        return tables

    def items(self, issue: str) -> pd.DataFrame:
        """The images to look at for one issue type, one row per gallery item.

        Parameters
        ----------
        issue : {"label", "outlier", "duplicate", "quality"}

        Returns
        -------
        pandas.DataFrame
            Columns :data:`ITEM_COLUMNS`: ``group`` (label: ``"label"``; outlier: ``"far from every class"``,
            ``"unusual for its class"`` or ``"least typical"``; duplicate: ``"cluster N"``; quality: the issue
            kind), ``score`` (label: suspicion in [0, 1]; outlier: cosine distance to its class centroid;
            duplicate: the largest cosine similarity to a member of its cluster; quality: NaN), ``suggestion``
            (label: the suggested label; duplicate: ``"keep"`` or ``"drop"``; otherwise ``"review"``) and a
            one-line ``caption``. Label: every image whose suggested label differs from its own, most
            suspicious first (suspects are those at :data:`SUSPECT_THRESHOLD` or more). Empty when the check
            was not run.

        Raises
        ------
        ValueError
            ``issue`` is not a gallery issue type.
        """
        import pandas as pd

        if issue not in GALLERY_ISSUES:
            raise ValueError(f"unknown issue type {issue!r}; choose one of {', '.join(GALLERY_ISSUES)}")
        rows = getattr(self, f"_{issue}_items")() if getattr(self, issue) is not None else []
        frame = pd.DataFrame(rows, columns=[c for c in ITEM_COLUMNS if c not in ("issue", "file")])
        frame.insert(0, "issue", issue)
        frame.insert(4, "file", [self.relative(p) for p in frame["path"]])
        return frame

    def _label_items(self) -> list[tuple]:
        audit, names = self.label, self.label.class_names
        suggested = audit.suggested()
        rows = [r for r in audit.ranking() if suggested[r] != audit.labels[r]]
        return [
            (
                "label", int(self.ids[r]), self.paths[r], names[audit.labels[r]], self.splits[r],
                float(audit.suspicion[r]), names[suggested[r]],
                f"{names[audit.labels[r]]} → {names[suggested[r]]} · {audit.suspicion[r]:.2f}",
            )
            for r in rows
        ]  # fmt: skip

    def _outlier_items(self) -> list[tuple]:
        report, names = self.outlier, self.outlier.class_names
        last = np.zeros(len(names), dtype=np.int64)
        np.maximum.at(last, report.labels, report.typicality_rank)
        least = report.typicality_rank == last[report.labels]
        groups = [
            ("far from every class", report.far_from_all),
            ("unusual for its class", report.class_outlier & ~report.far_from_all),
            ("least typical", least & ~report.class_outlier & ~report.far_from_all),
        ]
        items = []
        for group, flags in groups:
            rows = np.flatnonzero(flags)
            for r in rows[np.argsort(-report.centroid_distance[rows], kind="stable")]:
                caption = f"{names[report.labels[r]]} · {report.centroid_distance[r]:.3f}"
                if report.nearest_class[r] != report.labels[r]:
                    caption += f" · nearest {names[report.nearest_class[r]]}"
                items.append(
                    (group, int(report.ids[r]), report.paths[r], names[report.labels[r]], report.splits[r],
                     float(report.centroid_distance[r]), "review", caption)
                )  # fmt: skip
        return items

    def _duplicate_items(self) -> list[tuple]:
        report = self.duplicate
        best, twin = _pair_stats(report)
        leaky = np.zeros(report.n_clusters, dtype=bool)
        leaky[report.cluster[report.pairs[report.cross_split, 0]]] = True
        keeper = np.zeros(len(report.cluster), dtype=bool)
        keeper[report.keepers] = True
        rows = np.flatnonzero(report.cluster >= 0)
        rows = rows[np.lexsort((~keeper[rows], report.cluster[rows]))]  # by cluster, the keeper first
        items = []
        for r in rows.tolist():
            c = int(report.cluster[r])
            tags = ["keep" if keeper[r] else "drop", report.labels[r] or "", report.splits[r] or ""]
            tags += ["exact" if r in twin else f"{best[r]:.3f}"] + (["leaky split"] if leaky[c] else [])
            items.append(
                (f"cluster {c}", int(report.ids[r]), report.paths[r], report.labels[r], report.splits[r],
                 float(best[r]), "keep" if keeper[r] else "drop", " · ".join(t for t in tags if t))
            )  # fmt: skip
        return items

    def _quality_items(self) -> list[tuple]:
        from ..data.quality import ISSUES as QUALITY_ISSUES

        report, by_path = self.quality, self._by_path()
        items = []
        for kind in QUALITY_ISSUES:
            for r in np.flatnonzero(report.flags[kind]):
                path = str(report.paths[r])
                image_id, label, split = by_path.get(path, (-1, Path(path).parent.name, None))
                size = f"{report.width[r]}x{report.height[r]}"
                items.append((kind, image_id, path, label, split, float("nan"), "review", f"{kind} · {label} · {size}"))
        for failure in report.failures:
            path = str(failure.path)
            image_id, label, split = by_path.get(path, (-1, Path(path).parent.name, None))
            items.append(("unreadable", image_id, path, label, split, float("nan"), "drop", failure.reason))
        return items

    def summary(self) -> pd.DataFrame:
        """One row per check run: ``issue, flagged`` (how many images or pairs it flags) and ``detail``."""
        import pandas as pd

        rows = []
        if self.label is not None:
            detail = f"label suspects (suspicion >= {SUSPECT_THRESHOLD}) among {len(self.ids)} images"
            rows.append(("label", len(self.label.suspects(SUSPECT_THRESHOLD)), detail))
        if self.outlier is not None:
            far, unusual = self.outlier.far_from_all, self.outlier.class_outlier
            detail = f"{int(far.sum())} far from every class, {int(unusual.sum())} unusual for their class"
            rows.append(("outlier", int((far | unusual).sum()), detail))
        if self.duplicate is not None:
            d = self.duplicate
            detail = (
                f"pairs (cosine >= {d.threshold:.2f}): {int(d.exact.sum())} exact, {int(d.cross_split.sum())} across "
                f"splits (leaky), {d.n_clusters} clusters, {len(d.removable())} files to drop"
            )
            rows.append(("duplicate", len(d), detail))
        if self.quality is not None:
            q = self.quality
            detail = ", ".join(f"{kind} {n}" for kind, n in q.summary().items() if n) or "no issue"
            detail += f", unreadable {len(q.failures)}" if q.failures else ""
            rows.append(("quality", len(q.flagged()) + len(q.failures), detail))
        if self.balance is not None:
            b = self.balance
            small = b.too_small()
            detail = f"classes with fewer than {b.min_train} train images" + (f": {', '.join(small)}" if small else "")
            rows.append(("balance", len(small), f"{detail}; largest / smallest class {b.imbalance():.1f}"))
        return pd.DataFrame(rows, columns=["issue", "flagged", "detail"])

    # -- fix lists ------------------------------------------------------------------------------------------

    def drop_list(self) -> pd.DataFrame:
        """Files a user may drop: duplicates that are not their cluster's keeper, and unreadable files.

        Returns
        -------
        pandas.DataFrame
            Columns :data:`DROP_COLUMNS`; ``keeper`` is the path of the file kept in its stead (empty for an
            unreadable file). A suggestion: nothing is removed.
        """
        import pandas as pd

        rows = []
        if self.duplicate is not None:
            d = self.duplicate
            best, twin = _pair_stats(d)
            for r in d.removable().tolist():
                keeper = d.paths[d.keepers[d.cluster[r]]]
                reason = (
                    f"exact duplicate of {d.paths[twin[r]]}"
                    if r in twin
                    else f"near duplicate (cosine {best[r]:.3f}) in the cluster of {keeper}"
                )
                rows.append((d.paths[r], int(d.ids[r]), d.labels[r], d.splits[r], reason, keeper))
        if self.quality is not None:
            by_path = self._by_path()
            for failure in self.quality.failures:
                path = str(failure.path)
                image_id, label, split = by_path.get(path, (-1, Path(path).parent.name, None))
                rows.append((path, image_id, label, split, f"cannot be read: {failure.reason}", ""))
        return pd.DataFrame(rows, columns=list(DROP_COLUMNS))

    def relabel_list(self, min_suspicion: float = SUSPECT_THRESHOLD) -> pd.DataFrame:
        """Labels a user may change: the label suspects and their suggested labels, most suspicious first.

        Returns
        -------
        pandas.DataFrame
            Columns :data:`RELABEL_COLUMNS`. A suggestion: no file is moved or renamed.
        """
        import pandas as pd

        if self.label is None:
            return pd.DataFrame([], columns=list(RELABEL_COLUMNS))
        audit, names = self.label, self.label.class_names
        rows = audit.suspects(min_suspicion)
        return pd.DataFrame(
            {
                "path": [self.paths[r] for r in rows],
                "id": self.ids[rows],
                "label": [names[c] for c in audit.labels[rows]],
                "suggested_label": [names[c] for c in audit.suggested()[rows]],
                "suspicion": audit.suspicion[rows],
            },
            columns=list(RELABEL_COLUMNS),
        )

    # -- files ----------------------------------------------------------------------------------------------

    def write(self, csv_path: str | os.PathLike) -> list[Path]:
        """Write every table as CSV and JSON, and the fix lists as CSV, beside ``csv_path``; each file atomically.

        ``csv_path`` names the label audit's CSV (``audit.csv``); the other files share its stem:
        ``audit-<issue>.csv`` for the other checks, ``audit-<issue>.json`` for every check (a list of row
        objects), ``audit-drop.csv`` (:meth:`drop_list`) and ``audit-relabel.csv`` (:meth:`relabel_list`)
        when the checks that feed them ran. Only these files are written; no image is touched.

        Returns
        -------
        list of Path
            The files written.
        """
        csv_path = Path(csv_path)
        named = lambda suffix: csv_path.with_name(f"{csv_path.stem}-{suffix}")
        written = []
        for issue, table in self.tables().items():
            target = csv_path if issue == "label" else named(f"{issue}.csv")
            written.append(write_atomic(target, table.to_csv(index=False, float_format="%.4f")))
            rows = json.loads(table.to_json(orient="records", double_precision=6))
            written.append(write_atomic(named(f"{issue}.json"), json.dumps(rows, indent=1, ensure_ascii=False)))
        if self.duplicate is not None or self.quality is not None:
            written.append(write_atomic(named("drop.csv"), self.drop_list().to_csv(index=False)))
        if self.label is not None:
            written.append(
                write_atomic(named("relabel.csv"), self.relabel_list().to_csv(index=False, float_format="%.4f"))
            )
        return written


def _pair_stats(report: DuplicateReport) -> tuple[np.ndarray, dict[int, int]]:
    """Per item row: its largest similarity to an image it is paired with (float32, shape (n,)), and its exact
    twin (another item row with the same pixels) for the rows that have one."""
    best, twin = np.zeros(len(report.cluster), dtype=np.float32), {}
    for (a, b), similarity, same in zip(report.pairs.tolist(), report.similarity, report.exact):
        best[[a, b]] = np.maximum(best[[a, b]], similarity)
        if same:
            twin.setdefault(a, b)
            twin.setdefault(b, a)
    return best, twin


def health_report(bundle: Bundle, issues: tuple[str, ...] | str = ISSUES, *, progress: bool = False) -> HealthReport:
    """Run the chosen data-health checks of ``bundle`` once (see :mod:`lookalike.bundle.health`).

    Parameters
    ----------
    bundle : Bundle
    issues : tuple of str or str
        Among :data:`lookalike.bundle.health.ISSUES`, or a string for :func:`parse_issues` (``"all"``).
    progress : bool
        Show progress bars.

    Returns
    -------
    HealthReport

    Raises
    ------
    ValueError
        An unknown check is named.
    BundleError
        Indexed images cannot be read any more (label, outlier and duplicate checks need their features).
    """
    from . import health
    from .audit import audit_bundle, imagenet_features

    issues = parse_issues(issues) if isinstance(issues, str) else parse_issues(",".join(issues))
    records = bundle.index.records
    paths = tuple(str(r.path) for r in records)
    parents = sorted({os.path.dirname(p) for p in paths})
    # The dataset folder: above the class folders (``root/<class>/`` or ``root/<split>/<class>/``).
    root = "" if not parents else os.path.commonpath(parents) if len(parents) > 1 else os.path.dirname(parents[0])
    found: dict = {}
    seconds = {}

    def timed(name, run):
        started = time.perf_counter()
        found[name] = run()
        seconds[name] = time.perf_counter() - started

    if "label" in issues:
        timed("label", lambda: audit_bundle(bundle, progress=progress))
        found["label"], found["features"] = found["label"]
    elif {"outlier", "duplicate"} & set(issues):
        found["features"] = imagenet_features(bundle, progress=progress)
    if "outlier" in issues:
        timed("outlier", lambda: health.bundle_outliers(bundle, progress=progress))
    if "duplicate" in issues:
        timed("duplicate", lambda: health.bundle_duplicates(bundle, progress=progress))
    if "quality" in issues:
        timed("quality", lambda: health.bundle_quality(bundle))
    if "balance" in issues:
        timed("balance", lambda: health.bundle_balance(bundle))
    return HealthReport(
        issues=issues, ids=np.asarray(bundle.index.ids, dtype=np.int64), paths=paths,
        labels=tuple(r.label for r in records), splits=tuple(r.split for r in records), root=root, seconds=seconds,
        **found,
    )  # fmt: skip
