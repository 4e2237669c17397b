"""Writing and reading bundle directories safely: atomic replace, checksums, crash recovery.

A bundle is written into a temporary directory beside its target and renamed into place, so an interrupted
write never replaces a good bundle with a half-written one; if a replace is killed between its two renames,
reading puts the previous bundle back. The manifest, written last, records the SHA-256 of every file, and
reading verifies them: the checksums detect damage, not tampering (see README, "Serving safely").
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..data.files import replace_path, write_atomic
from .manifest import FORMAT_VERSION, Manifest

logger = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"


class BundleError(RuntimeError):
    """A bundle cannot be read or written; the message names the directory or file and the problem."""


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def link_or_copy(source: Path, target: Path) -> None:
    """Hard-link ``source`` to ``target`` (no copy; the old bundle's rename leaves the data in place), else copy it."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def finish_interrupted_replace(directory: Path) -> None:
    """Put back the previous bundle if a replace-in-place was killed between its two renames."""
    for retired in sorted(directory.parent.glob(f".{directory.name}.old-*/{directory.name}")):
        if (retired / MANIFEST_FILE).is_file():
            logger.warning("restoring %s from an interrupted replace (%s)", directory, retired.parent)
            os.replace(retired, directory)
            shutil.rmtree(retired.parent, ignore_errors=True)
            return


def write_bundle(
    directory: str | os.PathLike, fill: Callable[[Path], Manifest], *, checked: tuple[str, ...]
) -> tuple[Path, Manifest]:
    """Write a bundle directory atomically, replacing a bundle already there.

    Parameters
    ----------
    directory : path-like
        The target.
    fill : callable
        Writes the bundle's files into the staging folder it is given and returns the manifest to store.
    checked : tuple of str
        File names whose SHA-256 goes into the manifest when present.

    Returns
    -------
    (Path, Manifest)
        The bundle directory, and the manifest written (with its ``files`` checksums).

    Raises
    ------
    BundleError
        ``directory`` exists, is not empty and is not a bundle (it is never replaced then).
    """
    target = Path(directory).expanduser().resolve()
    if target.exists() and any(target.iterdir()) and not (target / MANIFEST_FILE).is_file():
        raise BundleError(f"refusing to replace {target}: it is not empty and not a lookalike bundle")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.writing-", dir=target.parent))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; a bundle is an ordinary directory
        manifest = fill(staging)
        files = {name: sha256(staging / name) for name in checked if (staging / name).is_file()}
        manifest = manifest.replace(files=files)
        write_atomic(staging / MANIFEST_FILE, json.dumps(manifest.to_dict(), indent=2, ensure_ascii=False))
        replace_path(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("wrote bundle %s", target)
    return target, manifest


def read_manifest(directory: str | os.PathLike, *, required: tuple[str, ...]) -> Manifest:
    """Read and verify a bundle directory's manifest and the checksums of its files.

    Parameters
    ----------
    directory : path-like
    required : tuple of str
        Files every bundle has; the others listed in the manifest are verified too.

    Raises
    ------
    BundleError
        Not a bundle, another format version (the message says what to do), a file missing or damaged.
    """
    directory = Path(directory).expanduser()
    if not directory.exists():
        finish_interrupted_replace(directory)
    manifest_path = directory / MANIFEST_FILE
    if not manifest_path.is_file():
        raise BundleError(f"not a lookalike bundle: {manifest_path} not found")
    try:
        values = json.loads(manifest_path.read_text(encoding="utf-8"))
        version = int(values["format_version"])
    except (ValueError, KeyError, TypeError) as error:
        raise BundleError(f"cannot read bundle manifest {manifest_path}: {error!r}") from error
    if version > FORMAT_VERSION:
        raise BundleError(
            f"bundle {directory} has format version {version}, newer than this lookalike reads "
            f"(up to {FORMAT_VERSION}); upgrade lookalike"
        )
    if version < FORMAT_VERSION:
        raise BundleError(
            f"bundle {directory} has format version {version}, from an older lookalike (this one writes "
            f"{FORMAT_VERSION}: stable ids and stored embeddings); train it again"
        )
    try:
        manifest = Manifest.from_dict(values)
    except TypeError as error:
        raise BundleError(f"cannot read bundle manifest {manifest_path}: {error}") from error
    for name in sorted(set(required) | set(manifest.files)):
        path = directory / name
        if not path.is_file():
            raise BundleError(f"bundle file missing: {path}")
        expected = manifest.files.get(name)
        if expected is None:
            raise BundleError(f"{manifest_path} has no checksum for {name}: not written by this lookalike; train again")
        if sha256(path) != expected:
            raise BundleError(f"damaged bundle file {path}: its SHA-256 does not match the manifest")
    return manifest
