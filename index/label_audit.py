"""Auditing a labelled image set: suspected label errors and outliers, from distances to class centroids.

The audit works on **label-independent features**: the pooled output of the frozen ImageNet MobileNetV2 for
every indexed image (:func:`lookalike.bundle.imagenet_features`, cached in the bundle's ``audit/``), not the
bundle's trained embeddings. An embedder trained on noisy labels learns them (training accuracy 0.999 with 5 % of the labels
flipped on wesnoth_units) and pulls a mislabelled image towards its wrong class, hiding it; measured on that
benchmark, the audit found 77 of 134 flips from the trained embeddings and 126 from the frozen features.

Every image is judged by classifiers that did not see it (out-of-fold):

- **k-NN**: leave-one-out; its neighbors exclude itself;
- **centroid**: leave-one-out; its own class centroid is recomputed without it;
- **softmax**: ``folds``-fold cross-validation of the head's last layer, a multinomial logistic regression
  on the embeddings: scikit-learn's ``cross_val_predict(..., method="predict_proba")``.

Per image the audit reports the cosine distance to its own (leave-one-out) class centroid and to the
nearest other class centroid, their margin, the three out-of-fold predictions, and a **suspicion score**:
the mean over the three classifiers of the out-of-fold probability that the label is wrong, in [0, 1].
An **outlier** is an image whose distance to the nearest centroid of any class lies above Tukey's upper
fence (third quartile + 1.5 interquartile ranges) of that distance over the whole set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from .classifiers import softmax
from .neighbors import knn_vote
from .outliers import centroid_similarities
from .search import EmbeddingIndex


@dataclass(frozen=True)
class Audit:
    """Out-of-fold judgements of every indexed image; arrays are indexed by row (position in the audited index's
    ``records``), not by image id.

    Attributes
    ----------
    class_names : tuple of str
    labels : int64 ndarray of shape (n,)
        Given class of each image.
    own_distance : float32 ndarray of shape (n,)
        Cosine distance (1 - cosine similarity) to its own class centroid, computed without the image.
    other_distance : float32 ndarray of shape (n,)
        Cosine distance to the nearest centroid of another class.
    nearest_other : int64 ndarray of shape (n,)
        That other class.
    margin : float32 ndarray of shape (n,)
        ``other_distance - own_distance``; negative when another class's centroid is nearer.
    probabilities : dict of str to float32 ndarray of shape (n, n_classes)
        Out-of-fold class probabilities of ``"softmax"``, ``"knn"`` and ``"centroid"``.
    suspicion : float32 ndarray of shape (n,)
        Mean out-of-fold probability that the label is wrong, in [0, 1].
    outlier : bool ndarray of shape (n,)
        Far from every class centroid (see the module docstring).
    outlier_threshold : float
        The distance above which an image is an outlier.
    """

    class_names: tuple[str, ...]
    labels: np.ndarray
    own_distance: np.ndarray
    other_distance: np.ndarray
    nearest_other: np.ndarray
    margin: np.ndarray
    probabilities: dict[str, np.ndarray]
    suspicion: np.ndarray
    outlier: np.ndarray
    outlier_threshold: float

    def predicted(self, classifier: str) -> np.ndarray:
        """Out-of-fold predicted class of each image (int64, shape (n,)) by ``classifier``."""
        return np.argmax(self.probabilities[classifier], axis=1)

    def suggested(self) -> np.ndarray:
        """Suggested class of each image: the largest mean out-of-fold probability of the three classifiers (the
        same mean as :attr:`suspicion`); int64 ndarray of shape (n,). Equal to the label when the label wins."""
        return np.argmax(np.mean(list(self.probabilities.values()), axis=0), axis=1).astype(np.int64)

    def suspects(self, min_suspicion: float = 0.5) -> np.ndarray:
        """Rows whose suggested class differs from their label with a suspicion of at least ``min_suspicion``
        (default: more likely wrong than right), most suspicious first: int64 ndarray."""
        order = self.ranking()
        keep = (self.suspicion[order] >= min_suspicion) & (self.suggested()[order] != self.labels[order])
        return order[keep]

    def ranking(self) -> np.ndarray:
        """Rows, most suspicious first (ties broken by the smaller margin): int64 ndarray of shape (n,)."""
        return np.lexsort((self.margin, -self.suspicion))

    def to_frame(self, index: EmbeddingIndex):
        """The audit as a table, one row per image, most suspicious first.

        Parameters
        ----------
        index : EmbeddingIndex
            The audited index (its ids, paths and labels name the rows).

        Returns
        -------
        pandas.DataFrame
            Columns ``id, path, label, suggested, suspicion, margin, own_distance, other_distance, nearest_other,
            knn_predicted, softmax_predicted, centroid_predicted, outlier``.
        """
        import pandas as pd

        order, names = self.ranking(), np.asarray(self.class_names, dtype=object)
        return pd.DataFrame(
            {
                "id": index.ids[order],
                "path": [str(index.records[i].path) for i in order],
                "label": names[self.labels[order]],
                "suggested": names[self.suggested()[order]],
                "suspicion": self.suspicion[order],
                "margin": self.margin[order],
                "own_distance": self.own_distance[order],
                "other_distance": self.other_distance[order],
                "nearest_other": names[self.nearest_other[order]],
                **{f"{c}_predicted": names[self.predicted(c)[order]] for c in ("knn", "softmax", "centroid")},
                "outlier": self.outlier[order],
            }
        )

    def confusion(self, classifier: str = "knn") -> np.ndarray:
        """Out-of-fold confusion counts of ``classifier`` (scikit-learn's ``confusion_matrix``): int64 ndarray
        of shape (n_classes, n_classes), rows the given labels, columns the predictions."""
        from sklearn.metrics import confusion_matrix

        return confusion_matrix(self.labels, self.predicted(classifier), labels=np.arange(len(self.class_names)))

    def class_spread(self) -> dict[str, float]:
        """Mean distance of each class's images to their class centroid, loosest class first."""
        spread = {
            self.class_names[c]: float(self.own_distance[self.labels == c].mean()) for c in np.unique(self.labels)
        }
        return dict(sorted(spread.items(), key=lambda item: -item[1]))


def _leave_one_out_knn(index: EmbeddingIndex, embeddings: np.ndarray, k: int) -> np.ndarray:
    """k-NN vote of each image's k nearest other images."""
    found = index.search(embeddings, min(k + 1, len(index)))
    not_self = found.rows != np.arange(len(embeddings))[:, None]
    # Keep the first k neighbors that are not the image itself (a duplicate image may outrank it).
    order = np.argsort(~not_self, axis=1, kind="stable")[:, :k]
    labels = np.take_along_axis(np.where(not_self, found.labels, -1), order, axis=1)
    scores = np.take_along_axis(found.scores, order, axis=1)
    return knn_vote(labels, scores, len(index.class_names))


def _cross_validated_softmax(
    embeddings: np.ndarray, labels: np.ndarray, n_classes: int, folds: int, seed: int
) -> np.ndarray:
    """Out-of-fold probabilities of a multinomial logistic regression on the embeddings, shape (n, n_classes).

    A class absent from a fold's training part gets probability 0 in that fold (scikit-learn's behaviour).
    """
    present = np.unique(labels)
    splitter = StratifiedKFold(n_splits=max(2, min(folds, len(labels))), shuffle=True, random_state=seed)
    model = LogisticRegression(C=10.0, max_iter=1000)
    probabilities = np.zeros((len(labels), n_classes), dtype=np.float32)
    probabilities[:, present] = cross_val_predict(model, embeddings, labels, cv=splitter, method="predict_proba")
    return probabilities


def audit(index: EmbeddingIndex, *, k: int = 10, folds: int = 5, temperature: float = 0.05, seed: int = 0) -> Audit:
    """Judge every indexed image out of fold and score how suspicious its label is.

    Parameters
    ----------
    index : EmbeddingIndex
        With at least two classes; its stored embeddings and labels are audited.
    k : int
        Neighbors in the leave-one-out k-NN vote.
    folds : int
        Cross-validation folds of the softmax layer.
    temperature : float
        Centroid probabilities are the softmax of centroid similarities / temperature.
    seed : int
        Fold assignment.

    Returns
    -------
    Audit
    """
    embeddings, labels = index.vectors, index.labels
    n_classes = len(index.class_names)
    similarities = centroid_similarities(embeddings, labels, n_classes)
    rows = np.arange(len(labels))
    own_distance = 1.0 - similarities[rows, labels]
    others = similarities.copy()
    others[rows, labels] = -np.inf
    nearest_other = np.argmax(others, axis=1)
    other_distance = 1.0 - others[rows, nearest_other]
    probabilities = {
        "softmax": _cross_validated_softmax(embeddings, labels, n_classes, folds, seed),
        "knn": _leave_one_out_knn(index, embeddings, k),
        "centroid": softmax(similarities / temperature),
    }
    suspicion = np.mean([1.0 - p[rows, labels] for p in probabilities.values()], axis=0).astype(np.float32)
    nearest_any = np.minimum(own_distance, other_distance)
    q1, q3 = np.percentile(nearest_any, [25, 75])
    threshold = float(q3 + 1.5 * (q3 - q1))
    return Audit(
        class_names=tuple(index.class_names),
        labels=labels,
        own_distance=own_distance.astype(np.float32),
        other_distance=other_distance.astype(np.float32),
        nearest_other=nearest_other.astype(np.int64),
        margin=(other_distance - own_distance).astype(np.float32),
        probabilities=probabilities,
        suspicion=suspicion,
        outlier=nearest_any > threshold,
        outlier_threshold=threshold,
    )
