"""Training an embedder: the head on cached backbone features, then optionally the top backbone blocks.

With the pre-trained backbone frozen below some layer, that layer's output for a given input never
changes, so the backbone runs up to it once per image (and once per cached augmented view) and training
continues from the stored activations:

1. **head**: the layers above the cut are frozen too, so they also run once; the head trains on pooled
   features, an epoch costing milliseconds;
2. **fine-tune** (``fine_tune_blocks > 0``): the top blocks (batch-norm kept in inference mode) and the
   head train together from the cached activations at the cut, at a low learning rate.

This is the same computation as training the whole classifier end to end with the lower backbone frozen,
except that augmentation draws from a fixed set of ``augment_views`` random views per image instead of a
new one every epoch. The ``small-cnn`` baseline has no pre-trained part and trains end to end on pixels.
"""

from __future__ import annotations

import logging
import re
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ._keras import keras
import numpy as np
from sklearn.utils.class_weight import compute_class_weight
from tqdm.keras import TqdmCallback

from ..data import ImageBatch, ImageRecord, class_codes, iter_image_batches
from ..index.open_set import MIN_HELD_OUT, centroid_leave_one_out
from .config import EmbedderConfig
from .errors import TrainingError
from .inference import Embeddings
from .model import Embedder

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingResult:
    """A trained embedder and the embeddings of the images it was given.

    Attributes
    ----------
    embedder : Embedder
        Trained; where early stopping ended a phase, that phase's best weights were restored.
    history : dict of str to list of float
        Per-epoch ``loss`` and ``accuracy`` (and ``val_loss``, ``val_accuracy`` when there was a ``val``
        split), the phases one after the other.
    phase_epochs : dict of str to int
        Epochs run by each phase (``"head"``, ``"fine_tune"`` or ``"end_to_end"``).
    val_accuracy : float or None
        Top-1 accuracy of the softmax head on the ``val`` records; None when there were none.
    embedded : Embeddings
        Embeddings of all records by the trained embedder; ``embedded.indices`` are positions in the
        records given to :func:`train`, and unreadable records are in ``embedded.failures``.
    calibration_scores : float32 ndarray of shape (m,) or None
        Match scores of training images as unseen queries (:func:`cross_fit_scores`), for the "no close match"
        threshold when there are too few held-out images; None when not computed (enough ``val`` or ``test``
        images, fine-tuning, or the scratch CNN).
    """

    embedder: Embedder
    history: dict[str, list[float]]
    phase_epochs: dict[str, int]
    val_accuracy: float | None
    embedded: Embeddings
    calibration_scores: np.ndarray | None = None


def cut_layer(backbone: keras.Model, blocks: int) -> str:
    """Name of the backbone layer below its top ``blocks`` inverted-residual blocks (the output of the block
    under them), read from the model: MobileNetV2's blocks are the layers named ``block_<i>_*``.

    Raises
    ------
    ValueError
        ``blocks`` is not in [1, number of blocks - 1].
    """
    last_layer: dict[int, str] = {}
    for layer in backbone.layers:
        match = re.match(r"block_(\d+)_", layer.name)
        if match:
            last_layer[int(match.group(1))] = layer.name
    n_blocks = max(last_layer, default=0)
    if not 1 <= blocks < n_blocks:
        raise ValueError(f"blocks must be in [1, {n_blocks - 1}] ({backbone.name} has {n_blocks} blocks); got {blocks}")
    return last_layer[n_blocks - blocks]


def _fit(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    validation: tuple[np.ndarray, np.ndarray] | None,
    *,
    epochs: int,
    learning_rate: float,
    config: EmbedderConfig,
    phase: str,
    progress: bool,
    log_dir: Path | None,
    callbacks: Sequence[keras.callbacks.Callback],
) -> dict[str, list[float]]:
    """Adam with cosine decay, balanced class weights, early stopping on ``val`` loss; returns the history.

    Early stopping watches the validation loss, not its accuracy: on small validation sets the accuracy
    reaches 1.0 within an epoch or two and stays there, so "the best epoch" would be the first one that got
    there, and its weights would be restored (measured in ``benchmarks/generalisation``).
    """
    steps = max(1, int(np.ceil(len(x) / config.batch_size)) * epochs)
    model.compile(
        optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(learning_rate, steps)),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    callbacks = list(callbacks)
    if validation is not None:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss", mode="min", patience=config.patience, restore_best_weights=True
            )
        )
    if progress:
        callbacks.append(TqdmCallback(verbose=0, desc=phase.replace("_", " ")))
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        callbacks.append(keras.callbacks.CSVLogger(str(log_dir / f"{phase}.csv")))
        callbacks.append(keras.callbacks.TensorBoard(str(log_dir / "tensorboard" / phase), write_graph=False))
    class_weight = None
    if config.balance_classes:
        present = np.unique(y)
        class_weight = dict(zip(present.tolist(), compute_class_weight("balanced", classes=present, y=y).tolist()))
    fit = model.fit(
        x,
        y,
        validation_data=validation,
        epochs=epochs,
        batch_size=config.batch_size,
        shuffle=True,
        class_weight=class_weight,
        callbacks=callbacks,
        verbose=0,
    )
    return {name: [float(v) for v in values] for name, values in fit.history.items()}


def _merge(*histories: dict[str, list[float]]) -> dict[str, list[float]]:
    merged: dict[str, list[float]] = {}
    for history in histories:
        for name, values in history.items():
            merged.setdefault(name, []).extend(values)
    return merged


def train(
    records: Sequence[ImageRecord],
    class_names: Sequence[str],
    *,
    config: EmbedderConfig = EmbedderConfig(),
    weights: str | os.PathLike | None = None,
    progress: bool = False,
    log_dir: str | os.PathLike | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> TrainingResult:
    """Train an embedder and embed every record.

    Records whose split is ``"train"`` train the model; ``"val"`` records drive early stopping and the
    reported accuracy; other records (``"test"``) are only embedded, never used in training. Without
    ``val`` records every phase runs its full number of epochs.

    Parameters
    ----------
    records : sequence of ImageRecord
        Labels must be in ``class_names``.
    class_names : sequence of str
        Column order of the probabilities.
    config : EmbedderConfig
    weights : str or path-like, optional
        Backbone weights, see :func:`lookalike.embedder.resolve_weights`.
    progress : bool
        Show progress bars.
    log_dir : path-like, optional
        Write per-epoch logs here: ``<phase>.csv`` and TensorBoard event files under ``tensorboard/``.
    callbacks : sequence of keras.callbacks.Callback
        Extra callbacks for every phase (e.g. to follow training live).

    Raises
    ------
    TrainingError
        No training image could be read.
    BackboneWeightsError
        The backbone weights cannot be found.
    """
    labels = class_codes([r.label for r in records], class_names)
    splits = np.array([r.split for r in records])
    calibration_scores = None
    train_at, rest_at = np.flatnonzero(splits == "train"), np.flatnonzero(splits != "train")
    log_dir = Path(log_dir) if log_dir is not None else None
    embedder = Embedder.build(config, class_names, weights=weights)
    fit_options = dict(config=config, progress=progress, log_dir=log_dir, callbacks=callbacks)

    layer = cut_layer(embedder.backbone, config.fine_tune_blocks) if config.fine_tunes else None
    train_paths, rest_paths = [records[i].path for i in train_at], [records[i].path for i in rest_at]
    if not config.spec.pretrained:  # no frozen part: train on pixels, fresh augmentation every epoch
        train_set, rest_set = _decode_all(embedder, train_paths), _decode_all(embedder, rest_paths)
        train_x, rest_x, train_views = train_set.images, rest_set.images, []
    else:
        train_set = embedder.encode_files(
            train_paths, layer=layer, augment_views=config.augment_views, progress=progress
        )
        rest_set = embedder.encode_files(rest_paths, layer=layer, progress=progress)
        train_x, rest_x, train_views = train_set.features, rest_set.features, list(train_set.views)
    if len(train_set.indices) == 0:
        raise TrainingError(f"none of the {len(train_at)} training images could be read")
    train_labels = labels[train_at[train_set.indices]]
    rest_labels = labels[rest_at[rest_set.indices]]
    is_val = splits[rest_at[rest_set.indices]] == "val"

    def validation(inputs: np.ndarray):
        return (inputs[is_val], rest_labels[is_val]) if is_val.any() else None

    x = np.concatenate([train_x, *train_views])
    y = np.tile(train_labels, 1 + len(train_views))
    if config.backbone == "small-cnn":
        history = _fit(
            embedder.classifier,
            x,
            y,
            validation(rest_x),
            epochs=config.epochs,
            learning_rate=config.learning_rate,
            phase="end_to_end",
            **fit_options,
        )
        phase_epochs = {"end_to_end": len(history["loss"])}
        features = embedder.encode(np.concatenate([train_x, rest_x]))
    else:
        top = embedder.top(layer) if layer else None

        def pooled(activations: np.ndarray) -> np.ndarray:
            if top is None:
                return activations
            if len(activations) == 0:  # e.g. no val images: Keras' predict fails on empty input
                return np.empty((0, embedder.feature_dim), np.float32)
            return np.asarray(top.predict(activations, batch_size=256, verbose=0), dtype=np.float32)

        x_pooled = pooled(x)
        embedder.fit_pooled(x_pooled[: len(train_x)])  # centre the pooled part on the clean training views
        history = _fit(
            embedder.head,
            x_pooled,
            y,
            validation(pooled(rest_x)),
            epochs=config.epochs,
            learning_rate=config.learning_rate,
            phase="head",
            **fit_options,
        )
        phase_epochs = {"head": len(history["loss"])}
        if top is None and len(rest_labels) < MIN_HELD_OUT:  # too few held-out images to calibrate on
            calibration_scores = cross_fit_scores(
                embedder, x_pooled[: len(train_x)], x_pooled[len(train_x) :], train_labels, **fit_options
            )
        if top is not None:
            for sublayer in top.layers:
                sublayer.trainable = not isinstance(sublayer, keras.layers.BatchNormalization)
            tuned = keras.Model(top.input, embedder.head(top.output), name="fine_tune")
            fine_tune = _fit(
                tuned,
                x,
                y,
                validation(rest_x),
                epochs=config.fine_tune_epochs,
                learning_rate=config.fine_tune_learning_rate,
                phase="fine_tune",
                **fit_options,
            )
            embedder.backbone.trainable = False
            history = _merge(history, fine_tune)
            phase_epochs["fine_tune"] = len(fine_tune["loss"])
        features = pooled(np.concatenate([train_x, rest_x]))
    logger.info("trained %s on %d images", phase_epochs, len(train_set.indices))

    embeddings, probabilities = embedder.head_outputs(features)
    indices = np.concatenate([train_at[train_set.indices], rest_at[rest_set.indices]])
    val_accuracy = None
    if is_val.any():
        val_probabilities = probabilities[len(train_set.indices) :][is_val]
        val_accuracy = float(np.mean(val_probabilities.argmax(axis=1) == rest_labels[is_val]))
    return TrainingResult(
        embedder=embedder,
        history=history,
        phase_epochs=phase_epochs,
        val_accuracy=val_accuracy,
        embedded=Embeddings(indices, embeddings, probabilities, train_set.failures + rest_set.failures),
        calibration_scores=calibration_scores,
    )


def cross_fit_scores(
    embedder: Embedder,
    clean: np.ndarray,
    views: np.ndarray,
    labels: np.ndarray,
    *,
    config: EmbedderConfig,
    progress: bool = False,
    log_dir: Path | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> np.ndarray | None:
    """Match scores of training images as unseen queries, by two-fold cross-fitting of the head.

    The training images of each class are dealt alternately into two folds (seeded order). For each fold a fresh
    head of the same architecture and schedule is trained on the other fold's images and their augmented views;
    every image of the fold, embedded by that head, is scored as a query is: its cosine similarity to the nearest
    class centroid of all the other training images (:func:`lookalike.index.open_set.centroid_leave_one_out`). The
    head never saw the query, as with a real query, which the head trained on all images would flatter (it pulls a
    class's training images together). The "no close match" threshold is a quantile of these scores
    (:func:`lookalike.index.open_set.calibrate`). Cross-fitting as in split conformal prediction and
    cross-validation (Vovk et al., "Algorithmic Learning in a Random World", 2005).

    Parameters
    ----------
    embedder : Embedder
        The trained embedder, whose head is copied (architecture and fixed layers, not its weights).
    clean : float32 ndarray of shape (n, f)
        Pooled backbone features of the training images.
    views : float32 ndarray of shape (v * n, f)
        Their augmented views, view after view (as training stacks them).
    labels : int ndarray of shape (n,)
    config : EmbedderConfig
    progress, log_dir, callbacks
        As for training (``log_dir`` is not used: the folds' heads are not kept).

    Returns
    -------
    float32 ndarray of shape (m,) or None
        Centroid match score per image of the classes that have at least 2 training images; None when no class
        has.
    """
    n = len(clean)
    order = np.random.default_rng(config.seed).permutation(n)
    fold = np.zeros(n, dtype=np.int64)
    for label in np.unique(labels):
        members = order[labels[order] == label]
        fold[members[1::2]] = 1
    usable = np.isin(labels, [c for c in np.unique(labels) if np.unique(fold[labels == c]).size == 2])
    if not usable.any():
        return None
    n_views = len(views) // n if n else 0
    scores = []
    for held in (0, 1):
        fit_on = fold != held
        head = keras.models.clone_model(embedder.head)
        for layer in head.layers:  # fixed layers (the fused features' projection) keep the trained values
            if not layer.trainable and layer.weights:
                layer.set_weights(embedder.head.get_layer(layer.name).get_weights())
        x = np.concatenate([clean[fit_on], *(views[v * n : (v + 1) * n][fit_on] for v in range(n_views))])
        y = np.tile(labels[fit_on], 1 + n_views)
        _fit(
            head,
            x,
            y,
            None,
            epochs=config.epochs,
            learning_rate=config.learning_rate,
            config=config,
            phase=f"open_set_calibration_{held + 1}_of_2",
            progress=progress,
            log_dir=None,
            callbacks=callbacks,
        )
        embed = keras.Model(head.input, head.get_layer("embedding").output)
        embeddings = np.asarray(embed.predict(clean, batch_size=256, verbose=0), dtype=np.float32)
        queries = np.flatnonzero((fold == held) & usable)
        scores.append(centroid_leave_one_out(embeddings, labels, len(embedder.class_names), queries))
    return np.concatenate(scores).astype(np.float32)


def _decode_all(embedder: Embedder, paths: list) -> ImageBatch:
    """All of ``paths`` decoded at the embedder's input size, as one batch (unreadable files in ``failures``)."""
    config = embedder.config
    batches = list(
        iter_image_batches(paths, size=config.image_size, batch_size=config.batch_size, crop=config.crop_to_content)
    )
    size = config.image_size
    return ImageBatch(
        np.concatenate([b.indices for b in batches]) if batches else np.empty(0, np.int64),
        np.concatenate([b.images for b in batches]) if batches else np.empty((0, size, size, 3), np.uint8),
        tuple(f for b in batches for f in b.failures),
    )
