"""Evaluating a bundle's three classifiers on held-out images: accuracy, macro-F1, per-class report, confusion."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

from lookalike.data import Dataset, DecodeFailure

from .bundle import Bundle, BundleError
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
    """

    source: str
    class_names: tuple[str, ...]
    n_reference: int
    y_true: np.ndarray
    scores: dict[str, ClassifierScores]
    failures: tuple[DecodeFailure, ...] = ()

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


def evaluate(bundle: Bundle, dataset: Dataset | None = None, *, knn_k: int = 10, progress: bool = False) -> Evaluation:
    """Score the softmax head, the k-NN vote and the nearest centroid on held-out images.

    k-NN and centroids are fitted on the embeddings of the bundle's ``train`` images only.

    Parameters
    ----------
    bundle : Bundle
    dataset : Dataset, optional
        Images to evaluate on instead of the bundle's held-out (``val`` and ``test``) images: its
        non-``train`` records when it has any, otherwise all of them; images of classes the bundle does
        not know are skipped with a warning. They should not be images the bundle was trained on.
    knn_k : int
        Neighbours in the k-NN vote.
    progress : bool
        Show a progress bar while embedding ``dataset``.

    Raises
    ------
    BundleError
        The bundle has no ``train`` images, or there is nothing to evaluate on.
    """
    class_names = bundle.class_names
    position = {name: i for i, name in enumerate(class_names)}
    stored = bundle.index.embeddings()
    labels = bundle.index.labels
    splits = np.array([r.split for r in bundle.index.records])
    is_train, is_held_out = splits == "train", np.isin(splits, ("val", "test"))
    if not is_train.any():
        raise BundleError("the bundle has no train images to fit the k-NN and centroid classifiers on")
    failures: tuple[DecodeFailure, ...] = ()
    if dataset is None:
        source = "held-out split of the bundle"
        queries, y_true = stored[is_held_out], labels[is_held_out]
    else:
        source = str(dataset.root)
        held_out = [r for r in dataset.records if r.split != "train"] or list(dataset.records)
        unknown = sorted({r.label for r in held_out} - set(position))
        if unknown:
            logger.warning("skipping images of classes the bundle does not know: %s", ", ".join(unknown))
        held_out = [r for r in held_out if r.label in position]
        embedded = bundle.embedder.embed_files([r.path for r in held_out], progress=progress)
        queries, failures = embedded.embeddings, embedded.failures
        y_true = np.array([position[held_out[i].label] for i in embedded.indices], dtype=np.int64)
    if len(queries) == 0:
        raise BundleError(f"nothing to evaluate on: {source} has no images")
    reference, reference_labels = stored[is_train], labels[is_train]
    codes = np.arange(len(class_names))
    classifiers = {
        "softmax": SoftmaxClassifier.from_embedder(bundle.embedder),
        "knn": KNNClassifier(k=knn_k, classes=codes).fit(reference, reference_labels),
        "centroid": NearestCentroidClassifier(classes=codes).fit(reference, reference_labels),
    }
    present = np.unique(y_true)
    scores = {}
    for name in CLASSIFIERS:
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
    return Evaluation(source, tuple(class_names), int(is_train.sum()), y_true, scores, failures)
