"""Open set: does a query match any indexed character closely enough, or is it something the index has not seen?

A query's **match score** is its cosine similarity to its most similar indexed image (the best image of the
best-matching character). A query is *unknown* ("no close match") when that score is below a threshold
calibrated per bundle: the ``quantile`` (default 5 %) of the match scores of indexed images, each searched
leave-one-out (its own entry excluded), so that about ``1 - quantile`` of queries that look like the indexed
images are accepted. The scores come from images the head never trained on, like a query:

1. ``held-out``: the indexed images of split ``val`` or ``test``, when there are at least :data:`MIN_HELD_OUT`;
   on the demo bundle (freedroidrpg, 178 held-out of 1,006 images) this threshold accepts 94.9 % of them, one
   set from all indexed images 92.7 %;
2. ``cross-fit``: else (few-shot data: classes under 10 images get no validation split) the training images,
   each scored by a head trained on the other half of them (:func:`lookalike.embedder.training.cross_fit_scores`,
   computed when the bundle is trained and kept while it changes);
3. ``indexed``: else every indexed image. Training pulls a class's training images together, so this threshold
   is stricter than nominal (on ``benchmarks/generalisation``, 6 images per character: 73-86 % of new images
   of known characters accepted at 5 %). This is the distance-to-nearest-training-sample rule of open-set
recognition (e.g. Bendale & Boult 2015, arXiv:1511.06233, for the nearest-class-mean form), with the
threshold set by a quantile of in-distribution scores as in out-of-distribution detection practice
(Hendrycks & Gimpel 2017, arXiv:1610.02136).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .search import EmbeddingIndex

#: Share of known queries allowed to fall below the threshold (flagged "no close match").
DEFAULT_QUANTILE = 0.05
#: Indexed images searched to calibrate (a seeded sample beyond this).
CALIBRATION_SAMPLE = 5000
#: Held-out images needed to calibrate on them alone (fewer: on every indexed image).
MIN_HELD_OUT = 20


@dataclass(frozen=True)
class OpenSetCalibration:
    """The bundle's "no close match" threshold and how it was set; stored in the manifest as ``open_set``.

    Attributes
    ----------
    threshold : float
        Cosine similarity in [-1, 1]: a query whose best match scores below it is unknown.
    quantile : float
        Share of the indexed images' own leave-one-out match scores below ``threshold``.
    images : int
        Indexed images searched to set it.
    source : str
        Which scores (see the module docstring): ``"held-out"``, ``"cross-fit"`` or ``"indexed"`` (bundles of
        before say so too).
    """

    threshold: float
    quantile: float
    images: int
    source: str = "indexed"

    def to_dict(self) -> dict:
        """JSON-serialisable form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> OpenSetCalibration:
        """Inverse of :meth:`to_dict`."""
        return cls(
            threshold=float(values["threshold"]),
            quantile=float(values["quantile"]),
            images=int(values["images"]),
            source=str(values.get("source", "indexed")),
        )


def leave_one_out_scores(
    index: EmbeddingIndex, *, rows: np.ndarray | None = None, sample: int = CALIBRATION_SAMPLE, seed: int = 0
) -> np.ndarray:
    """Match score of indexed images searched against the index without themselves.

    Parameters
    ----------
    index : EmbeddingIndex
    rows : int ndarray of shape (r,), optional
        Rows of the images to score (default: every indexed image).
    sample : int
        At most this many images (a seeded random sample beyond it).
    seed : int

    Returns
    -------
    float32 ndarray of shape (m,)
        Cosine similarity of each sampled image to its most similar *other* indexed image;
        m = min(r, sample), 0 when the index holds fewer than two images.
    """
    if len(index) < 2:
        return np.empty(0, dtype=np.float32)
    rows = np.arange(len(index)) if rows is None else np.asarray(rows, dtype=np.int64)
    if len(rows) > sample:
        rows = np.sort(np.random.default_rng(seed).choice(rows, sample, replace=False))
    found = index.search(index.vectors[rows], 2)
    own = found.ids == index.ids[rows][:, None]
    # The best hit that is not the image itself (an exact duplicate may outrank it).
    other = np.where(own[:, 0], found.scores[:, 1], found.scores[:, 0])
    return other.astype(np.float32)


def held_out_rows(index: EmbeddingIndex) -> np.ndarray:
    """Rows of the indexed images of split ``val`` or ``test``: int64 ndarray of shape (h,)."""
    return np.flatnonzero([record.split != "train" for record in index.records])


def calibrate(
    index: EmbeddingIndex,
    *,
    quantile: float = DEFAULT_QUANTILE,
    seed: int = 0,
    cross_fit: np.ndarray | None = None,
) -> OpenSetCalibration:
    """Set the "no close match" threshold of ``index`` (see the module docstring): from its held-out images when
    it has at least :data:`MIN_HELD_OUT`, else from ``cross_fit`` when given, else from every indexed image.

    Parameters
    ----------
    index : EmbeddingIndex
    quantile : float
        Share of the scores below the threshold, in [0, 1).
    seed : int
        Seed of the sample of images searched when there are more than :data:`CALIBRATION_SAMPLE`.
    cross_fit : float32 ndarray of shape (m,), optional
        Cosine match scores of training images as unseen queries (cross-fitted heads).

    Raises
    ------
    ValueError
        ``quantile`` not in [0, 1), or fewer than two indexed images.
    """
    if not 0.0 <= quantile < 1.0:
        raise ValueError(f"quantile must be in [0, 1); got {quantile}")
    held_out = held_out_rows(index)
    if len(held_out) >= MIN_HELD_OUT:
        source, scores = "held-out", leave_one_out_scores(index, rows=held_out, seed=seed)
    elif cross_fit is not None and len(cross_fit) >= MIN_HELD_OUT:
        source, scores = "cross-fit", np.asarray(cross_fit, dtype=np.float32)
    else:
        source, scores = "indexed", leave_one_out_scores(index, seed=seed)
    if not len(scores):
        raise ValueError(f"calibrating the open-set threshold needs at least two indexed images; got {len(index)}")
    threshold = float(np.quantile(scores, quantile))
    return OpenSetCalibration(threshold=threshold, quantile=quantile, images=len(scores), source=source)
