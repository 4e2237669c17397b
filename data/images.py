"""Image decoding: any file Pillow reads -> a square RGB uint8 array (optionally cropped to its content), in
parallel batches.

Every image goes through :func:`load_image`, so training, indexing and queries see exactly the same pixels.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

#: File name endings read as images (lower case).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"})

#: Background that transparent pixels are composited on and that non-square images are padded with.
BACKGROUND = (255, 255, 255)

#: Largest image accepted, in pixels (width x height), checked from the header before decoding: a
#: "decompression bomb" declares huge dimensions in a small file to exhaust memory. 64 Mpx is more than
#: any camera photo lookalike needs to see at 224 px.
MAX_PIXELS = 64_000_000


class ImageDecodeError(ValueError):
    """An image file could not be read; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path}: {reason}")


@dataclass(frozen=True)
class DecodeFailure:
    """A file that was skipped: its path and the reason it could not be decoded."""

    path: Path
    reason: str


@dataclass(frozen=True)
class ImageBatch:
    """One batch of decoded images.

    Attributes
    ----------
    indices : int64 ndarray of shape (b,)
        Positions of the decoded images in the input path sequence.
    images : uint8 ndarray of shape (b, size, size, 3)
        RGB pixels in [0, 255].
    failures : tuple of DecodeFailure
        Files of this batch that could not be decoded (they are not in ``images``).
    """

    indices: np.ndarray
    images: np.ndarray
    failures: tuple[DecodeFailure, ...]


def to_rgb(image: Image.Image) -> Image.Image:
    """Return ``image`` as an RGB image, with transparency composited on a white background.

    16- and 32-bit integer images (``I;16``, ``I``) are scaled to 8 bits by their type's range instead of
    being clipped at 255; 32-bit float images (``F``) are taken to lie in [0, 1].
    """
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        if image.mode == "F":
            full_scale = 1.0
        elif image.mode.startswith("I;16") or pixels.max() <= 65535:  # 16-bit PNGs may also open as "I"
            full_scale = 65535.0
        else:
            full_scale = 2.0**31 - 1
        image = Image.fromarray(np.clip(pixels / full_scale * 255.0, 0, 255).astype(np.uint8), mode="L")
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


@contextmanager
def open_image(path: str | os.PathLike) -> Iterator[Image.Image]:
    """Open an image file for decoding, after the checks every decode needs; errors become ImageDecodeError.

    The file must not be empty, and its header's size must not exceed :data:`MAX_PIXELS` (checked before any
    pixel is decoded). Errors raised while the caller decodes inside the ``with`` block are translated too.

    Raises
    ------
    ImageDecodeError
        The file is missing, empty, truncated, not an image, or larger than :data:`MAX_PIXELS`.
    """
    try:
        if os.path.getsize(path) == 0:
            raise ImageDecodeError(path, "empty file (0 bytes)")
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageDecodeError(path, f"image too large: {width}x{height} pixels (limit {MAX_PIXELS:,})")
            yield image
    except ImageDecodeError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        reason = str(error) or type(error).__name__
        if isinstance(error, FileNotFoundError):
            reason = "file not found"
        elif isinstance(error, UnidentifiedImageError):
            reason = "not an image file (no image format recognised)"
        raise ImageDecodeError(path, reason) from error


#: Crop to content: a colour channel within this many levels (0-255) of the border colour is background.
CONTENT_TOLERANCE = 24
#: Crop to content: the border is one flat colour when at least this share of its pixels is background.
UNIFORM_BORDER = 0.9
#: Crop to content: crop only when the content's longer side is at most this share of the image's longer side.
CONTENT_FILL = 0.8
#: Crop to content: margin kept around the content, as a share of its longer side.
CONTENT_MARGIN = 0.04


def crop_to_content(image: Image.Image) -> Image.Image:
    """The part of an RGB image that holds its content, when that content sits small on a flat background.

    The background colour is the median of the image's outermost rows and columns; it counts as flat when
    :data:`UNIFORM_BORDER` of those pixels lie within :data:`CONTENT_TOLERANCE` of it in every channel (white
    paper, a screenshot's backdrop, a sprite's transparent padding composited on white). The content is every
    pixel further from it. When the content's bounding box has its longer side at most :data:`CONTENT_FILL` of
    the image's, the box plus a :data:`CONTENT_MARGIN` margin is cut out and padded to a square with the
    background colour, so the character fills the frame as it does in a tightly cropped sprite. Images whose
    content fills the frame, or whose background is busy (a photo, noise), are returned unchanged.

    Parameters
    ----------
    image : PIL.Image.Image
        RGB image of any size.

    Returns
    -------
    PIL.Image.Image
        ``image`` itself, or a square RGB crop of it.
    """
    width, height = image.size
    if min(width, height) < 8:
        return image
    strips = [(0, 0, width, 1), (0, height - 1, width, height), (0, 0, 1, height), (width - 1, 0, width, height)]
    border = np.concatenate([np.asarray(image.crop(strip)).reshape(-1, 3) for strip in strips]).astype(np.int16)
    colour = np.median(border, axis=0).astype(np.int16)
    if np.mean(np.abs(border - colour).max(axis=1) <= CONTENT_TOLERANCE) < UNIFORM_BORDER:
        return image
    fill = tuple(int(c) for c in colour)
    # Pixels further than the tolerance from the background in any channel, found in C (Pillow), not per pixel.
    difference = ImageChops.difference(image, Image.new("RGB", image.size, fill))
    box = difference.point(lambda level: 255 if level > CONTENT_TOLERANCE else 0).getbbox()
    if box is None:
        return image  # a blank image: nothing to crop to
    left, top, right, bottom = box
    longer = max(right - left, bottom - top)
    if longer > CONTENT_FILL * max(width, height):
        return image
    margin = int(np.ceil(CONTENT_MARGIN * longer))
    cropped = image.crop(
        (max(0, left - margin), max(0, top - margin), min(width, right + margin), min(height, bottom + margin))
    )
    side = max(cropped.size)
    return ImageOps.pad(cropped, (side, side), color=fill)


def load_image(path: str | os.PathLike, size: int, *, crop: bool = False) -> np.ndarray:
    """Decode one image file to a square RGB array.

    The image is rotated by its EXIF orientation, converted to RGB (transparency composited on white),
    cropped to its content if ``crop`` (see :func:`crop_to_content`), padded to a square with white (aspect
    ratio kept) and resized to ``size`` x ``size`` with bilinear interpolation. Large JPEGs are decoded at
    reduced resolution (Pillow's draft mode) when that still leaves at least ``size`` pixels per side.

    Parameters
    ----------
    path : path-like
        Image file in any format Pillow reads (JPEG, PNG, BMP, GIF (first frame), WebP, ...).
    size : int
        Output side length in pixels.
    crop : bool
        Crop a character that sits small on a flat background to its content first
        (:attr:`lookalike.embedder.EmbedderConfig.crop_to_content` says whether an embedder's images are).

    Returns
    -------
    uint8 ndarray of shape (size, size, 3)
        RGB pixels in [0, 255].

    Raises
    ------
    ImageDecodeError
        The file is missing, empty, truncated, not an image, or larger than :data:`MAX_PIXELS`.
    """
    with open_image(path) as image:
        image.draft("RGB", (size, size))
        image.load()
        image = ImageOps.exif_transpose(image)
        image = to_rgb(image)
        if crop:
            image = crop_to_content(image)
        image = ImageOps.pad(image, (size, size), method=Image.Resampling.BILINEAR, color=BACKGROUND)
        return np.asarray(image, dtype=np.uint8)


def _decode_or_failure(path: Path, size: int, crop: bool) -> np.ndarray | DecodeFailure:
    try:
        return load_image(path, size, crop=crop)
    except ImageDecodeError as error:
        return DecodeFailure(error.path, error.reason)


def iter_image_batches(
    paths: Sequence[str | os.PathLike],
    *,
    size: int,
    batch_size: int = 64,
    workers: int | None = None,
    prefetch: int = 2,
    crop: bool = False,
) -> Iterator[ImageBatch]:
    """Decode ``paths`` in parallel and yield them in order, one batch at a time.

    Decoding runs in a thread pool (Pillow releases the GIL) and stays ``prefetch`` batches ahead of the
    consumer, so decoding overlaps with whatever the caller does with a batch; memory is bounded by
    ``(prefetch + 1) * batch_size`` images. A file that cannot be decoded is logged, reported in its
    batch's ``failures`` and skipped.

    Parameters
    ----------
    paths : sequence of path-like
        Image files, in the order their indices refer to.
    size : int
        Output side length in pixels (see :func:`load_image`).
    batch_size : int
        Number of paths per batch (a batch holds fewer images when some fail).
    workers : int, optional
        Decoding threads; default ``os.cpu_count()``.
    prefetch : int
        Batches decoded ahead of the consumer.
    crop : bool
        Crop each image to its content first (see :func:`load_image`).

    Yields
    ------
    ImageBatch
        ``images`` of shape (b, size, size, 3), b <= batch_size; batches with no decodable image are
        still yielded (with b = 0) so that their failures are seen.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1; got {batch_size}")
    paths = [Path(p) for p in paths]
    starts = iter(range(0, len(paths), batch_size))
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        pending: deque[tuple[int, list[Future]]] = deque()

        def submit_next() -> None:
            start = next(starts, None)
            if start is not None:
                chunk = paths[start : start + batch_size]
                pending.append((start, [pool.submit(_decode_or_failure, p, size, crop) for p in chunk]))

        for _ in range(prefetch + 1):
            submit_next()
        while pending:
            start, futures = pending.popleft()
            submit_next()
            indices, images, failures = [], [], []
            for offset, future in enumerate(futures):
                result = future.result()
                if isinstance(result, DecodeFailure):
                    logger.warning("skipped %s: %s", result.path, result.reason)
                    failures.append(result)
                else:
                    indices.append(start + offset)
                    images.append(result)
            stacked = np.stack(images) if images else np.empty((0, size, size, 3), dtype=np.uint8)
            yield ImageBatch(np.asarray(indices, dtype=np.int64), stacked, tuple(failures))
