"""Evaluating a bundle's three classifiers on its held-out images or on another labelled folder."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from ..data import Dataset, DecodeFailure, class_codes
from ..embedder.runtime import RuntimeUnavailable
from ..index.classifiers import SoftmaxClassifier
from ..index.evaluation import Evaluation, score_classifiers
from .bundle import Bundle
from .health import bundle_duplicates
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


def leaky_splits(bundle: Bundle, *, progress: bool = False) -> tuple[int, str | None]:
    """Count the duplicate pairs across the bundle's splits, and word the warning they call for.

    The pairs are those of :func:`lookalike.bundle.health.bundle_duplicates` (exact and near duplicates on the
    cached frozen ImageNet features, its default threshold) flagged ``cross_split``: an image in ``train`` with a
    copy in ``val`` or ``test`` inflates every held-out score.

    Returns
    -------
    (int, str or None)
        The number of cross-split pairs, and a warning naming it and the command that lists them (None when
        there are none). The warning names no path, so that the app can show it.
    """
    report = bundle_duplicates(bundle, progress=progress)
    leaky = np.flatnonzero(report.cross_split)
    if len(leaky) == 0:
        return 0, None
    rows = np.unique(report.pairs[leaky])
    held_out = sum(report.splits[r] in ("val", "test") for r in rows)
    return len(leaky), (
        f"leaky splits: {len(leaky)} duplicate pairs cross the train/val/test splits ({held_out} held-out images "
        "have a copy or near copy in another split), so the held-out scores are inflated; "
        "`lookalike duplicates BUNDLE` lists them"
    )


def evaluate(
    bundle: Bundle,
    dataset: Dataset | None = None,
    *,
    knn_k: int = 10,
    progress: bool = False,
    check_leaks: bool = True,
) -> Evaluation:
    """Score the softmax head, the k-NN vote and the nearest centroid on held-out images.

    k-NN and centroids are fitted on the embeddings of the bundle's ``train`` images only. On the bundle's own
    held-out images, duplicates across its splits are looked for (:func:`leaky_splits`) and reported in the
    result's ``leaky_pairs`` and ``warnings``.

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
        Show a progress bar while embedding ``dataset`` (or computing the features of the leak check).
    check_leaks : bool
        Look for leaky splits (the first time, this computes the frozen ImageNet features of every indexed
        image, which are then cached in the bundle's ``audit/``).

    Returns
    -------
    Evaluation
        With ``leaky_pairs`` (None when not checked, or when evaluating on ``dataset``) and ``warnings``.

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
    evaluation = score_classifiers(
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
    if dataset is None and check_leaks:
        count, warning = leaky_splits(bundle, progress=progress)
        evaluation = dataclasses.replace(evaluation, leaky_pairs=count, warnings=(warning,) if warning else ())
    return evaluation
