"""Quiet native start-up: TensorFlow's, LiteRT's and OpenVINO's C++ lines go to /dev/null unless lookalike logs at INFO.

These libraries write their start-up messages (oneDNN, CUDA, CPU features, "Created TensorFlow Lite XNNPACK
delegate") from C++ straight to the process's standard error before any Python logging or
``TF_CPP_MIN_LOG_LEVEL`` applies, so the only way to keep a command's output to its own lines is to point file
descriptor 2 elsewhere while they load. With ``lookalike -v`` (the ``lookalike`` logger at INFO) everything is
shown. This module imports nothing heavy.
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
