"""Writing files so that a reader never sees a half-written one."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np


def write_atomic(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder, renamed into place.

    A crash leaves either the previous file or the new one, never a mixture.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(payload)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(staging, 0o644)
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    return path


def write_array(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write ``array`` as a ``.npy`` file (no pickled objects) with :func:`write_atomic`."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return write_atomic(path, buffer.getvalue())
