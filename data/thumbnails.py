"""Small JPEG copies of indexed images, packed in one file that travels with the bundle.

The web app shows results from these thumbnails only, never from the image paths a bundle's metadata
names: a bundle moved to another machine still shows its images, and a crafted ``metadata.json`` cannot make
the app read and show an arbitrary file of the server.

Layout (two files in the bundle directory)::

    thumbnails.bin   the JPEG files, one after the other
    thumbnails.npy   int64 array of shape (n, 3): id, byte offset, byte length; sorted by id

The pack is written once per bundle save and read by offset (memory-mapped), so a bundle of a million
images does not hold its thumbnails in memory.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .files import write_array, write_atomic
from .images import ImageDecodeError, iter_image_batches

logger = logging.getLogger(__name__)

#: Side in pixels of a stored thumbnail (square, padded with white like every decoded image).
THUMBNAIL_SIZE = 128
#: JPEG quality of stored thumbnails (about 4-6 KB each at 128 px).
JPEG_QUALITY = 90
PACK_FILE = "thumbnails.bin"
PACK_INDEX_FILE = "thumbnails.npy"
#: The two files of a pack, in the order their checksums are listed.
PACK_FILES = (PACK_FILE, PACK_INDEX_FILE)


def encode_thumbnail(pixels: np.ndarray) -> bytes:
    """JPEG bytes of one decoded image.

    Parameters
    ----------
    pixels : uint8 ndarray of shape (THUMBNAIL_SIZE, THUMBNAIL_SIZE, 3)
        RGB pixels, e.g. from :func:`lookalike.data.load_image`.
    """
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def decode_thumbnail(blob: bytes, *, name: str = "thumbnail") -> np.ndarray:
    """Decode thumbnail bytes read from a bundle, accepting only a JPEG of at most thumbnail size.

    A bundle's files are checksummed against damage, not against tampering, so the bytes are checked
    before anything is decoded: JPEG only, and the header's size no larger than :data:`THUMBNAIL_SIZE`.

    Returns
    -------
    uint8 ndarray of shape (h, w, 3)
        RGB pixels.

    Raises
    ------
    ImageDecodeError
        The bytes are not such a JPEG; the error's path is ``name``.
    """
    try:
        with Image.open(io.BytesIO(blob), formats=["JPEG"]) as image:
            if max(image.size) > THUMBNAIL_SIZE:
                raise ImageDecodeError(name, f"{image.size[0]}x{image.size[1]} is larger than a thumbnail")
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except ImageDecodeError:
        raise
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as error:
        raise ImageDecodeError(name, "not a JPEG thumbnail") from error


class ThumbnailPack:
    """Read access to the thumbnails of a bundle directory.

    Parameters
    ----------
    directory : path-like
        Bundle directory holding :data:`PACK_FILE` and :data:`PACK_INDEX_FILE`.

    Raises
    ------
    FileNotFoundError
        The pack's files are missing.
    ValueError
        The pack's index is damaged (wrong shape, or offsets outside the data file).
    """

    def __init__(self, directory: str | os.PathLike):
        directory = Path(directory)
        self.data_path = directory / PACK_FILE
        table = np.load(directory / PACK_INDEX_FILE, allow_pickle=False)
        size = self.data_path.stat().st_size
        if table.ndim != 2 or table.shape[1] != 3 or table.dtype != np.int64:
            raise ValueError(f"damaged thumbnail index {directory / PACK_INDEX_FILE}: shape {table.shape}")
        if len(table) and (table[:, 1].min() < 0 or table[:, 2].min() < 0 or (table[:, 1] + table[:, 2]).max() > size):
            raise ValueError(f"damaged thumbnail index {directory / PACK_INDEX_FILE}: offsets beyond {self.data_path}")
        if np.any(np.diff(table[:, 0]) <= 0):
            raise ValueError(f"damaged thumbnail index {directory / PACK_INDEX_FILE}: ids not ascending")
        self.ids, self._spans = table[:, 0], table[:, 1:]
        self._data = np.memmap(self.data_path, dtype=np.uint8, mode="r") if size else np.empty(0, np.uint8)

    def __len__(self) -> int:
        return len(self.ids)

    def get(self, image_id: int) -> bytes | None:
        """The JPEG bytes of the image with stable id ``image_id``; None when the pack has none."""
        position = int(np.searchsorted(self.ids, image_id))
        if position == len(self.ids) or self.ids[position] != image_id:
            return None
        offset, length = self._spans[position]
        return self._data[offset : offset + length].tobytes()

    @staticmethod
    def write(directory: str | os.PathLike, items: Iterable[tuple[int, bytes]]) -> int:
        """Write a pack of ``(id, jpeg_bytes)`` items into ``directory``; returns the number written."""
        directory = Path(directory)
        items = sorted(items)
        blobs = [blob for _, blob in items]
        lengths = np.array([len(b) for b in blobs], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if len(blobs) else lengths
        table = np.stack([np.array([i for i, _ in items], dtype=np.int64), offsets, lengths], axis=1)
        write_atomic(directory / PACK_FILE, b"".join(blobs))
        write_array(directory / PACK_INDEX_FILE, table.reshape(-1, 3))
        return len(items)


def make_thumbnails(ids: np.ndarray, paths: list[Path], *, progress: bool = False) -> list[tuple[int, bytes]]:
    """Decode image files in parallel and encode their thumbnails.

    Parameters
    ----------
    ids : int64 ndarray of shape (n,)
        Stable ids of the images.
    paths : list of Path, length n
        Their files. Files that can no longer be read are logged and get no thumbnail.
    progress : bool
        Show a progress bar.

    Returns
    -------
    list of (int, bytes)
        ``(id, jpeg_bytes)`` of every image that could be read.
    """
    from tqdm.auto import tqdm

    items = []
    with tqdm(total=len(paths), desc="thumbnails", unit="img", disable=not progress, leave=False) as bar:
        for batch in iter_image_batches(paths, size=THUMBNAIL_SIZE, batch_size=256):
            items.extend((int(ids[i]), encode_thumbnail(pixels)) for i, pixels in zip(batch.indices, batch.images))
            bar.update(len(batch.indices) + len(batch.failures))
    return items
