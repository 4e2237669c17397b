"""Inference without TensorFlow: an embedder that runs a bundle's exported runtime (LiteRT or OpenVINO) only.

:class:`RuntimeEmbedder` has what answering queries and embedding files needs (class names, configuration,
``embedding_dim``, :meth:`~FileEmbedding.embed_files`, :meth:`~RuntimeEmbedder.embed_images`, the softmax
weights for evaluation) and imports neither TensorFlow nor Keras: ``lookalike search`` starts in well under a
second instead of the seconds TensorFlow's import alone takes. :func:`load_embedder` returns one whenever the
saved embedder has a usable runtime, and falls back to the Keras :class:`~lookalike.embedder.Embedder`
otherwise. Training, fine-tuning and Grad-CAM need the Keras model: load it with
:meth:`lookalike.embedder.Embedder.load` (a bundle's :attr:`~lookalike.bundle.Bundle.keras_embedder`).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from ..data import DecodeFailure, iter_image_batches
from .config import EmbedderConfig
from .runtime import PRECISIONS, RuntimeUnavailable, open_runner

logger = logging.getLogger(__name__)

#: The Keras model (training, fine-tuning, Grad-CAM, and inference where no runtime is exported).
MODEL_FILE = "model.keras"
#: The embedder's configuration and class names (JSON), written by :meth:`Embedder.save`.
CONFIG_FILE = "embedder.json"
#: The softmax layer's kernel and bias (``kernel`` (d, n_classes), ``bias`` (n_classes,), float32), so that
#: evaluation needs no Keras.
SOFTMAX_FILE = "softmax.npz"
#: Environment variable that overrides the runtime a bundle chose: ``keras`` (the Keras model, TensorFlow), or a
#: precision of :data:`~lookalike.embedder.runtime.PRECISIONS` (``fp32``, ``bf16``, ``int8``).
RUNTIME_ENV = "LOOKALIKE_RUNTIME"
#: Calls with fewer images go to a runtime that starts quickly (see :class:`RuntimeEmbedder`).
FEW_IMAGES = 8


@dataclass(frozen=True)
class Embeddings:
    """Embeddings and class probabilities of a list of image files.

    Attributes
    ----------
    indices : int64 ndarray of shape (n,)
        Positions, in the input path list, of the images that decoded; the rows below follow them.
    embeddings : float32 ndarray of shape (n, d)
        L2-normalised embeddings.
    probabilities : float32 ndarray of shape (n, n_classes)
        Softmax class probabilities, columns in ``Embedder.class_names`` order.
    failures : tuple of DecodeFailure
        Files that could not be decoded.
    """

    indices: np.ndarray
    embeddings: np.ndarray
    probabilities: np.ndarray
    failures: tuple[DecodeFailure, ...]


class FileEmbedding:
    """Embedding image files batch by batch, for any embedder with ``config``, ``class_names``, ``embedding_dim``
    and ``embed_images(images) -> (embeddings, probabilities)``."""

    config: EmbedderConfig
    class_names: tuple[str, ...]

    def embed_images(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings and class probabilities of decoded images.

        Parameters
        ----------
        images : uint8 ndarray of shape (n, s, s, 3)
            As returned by :func:`lookalike.data.load_image` with s = ``config.image_size``.

        Returns
        -------
        embeddings : float32 ndarray of shape (n, d), L2-normalised
        probabilities : float32 ndarray of shape (n, n_classes)
        """
        raise NotImplementedError

    def _batches(
        self, paths: Sequence[str | os.PathLike], progress: bool | tqdm, description: str, batch_size: int | None = None
    ):
        """Decoded batches of ``paths`` (see :func:`lookalike.data.iter_image_batches`) with a progress bar.

        ``progress`` is a bool (show a new bar) or a tqdm bar to advance; ``batch_size`` defaults to the config's.
        """
        failures = 0
        own_bar = not isinstance(progress, tqdm)
        bar = tqdm(total=len(paths), unit="img", desc=description, disable=not progress) if own_bar else progress
        try:
            size, batch_size = self.config.image_size, batch_size or self.config.batch_size
            batches = iter_image_batches(paths, size=size, batch_size=batch_size, crop=self.config.crop_to_content)
            for batch in batches:
                yield batch
                failures += len(batch.failures)
                bar.update(len(batch.indices) + len(batch.failures))
        finally:
            if own_bar:
                bar.close()
        if failures:
            logger.warning("%d of %d images could not be read and were skipped", failures, len(paths))

    def embed_batches(
        self, paths: Sequence[str | os.PathLike], *, progress: bool | tqdm = False, batch_size: int | None = None
    ):
        """Embed image files batch by batch, decoding the next batches in parallel threads meanwhile.

        Parameters
        ----------
        paths : sequence of path-like
        progress : bool or tqdm
            Show a progress bar, or advance this one.
        batch_size : int, optional
            Images per batch (default ``config.batch_size``).

        Yields
        ------
        batch : ImageBatch
            The decoded batch: ``indices`` into ``paths`` and ``failures``.
        embeddings : float32 ndarray of shape (b, d), L2-normalised
        probabilities : float32 ndarray of shape (b, n_classes)
        """
        for batch in self._batches(paths, progress, "embedding", batch_size):
            yield (batch, *self.embed_images(batch.images))

    def embed_files(self, paths: Sequence[str | os.PathLike], *, progress: bool = False) -> Embeddings:
        """Embeddings and class probabilities of image files, decoded in parallel and embedded batch by batch.

        Unreadable files are skipped and reported in ``failures``.

        Returns
        -------
        Embeddings
        """
        indices, embeddings, probabilities, failures = [], [], [], []
        for batch, batch_embeddings, batch_probabilities in self.embed_batches(paths, progress=progress):
            indices.append(batch.indices)
            embeddings.append(batch_embeddings)
            probabilities.append(batch_probabilities)
            failures.extend(batch.failures)
        if not indices:
            return Embeddings(
                np.empty(0, np.int64),
                np.empty((0, self.embedding_dim), np.float32),
                np.empty((0, len(self.class_names)), np.float32),
                (),
            )
        return Embeddings(
            np.concatenate(indices), np.concatenate(embeddings), np.concatenate(probabilities), tuple(failures)
        )


def read_config(directory: str | os.PathLike) -> tuple[EmbedderConfig, tuple[str, ...]]:
    """The configuration and class names of an embedder saved in ``directory`` (its ``embedder.json``).

    Raises
    ------
    FileNotFoundError
        ``embedder.json`` is missing.
    """
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"not a saved embedder: {path} is missing")
    payload = json.loads(path.read_text(encoding="utf-8"))
    return EmbedderConfig.from_dict(payload["config"]), tuple(payload["class_names"])


class RuntimeEmbedder(FileEmbedding):
    """Image -> (L2-normalised embedding, class probabilities) with an exported runtime; no TensorFlow.

    Build one with :func:`load_embedder`.

    Parameters
    ----------
    runner : callable
        A runner of :mod:`lookalike.embedder.runtime`: float32 images (n, s, s, 3) in [0, 255] ->
        (embeddings (n, d), probabilities (n, n_classes)), with ``embedding_dim`` and ``precision``.
    config : EmbedderConfig
    class_names : sequence of str
    softmax : (kernel, bias), optional
        The softmax layer's weights (see :meth:`softmax_weights`); None when the saved embedder has none.
    few_runner : callable, optional
        A runner that starts quickly (fp32 LiteRT) for calls of fewer than :data:`FEW_IMAGES` images, used when
        ``runner`` starts slowly (OpenVINO's import and compilation take about 0.8 s, several hundred times one
        image's inference): a query is answered without that wait, and ``runner`` starts with the first batch.
        It is also the fallback when ``runner`` turns out not to work here.

    Attributes
    ----------
    runtime : callable
        The runner of batches.
    """

    def __init__(self, runner, *, config: EmbedderConfig, class_names: Sequence[str], softmax=None, few_runner=None):
        self.runtime = runner
        self.few_runner = few_runner
        self.config = config
        self.class_names = tuple(class_names)
        self._softmax = softmax

    @property
    def embedding_dim(self) -> int:
        """Size d of the embeddings."""
        return int((self.few_runner or self.runtime).embedding_dim)

    @property
    def precision(self) -> str:
        """Precision the runtime of batches computes in: one of :data:`~lookalike.embedder.runtime.PRECISIONS`."""
        return self.runtime.precision

    def embed_images(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """See :meth:`FileEmbedding.embed_images`; runs the exported runtime (``few_runner`` for few images)."""
        if self.few_runner is not None and len(images) < FEW_IMAGES:
            return self.few_runner(images)
        try:
            return self.runtime(images)
        except RuntimeUnavailable as error:
            if self.few_runner is None:
                raise
            logger.warning("the %s runtime failed, using %s from now on: %s", self.precision, "fp32", error)
            self.runtime = self.few_runner
            return self.runtime(images)

    def softmax_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """The head's softmax layer (see :meth:`lookalike.embedder.Embedder.softmax_weights`).

        Returns
        -------
        kernel : float32 ndarray of shape (d, n_classes)
        bias : float32 ndarray of shape (n_classes,)

        Raises
        ------
        RuntimeUnavailable
            The saved embedder predates ``softmax.npz``; load the Keras embedder for them.
        """
        if self._softmax is None:
            raise RuntimeUnavailable(f"no {SOFTMAX_FILE} beside the runtime (an older bundle)")
        return self._softmax


def write_softmax(directory: str | os.PathLike, kernel: np.ndarray, bias: np.ndarray) -> Path:
    """Write the softmax layer's weights into ``directory/softmax.npz`` (no pickle)."""
    path = Path(directory) / SOFTMAX_FILE
    np.savez(path, kernel=np.asarray(kernel, np.float32), bias=np.asarray(bias, np.float32))
    return path


def _read_softmax(directory: Path) -> tuple[np.ndarray, np.ndarray] | None:
    path = directory / SOFTMAX_FILE
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as stored:
        return stored["kernel"], stored["bias"]


def load_embedder(directory: str | os.PathLike, *, precision: str = "fp32", threads: int | None = None):
    """The embedder saved in ``directory``, running its exported runtime when it can, else Keras.

    Parameters
    ----------
    directory : path-like
        Where the embedder was saved (a bundle directory).
    precision : str
        Runtime to use, one of :data:`~lookalike.embedder.runtime.PRECISIONS` (a bundle's manifest says which it
        chose); when that runtime is unavailable (its file or package missing), the fp32 LiteRT runtime, and
        without that the Keras model. The environment variable ``LOOKALIKE_RUNTIME`` (``keras``, ``fp32``,
        ``bf16``, ``int8``) overrides it.
    threads : int, optional
        Inference threads (default: all cores).

    Returns
    -------
    RuntimeEmbedder or Embedder
        The Keras :class:`~lookalike.embedder.Embedder` (imports TensorFlow) only as the fallback.

    Raises
    ------
    FileNotFoundError
        ``embedder.json`` is missing (or, for the Keras fallback, ``model.keras``).
    ValueError
        ``precision`` or ``LOOKALIKE_RUNTIME`` is not a known runtime.
    """
    directory = Path(directory)
    config, class_names = read_config(directory)
    wanted = os.environ.get(RUNTIME_ENV) or precision
    if wanted not in (*PRECISIONS, "keras"):
        raise ValueError(f"runtime must be keras or one of {', '.join(PRECISIONS)}; got {wanted!r}")
    for candidate in dict.fromkeys((wanted, "fp32")) if wanted != "keras" else ():
        try:
            runner = open_runner(directory, candidate, threads=threads)
        except RuntimeUnavailable as error:
            logger.info("not using the %s runtime: %s", candidate, error)
            continue
        few = None
        if getattr(runner, "starts_slowly", False):
            try:
                few = open_runner(directory, "fp32", threads=threads)
            except RuntimeUnavailable as error:
                logger.info("no quick runtime for few images: %s", error)
        return RuntimeEmbedder(
            runner, config=config, class_names=class_names, softmax=_read_softmax(directory), few_runner=few
        )
    from .model import Embedder

    logger.info("using Keras for inference")
    return Embedder.load(directory)
