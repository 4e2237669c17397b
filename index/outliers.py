"""Outliers and uniqueness: how typical each image is of its class, and how far it is from every class.

Per image, from L2-normalised embeddings (trained, or the frozen ImageNet features of
:func:`lookalike.bundle.imagenet_features`, which do not learn the labels):

- **centroid distance**: cosine distance (1 - cosine similarity) to its own class centroid, computed without
  the image (leave-one-out, as :mod:`lookalike.index.label_audit` does), so a class of 6 is not pulled towards
  each of its members;
- **neighbor distance** (uniqueness): mean cosine distance to its k nearest other images of any class
  (FAISS exact search); large for an image unlike anything else in the set;
- **typicality rank** within its class, 0 = nearest its centroid;
- **class outlier**: its centroid distance lies above Tukey's upper fence (Q3 + 1.5 IQR) of the centroid
  distances of its class (classes of 4 or more images);
- **far from every class**: its distance to the nearest centroid of *any* class lies above Tukey's upper fence
  of that distance over the whole set (the audit's outlier rule).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import faiss
import numpy as np

if TYPE_CHECKING:
    from .search import EmbeddingIndex

logger = logging.getLogger(__name__)

#: Tukey's fence factor.
FENCE = 1.5


def _upper_fence(values: np.ndarray) -> float:
    q1, q3 = np.percentile(values, [25, 75])
    return float(q3 + FENCE * (q3 - q1))


def centroid_similarities(vectors: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Cosine similarity of each image to every class centroid, its own class's centroid computed without it.

    Parameters
    ----------
    vectors : float32 ndarray of shape (n, d), L2-normalised
    labels : int64 ndarray of shape (n,)
        Class of each image, in ``0 .. n_classes - 1``.
    n_classes : int

    Returns
    -------
    float32 ndarray of shape (n, n_classes)
        A class's centroid is the normalised mean of its images; an image alone in its class has similarity 0
        to its own (empty) centroid.
    """
    sums = np.zeros((n_classes, vectors.shape[1]), dtype=np.float64)
    np.add.at(sums, labels, vectors)
    own = sums[labels] - vectors  # the own class without the image
    centroids = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    similarities = vectors @ centroids.T
    own_norm = np.linalg.norm(own, axis=1)
    loo = np.einsum("nd,nd->n", vectors, own) / np.maximum(own_norm, 1e-12)
    similarities[np.arange(len(labels)), labels] = np.where(own_norm > 1e-9, loo, 0.0)
    return similarities.astype(np.float32)


@dataclass(frozen=True)
class OutlierReport:
    """Typicality and uniqueness of every image; arrays are by item row.

    Attributes
    ----------
    class_names : tuple of str
    labels : int64 ndarray of shape (n,)
    centroid_distance : float32 ndarray of shape (n,)
        Cosine distance to its own class centroid (leave-one-out).
    nearest_class : int64 ndarray of shape (n,)
        Class with the nearest centroid (its own, leave-one-out, included).
    nearest_class_distance : float32 ndarray of shape (n,)
    neighbor_distance : float32 ndarray of shape (n,)
        Mean cosine distance to its ``k`` nearest other images.
    typicality_rank : int64 ndarray of shape (n,)
        Rank by centroid distance within its class, 0 = most typical.
    class_outlier : bool ndarray of shape (n,)
        Above its class's Tukey fence of centroid distances.
    far_from_all : bool ndarray of shape (n,)
        Nearest-centroid distance above the set's Tukey fence ``far_threshold``.
    far_threshold : float
    ids : int64 ndarray of shape (n,)
    paths, splits : tuple of (str or None), length n
    k : int
    """

    class_names: tuple[str, ...]
    labels: np.ndarray
    centroid_distance: np.ndarray
    nearest_class: np.ndarray
    nearest_class_distance: np.ndarray
    neighbor_distance: np.ndarray
    typicality_rank: np.ndarray
    class_outlier: np.ndarray
    far_from_all: np.ndarray
    far_threshold: float
    ids: np.ndarray
    paths: tuple
    splits: tuple
    k: int

    def to_frame(self):
        """One row per image: ``path, id, label, split, centroid_distance, typicality_rank, neighbor_distance,
        nearest_class, nearest_class_distance, class_outlier, far_from_all``; least typical first. A pandas DataFrame."""
        import pandas as pd

        names = np.asarray(self.class_names, dtype=object)
        frame = pd.DataFrame(
            {
                "path": list(self.paths),
                "id": self.ids,
                "label": names[self.labels],
                "split": list(self.splits),
                "centroid_distance": self.centroid_distance,
                "typicality_rank": self.typicality_rank,
                "neighbor_distance": self.neighbor_distance,
                "nearest_class": names[self.nearest_class],
                "nearest_class_distance": self.nearest_class_distance,
                "class_outlier": self.class_outlier,
                "far_from_all": self.far_from_all,
            }
        )
        return frame.sort_values(["far_from_all", "class_outlier", "centroid_distance"], ascending=False, kind="stable")

    def least_typical(self, per_class: int = 5):
        """The ``per_class`` images of each class farthest from its centroid, one row each (see :meth:`to_frame`)."""
        frame = self.to_frame()
        return frame[
            frame["typicality_rank"] >= frame.groupby("label")["typicality_rank"].transform("max") - per_class + 1
        ]


def find_outliers(
    vectors: np.ndarray,
    labels: np.ndarray,
    *,
    class_names: Sequence[str] | None = None,
    k: int = 10,
    ids: np.ndarray | None = None,
    paths: Sequence | None = None,
    splits: Sequence | None = None,
) -> OutlierReport:
    """Centroid and neighbor distances, typicality ranks and outlier flags of every image.

    Parameters
    ----------
    vectors : float32 ndarray of shape (n, d), L2-normalised
    labels : int64 ndarray of shape (n,)
        Class of each image, in ``0 .. n_classes - 1``.
    class_names : sequence of str, optional
        Default ``"0", "1", ...``.
    k : int
        Neighbors of the neighbor distance (fewer when the set is smaller).
    ids : int64 ndarray of shape (n,), optional
    paths, splits : sequence of length n, optional

    Raises
    ------
    ValueError
        Shapes disagree, a label is out of range, or the set has fewer than two images.
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    n = len(vectors)
    if vectors.ndim != 2 or labels.shape != (n,):
        raise ValueError(
            f"expected vectors of shape (n, d) and labels of shape (n,); got {vectors.shape} and {labels.shape}"
        )
    if n < 2:
        raise ValueError(f"outliers need at least 2 images; got {n}")
    n_classes = len(class_names) if class_names is not None else int(labels.max()) + 1
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"labels must lie in 0 .. {n_classes - 1}; got {labels.min()} .. {labels.max()}")
    class_names = tuple(class_names) if class_names is not None else tuple(map(str, range(n_classes)))
    similarities = centroid_similarities(vectors, labels, n_classes)
    present = np.bincount(labels, minlength=n_classes) > 0
    similarities[:, ~present] = -np.inf
    centroid_distance = 1.0 - similarities[np.arange(n), labels]
    nearest_class = np.argmax(similarities, axis=1)
    nearest_class_distance = 1.0 - similarities[np.arange(n), nearest_class]

    k = min(k, n - 1)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    scores, rows = index.search(vectors, k + 1)
    not_self = rows != np.arange(n)[:, None]
    order = np.argsort(~not_self, axis=1, kind="stable")[:, :k]  # drop the image itself (a duplicate may outrank it)
    neighbor_distance = 1.0 - np.take_along_axis(scores, order, axis=1).mean(axis=1)

    by_class = np.lexsort((centroid_distance, labels))
    starts = np.searchsorted(labels[by_class], labels[by_class])
    typicality_rank = np.empty(n, dtype=np.int64)
    typicality_rank[by_class] = np.arange(n) - starts
    class_outlier = np.zeros(n, dtype=bool)
    for c in np.flatnonzero(np.bincount(labels, minlength=n_classes) >= 4):
        members = labels == c
        class_outlier[members] = centroid_distance[members] > _upper_fence(centroid_distance[members])
    far_threshold = _upper_fence(nearest_class_distance)

    def meta(values):
        return (None,) * n if values is None else tuple(None if v is None else str(v) for v in values)

    return OutlierReport(
        class_names=class_names, labels=labels, centroid_distance=centroid_distance.astype(np.float32),
        nearest_class=nearest_class.astype(np.int64), nearest_class_distance=nearest_class_distance.astype(np.float32),
        neighbor_distance=neighbor_distance.astype(np.float32), typicality_rank=typicality_rank,
        class_outlier=class_outlier, far_from_all=nearest_class_distance > far_threshold, far_threshold=far_threshold,
        ids=np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64),
        paths=meta(paths), splits=meta(splits), k=k,
    )  # fmt: skip


def index_outliers(index: EmbeddingIndex, *, k: int = 10) -> OutlierReport:
    """:func:`find_outliers` over an :class:`~lookalike.index.EmbeddingIndex` (e.g. ``imagenet_features(bundle)``)."""
    return find_outliers(
        index.vectors, index.labels, class_names=index.class_names, k=k, ids=index.ids,
        paths=[r.path for r in index.records], splits=[r.split for r in index.records],
    )  # fmt: skip
