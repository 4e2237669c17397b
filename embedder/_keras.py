"""Keras, imported once and quietly: TensorFlow's C++ start-up lines go to /dev/null unless lookalike logs at INFO.

TensorFlow and LiteRT write their start-up messages (oneDNN, CUDA, CPU features) from C++ straight to the
process's standard error before any Python logging or ``TF_CPP_MIN_LOG_LEVEL`` applies, so the only way to
keep a command's output to its own lines is to point file descriptor 2 elsewhere while they load. With
``lookalike -v`` (the ``lookalike`` logger at INFO) everything is shown.
"""

from __future__ import annotations

import contextlib
import logging
import os


def verbose() -> bool:
    """True when lookalike logs details (``lookalike -v``)."""
    return logging.getLogger("lookalike").isEnabledFor(logging.INFO)


@contextlib.contextmanager
def quietly():
    """Send native standard error to /dev/null for the duration, unless :func:`verbose`."""
    if verbose():
        yield
        return
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose() else "3")
with quietly():
    import keras  # noqa: E402  (imports TensorFlow)
if not verbose():
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # e.g. "triggered tf.function retracing"

__all__ = ["keras", "quietly"]
