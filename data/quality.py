"""Image-quality checks over files: dark, light, blurry, low information, grayscale among colour, odd size or aspect.

The checks follow CleanVision's definitions (cleanlab/cleanvision, ``issue_managers/image_property.py`` and the
default thresholds of ``image_property_issue_manager.py``, version 0.3.7) wherever those work on lookalike's
images, and say where they do not. Every image is decoded at its native size as lookalike sees it
(:func:`lookalike.data.hashing.decode_native`: EXIF orientation applied, transparency composited on white),
and measured on a copy at most :data:`MEASURE_SIDE` pixels per side (Pillow's ``reduce``/``thumbnail``), so a
large photo costs no more than a small one. Brightness per pixel is CleanVision's perceived brightness
``sqrt(0.241 R^2 + 0.691 G^2 + 0.068 B^2) / 255``, in [0, 1].

========================  ===========================================================================  =========
issue                     rule (flagged when)                                                          source
========================  ===========================================================================  =========
``dark``                  99th percentile of brightness < 0.32 (even the bright pixels are dark)        CleanVision
``light``                 1 - 5th percentile of brightness < 0.05 (even the dark pixels are bright)    CleanVision
``low_information``       0.1 x entropy (bits) of the 768-bin RGB histogram < 0.2                      CleanVision*
``odd_aspect_ratio``      min(w / h, h / w) < 0.35                                                     CleanVision
``odd_size``              log sqrt(w h) outside Tukey's fences with factor 3 over the set              CleanVision*
``blurry``                sharpness < 0.35 x the set's median sharpness                                lookalike
``grayscale``             the image is gray while most of the set is colour                           lookalike
========================  ===========================================================================  =========

Where lookalike differs (* and the last two rows), and why (measured in ``benchmarks/data_health``):

- **low_information**: CleanVision's threshold is 0.3 (entropy below 3 bits). A character sprite on a white
  background has a histogram dominated by white: at 0.3, 10 of the 1,006 FreedroidRPG images and 101 of the
  2,670 Wesnoth units are flagged, all of them ordinary characters; the lowest clean image has 1.95 bits. A
  one-colour or near-uniform image has less than 1 bit, so lookalike flags below 0.2 (2 bits).

- **blurry**: CleanVision scores the standard deviation of a 3x3 edge filter on a 64-pixel copy, plus a term
  for the spread of the gray histogram that exempts any image with a large uniform background. Every sprite
  on white has one, so CleanVision flags none of them, blurred or not. lookalike's **sharpness** is the
  standard deviation of the 4-neighbor Laplacian of the gray image divided by the standard deviation of the
  gray values (contrast-free: a dark image is not blurry for being dark), and an image is blurry when its
  sharpness is below 0.35 times the median of the set it is checked with (a relative rule like CleanVision's
  ``odd_size``: what is sharp differs between photos and pixel art). It needs a set of about ten images or more.
- **grayscale**: CleanVision flags files stored in mode ``L``; lookalike also flags RGB files whose three
  channels agree (99th percentile of the per-pixel channel spread at most 2 levels), and only when most of
  the set is colour ("grayscale among colour": in an all-gray set no image is an issue).
- **odd_size**: CleanVision puts the fences on sqrt(w h) itself; sizes vary by factors, and on a linear scale the
  lower fence q1 - 3 IQR is below 0 whenever q1 < 3 IQR, so a thumbnail of 8 x 8 pixels among 60-pixel sprites
  is never flagged. lookalike puts the fences on log sqrt(w h), with an interquartile range of at least
  log 1.1 (when every image has the same size, CleanVision flags any other size, however close).

Nothing here writes to the files.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .hashing import decode_native
from .images import DecodeFailure, ImageDecodeError

logger = logging.getLogger(__name__)

#: Longest side, in pixels, of the copy an image is measured on.
MEASURE_SIDE = 256
#: The issues :func:`check_quality` reports, in column order.
ISSUES = ("dark", "light", "blurry", "low_information", "grayscale", "odd_size", "odd_aspect_ratio")
_BRIGHTNESS_WEIGHTS = np.array([0.241, 0.691, 0.068])


@dataclass(frozen=True)
class QualityThresholds:
    """Thresholds of :func:`check_quality`; see the module docstring for each rule.

    Attributes
    ----------
    dark : float
        Flag when the 99th brightness percentile is below this (CleanVision: 0.32).
    light : float
        Flag when 1 - the 5th brightness percentile is below this (CleanVision: 0.05).
    low_information : float
        Flag when 0.1 x the RGB histogram entropy in bits is below this (CleanVision: 0.3, see above).
    odd_aspect_ratio : float
        Flag when min(w / h, h / w) is below this (CleanVision: 0.35).
    odd_size_iqr : float
        Tukey fence factor on sqrt(w h) (CleanVision: 3.0).
    blurry : float
        Flag when sharpness is below this fraction of the set's median sharpness.
    grayscale_spread : int
        Largest 99th percentile of the per-pixel channel spread (max - min over R, G, B) of a gray image.
    """

    dark: float = 0.32
    light: float = 0.05
    low_information: float = 0.2
    odd_aspect_ratio: float = 0.35
    odd_size_iqr: float = 3.0
    blurry: float = 0.35
    grayscale_spread: int = 2

    @classmethod
    def from_dict(cls, values: dict) -> QualityThresholds:
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(
                f"unknown quality thresholds {', '.join(unknown)}; allowed: {', '.join(cls.__dataclass_fields__)}"
            )
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class QualityReport:
    """Measured properties and quality issues of image files; arrays are in the order of ``paths``.

    Attributes
    ----------
    paths : tuple of Path, length n
        The files that could be decoded.
    width, height : int64 ndarray of shape (n,)
        Native size after EXIF rotation.
    mode : tuple of str, length n
        Pillow mode of each file (``"RGB"``, ``"L"``, ``"P"``, ...).
    brightness_p99, brightness_p5 : float32 ndarray of shape (n,)
        Percentiles of perceived brightness, in [0, 1].
    entropy : float32 ndarray of shape (n,)
        Entropy in bits of the 768-bin RGB histogram.
    sharpness : float32 ndarray of shape (n,)
        Laplacian standard deviation over gray standard deviation (0 for a uniform image).
    gray : bool ndarray of shape (n,)
        The image has no colour.
    flags : dict of str to bool ndarray of shape (n,)
        One entry per issue of :data:`ISSUES`.
    thresholds : QualityThresholds
    failures : tuple of DecodeFailure
        Files that could not be decoded (not in ``paths``).
    """

    paths: tuple[Path, ...]
    width: np.ndarray
    height: np.ndarray
    mode: tuple[str, ...]
    brightness_p99: np.ndarray
    brightness_p5: np.ndarray
    entropy: np.ndarray
    sharpness: np.ndarray
    gray: np.ndarray
    flags: dict[str, np.ndarray]
    thresholds: QualityThresholds
    failures: tuple[DecodeFailure, ...] = ()

    def __len__(self) -> int:
        return len(self.paths)

    def flagged(self) -> np.ndarray:
        """Positions of the images with at least one issue: int64 ndarray."""
        return (
            np.flatnonzero(np.any(np.stack([self.flags[i] for i in ISSUES]), axis=0))
            if len(self)
            else np.zeros(0, np.int64)
        )

    def to_frame(self):
        """One row per image: ``path, width, height, mode``, the measured properties, one bool column per issue
        and ``issues`` (the flagged issues, comma-separated; empty when clean). A pandas DataFrame."""
        import pandas as pd

        frame = pd.DataFrame(
            {
                "path": [str(p) for p in self.paths],
                "width": self.width,
                "height": self.height,
                "mode": list(self.mode),
                "brightness_p99": self.brightness_p99,
                "brightness_p5": self.brightness_p5,
                "entropy": self.entropy,
                "sharpness": self.sharpness,
                "aspect_ratio": np.minimum(self.width, self.height)
                / np.maximum(np.maximum(self.width, self.height), 1),
                "gray": self.gray,
                **{issue: self.flags[issue] for issue in ISSUES},
            }
        )
        frame["issues"] = [",".join(i for i in ISSUES if self.flags[i][row]) for row in range(len(self))]
        return frame

    def issues_frame(self):
        """Only the flagged images, one row per (image, issue): ``path, issue``. A pandas DataFrame."""
        import pandas as pd

        rows = [(str(self.paths[row]), issue) for issue in ISSUES for row in np.flatnonzero(self.flags[issue])]
        return pd.DataFrame(rows, columns=["path", "issue"])

    def summary(self) -> dict[str, int]:
        """Number of images flagged per issue."""
        return {issue: int(self.flags[issue].sum()) for issue in ISSUES}


def _measure(path: Path) -> tuple | DecodeFailure:
    """The per-image properties of one file (everything but the set-relative rules)."""
    try:
        native = decode_native(path)
    except ImageDecodeError as error:
        return DecodeFailure(error.path, error.reason)
    height, width = native.pixels.shape[:2]
    image = Image.fromarray(native.pixels)
    if max(width, height) > MEASURE_SIDE:
        image.thumbnail((MEASURE_SIDE, MEASURE_SIDE), Image.Resampling.BILINEAR)
    rgb = np.asarray(image, dtype=np.float32)
    brightness = np.sqrt((rgb * rgb) @ _BRIGHTNESS_WEIGHTS.astype(np.float32)) / 255.0
    p5, p99 = np.percentile(brightness, [5, 99])
    pixels = np.asarray(image, dtype=np.int64)
    histogram = np.bincount((pixels + np.array([0, 256, 512])).ravel(), minlength=768) / pixels.size
    histogram = histogram[histogram > 0]
    entropy = float(-(histogram * np.log2(histogram)).sum())  # as Pillow's Image.entropy() of the RGB image
    gray_values = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601-2 luma, as Pillow's "L"
    laplacian = (
        4 * gray_values[1:-1, 1:-1]
        - gray_values[:-2, 1:-1]
        - gray_values[2:, 1:-1]
        - gray_values[1:-1, :-2]
        - gray_values[1:-1, 2:]
    )
    spread = float(gray_values.std())
    sharpness = float(laplacian.std()) / spread if spread > 1e-3 and laplacian.size else 0.0
    channel_spread = pixels.max(axis=2) - pixels.min(axis=2)
    return width, height, native.mode, p99, p5, entropy, sharpness, float(np.percentile(channel_spread, 99))


def check_quality(
    paths: Sequence[str | os.PathLike],
    *,
    thresholds: QualityThresholds = QualityThresholds(),
    workers: int | None = None,
) -> QualityReport:
    """Measure every image file and flag the quality issues of :data:`ISSUES`.

    ``blurry``, ``grayscale`` and ``odd_size`` are judged relative to the set of ``paths`` (see the module
    docstring), so check a whole dataset at once. Files are decoded in parallel threads and only read.

    Parameters
    ----------
    paths : sequence of path-like
        Image files; a file that cannot be decoded is logged and reported in ``failures``.
    thresholds : QualityThresholds
    workers : int, optional
        Decoding threads; default ``os.cpu_count()``.

    Returns
    -------
    QualityReport
    """
    paths = [Path(p) for p in paths]
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        results = list(pool.map(_measure, paths))
    failures = tuple(r for r in results if isinstance(r, DecodeFailure))
    for failure in failures:
        logger.warning("cannot check %s: %s", failure.path, failure.reason)
    kept = [(p, r) for p, r in zip(paths, results) if not isinstance(r, DecodeFailure)]
    columns = list(zip(*(r for _, r in kept))) or [()] * 8
    width, height = np.asarray(columns[0], dtype=np.int64), np.asarray(columns[1], dtype=np.int64)
    p99, p5, entropy, sharpness, channel_spread = (np.asarray(c, dtype=np.float32) for c in columns[3:])
    gray = np.array([m in ("1", "L", "LA", "I", "F") or m.startswith("I;16") for m in columns[2]], dtype=bool)
    gray |= channel_spread <= thresholds.grayscale_spread
    size = np.log(np.maximum(np.sqrt(width * height.astype(np.float64)), 1.0))
    if len(size):
        q1, q3 = np.percentile(size, [25, 75])
        iqr = max(q3 - q1, np.log(1.1))
        odd_size = (size < q1 - thresholds.odd_size_iqr * iqr) | (size > q3 + thresholds.odd_size_iqr * iqr)
        blurry = sharpness < thresholds.blurry * np.median(sharpness)
    else:
        odd_size = blurry = np.zeros(0, dtype=bool)
    flags = {
        "dark": p99 < thresholds.dark,
        "light": 1.0 - p5 < thresholds.light,
        "blurry": blurry,
        "low_information": np.minimum(0.1 * entropy, 1.0) < thresholds.low_information,
        "grayscale": gray & (gray.mean() < 0.5 if len(gray) else False),
        "odd_size": odd_size,
        "odd_aspect_ratio": np.minimum(width, height) / np.maximum(np.maximum(width, height), 1)
        < thresholds.odd_aspect_ratio,
    }
    return QualityReport(
        paths=tuple(p for p, _ in kept),
        width=width,
        height=height,
        mode=tuple(columns[2]),
        brightness_p99=p99,
        brightness_p5=p5,
        entropy=entropy,
        sharpness=sharpness,
        gray=gray,
        flags=flags,
        thresholds=thresholds,
        failures=failures,
    )
