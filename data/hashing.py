"""Content hashes of decoded pixels, for exact duplicates: the same picture in another file or format.

:func:`pixel_hash` is the SHA-256 of an image's pixels at its native size, decoded as lookalike decodes every
image (:func:`lookalike.data.images.load_image` without the padding and resizing): EXIF orientation applied,
converted to RGB with transparency composited on white. Two files hash alike exactly when lookalike would see
the same picture at every size: a PNG re-saved as BMP or lossless WebP, a copy under another name, a JPEG
rotated by its EXIF tag beside the upright original. A JPEG re-compression, a resize or a crop changes the
pixels; those are near duplicates, found from embeddings (:mod:`lookalike.index.duplicates`).

The file bytes are not hashed: a byte hash misses re-encoded copies, and every byte-identical pair is found
anyway because it has the same pixels.

The same decoding pass keeps a small **pixel thumbnail** of each image (:func:`pixel_thumbnail`: the whole
picture as :data:`THUMBNAIL_SIZE` x :data:`THUMBNAIL_SIZE` grayscale, area-averaged), 2.3 KB per image, which the
verification of near-duplicate candidates compares (:mod:`lookalike.index.verify`) without decoding the files
again.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .images import DecodeFailure, ImageDecodeError, open_image, to_rgb

logger = logging.getLogger(__name__)

#: Prefix of the hashed bytes; changes whenever the decoding does, so hashes of two versions never match.
HASH_VERSION = b"lookalike-pixels-v1"
#: Side of the grayscale thumbnails kept for near-duplicate verification, in pixels.
THUMBNAIL_SIZE = 48
#: ITU-R BT.601 luma weights of R, G, B (Pillow's ``convert("L")``).
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class NativeImage:
    """An image decoded at its native size.

    Attributes
    ----------
    pixels : uint8 ndarray of shape (height, width, 3)
        RGB, transparency composited on white, EXIF orientation applied.
    mode : str
        The file's Pillow mode before conversion (``"L"`` for a grayscale file, ``"RGBA"``, ``"P"``, ...).
    """

    pixels: np.ndarray
    mode: str


def decode_native(path: str | os.PathLike) -> NativeImage:
    """Decode one image file at its native size, as :func:`~lookalike.data.load_image` sees it before resizing.

    Raises
    ------
    ImageDecodeError
        The file is missing, empty, not an image, truncated or larger than :data:`~lookalike.data.images.MAX_PIXELS`.
    """
    with open_image(path) as image:
        image.load()
        mode = image.mode
        rgb = to_rgb(ImageOps.exif_transpose(image))
        return NativeImage(np.asarray(rgb, dtype=np.uint8), mode)


def pixel_hash(pixels: np.ndarray) -> str:
    """SHA-256 (hex) of decoded RGB pixels of shape (height, width, 3), with their shape and :data:`HASH_VERSION`."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    digest = hashlib.sha256(HASH_VERSION)
    digest.update(np.asarray(pixels.shape, dtype="<u4").tobytes())
    digest.update(pixels.tobytes())
    return digest.hexdigest()


def pixel_thumbnail(pixels: np.ndarray, size: int = THUMBNAIL_SIZE) -> np.ndarray:
    """The whole image as a small grayscale thumbnail, for near-duplicate verification.

    Parameters
    ----------
    pixels : uint8 ndarray of shape (height, width, 3)
        Decoded RGB pixels (:func:`decode_native`).
    size : int
        Side of the thumbnail.

    Returns
    -------
    uint8 ndarray of shape (size, size)
        BT.601 luma, resized with area averaging (Pillow's ``BOX`` filter) and without keeping the aspect ratio,
        so that a resized copy gives nearly the same thumbnail.
    """
    gray = np.asarray(pixels, dtype=np.float32) @ LUMA
    image = Image.fromarray(np.clip(gray + 0.5, 0, 255).astype(np.uint8))
    return np.asarray(image.resize((size, size), Image.Resampling.BOX), dtype=np.uint8)


@dataclass(frozen=True)
class FileHashes:
    """Pixel hashes and native sizes of image files, in the order of the paths given.

    Attributes
    ----------
    paths : tuple of Path, length n
    hashes : tuple of (str or None), length n
        :func:`pixel_hash` of each file; None for a file that could not be decoded.
    sizes : int64 ndarray of shape (n, 2)
        Native ``(width, height)`` after EXIF rotation; ``(0, 0)`` for a file that could not be decoded.
    failures : tuple of DecodeFailure
        The files that could not be decoded, with the reason.
    thumbnails : uint8 ndarray of shape (n, THUMBNAIL_SIZE, THUMBNAIL_SIZE), optional
        :func:`pixel_thumbnail` of each file; zeros for a file that could not be decoded.
    """

    paths: tuple[Path, ...]
    hashes: tuple[str | None, ...]
    sizes: np.ndarray
    failures: tuple[DecodeFailure, ...]
    thumbnails: np.ndarray | None = None

    def groups(self) -> list[np.ndarray]:
        """Positions of the files sharing one hash, one int64 array per group of two or more, in path order."""
        positions: dict[str, list[int]] = {}
        for i, value in enumerate(self.hashes):
            if value is not None:
                positions.setdefault(value, []).append(i)
        return [np.asarray(group, dtype=np.int64) for group in positions.values() if len(group) > 1]


def _hash_one(path: Path) -> tuple[str, int, int, np.ndarray] | DecodeFailure:
    try:
        pixels = decode_native(path).pixels
    except ImageDecodeError as error:
        return DecodeFailure(error.path, error.reason)
    return pixel_hash(pixels), pixels.shape[1], pixels.shape[0], pixel_thumbnail(pixels)


def hash_files(paths: Sequence[str | os.PathLike], *, workers: int | None = None) -> FileHashes:
    """Hash the decoded pixels of image files, and keep their thumbnails, in parallel threads (Pillow and
    hashlib release the GIL).

    Files are only read. A file that cannot be decoded is logged and reported in ``failures``.

    Parameters
    ----------
    paths : sequence of path-like
    workers : int, optional
        Threads; default ``os.cpu_count()``.

    Returns
    -------
    FileHashes
    """
    paths = tuple(Path(p) for p in paths)
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        results = list(pool.map(_hash_one, paths))
    hashes, sizes, failures = [], np.zeros((len(paths), 2), dtype=np.int64), []
    thumbnails = np.zeros((len(paths), THUMBNAIL_SIZE, THUMBNAIL_SIZE), dtype=np.uint8)
    for i, result in enumerate(results):
        if isinstance(result, DecodeFailure):
            logger.warning("cannot hash %s: %s", result.path, result.reason)
            failures.append(result)
            hashes.append(None)
        else:
            hashes.append(result[0])
            sizes[i] = result[1:3]
            thumbnails[i] = result[3]
    return FileHashes(paths, tuple(hashes), sizes, tuple(failures), thumbnails)
