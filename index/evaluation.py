"""Scoring classifiers over embeddings on held-out queries: accuracy, macro-F1, per-class report, confusion.

Works on arrays; :func:`lookalike.bundle.evaluate` evaluates a bundle with it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

from ..data import DecodeFailure
from .classifiers import KNNClassifier, NearestCentroidClassifier, SoftmaxClassifier

logger = logging.getLogger(__name__)

#: The classifiers evaluated, in report order.
CLASSIFIERS = ("softmax", "knn", "centroid")


@dataclass(frozen=True)
class ClassifierScores:
    """How one classifier did.

    Attributes
    ----------
    accuracy : float
        Top-1 accuracy.
    macro_f1 : float
        Unweighted mean F1 over the classes present among the queries.
    per_class : dict
        scikit-learn's ``classification_report(output_dict=True)``: precision, recall, f1-score, support.
    confusion : int64 ndarray of shape (n_classes, n_classes)
        Counts; rows are true classes, columns predicted, in ``class_names`` order.
    predictions : int64 ndarray of shape (n_queries,)
        Predicted class index of each query.
    """

    accuracy: float
    macro_f1: float
    per_class: dict
    confusion: np.ndarray
    predictions: np.ndarray


@dataclass(frozen=True)
class Evaluation:
    """Scores of every classifier on one set of queries.

    Attributes
    ----------
    source : str
        What the queries were: ``"held-out split of BUNDLE"`` or a dataset folder.
    class_names : tuple of str
    n_reference : int
        Training embeddings the k-NN and centroid classifiers were fitted on.
    y_true : int64 ndarray of shape (n_queries,)
    scores : dict of str to ClassifierScores
        Keyed by ``"softmax"``, ``"knn"``, ``"centroid"``.
    failures : tuple of DecodeFailure
        Files of the evaluated folder that could not be read.
    leaky_pairs : int or None
        Duplicate pairs whose two images are in different splits (a leaky split inflates the scores); None
        when not checked.
    warnings : tuple of str
        What the reader of the scores should know, e.g. about leaky splits (shown by the CLI and the app).
    """

    source: str
    class_names: tuple[str, ...]
    n_reference: int
    y_true: np.ndarray
    scores: dict[str, ClassifierScores]
    failures: tuple[DecodeFailure, ...] = ()
    leaky_pairs: int | None = None
    warnings: tuple[str, ...] = ()

    def to_frame(self):
        """The metrics table: pandas DataFrame with columns ``classifier, accuracy, macro_f1``, one row per
        classifier in :data:`CLASSIFIERS` order."""
        import pandas as pd

        rows = [(name, s.accuracy, s.macro_f1) for name, s in self.scores.items()]
        return pd.DataFrame(rows, columns=["classifier", "accuracy", "macro_f1"])

    def summary(self) -> dict[str, dict[str, float]]:
        """``{classifier: {"accuracy": a, "macro_f1": f}}``."""
        return {name: {"accuracy": s.accuracy, "macro_f1": s.macro_f1} for name, s in self.scores.items()}

    def to_dict(self) -> dict:
        """JSON-serialisable form (confusion matrices as nested lists of counts)."""
        return {
            "source": self.source,
            "class_names": list(self.class_names),
            "n_queries": int(len(self.y_true)),
            "n_reference": self.n_reference,
            "summary": self.summary(),
            "leaky_pairs": self.leaky_pairs,
            "warnings": list(self.warnings),
            "classifiers": {
                name: {
                    "accuracy": s.accuracy,
                    "macro_f1": s.macro_f1,
                    "per_class": s.per_class,
                    "confusion": s.confusion.tolist(),
                }
                for name, s in self.scores.items()
            },
        }


def score_classifiers(
    reference: np.ndarray,
    reference_labels: np.ndarray,
    queries: np.ndarray,
    y_true: np.ndarray,
    class_names: tuple[str, ...],
    *,
    softmax: SoftmaxClassifier | None = None,
    knn_k: int = 10,
    source: str = "queries",
    failures: tuple[DecodeFailure, ...] = (),
) -> Evaluation:
    """Score the softmax head, the k-NN vote and the nearest centroid on labelled query embeddings.

    Parameters
    ----------
    reference : float32 ndarray of shape (n_reference, d), L2-normalised
        Embeddings the k-NN vote and the centroids are fitted on.
    reference_labels : int64 ndarray of shape (n_reference,)
        Their class indices (positions in ``class_names``).
    queries : float32 ndarray of shape (n_queries, d), L2-normalised
    y_true : int64 ndarray of shape (n_queries,)
    class_names : tuple of str
    softmax : SoftmaxClassifier, optional
        The embedder's softmax layer; without it only ``"knn"`` and ``"centroid"`` are scored.
    knn_k : int
        Neighbors in the k-NN vote.
    source, failures :
        Recorded in the result.

    Raises
    ------
    ValueError
        No reference embeddings or no queries.
    """
    if len(reference) == 0:
        raise ValueError("no reference embeddings to fit the k-NN and centroid classifiers on")
    if len(queries) == 0:
        raise ValueError(f"nothing to evaluate on: {source} has no images")
    codes = np.arange(len(class_names))
    classifiers = {
        "softmax": softmax,
        "knn": KNNClassifier(k=knn_k, classes=codes).fit(reference, reference_labels),
        "centroid": NearestCentroidClassifier(classes=codes).fit(reference, reference_labels),
    }
    present = np.unique(y_true)
    scores = {}
    for name in CLASSIFIERS:
        if classifiers[name] is None:
            continue
        predictions = np.argmax(classifiers[name].predict_proba(queries), axis=1)
        scores[name] = ClassifierScores(
            accuracy=float(accuracy_score(y_true, predictions)),
            macro_f1=float(f1_score(y_true, predictions, labels=present, average="macro", zero_division=0)),
            per_class=classification_report(
                y_true,
                predictions,
                labels=present,
                target_names=[class_names[i] for i in present],
                output_dict=True,
                zero_division=0,
            ),
            confusion=confusion_matrix(y_true, predictions, labels=codes),
            predictions=predictions,
        )
    return Evaluation(source, tuple(class_names), len(reference), y_true, scores, failures)
