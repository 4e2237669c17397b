"""Open set: does a query match any indexed character closely enough, or is it something the index has not seen?

A query's **match score** is its cosine similarity to the nearest class centroid (the L2-normalised mean of a
class's indexed embeddings: the nearest-class-mean rule, Mensink et al. 2013, used for open-set recognition by
Bendale & Boult 2015, arXiv:1511.06233). Bundles calibrated before this score existed (no ``score`` in their
manifest's ``open_set``: ``score="best-image"``) use the cosine similarity to the most similar indexed image
instead. On ``benchmarks/generalisation`` (four datasets, 6 images per character, two seeds) the centroid score
separates unknown characters from known ones better everywhere: AUROC 0.98-0.99 against 0.98 on freedroidrpg, 0.86
against 0.85 on wesnoth_units, 0.72-0.74 against 0.58-0.60 on freedink and 0.63 against 0.52 on widelands. One
character's frames agree on its centroid while an unknown character drawn on a known body is as close to that body's
nearest frame as the known frames are.

A query is *unknown* ("no close match") when its match score is below a threshold calibrated per bundle: the
``quantile`` (default 5 %) of the match scores of images scored as unseen queries, so that about
``1 - quantile`` of queries that look like the indexed images are accepted. Those scores come from images the
head never trained on, like a query:

1. ``held-out``: the indexed images of split ``val`` or ``test``, when there are at least :data:`MIN_HELD_OUT`,
   each scored leave-one-out (left out of its class's centroid);
2. ``cross-fit``: else (few-shot data: classes under 10 images get no validation split) the training images,
   each scored by a head trained on the other half of them (:func:`lookalike.embedder.training.cross_fit_scores`,
   computed when the bundle is trained and kept while it changes);
3. ``indexed``: else every indexed image, leave-one-out. Training pulls a class's training images together, so
   this threshold is stricter than nominal (on ``benchmarks/generalisation``, 6 images per character: 73-86 %
   of new images of known characters accepted at 5 % with the best-image score).

The threshold is a quantile of in-distribution scores as in out-of-distribution detection practice (Hendrycks &
Gimpel 2017, arXiv:1610.02136).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .centroids import ClassCentroids, class_sums
from .search import EmbeddingIndex

#: Share of known queries allowed to fall below the threshold (flagged "no close match").
DEFAULT_QUANTILE = 0.05
#: Indexed images searched to calibrate (a seeded sample beyond this).
CALIBRATION_SAMPLE = 5000
#: Held-out images needed to calibrate on them alone (fewer: on every indexed image).
MIN_HELD_OUT = 20
#: The match scores: similarity to the nearest class centroid (today's), or to the most similar image (before).
SCORES = ("centroid", "best-image")


@dataclass(frozen=True)
class OpenSetCalibration:
    """The bundle's "no close match" threshold and how it was set; stored in the manifest as ``open_set``.

    Attributes
    ----------
    threshold : float
        Cosine similarity in [-1, 1]: a query whose match score is below it is unknown.
    quantile : float
        Share of the calibration scores below ``threshold``.
    images : int
        Images scored to set it.
    source : str
        Which scores (see the module docstring): ``"held-out"``, ``"cross-fit"`` or ``"indexed"`` (bundles of
        before say so too).
    score : str
        The match score, one of :data:`SCORES`: ``"centroid"``, or ``"best-image"`` for bundles calibrated before
        the centroid score.
    """

    threshold: float
    quantile: float
    images: int
    source: str = "indexed"
    score: str = "best-image"

    def to_dict(self) -> dict:
        """JSON-serialisable form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> OpenSetCalibration:
        """Inverse of :meth:`to_dict`.

        Raises
        ------
        ValueError
            The match score is not one of :data:`SCORES` (a calibration written by another version of lookalike).
        """
        score = str(values.get("score", "best-image"))
        if score not in SCORES:
            raise ValueError(
                f"the open-set calibration is for the match score {score!r}, which this lookalike does not compute "
                f"(it knows {', '.join(SCORES)}); retrain the bundle with this version"
            )
        return cls(
            threshold=float(values["threshold"]),
            quantile=float(values["quantile"]),
            images=int(values["images"]),
            source=str(values.get("source", "indexed")),
            score=score,
        )

    def match_scores(self, centroid_similarity: np.ndarray, best_image: np.ndarray) -> np.ndarray:
        """The match score of each query, for this calibration's :attr:`score`.

        Parameters
        ----------
        centroid_similarity : float32 ndarray of shape (n, n_classes)
            Cosine similarity of each query to each class centroid (-inf for a class without images).
        best_image : float32 ndarray of shape (n,)
            Cosine similarity of each query to its most similar indexed image.

        Returns
        -------
        float32 ndarray of shape (n,)
        """
        if self.score == "centroid":
            return np.asarray(centroid_similarity, dtype=np.float32).max(axis=1, initial=-np.inf)
        return np.asarray(best_image, dtype=np.float32)


def centroid_leave_one_out(
    embeddings: np.ndarray, codes: np.ndarray, n_classes: int, rows: np.ndarray | None = None
) -> np.ndarray:
    """Centroid match score of embeddings left out of their own class's centroid.

    Each row's score is its cosine similarity to the nearest class centroid, where its own class's centroid
    is the mean of the class's *other* embeddings (a class with no other embedding offers no centroid).

    Parameters
    ----------
    embeddings : float32 ndarray of shape (n, d), L2-normalised
    codes : int64 ndarray of shape (n,)
        Class of each embedding, in [0, n_classes).
    n_classes : int
    rows : int ndarray of shape (r,), optional
        The embeddings to score (default: all).

    Returns
    -------
    float32 ndarray of shape (r,)
        -inf for a row that has no centroid to match (no other embedding at all).
    """
    embeddings = np.asarray(embeddings, dtype=np.float32)
    codes = np.asarray(codes, dtype=np.int64)
    rows = np.arange(len(embeddings)) if rows is None else np.asarray(rows, dtype=np.int64)
    sums = class_sums(embeddings, codes, n_classes)
    similarity = ClassCentroids.from_sums(sums).similarities(embeddings[rows]).astype(np.float64)
    # Own class without the row: (s - e) / |s - e|, with |s - e|^2 = |s|^2 - 2 e.s + |e|^2.
    own_sum = sums[codes[rows]]
    e = embeddings[rows].astype(np.float64)
    dot = np.einsum("nd,nd->n", e, own_sum)
    norm2 = np.einsum("nd,nd->n", own_sum, own_sum) - 2 * dot + np.einsum("nd,nd->n", e, e)
    alone = norm2 <= 1e-9
    own = (dot - np.einsum("nd,nd->n", e, e)) / np.sqrt(np.where(alone, 1.0, norm2))
    similarity[np.arange(len(rows)), codes[rows]] = np.where(alone, -np.inf, own)
    return similarity.max(axis=1, initial=-np.inf).astype(np.float32)


def leave_one_out_scores(
    index: EmbeddingIndex,
    *,
    rows: np.ndarray | None = None,
    sample: int = CALIBRATION_SAMPLE,
    seed: int = 0,
    score: str = "centroid",
) -> np.ndarray:
    """Match score of indexed images as queries of the index without themselves.

    Parameters
    ----------
    index : EmbeddingIndex
    rows : int ndarray of shape (r,), optional
        Rows of the images to score (default: every indexed image).
    sample : int
        At most this many images (a seeded random sample beyond it).
    seed : int
    score : str
        One of :data:`SCORES`: ``"centroid"`` (:func:`centroid_leave_one_out`) or ``"best-image"`` (the
        cosine similarity to the most similar *other* indexed image).

    Returns
    -------
    float32 ndarray of shape (m,)
        Cosine similarities; m = min(r, sample), 0 when the index holds fewer than two images.

    Raises
    ------
    ValueError
        ``score`` is not one of :data:`SCORES`.
    """
    if score not in SCORES:
        raise ValueError(f"unknown match score {score!r}; allowed: {', '.join(SCORES)}")
    if len(index) < 2:
        return np.empty(0, dtype=np.float32)
    rows = np.arange(len(index)) if rows is None else np.asarray(rows, dtype=np.int64)
    if len(rows) > sample:
        rows = np.sort(np.random.default_rng(seed).choice(rows, sample, replace=False))
    if score == "centroid":
        return centroid_leave_one_out(index.vectors, index.labels, len(index.class_names), rows)
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
        Centroid match scores of training images as unseen queries (cross-fitted heads).

    Raises
    ------
    ValueError
        ``quantile`` not in [0, 1), or fewer than two indexed images.
    """
    if not 0.0 <= quantile < 1.0:
        raise ValueError(f"quantile must be in [0, 1); got {quantile}")
    held_out = held_out_rows(index)
    if len(held_out) >= MIN_HELD_OUT:
        source, scores = "held-out", leave_one_out_scores(index, rows=held_out, seed=seed, score="centroid")
    elif cross_fit is not None and len(cross_fit) >= MIN_HELD_OUT:
        source, scores = "cross-fit", np.asarray(cross_fit, dtype=np.float32)
    else:
        source, scores = "indexed", leave_one_out_scores(index, seed=seed, score="centroid")
    if not len(scores):
        raise ValueError(f"calibrating the open-set threshold needs at least two indexed images; got {len(index)}")
    threshold = float(np.quantile(scores, quantile))
    return OpenSetCalibration(
        threshold=threshold, quantile=quantile, images=len(scores), source=source, score="centroid"
    )
