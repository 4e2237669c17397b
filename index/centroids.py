"""Class centroids of L2-normalised embeddings ("nearest class mean", Mensink et al. 2013), with NumPy alone.

The computation behind :class:`lookalike.index.classifiers.NearestCentroidClassifier`, kept free of
scikit-learn so that answering a query (the bundle's nearest centroids) does not import it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def class_sums(embeddings: np.ndarray, codes: np.ndarray, n_classes: int) -> np.ndarray:
    """Sum of each class's embeddings (float32, (n, d)) by class ``codes`` (int64, (n,), in ``[0, n_classes)``):
    float64 ndarray of shape (n_classes, d)."""
    sums = np.zeros((n_classes, embeddings.shape[1]), dtype=np.float64)
    np.add.at(sums, codes, embeddings)
    return sums


@dataclass(frozen=True)
class ClassCentroids:
    """Each class's centroid: the L2-normalised mean of its embeddings.

    Attributes
    ----------
    centroids : float32 ndarray of shape (n_classes, d)
        L2-normalised class means (zero for a class without embeddings).
    empty : bool ndarray of shape (n_classes,)
        Classes that had no embedding.
    """

    centroids: np.ndarray
    empty: np.ndarray

    @classmethod
    def fit(cls, embeddings: np.ndarray, codes: np.ndarray, n_classes: int) -> ClassCentroids:
        """Centroids of ``embeddings`` (float32, (n, d), L2-normalised) by class ``codes`` (int64, (n,), in
        ``[0, n_classes)``)."""
        return cls.from_sums(class_sums(embeddings, codes, n_classes))

    @classmethod
    def from_sums(cls, sums: np.ndarray) -> ClassCentroids:
        """Centroids from each class's sum of embeddings (float64, (n_classes, d), as :func:`class_sums` gives)."""
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        return cls((sums / np.where(norms > 0, norms, 1.0)).astype(np.float32), norms[:, 0] == 0)

    def similarities(self, embeddings: np.ndarray) -> np.ndarray:
        """Cosine similarity of each embedding (float32, (n, d), L2-normalised) to each centroid: float32 array of
        shape (n, n_classes), -inf for classes that had no embedding."""
        similarities = np.asarray(embeddings, dtype=np.float32) @ self.centroids.T
        similarities[:, self.empty] = -np.inf
        return similarities
