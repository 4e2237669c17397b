"""The embedder: a MobileNetV2 backbone and a trained head mapping an image to an embedding and class probabilities.

The classifier is one Keras model that takes raw pixels (keras-io transfer-learning guide)::

    image (float32, [0, 255]) -> augment -> preprocess ([-1, 1]) -> backbone (frozen, training=False)
        -> pool (global average) -> head: dropout -> embedding_dense -> embedding_bn
        -> embedding (L2 normalisation) -> logit_scale (x8) -> probabilities (softmax)

The embedding of an image is the output of the ``embedding`` layer: the penultimate layer, L2-normalised,
so inner products of embeddings are cosine similarities.

With ``pooled_weight`` w > 0 (see :class:`EmbedderConfig`) the embedding fuses the trained embedding with the
pooled backbone features, which the head cannot forget::

    pool -> pooled_l2 -> pooled_projection (centre on the training images, random orthogonal projection)
         -> pooled_embedding (L2) -> x sqrt(w) --------------------------------------------+
    ... -> embedding_bn -> trained_embedding (L2) -> x sqrt(1 - w) -> fused (concatenate) -> embedding (L2)

so the cosine similarity of two embeddings is (1 - w) cos(trained) + w cos(pooled), and the softmax layer
reads the fused embedding. Everything is inside the Keras model, hence also in its LiteRT export.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ._keras import keras
import numpy as np

from ..data import DecodeFailure

from .augment import augment_appearance
from .backbone import build_backbone
from .config import EmbedderConfig
from .inference import CONFIG_FILE, MODEL_FILE, FileEmbedding, read_config, write_softmax
from .runtime import RUNTIME_FILES, LiteRTRunner, RuntimeUnavailable

logger = logging.getLogger(__name__)

#: Momentum of the moving statistics of the batch-norm layers we train. Keras' default, 0.99, needs
#: hundreds of steps to forget its initial values; few-shot sets give far fewer (6 images x 39 classes at
#: batch 64 is 4 steps an epoch), and inference then runs on unconverged statistics.
BN_MOMENTUM = 0.9
#: The embedder exported for the fast CPU runtime (optional: Keras is the fallback), see :mod:`.runtime`.
RUNTIME_FILE = RUNTIME_FILES["fp32"]


@dataclass(frozen=True)
class BackboneFeatures:
    """Backbone activations of a list of image files.

    Attributes
    ----------
    indices : int64 ndarray of shape (n,)
        Positions, in the input path list, of the images that decoded; the rows below follow them.
    features : float32 ndarray of shape (n, ...)
        Activations of the clean images: (n, feature_dim) pooled features, or a layer's (n, h, w, c).
    views : float32 ndarray of shape (v, n, ...)
        The same for ``v`` augmented views of each image (v = 0 when none were asked for).
    failures : tuple of DecodeFailure
        Files that could not be decoded.
    """

    indices: np.ndarray
    features: np.ndarray
    views: np.ndarray
    failures: tuple[DecodeFailure, ...]


def _small_cnn(image_size: int, seed: int) -> keras.Model:
    """Four blocks of convolution, batch-norm, ReLU, max-pooling and dropout (the tutorial CIFAR-style CNN)."""
    image = keras.Input((image_size, image_size, 3))
    x = image
    for i, filters in enumerate((32, 64, 128, 256), start=1):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"conv{i}_bn")(x)
        x = keras.layers.ReLU(name=f"conv{i}_relu")(x)
        x = keras.layers.MaxPooling2D(name=f"conv{i}_pool")(x)
        x = keras.layers.Dropout(0.1, seed=seed + i, name=f"conv{i}_dropout")(x)
    return keras.Model(image, x, name="backbone")


def _build_classifier(config: EmbedderConfig, n_classes: int, weights: str | os.PathLike | None) -> keras.Model:
    keras.utils.set_random_seed(config.seed)
    size = config.image_size
    if not config.spec.pretrained:
        backbone = _small_cnn(size, config.seed)
    else:
        backbone = build_backbone(size, weights)
    augment = keras.Sequential(
        ([keras.layers.RandomFlip("horizontal", seed=config.seed)] if config.flip else [])
        + [
            keras.layers.RandomRotation(config.rotation, fill_mode="nearest", seed=config.seed + 1),
            keras.layers.RandomZoom(config.zoom, fill_mode="nearest", seed=config.seed + 2),
        ],
        name="augment",
    )
    feature_dim = backbone.output.shape[-1]
    features = keras.Input((feature_dim,), name="features")
    x = keras.layers.Dropout(config.dropout, seed=config.seed, name="dropout")(features)
    x = keras.layers.Dense(config.embedding_dim, name="embedding_dense")(x)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name="embedding_bn")(x)
    if config.fuses:
        trained = keras.layers.UnitNormalization(name="trained_embedding")(x)
        pooled = keras.layers.UnitNormalization(name="pooled_l2")(features)
        # Centring and projection in one affine map, set from the training images by Embedder.fit_pooled.
        pooled = keras.layers.Dense(config.pooled_dim or feature_dim, trainable=False, name="pooled_projection")(pooled)
        pooled = keras.layers.UnitNormalization(name="pooled_embedding")(pooled)
        parts = [
            keras.layers.Rescaling(float(np.sqrt(1.0 - config.pooled_weight)), name="trained_share")(trained),
            keras.layers.Rescaling(float(np.sqrt(config.pooled_weight)), name="pooled_share")(pooled),
        ]
        x = keras.layers.Concatenate(name="fused")(parts)
    embedding = keras.layers.UnitNormalization(name="embedding")(x)
    scaled = keras.layers.Rescaling(config.logit_scale, name="logit_scale")(embedding)
    probabilities = keras.layers.Dense(n_classes, activation="softmax", name="probabilities")(scaled)
    head = keras.Model(features, probabilities, name="head")

    image = keras.Input((size, size, 3), name="image")
    x = augment(image)
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocess")(x)
    # The pre-trained backbone always runs in inference mode (batch-norm statistics fixed); the scratch CNN trains.
    x = backbone(x, training=False) if config.spec.pretrained else backbone(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(image, head(x), name="lookalike_classifier")


class Embedder(FileEmbedding):
    """Image -> (L2-normalised embedding, class probabilities), with a MobileNetV2 backbone.

    Build a new one with :meth:`build` (then train its head, see :func:`lookalike.embedder.train`) or
    load a saved one with :meth:`load`; the constructor only wires an existing classifier model.

    Attributes
    ----------
    config : EmbedderConfig
    class_names : tuple of str
        Class of each column of the probabilities.
    classifier : keras.Model
        The whole model, raw pixels -> probabilities (see the module docstring for its layers).
    """

    def __init__(self, classifier: keras.Model, *, config: EmbedderConfig, class_names: Sequence[str]):
        self.config = config
        self.class_names = tuple(class_names)
        self.classifier = classifier
        self.head = classifier.get_layer("head")
        self.augment = classifier.get_layer("augment")
        self.backbone = classifier.get_layer("backbone")
        self.feature_dim = int(self.backbone.output.shape[-1])
        self._encoders: dict[str | None, keras.Model] = {}
        # One model call at a time: Keras builds predict functions lazily and the web app queries from
        # several threads; TensorFlow uses all cores within each call anyway.
        self._lock = threading.RLock()
        #: Fast inference runtime (see :mod:`lookalike.embedder.runtime`) used by :meth:`embed_images` when set.
        self.runtime: LiteRTRunner | None = None
        self._head_outputs = keras.Model(
            self.head.input, [self.head.get_layer("embedding").output, self.head.output], name="head_outputs"
        )

    def encoder(self, layer: str | None = None) -> keras.Model:
        """Model from raw pixels to the activations of backbone layer ``layer`` (None: pooled features).

        Built once per layer and shared: it reuses the classifier's layers and weights.
        """
        if layer not in self._encoders:
            image = keras.Input((self.config.image_size, self.config.image_size, 3), name="image")
            x = self.classifier.get_layer("preprocess")(image)
            if layer is None:
                x = self.classifier.get_layer("pool")(self.backbone(x, training=False))
            else:
                x = keras.Model(self.backbone.input, self.backbone.get_layer(layer).output)(x, training=False)
            self._encoders[layer] = keras.Model(image, x, name=f"encoder_{layer or 'pooled'}")
        return self._encoders[layer]

    def top(self, layer: str) -> keras.Model:
        """Model from the activations of backbone layer ``layer`` to pooled features (shares weights)."""
        top = keras.Model(self.backbone.get_layer(layer).output, self.backbone.output)
        return keras.Model(top.input, self.classifier.get_layer("pool")(top.output), name=f"top_from_{layer}")

    @classmethod
    def build(
        cls, config: EmbedderConfig, class_names: Sequence[str], *, weights: str | os.PathLike | None = None
    ) -> Embedder:
        """A new embedder with the ImageNet backbone and an untrained head.

        Parameters
        ----------
        config : EmbedderConfig
        class_names : sequence of str
            At least two class names.
        weights : str or path-like, optional
            Backbone weights, see :func:`lookalike.embedder.resolve_weights`.

        Raises
        ------
        ValueError
            Fewer than two classes.
        BackboneWeightsError
            The backbone weights cannot be found.
        """
        if len(class_names) < 2:
            raise ValueError(f"the number of classes has to be greater than one; got {len(class_names)}")
        return cls(_build_classifier(config, len(class_names), weights), config=config, class_names=class_names)

    @property
    def embedding_dim(self) -> int:
        """Size d of the embeddings (``embedding_dim``, plus the pooled part's dimensions when fused)."""
        return int(self.head.get_layer("embedding").output.shape[-1])

    def fit_pooled(self, features: np.ndarray) -> None:
        """Set the centring and projection of the pooled part of a fused embedding from training images.

        The projection is a random orthogonal map to ``pooled_dim`` dimensions (seeded by ``config.seed``;
        the identity when ``pooled_dim`` is 0); the centre is the mean of the L2-normalised ``features``
        (SimpleShot, Wang et al. 2019, arXiv:1911.04623). Without fusion this does nothing.

        Parameters
        ----------
        features : float32 ndarray of shape (n, feature_dim)
            Pooled backbone features of the clean training images, n >= 1.
        """
        if not self.config.fuses:
            return
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or len(features) == 0 or features.shape[1] != self.feature_dim:
            raise ValueError(f"features must have shape (n >= 1, {self.feature_dim}); got {features.shape}")
        dim = self.config.pooled_dim or self.feature_dim
        if dim == self.feature_dim:
            projection = np.eye(dim)
        else:
            gaussian = np.random.default_rng(self.config.seed).standard_normal((self.feature_dim, dim))
            projection = np.linalg.qr(gaussian)[0]  # orthonormal columns
        centre = (features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)).mean(axis=0)
        layer = self.head.get_layer("pooled_projection")
        layer.set_weights([projection.astype(np.float32), (-centre @ projection).astype(np.float32)])

    def softmax_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """The head's softmax layer, so that code outside the embedder needs no Keras.

        Returns
        -------
        kernel : float32 ndarray of shape (d, n_classes)
        bias : float32 ndarray of shape (n_classes,)
            ``probabilities = softmax(config.logit_scale * embedding @ kernel + bias)``.
        """
        kernel, bias = self.head.get_layer("probabilities").get_weights()
        return np.asarray(kernel, dtype=np.float32), np.asarray(bias, dtype=np.float32)

    def encode(self, images: np.ndarray, *, layer: str | None = None, augment: bool = False) -> np.ndarray:
        """Backbone activations of a batch of images.

        Parameters
        ----------
        images : uint8 or float32 ndarray of shape (n, s, s, 3)
            RGB pixels in [0, 255], s = ``config.image_size``.
        layer : str, optional
            Backbone layer whose output to return; None for the pooled features.
        augment : bool
            Apply one random augmentation (flip, rotation, zoom) to each image first.

        Returns
        -------
        float32 ndarray of shape (n, feature_dim) for pooled features, else (n, *layer output shape)
        """
        images = np.asarray(images, dtype=np.float32)
        with self._lock:
            encoder = self.encoder(layer)
            if len(images) == 0:
                return np.empty((0, *encoder.output.shape[1:]), np.float32)
            if augment:
                images = keras.ops.convert_to_numpy(self.augment(images, training=True))
            if len(images) <= self.config.batch_size:
                return np.asarray(encoder.predict_on_batch(images), dtype=np.float32)
            return np.asarray(encoder.predict(images, batch_size=self.config.batch_size, verbose=0), dtype=np.float32)

    def head_outputs(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run the head (in inference mode) on pooled backbone features.

        Parameters
        ----------
        features : float32 ndarray of shape (n, feature_dim)

        Returns
        -------
        embeddings : float32 ndarray of shape (n, d), L2-normalised
        probabilities : float32 ndarray of shape (n, n_classes)
        """
        if len(features) == 0:
            return np.empty((0, self.embedding_dim), np.float32), np.empty((0, len(self.class_names)), np.float32)
        with self._lock:
            embeddings, probabilities = self._head_outputs.predict(
                np.asarray(features, dtype=np.float32), batch_size=1024, verbose=0
            )
        return np.asarray(embeddings, dtype=np.float32), np.asarray(probabilities, dtype=np.float32)

    def embed_images(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """See :meth:`FileEmbedding.embed_images`; with the attached fast runtime when there is one, else Keras."""
        if self.runtime is None:
            return self.head_outputs(self.encode(images))
        return self.runtime(images)

    def encode_files(
        self,
        paths: Sequence[str | os.PathLike],
        *,
        layer: str | None = None,
        augment_views: int = 0,
        progress: bool = False,
    ) -> BackboneFeatures:
        """Decode image files in parallel and compute their backbone activations, batch by batch.

        Parameters
        ----------
        paths : sequence of path-like
        layer : str, optional
            Backbone layer whose output to keep (see :meth:`encode`); None for the pooled features.
        augment_views : int
            Number of augmented views to encode per image besides the clean one.
        progress : bool
            Show a progress bar (images per second).

        Returns
        -------
        BackboneFeatures
            Unreadable files are skipped and listed in ``failures``.
        """
        shape = tuple(self.encoder(layer).output.shape[1:])
        indices, features, views, failures = [], [], [], []
        for n_batch, batch in enumerate(self._batches(paths, progress, "encoding")):
            indices.append(batch.indices)
            features.append(self.encode(batch.images, layer=layer))
            augmented = [
                self.encode(
                    augment_appearance(
                        batch.images, np.random.default_rng([self.config.seed, n_batch, view]), self.config
                    ),
                    layer=layer,
                    augment=True,
                )
                for view in range(augment_views)
            ]
            views.append(np.stack(augmented) if augmented else np.empty((0, len(batch.indices), *shape), np.float32))
            failures.extend(batch.failures)
        if not indices:  # no paths at all
            return BackboneFeatures(
                np.empty(0, np.int64),
                np.empty((0, *shape), np.float32),
                np.empty((augment_views, 0, *shape), np.float32),
                (),
            )
        return BackboneFeatures(
            np.concatenate(indices), np.concatenate(features), np.concatenate(views, axis=1), tuple(failures)
        )

    def attach_runtime(self, directory: str | os.PathLike, *, threads: int | None = None) -> bool:
        """Use ``directory/inference.tflite`` (LiteRT, float32) for :meth:`embed_images` when it exists and LiteRT is
        installed. (Loading a bundle gives a :class:`~lookalike.embedder.inference.RuntimeEmbedder` instead, which
        needs no Keras; this is for an embedder that is being trained or exported.)

        Parameters
        ----------
        directory : path-like
            Where the embedder was saved (a bundle directory).
        threads : int, optional
            Interpreter threads (default: all cores).

        Returns
        -------
        bool
            Whether the fast runtime is used (else Keras is).
        """
        path = Path(directory) / RUNTIME_FILE
        if path.is_file():
            try:
                self.runtime = LiteRTRunner(path, threads=threads)
                return True
            except RuntimeUnavailable as error:
                logger.info("using Keras for inference: %s", error)
        return False

    def inference_model(self) -> keras.Model:
        """The model that is exported: image (float32, (n, s, s, 3), [0, 255]) -> [embedding (n, d), probabilities
        (n, n_classes)], in inference mode (no augmentation)."""
        size = self.config.image_size
        image = keras.Input((size, size, 3), name="image")
        embedding, probabilities = self._head_outputs(self.encoder(None)(image))
        return keras.Model(image, [embedding, probabilities], name="inference")

    def save(self, directory: str | os.PathLike) -> None:
        """Write ``model.keras`` (Keras v3 format), ``embedder.json`` (config, class names) and ``softmax.npz`` (the
        softmax layer's weights, for evaluation without Keras) into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.classifier.save(directory / MODEL_FILE)
        payload = {"config": self.config.to_dict(), "class_names": list(self.class_names)}
        (directory / CONFIG_FILE).write_text(json.dumps(payload, indent=2), encoding="utf-8")
        write_softmax(directory, *self.softmax_weights())

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Embedder:
        """Load an embedder written by :meth:`save`, with Keras' ``safe_mode`` (no code from the file runs).

        It runs Keras (TensorFlow); :func:`lookalike.embedder.load_embedder` gives the exported runtime instead.

        Raises
        ------
        FileNotFoundError
            ``model.keras`` or ``embedder.json`` is missing.
        """
        directory = Path(directory)
        config, class_names = read_config(directory)
        if not (directory / MODEL_FILE).is_file():
            raise FileNotFoundError(f"not a saved embedder: {directory / MODEL_FILE} is missing")
        classifier = keras.models.load_model(directory / MODEL_FILE, compile=False, safe_mode=True)
        return cls(classifier, config=config, class_names=class_names)
