"""The MobileNetV2 backbone (Sandler et al., 2018, arXiv:1801.04381) with ImageNet weights, found offline or downloaded."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ._keras import keras
from .errors import BackboneWeightsError

logger = logging.getLogger(__name__)

#: Environment variable naming a local copy of the backbone weights file.
WEIGHTS_ENV = "LOOKALIKE_BACKBONE_WEIGHTS"
#: File name of the ImageNet MobileNetV2 (alpha 1.0, no top) weights, as Keras caches it.
IMAGENET_WEIGHTS_FILE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
#: Where ``keras.applications.MobileNetV2(weights="imagenet")`` downloads that file from.
IMAGENET_WEIGHTS_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/" + IMAGENET_WEIGHTS_FILE
)


def resolve_weights(weights: str | os.PathLike | None = None) -> Path:
    """Find the ImageNet backbone weights file.

    Parameters
    ----------
    weights : str or path-like, optional
        ``"imagenet"`` or a path to the ``.h5`` weights file. When None, the environment variable
        ``LOOKALIKE_BACKBONE_WEIGHTS`` is used if set, otherwise ``"imagenet"``.

    Returns
    -------
    Path
        A local weights file. For ``"imagenet"`` this is Keras' cache,
        ``$KERAS_HOME/models/<IMAGENET_WEIGHTS_FILE>`` (``~/.keras/models/`` by default), which Keras
        fills by downloading the file when it is not there yet.

    Raises
    ------
    BackboneWeightsError
        A given path does not exist, or the download failed (e.g. offline); the message says how to
        provide the file.
    """
    source = weights if weights is not None else os.environ.get(WEIGHTS_ENV) or "imagenet"
    if str(source) != "imagenet":
        path = Path(source).expanduser()
        if not path.is_file():
            origin = f"${WEIGHTS_ENV}" if weights is None else "--weights"
            raise BackboneWeightsError(f"backbone weights file not found: {path} (given by {origin})")
        return path
    try:
        return Path(keras.utils.get_file(IMAGENET_WEIGHTS_FILE, IMAGENET_WEIGHTS_URL, cache_subdir="models"))
    except Exception as error:  # keras raises a bare Exception for URL and HTTP failures
        raise BackboneWeightsError(
            f"could not download the ImageNet MobileNetV2 weights ({error}).\n"
            f"Without internet, get {IMAGENET_WEIGHTS_FILE} from {IMAGENET_WEIGHTS_URL} on another machine, then "
            f"either copy it into $KERAS_HOME/models/ (default ~/.keras/models/), or point lookalike at it with "
            f"--weights PATH or the environment variable {WEIGHTS_ENV}=PATH."
        ) from error


def build_backbone(image_size: int, weights: str | os.PathLike | None = None) -> keras.Model:
    """MobileNetV2 (alpha 1.0) without its classifier top, with ImageNet weights, frozen.

    Parameters
    ----------
    image_size : int
        Input side in pixels; the convolution weights fit any size.
    weights : str or path-like, optional
        As for :func:`resolve_weights`.

    Returns
    -------
    keras.Model
        Maps float32 images of shape (n, image_size, image_size, 3) scaled to [-1, 1] to feature maps of
        shape (n, h, w, 1280); ``trainable`` is False.

    Raises
    ------
    BackboneWeightsError
        The weights cannot be found, or the file is not MobileNetV2 (alpha 1.0, no top) weights.
    """
    path = resolve_weights(weights)
    backbone = keras.applications.MobileNetV2(
        input_shape=(image_size, image_size, 3), alpha=1.0, include_top=False, weights=None, name="backbone"
    )
    try:
        backbone.load_weights(path)
    except (OSError, ValueError, KeyError) as error:
        raise BackboneWeightsError(f"{path} is not a MobileNetV2 (alpha 1.0, no top) weights file: {error}") from error
    logger.info("loaded backbone weights from %s", path)
    backbone.trainable = False
    return backbone
