"""Keras, imported once and quietly (see :mod:`.quiet`): TensorFlow's C++ start-up lines go to /dev/null unless
lookalike logs at INFO (``lookalike -v``).
"""

from __future__ import annotations

import logging
import os

from .quiet import quietly, verbose

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose() else "3")
with quietly():
    import keras  # noqa: E402  (imports TensorFlow)
if not verbose():
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # e.g. "triggered tf.function retracing"

__all__ = ["keras", "quietly"]
