"""Evaluating a bundle's three classifiers on its held-out images or on another labelled folder."""

from __future__ import annotations

import logging

import numpy as np

from ..data import Dataset, DecodeFailure, class_codes
from ..embedder.runtime import RuntimeUnavailable
from ..index.classifiers import SoftmaxClassifier
from ..index.evaluation import Evaluation, score_classifiers
from .bundle import Bundle
from .storage import BundleError

logger = logging.getLogger(__name__)


def softmax_classifier(bundle: Bundle) -> SoftmaxClassifier:
    """The bundle embedder's softmax layer as a classifier over embeddings (from the Keras model for a bundle
    written before its weights were stored beside the runtime)."""
    try:
        kernel, bias = bundle.embedder.softmax_weights()
    except RuntimeUnavailable:
        kernel, bias = bundle.keras_embedder.softmax_weights()
    return SoftmaxClassifier(
        kernel=kernel, bias=bias, logit_scale=bundle.embedder.config.logit_scale, classes=bundle.embedder.class_names
    )


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
        Neighbors in the k-NN vote.
    progress : bool
        Show a progress bar while embedding ``dataset``.

    Raises
    ------
    BundleError
        The bundle has no ``train`` images, or there is nothing to evaluate on.
    """
    class_names = bundle.class_names
    stored, labels = bundle.index.vectors, bundle.index.labels
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
        unknown = sorted({r.label for r in held_out} - set(class_names))
        if unknown:
            logger.warning("skipping images of classes the bundle does not know: %s", ", ".join(unknown))
        held_out = [r for r in held_out if r.label in class_names]
        embedded = bundle.embedder.embed_files([r.path for r in held_out], progress=progress)
        queries, failures = embedded.embeddings, embedded.failures
        y_true = class_codes([held_out[i].label for i in embedded.indices], class_names)
    if len(queries) == 0:
        raise BundleError(f"nothing to evaluate on: {source} has no images")
    return score_classifiers(
        stored[is_train],
        labels[is_train],
        queries,
        y_true,
        tuple(class_names),
        softmax=softmax_classifier(bundle),
        knn_k=knn_k,
        source=source,
        failures=failures,
    )
