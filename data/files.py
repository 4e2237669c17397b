"""Writing files so that a reader never sees a half-written one."""

from __future__ import annotations

import io
import os
import shutil
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


def replace_path(staged: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Move ``staged`` (a file or folder written beside ``target``) to ``target``, replacing what is there.

    A file is replaced atomically (``os.replace``). A folder cannot be renamed over a non-empty one, so what is at
    ``target`` is first renamed into ``.NAME.old-*/NAME`` beside it and removed once the new one is in place; a
    process killed between the two renames leaves the old folder there (see
    :func:`lookalike.bundle.storage.finish_interrupted_replace`).

    Returns
    -------
    Path
        ``target``.
    """
    staged, target = Path(staged), Path(target)
    if staged.is_dir() and (target.exists() or target.is_symlink()):
        retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, retired / target.name)
        os.replace(staged, target)
        shutil.rmtree(retired)
    else:
        os.replace(staged, target)
    return target
