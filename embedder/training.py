"""Training the head on cached backbone features.

With the backbone frozen, its output for a given input never changes, so the backbone runs once per image
(and once per cached augmented view) and the head trains on the stored features: each epoch then costs
milliseconds instead of a full backbone pass. This is the same computation as training the whole
classifier with a frozen backbone, except that augmentation draws from a fixed set of ``augment_views``
random views per image instead of a new one every epoch.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Sequence

import keras
import numpy as np
from tqdm.keras import TqdmCallback

from lookalike.data import ImageRecord

from .config import EmbedderConfig
from .model import Embedder, Embeddings

logger = logging.getLogger(__name__)


class TrainingError(ValueError):
    """Training cannot start: no training image could be read."""


@dataclass(frozen=True)
class TrainingResult:
    """A trained embedder and the embeddings of the images it was trained and validated on.

    Attributes
    ----------
    embedder : Embedder
        Head trained, best epoch's weights restored.
    history : dict of str to list of float
        Per-epoch ``loss`` and ``accuracy`` (and ``val_loss``, ``val_accuracy`` when there was a held-out split).
    best_epoch : int
        1-based epoch whose weights were kept.
    val_accuracy : float or None
        Top-1 accuracy of the softmax head on the held-out records; None when there were none.
    embedded : Embeddings
        Embeddings of the records, by the trained embedder; ``embedded.indices`` are positions in the
        records given to :func:`train`, and unreadable records are in ``embedded.failures``.
    """

    embedder: Embedder
    history: dict[str, list[float]]
    best_epoch: int
    val_accuracy: float | None
    embedded: Embeddings


def train(
    records: Sequence[ImageRecord],
    class_names: Sequence[str],
    *,
    config: EmbedderConfig = EmbedderConfig(),
    weights: str | os.PathLike | None = None,
    progress: bool = False,
) -> TrainingResult:
    """Train an embedder: frozen ImageNet backbone, new head, early stopping on validation accuracy.

    Records whose split is ``"train"`` train the head; all others (``"val"``, ``"test"``) are the held-out
    set that early stopping watches. Without held-out records, early stopping watches training accuracy.

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
        Show progress bars for feature extraction and training.

    Raises
    ------
    TrainingError
        No training image could be read.
    BackboneWeightsError
        The backbone weights cannot be found.
    """
    position = {name: i for i, name in enumerate(class_names)}
    labels = np.array([position[r.label] for r in records], dtype=np.int64)
    is_train = np.array([r.split == "train" for r in records])
    train_at, held_at = np.flatnonzero(is_train), np.flatnonzero(~is_train)

    embedder = Embedder.build(config, class_names, weights=weights)
    train_set = embedder.encode_files(
        [records[i].path for i in train_at], augment_views=config.augment_views, progress=progress
    )
    held_set = embedder.encode_files([records[i].path for i in held_at], progress=progress)
    if len(train_set.indices) == 0:
        raise TrainingError(f"none of the {len(train_at)} training images could be read")
    train_labels = labels[train_at[train_set.indices]]
    held_labels = labels[held_at[held_set.indices]]

    views = 1 + config.augment_views
    x = np.concatenate([train_set.features, *train_set.views])
    y = np.tile(train_labels, views)
    has_val = len(held_set.indices) > 0
    monitor = "val_accuracy" if has_val else "accuracy"
    callbacks = [keras.callbacks.EarlyStopping(monitor=monitor, mode="max", patience=config.patience, restore_best_weights=True)]
    if progress:
        callbacks.append(TqdmCallback(verbose=0, desc="training head"))
    head = embedder.head
    head.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    fit = head.fit(
        x,
        y,
        validation_data=(held_set.features, held_labels) if has_val else None,
        epochs=config.epochs,
        batch_size=config.batch_size,
        shuffle=True,
        callbacks=callbacks,
        verbose=0,
    )
    history = {name: [float(v) for v in values] for name, values in fit.history.items()}
    best_epoch = int(np.argmax(history[monitor])) + 1
    logger.info("trained the head for %d epochs on %d feature vectors; best epoch %d", len(history[monitor]), len(x), best_epoch)

    embeddings, probabilities = embedder.head_outputs(np.concatenate([train_set.features, held_set.features]))
    indices = np.concatenate([train_at[train_set.indices], held_at[held_set.indices]])
    val_accuracy = None
    if has_val:
        val_accuracy = float(np.mean(probabilities[len(train_set.indices) :].argmax(axis=1) == held_labels))
    return TrainingResult(
        embedder=embedder,
        history=history,
        best_epoch=best_epoch,
        val_accuracy=val_accuracy,
        embedded=Embeddings(indices, embeddings, probabilities, train_set.failures + held_set.failures),
    )
