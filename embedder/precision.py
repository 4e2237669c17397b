"""Reduced-precision exports of an embedder: full-integer (int8) post-training quantization with LiteRT.

The int8 model quantizes weights (per channel) and activations (per tensor) to 8-bit integers, with the
activation ranges calibrated on a representative set of the bundle's own training images (the LiteRT
converter's ``representative_dataset``, TensorFlow's post-training integer quantization); its input and outputs
stay float32, so it is a drop-in replacement for the float model. Whether a bundle uses it is decided by
whether the answers change (:mod:`lookalike.bundle.precision`), not by how close the numbers are.
Imports Keras (TensorFlow).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ._keras import quietly
from .runtime import RUNTIME_FILES, _interpreter_class

logger = logging.getLogger(__name__)

#: Training images the int8 activation ranges are calibrated on (at most).
CALIBRATION_IMAGES = 100


def export_int8(embedder, images: np.ndarray, directory: str | os.PathLike) -> Path:
    """Export ``embedder`` to ``directory/inference-int8.tflite`` with full-integer post-training quantization.

    Parameters
    ----------
    embedder : Embedder
        The Keras embedder.
    images : uint8 or float32 ndarray of shape (n, s, s, 3)
        Representative images (the bundle's training images), pixels in [0, 255]; the activation ranges are
        calibrated on them one at a time.
    directory : path-like

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    RuntimeUnavailable
        ``ai-edge-litert`` is not installed.
    ValueError
        No representative images.
    """
    _interpreter_class()
    import tensorflow as tf

    if len(images) == 0:
        raise ValueError("int8 quantization needs at least one representative image; got 0")
    images = np.asarray(images, dtype=np.float32)

    def representative_dataset():
        for image in images:
            yield [image[None]]

    path = Path(directory) / RUNTIME_FILES["int8"]
    with quietly():
        embedder.inference_model().export(
            str(path),
            format="litert",
            verbose=False,
            optimizations=[tf.lite.Optimize.DEFAULT],
            representative_dataset=representative_dataset,
        )
    logger.info("exported %s (int8, calibrated on %d images)", path, len(images))
    return path
