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
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .centroids import ClassCentroids
from .neighbors import knn_vote


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of logits of shape (n, c), float32."""
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)


class _EmbeddingClassifier(ClassifierMixin, BaseEstimator):
    """Shared ``fit`` validation and ``predict``; subclasses implement ``_fit`` and ``_scores``.

    ``classes`` (optional) fixes the column order of ``predict_proba``; by default it is the sorted unique
    labels seen by ``fit``, as in scikit-learn.
    """

    def fit(self, X, y):
        """Learn from embeddings ``X`` of shape (n, d) and labels ``y`` of shape (n,).

        ``X`` need not be normalised: every row is L2-normalised first.

        Raises
        ------
        ValueError
            ``X`` and ``y`` differ in length, contain NaN or infinity, or a label is not in ``classes``.
        """
        X, y = validate_data(self, X, y, dtype=np.float32)
        check_classification_targets(y)
        self.classes_ = np.asarray(self.classes) if self.classes is not None else np.unique(y)
        lookup = {c: i for i, c in enumerate(self.classes_.tolist())}
        unknown = sorted({str(v) for v in y.tolist() if v not in lookup})
        if unknown:
            raise ValueError(f"labels not in classes: {', '.join(unknown[:5])}")
        self._fit(_normalise(X), np.array([lookup[v] for v in y.tolist()], dtype=np.int64))
        return self

    def _validated(self, X) -> np.ndarray:
        check_is_fitted(self)
        return _normalise(validate_data(self, X, dtype=np.float32, reset=False))

    def _fit(self, X: np.ndarray, codes: np.ndarray) -> None:
        raise NotImplementedError

    def predict(self, X) -> np.ndarray:
        """Most probable class of each embedding: array of shape (n,) with values from ``classes_``."""
        probabilities = self.predict_proba(X)
        return self.classes_[np.argmax(probabilities, axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # Cosine similarity ignores vector length: on raw, centred 2-D blobs (scikit-learn's accuracy check)
        # it cannot reach the score a Euclidean classifier does, and it is not meant to.
        tags.classifier_tags.poor_score = True
        return tags


class KNNClassifier(_EmbeddingClassifier):
    """Similarity-weighted k-nearest-neighbor vote (see :func:`lookalike.index.knn_vote`).

    Parameters
    ----------
    k : int
        Neighbors that vote.
    weighted : bool
        Weight votes by cosine similarity (clipped at 0) instead of counting them.
    classes : sequence, optional
        Column order of ``predict_proba``; default the sorted unique labels seen by ``fit``.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    index_ : faiss.IndexFlatIP
        Exact inner-product index of the L2-normalised training embeddings.
    labels_ : int64 ndarray of shape (n_train,)
        Position in ``classes_`` of each training embedding.
    """

    def __init__(self, *, k: int = 10, weighted: bool = True, classes: Sequence | None = None):
        self.k = k
        self.weighted = weighted
        self.classes = classes

    def _fit(self, X, codes):
        self.index_ = faiss.IndexFlatIP(X.shape[1])
        self.index_.add(X)
        self.labels_ = codes

    def predict_proba(self, X) -> np.ndarray:
        """Vote shares, float32 array of shape (n, n_classes); rows sum to 1."""
        X = self._validated(X)
        scores, ids = self.index_.search(X, min(self.k, self.index_.ntotal))
        votes = knn_vote(self.labels_[ids], scores, len(self.classes_), weighted=self.weighted)
        empty = votes.sum(axis=1) == 0  # every neighbor had similarity <= 0: count votes instead
        if empty.any():
            votes[empty] = knn_vote(self.labels_[ids[empty]], scores[empty], len(self.classes_), weighted=False)
        return votes


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
    classes_ : ndarray of shape (n_classes,)
    centroids_ : float32 ndarray of shape (n_classes, d)
        L2-normalised class means.
    empty_ : bool ndarray of shape (n_classes,)
        Classes that had no training embedding.
    """

    def __init__(self, *, temperature: float = 0.05, classes: Sequence | None = None):
        self.temperature = temperature
        self.classes = classes

    def _fit(self, X, codes):
        fitted = ClassCentroids.fit(X, codes, len(self.classes_))
        self.centroids_, self.empty_ = fitted.centroids, fitted.empty

    def similarities(self, X) -> np.ndarray:
        """Cosine similarity of each embedding to each centroid: float32 array of shape (n, n_classes).

        -inf for classes that had no training embeddings.
        """
        X = self._validated(X)  # first: it raises NotFittedError before a fitted attribute is read
        return ClassCentroids(self.centroids_, self.empty_).similarities(X)

    def predict_proba(self, X) -> np.ndarray:
        """Softmax of centroid similarities / temperature, float32 array of shape (n, n_classes)."""
        return softmax(self.similarities(X) / self.temperature)


class SoftmaxClassifier(ClassifierMixin, BaseEstimator):
    """The embedder's softmax layer applied to embeddings: ``softmax(logit_scale * e @ W + b)``.

    Already trained: it is built from the layer's weights (:meth:`lookalike.embedder.Embedder.softmax_weights`)
    and has no ``fit``.

    Parameters
    ----------
    kernel : float32 ndarray of shape (d, n_classes)
        Weights ``W`` of the head's softmax layer.
    bias : float32 ndarray of shape (n_classes,)
    logit_scale : float
    classes : sequence
        Class of each column.
    """

    def __init__(self, *, kernel: np.ndarray, bias: np.ndarray, logit_scale: float, classes: Sequence):
        self.kernel, self.bias, self.logit_scale, self.classes = kernel, bias, logit_scale, classes
        self.classes_ = np.asarray(classes)

    def predict_proba(self, X) -> np.ndarray:
        """Softmax probabilities, float32 array of shape (n, n_classes)."""
        return softmax(self.logit_scale * (np.asarray(X, dtype=np.float32) @ self.kernel) + self.bias)

    def predict(self, X) -> np.ndarray:
        """Most probable class of each embedding, shape (n,)."""
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]
