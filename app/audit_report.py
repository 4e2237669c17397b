"""The audit as one self-contained HTML page: a summary, a gallery per issue type, the confusion heatmap and
the class balance, with every thumbnail embedded (works offline, no CDN, no server).

The page renders the tables of :class:`lookalike.bundle.health_report.HealthReport` (the same frames the CLI
prints and the app shows) through a Jinja2 template (``templates/audit_report.html.j2``, autoescaped).
Thumbnails come only from the bundle's thumbnail pack (:mod:`lookalike.data.thumbnails`), checked and encoded
again as small JPEG data URIs; no image path a bundle names is ever opened here.
"""

from __future__ import annotations

import base64
import io
import logging
import math
import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from ..bundle.health_report import SUSPECT_THRESHOLD
from ..data import ImageDecodeError
from ..data.files import write_atomic
from ..data.thumbnails import decode_thumbnail

if TYPE_CHECKING:
    from ..bundle import Bundle
    from ..bundle.health_report import HealthReport

logger = logging.getLogger(__name__)

TEMPLATE = "audit_report.html.j2"
#: Side in pixels of an embedded thumbnail, and its JPEG quality.
THUMBNAIL_SIDE = 96
THUMBNAIL_QUALITY = 80
#: Most images listed per gallery group (the CSV has them all).
MAX_PER_GROUP = 120
#: Most duplicate clusters drawn.
MAX_CLUSTERS = 80
#: Most images embedded per confusion cell: off the diagonal (errors) and on it (agreements).
MAX_PER_CELL, MAX_PER_DIAGONAL_CELL = 48, 8
#: Above this many classes, the heatmap keeps only the classes with an out-of-fold error.
MAX_HEATMAP_CLASSES = 40
SPLIT_COLOURS = {"train": "#2b6cb0", "val": "#dd6b20", "validation": "#dd6b20", "test": "#805ad5"}
SECTION_TITLES = {
    "label": "Label suspects",
    "outlier": "Outliers",
    "duplicate": "Duplicates",
    "quality": "Image quality",
}


class Thumbnails:
    """Small JPEG data URIs of a bundle's thumbnails, each encoded once.

    Parameters
    ----------
    bundle : Bundle
        Its thumbnail pack is read; a bundle without one gives no images (None).
    side : int
        Longest side in pixels of each embedded copy.
    """

    def __init__(self, bundle: Bundle, side: int = THUMBNAIL_SIDE):
        self.pack, self.side, self._cache = bundle.thumbnails, side, {}

    def __call__(self, image_id: int) -> str | None:
        """``data:image/jpeg;base64,...`` of image ``image_id``; None when the pack has no valid thumbnail."""
        image_id = int(image_id)
        if image_id not in self._cache:
            self._cache[image_id] = self._encode(image_id)
        return self._cache[image_id]

    def _encode(self, image_id: int) -> str | None:
        blob = self.pack.get(image_id) if self.pack is not None and image_id >= 0 else None
        if blob is None:
            return None
        try:
            pixels = decode_thumbnail(blob, name=f"thumbnail {image_id}")
        except ImageDecodeError as error:
            logger.warning("%s", error)
            return None
        image = Image.fromarray(pixels)
        image.thumbnail((self.side, self.side), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=THUMBNAIL_QUALITY, optimize=True)
        return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _environment():
    from jinja2 import Environment, PackageLoader, select_autoescape

    return Environment(
        loader=PackageLoader("lookalike.app", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _item(row, thumbnails: Thumbnails) -> dict:
    item = row._asdict()
    item["score"] = None if item["score"] is None or math.isnan(item["score"]) else float(item["score"])
    item["src"] = thumbnails(item["id"])
    item["text"] = item["caption"].split(" · ", 1)[1] if " · " in item["caption"] else ""
    return item


def _sections(report: HealthReport, thumbnails: Thumbnails) -> list[dict]:
    notes = {
        "label": "Images whose out-of-fold classifiers (softmax, k-NN, centroid on frozen ImageNet features) agree on "
        "another class: given label → suggested label · suspicion (the mean probability that the label is wrong). "
        "The suggestions are in the relabel CSV.",
        "outlier": "Far from every class, unusual for their class (Tukey's fence on the distance to their class "
        "centroid), and the least typical image of each class · cosine distance to the class centroid.",
        "duplicate": "Clusters of exact and near duplicates (cosine similarity of frozen features · or exact pixels); "
        "the suggested keeper is framed. Files marked drop are in the drop CSV.",
        "quality": "Dark, light, blurry, low-information, grayscale-among-colour, odd-size and odd-aspect images, "
        "after CleanVision's definitions.",
    }
    sections = []
    for issue in report.issues:
        if issue not in SECTION_TITLES:
            continue
        frame = report.items(issue)
        if issue == "label":
            frame = frame[frame["score"] >= SUSPECT_THRESHOLD]
        groups, listed, more = [], 0, ""
        by_group = list(frame.groupby("group", sort=False))
        if issue == "duplicate":
            leaky = set(report.duplicate.cluster[report.duplicate.pairs[report.duplicate.cross_split, 0]].tolist())
            if len(by_group) > MAX_CLUSTERS:
                more = f"{len(by_group) - MAX_CLUSTERS} more clusters in the CSV."
            by_group = by_group[:MAX_CLUSTERS]
        for name, rows in by_group:
            items = [_item(row, thumbnails) for row in rows.head(MAX_PER_GROUP).itertuples(index=False)]
            group = {"name": name, "items": items, "total": len(rows)}
            if issue == "duplicate":
                group["leaky"] = int(name.split()[-1]) in leaky
            groups.append(group)
            listed += len(items)
        sections.append(
            {"issue": issue, "title": SECTION_TITLES[issue], "note": notes[issue], "groups": groups, "listed": listed,
             "more": more}
        )  # fmt: skip
    return sections


def _confusion(report: HealthReport, thumbnails: Thumbnails, classifier: str = "knn") -> dict | None:
    audit = report.label
    if audit is None:
        return None
    counts = audit.confusion(classifier)
    names = list(audit.class_names)
    shown = np.arange(len(names))
    if len(names) > MAX_HEATMAP_CLASSES:
        errors = counts - np.diag(np.diag(counts))
        shown = np.flatnonzero((errors.sum(axis=0) + errors.sum(axis=1)) > 0)
    predicted = audit.predicted(classifier)
    cells, used = {}, set()
    for i, true in enumerate(shown):
        for j, guess in enumerate(shown):
            rows = np.flatnonzero((audit.labels == true) & (predicted == guess))
            rows = rows[: MAX_PER_CELL if true != guess else MAX_PER_DIAGONAL_CELL]
            if len(rows):
                cells[f"{i},{j}"] = [int(report.ids[r]) for r in rows]
                used.update(cells[f"{i},{j}"])
    by_id = {int(i): report.relative(p) for i, p in zip(report.ids, report.paths)}
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    rows = [
        {
            "name": names[true],
            "index": i,
            "cells": [{"count": int(counts[true, guess]), "share": float(share[true, guess])} for guess in shown],
        }
        for i, true in enumerate(shown)
    ]
    title = {"knn": "k-NN vote", "softmax": "softmax", "centroid": "nearest centroid"}[classifier]
    data = {
        "names": [names[c] for c in shown],
        "classifier": title,
        "cells": cells,
        "thumbnails": {str(i): {"src": thumbnails(i), "file": by_id[i]} for i in sorted(used)},
    }
    return {"classifier": title, "names": data["names"], "rows": rows, "data": data, "per_cell": MAX_PER_CELL}


def _balance(report: HealthReport) -> dict | None:
    balance = report.balance
    if balance is None:
        return None
    frame = balance.to_frame()
    largest = max(int(frame["total"].max()), 1)
    palette = ["#2f855a", "#b7791f", "#319795"]
    colours = {s: SPLIT_COLOURS.get(s) or palette[i % len(palette)] for i, s in enumerate(balance.split_names)}
    rows = [
        {
            "name": row["class"],
            "total": int(row["total"]),
            "too_small": bool(row["too_small"]),
            "parts": [
                {"split": s, "count": int(row[s]), "width": 100.0 * row[s] / largest, "colour": colours[s]}
                for s in balance.split_names
            ],
        }
        for _, row in frame.iterrows()
    ]
    return {
        "rows": rows,
        "splits": [{"name": s, "colour": c} for s, c in colours.items()],
        "min_train": balance.min_train,
        "imbalance": balance.imbalance(),
    }


def render_report(report: HealthReport, bundle: Bundle) -> str:
    """The audit as one self-contained HTML page.

    Parameters
    ----------
    report : HealthReport
        The checks to show (any subset of the issue types).
    bundle : Bundle
        The audited bundle: its name and thumbnail pack.

    Returns
    -------
    str
        HTML5; every image an embedded JPEG data URI of at most :data:`THUMBNAIL_SIDE` pixels, inline CSS and
        JavaScript only (the confusion heatmap's click handler).
    """
    thumbnails = Thumbnails(bundle)
    try:
        package_version = version("lookalike")
    except PackageNotFoundError:
        package_version = "dev"
    return (
        _environment()
        .get_template(TEMPLATE)
        .render(
            version=package_version,
            bundle_name=bundle.path.name if bundle.path else "bundle",
            n_images=len(report.ids),
            n_classes=len(set(report.labels)),
            issues=report.issues,
            summary=report.summary().to_dict("records"),
            sections=_sections(report, thumbnails),
            confusion=_confusion(report, thumbnails),
            balance=_balance(report),
        )
    )


def write_report(report: HealthReport, bundle: Bundle, path: str | os.PathLike) -> Path:
    """Write :func:`render_report` to ``path`` atomically; returns ``path``."""
    return write_atomic(path, render_report(report, bundle))
