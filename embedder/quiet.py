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
import threading


def verbose() -> bool:
    """True when lookalike logs details (``lookalike -v``)."""
    return logging.getLogger("lookalike").isEnabledFor(logging.INFO)


_lock = threading.Lock()
_depth = 0  # quietly() blocks open, in any thread
_saved: int | None = None  # a duplicate of the real standard error while _depth > 0


@contextlib.contextmanager
def quietly():
    """Send native standard error to /dev/null for the duration, unless :func:`verbose`.

    Safe across threads and when nested (the server loads runtimes from its worker threads): the first block
    to open redirects file descriptor 2, the last to close restores it, so overlapping blocks can never leave
    the process's standard error pointing at /dev/null.
    """
    global _depth, _saved
    if verbose():
        yield
        return
    with _lock:
        if _depth == 0:
            _saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 2)
            os.close(null)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                os.dup2(_saved, 2)
                os.close(_saved)
                _saved = None
