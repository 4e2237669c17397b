"""Classifiers over L2-normalised embeddings, in the scikit-learn estimator shape.

All three take embeddings of shape (n, d) and give ``predict_proba`` of shape (n, n_classes) over the same
column order, ``classes_``:

- :class:`SoftmaxClassifier`: the embedder's own softmax layer (the head after the embedding);
- :class:`KNNClassifier`: similarity-weighted vote of the k nearest training embeddings (exact FAISS search);
- :class:`NearestCentroidClassifier`: cosine similarity to each class's mean embedding ("nearest class mean",
  Mensink et al. 2013; scikit-learn's ``NearestCentroid`` with a cosine metric).
"""

from __future__ import annotations

from typing import Sequence

import faiss
import numpy as np

from .neighbors import knn_vote


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of logits of shape (n, c), float32."""
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)


class _EmbeddingClassifier:
    """Shared ``fit`` bookkeeping and ``predict``; subclasses implement ``_fit`` and ``predict_proba``."""

    def __init__(self, *, classes: Sequence | None = None):
        self.classes = classes

    def fit(self, X: np.ndarray, y: np.ndarray):
        """Learn from embeddings ``X`` (n, d) and labels ``y`` (n,), which must be in ``classes`` when given.

        Raises
        ------
        ValueError
            ``X`` and ``y`` differ in length, or a label is not in ``classes``.
        """
        X, y = _normalise(X), np.asarray(y)
        if len(X) != len(y):
            raise ValueError(f"X and y must have the same length; got {len(X)} and {len(y)}")
        self.classes_ = np.asarray(self.classes) if self.classes is not None else np.unique(y)
        lookup = {c: i for i, c in enumerate(self.classes_.tolist())}
        unknown = sorted({str(v) for v in y.tolist() if v not in lookup})
        if unknown:
            raise ValueError(f"labels not in classes: {', '.join(unknown[:5])}")
        self._fit(X, np.array([lookup[v] for v in y.tolist()], dtype=np.int64))
        return self

    def _fit(self, X: np.ndarray, codes: np.ndarray) -> None:
        raise NotImplementedError

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Most probable class of each embedding: array of shape (n,) with values from ``classes_``."""
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


class KNNClassifier(_EmbeddingClassifier):
    """Similarity-weighted k-nearest-neighbour vote (see :func:`lookalike.index.knn_vote`).

    Parameters
    ----------
    k : int
        Neighbours that vote.
    weighted : bool
        Weight votes by cosine similarity (clipped at 0) instead of counting them.
    classes : sequence, optional
        Column order of ``predict_proba``; default the sorted unique labels seen by ``fit``.
    """

    def __init__(self, *, k: int = 10, weighted: bool = True, classes: Sequence | None = None):
        super().__init__(classes=classes)
        self.k = k
        self.weighted = weighted

    def _fit(self, X, codes):
        self.index_ = faiss.IndexFlatIP(X.shape[1])
        self.index_.add(X)
        self.labels_ = codes

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Vote shares, float32 array of shape (n, n_classes); rows sum to 1."""
        scores, ids = self.index_.search(_normalise(X), min(self.k, self.index_.ntotal))
        return knn_vote(self.labels_[ids], scores, len(self.classes_), weighted=self.weighted)


class NearestCentroidClassifier(_EmbeddingClassifier):
    """Cosine similarity to each class centroid (the L2-normalised mean of its embeddings).

    Parameters
    ----------
    temperature : float
        ``predict_proba`` is the softmax of similarities / temperature; ``predict`` does not depend on it.
    classes : sequence, optional
        Column order; classes without training embeddings get similarity -inf (probability 0), never predicted.

    Attributes
    ----------
    centroids_ : float32 ndarray of shape (n_classes, d)
        L2-normalised class means.
    """

    def __init__(self, *, temperature: float = 0.05, classes: Sequence | None = None):
        super().__init__(classes=classes)
        self.temperature = temperature

    def _fit(self, X, codes):
        sums = np.zeros((len(self.classes_), X.shape[1]), dtype=np.float64)
        np.add.at(sums, codes, X)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        self.centroids_ = (sums / np.where(norms > 0, norms, 1.0)).astype(np.float32)
        self._empty = norms[:, 0] == 0

    def similarities(self, X: np.ndarray) -> np.ndarray:
        """Cosine similarity of each embedding to each centroid: float32 array of shape (n, n_classes).

        -inf for classes that had no training embeddings.
        """
        similarities = _normalise(X) @ self.centroids_.T
        similarities[:, self._empty] = -np.inf
        return similarities

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Softmax of centroid similarities / temperature, float32 array of shape (n, n_classes)."""
        return softmax(self.similarities(X) / self.temperature)


class SoftmaxClassifier(_EmbeddingClassifier):
    """The embedder's softmax layer applied to embeddings: ``softmax(logit_scale * e @ W + b)``.

    Parameters
    ----------
    kernel : float32 ndarray of shape (d, n_classes)
        Weights ``W`` of the head's ``probabilities`` layer.
    bias : float32 ndarray of shape (n_classes,)
    logit_scale : float
    classes : sequence
        Class of each column.

    ``fit`` is not needed (the layer is already trained); :meth:`from_embedder` builds one.
    """

    def __init__(self, *, kernel: np.ndarray, bias: np.ndarray, logit_scale: float, classes: Sequence):
        super().__init__(classes=classes)
        self.kernel, self.bias, self.logit_scale = kernel, bias, logit_scale
        self.classes_ = np.asarray(classes)

    @classmethod
    def from_embedder(cls, embedder) -> SoftmaxClassifier:
        """The softmax layer of a trained :class:`~lookalike.embedder.Embedder`."""
        kernel, bias = embedder.head.get_layer("probabilities").get_weights()
        return cls(kernel=kernel, bias=bias, logit_scale=embedder.config.logit_scale, classes=embedder.class_names)

    def _fit(self, X, codes):
        pass

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Softmax probabilities, float32 array of shape (n, n_classes)."""
        return softmax(self.logit_scale * (np.asarray(X, dtype=np.float32) @ self.kernel) + self.bias)
