"""Unpacking an uploaded dataset archive (a zip of ``<class>/<image>`` folders) without trusting it.

A zip from a web upload may carry absolute paths, ``..`` components, symbolic links, thousands of
entries or a few kilobytes that inflate to gigabytes (a "zip bomb"). :func:`extract_dataset_zip` checks
every entry *before* writing anything, writes only image files, only below the target folder, and stops
reading an entry as soon as it inflates past its declared size.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .images import IMAGE_EXTENSIONS

logger = logging.getLogger(__name__)


class ArchiveError(ValueError):
    """An uploaded archive is refused; the message says why (it never names a server path)."""


@dataclass(frozen=True, kw_only=True)
class ArchiveLimits:
    """What an uploaded dataset archive may hold.

    Attributes
    ----------
    max_files : int
        Image entries.
    max_total_bytes : int
        Uncompressed size of all image entries together, in bytes.
    max_file_bytes : int
        Uncompressed size of one entry, in bytes.
    max_ratio : float
        Largest uncompressed / compressed size of one entry (images hardly compress; bombs do, by 1000x).
    """

    max_files: int = 20_000
    max_total_bytes: int = 1 << 30
    max_file_bytes: int = 50 << 20
    max_ratio: float = 100.0


def _member_path(info: zipfile.ZipInfo) -> PurePosixPath:
    """The entry's relative path, or ArchiveError for an absolute, escaping or link entry."""
    name = info.filename.replace("\\", "/")
    path = PurePosixPath(name)
    if name.startswith("/") or (len(name) > 1 and name[1] == ":") or path.is_absolute():
        raise ArchiveError(f"archive entry {name!r} has an absolute path")
    if ".." in path.parts:
        raise ArchiveError(f"archive entry {name!r} points outside the archive ('..')")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise ArchiveError(f"archive entry {name!r} is a symbolic link")
    return path


def _dataset_root(paths: list[PurePosixPath]) -> int:
    """How many leading folders to strip so that entries read ``<class>/<image>`` (0 or 1)."""
    tops = {p.parts[0] for p in paths}
    return 1 if len(tops) == 1 and all(len(p.parts) >= 3 for p in paths) else 0


def extract_dataset_zip(
    archive: str | os.PathLike, target: str | os.PathLike, limits: ArchiveLimits = ArchiveLimits()
) -> Path:
    """Unpack the image files of a dataset zip into ``target``, after checking every entry.

    Entries must be ``<class>/<image>`` or ``<top>/<class>/<image>`` (a single top folder is removed).
    Files that are not images (by extension) and hidden files are ignored.

    Parameters
    ----------
    archive : path-like
        The zip file.
    target : path-like
        Folder to create; it must not exist yet.
    limits : ArchiveLimits

    Returns
    -------
    Path
        ``target``, holding ``<class>/<image>`` files.

    Raises
    ------
    ArchiveError
        Not a zip, an entry with an absolute path, ``..`` or a symbolic link, no image in class folders, or a
        limit exceeded. Nothing is left in ``target`` then.
    """
    target = Path(target)
    try:
        handle = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as error:
        raise ArchiveError("not a zip archive") from error
    with handle:
        entries = []
        for info in handle.infolist():
            path = _member_path(info)  # checked for every entry, images or not
            if info.is_dir() or any(part.startswith(".") for part in path.parts):
                continue
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                entries.append((info, path))
        if not entries:
            raise ArchiveError("the archive holds no images (expected <class>/<image> folders)")
        if len(entries) > limits.max_files:
            raise ArchiveError(f"the archive holds {len(entries):,} images; the limit is {limits.max_files:,}")
        total = sum(info.file_size for info, _ in entries)
        if total > limits.max_total_bytes:
            raise ArchiveError(f"the images unpack to {total:,} bytes; the limit is {limits.max_total_bytes:,}")
        for info, path in entries:
            if info.file_size > limits.max_file_bytes:
                raise ArchiveError(
                    f"{path} unpacks to {info.file_size:,} bytes; the limit is {limits.max_file_bytes:,}"
                )
            if info.file_size > limits.max_ratio * max(info.compress_size, 1):
                raise ArchiveError(f"{path} is compressed {info.file_size / max(info.compress_size, 1):.0f}x: refused")
        strip = _dataset_root([p for _, p in entries])
        relative = [PurePosixPath(*p.parts[strip:]) for _, p in entries]
        if any(len(p.parts) != 2 for p in relative):
            raise ArchiveError("expected <class>/<image> entries (one folder per class), found other nesting")
        target.mkdir(parents=True)
        try:
            for (info, _), path in zip(entries, relative):
                out = target.joinpath(*path.parts)
                out.parent.mkdir(exist_ok=True)
                _copy_bounded(handle, info, out)
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
    logger.info("unpacked %d images of %d classes", len(entries), len({p.parts[0] for p in relative}))
    return target


def _copy_bounded(handle: zipfile.ZipFile, info: zipfile.ZipInfo, out: Path) -> None:
    """Copy one entry, refusing it as soon as it inflates past its declared size."""
    written = 0
    try:
        with handle.open(info) as source, open(out, "xb") as sink:
            while block := source.read(1 << 16):
                written += len(block)
                if written > info.file_size:
                    raise ArchiveError(f"{info.filename} inflates past its declared size: refused")
                sink.write(block)
    except FileExistsError as error:
        raise ArchiveError(f"{info.filename} appears twice in the archive") from error
    except (zipfile.BadZipFile, EOFError, RuntimeError) as error:  # damaged data, bad CRC, encrypted entry
        raise ArchiveError(f"{info.filename} cannot be unpacked: {error}") from error
