"""Pixel augmentations that imitate the queries a look-alike search gets: photos, drawings, bad copies.

Training images of cartoon characters are clean renders on white; queries are not. Each augmented view
of a training image gets at most one *appearance* change, drawn with the probabilities of
:class:`~lookalike.embedder.EmbedderConfig`, and, independently, a busy background:

=========== ==========================================================================================
grayscale   luminance only (ITU-R BT.601 weights)
recolour    hue rotated by a random angle about the grey axis of RGB space (saturation and lightness kept)
sketch      a line drawing: dark Sobel edges of the luminance on white, thickened by a 3x3 minimum filter
low-res     downscaled to 20-48 px (area averaging) and scaled back up (bilinear)
jpeg        JPEG-compressed at quality 10-30
background  the white surroundings of the character (white pixels connected to the border) replaced by
            random colour blobs and noise, as if the character were cut into a photo
=========== ==========================================================================================

Geometric augmentation (flip, rotation, zoom) comes after, inside the model (its ``augment`` layer).
The appearance changes follow what made self-supervised features robust (colour jitter, grayscale, blur:
Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations", 2020,
arXiv:2002.05709) plus renderings aimed at the query kinds of ``benchmarks/generalisation``.

Every operation works on the whole batch at once (NumPy, SciPy and TensorFlow image ops); none loops over
images in Python.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from scipy import ndimage

from .config import EmbedderConfig

#: Appearance changes, in the order their probabilities are drawn.
APPEARANCE = ("grayscale", "recolour", "sketch", "low_res", "jpeg")
#: A pixel is background when every channel is at least this bright and it connects to the border.
WHITE_LEVEL = 235
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def _luminance(images: np.ndarray) -> np.ndarray:
    return images @ _LUMA


def _grayscale(images: np.ndarray) -> np.ndarray:
    return np.repeat(_luminance(images)[..., None], 3, axis=-1)


def _recolour(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rotate each image's colours by a random angle in [60, 300] degrees about the grey axis (Rodrigues)."""
    angle = rng.uniform(np.pi / 3, 5 * np.pi / 3, len(images))
    u = np.full(3, 1 / np.sqrt(3), np.float32)
    cross = np.array([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]], np.float32)
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    rotation = cos * np.eye(3) + sin * cross + (1 - cos) * np.outer(u, u)  # (n, 3, 3)
    return np.einsum("nhwc,ndc->nhwd", images, rotation.astype(np.float32))


def _sketch(images: np.ndarray) -> np.ndarray:
    """Dark edges on white: Sobel magnitude of the luminance, normalised per image, inverted, thickened."""
    luma = tf.constant(_luminance(images)[..., None])
    edges = tf.norm(tf.image.sobel_edges(luma), axis=-1)[..., 0].numpy()  # (n, h, w)
    edges[:, [0, -1], :] = 0  # the image border is no edge
    edges[:, :, [0, -1]] = 0
    scale = np.percentile(edges.reshape(len(edges), -1), 99, axis=1)[:, None, None] + 1e-6
    lines = 255.0 - np.clip(edges / scale, 0, 1) * 255.0
    lines = ndimage.minimum_filter(lines, size=(1, 3, 3))
    return np.repeat(lines[..., None], 3, axis=-1)


def _low_res(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Down to one of a few sides (area averaging), back up (bilinear); one resize per side, not per image."""
    size = images.shape[1:3]
    sides = rng.choice([20, 28, 36, 48], len(images))
    out = np.empty_like(images)
    for side in np.unique(sides):
        at = sides == side
        small = tf.image.resize(images[at], (side, side), method="area")
        out[at] = tf.image.resize(small, size, method="bilinear").numpy()
    return out


def _jpeg(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    qualities = tf.constant(rng.integers(10, 31, len(images)), tf.int32)
    pixels = tf.constant(np.clip(images, 0, 255).astype(np.uint8))
    compressed = tf.map_fn(
        lambda item: tf.image.adjust_jpeg_quality(item[0], item[1]),
        (pixels, qualities),
        fn_output_signature=tf.TensorSpec(images.shape[1:], tf.uint8),
    )
    return compressed.numpy().astype(np.float32)


def _busy_backgrounds(n: int, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Random colour blobs at two scales plus pixel noise: float32 (n, h, w, 3) in [0, 255]."""
    coarse = tf.image.resize(rng.uniform(0, 255, (n, 3, 3, 3)).astype(np.float32), size, method="bicubic")
    fine = tf.image.resize(rng.normal(0, 60, (n, 12, 12, 3)).astype(np.float32), size, method="nearest")
    noise = rng.normal(0, 10, (n, *size, 3)).astype(np.float32)
    return np.clip(coarse.numpy() + fine.numpy() + noise, 0, 255)


def _background_mask(images: np.ndarray) -> np.ndarray:
    """Bool (n, h, w): near-white pixels connected (4-neighborhood, within each image) to the image border."""
    white = (images >= WHITE_LEVEL).all(axis=-1)
    seed = np.zeros_like(white)
    seed[:, [0, -1], :] = white[:, [0, -1], :]
    seed[:, :, [0, -1]] = white[:, :, [0, -1]]
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = ndimage.generate_binary_structure(2, 1)  # no connection across images
    return ndimage.binary_propagation(seed, structure=structure, mask=white)


def augment_appearance(images: np.ndarray, rng: np.random.Generator, config: EmbedderConfig) -> np.ndarray:
    """One random appearance change per image (or none) and, independently, a busy background.

    Parameters
    ----------
    images : uint8 or float32 ndarray of shape (n, s, s, 3)
        RGB pixels in [0, 255].
    rng : numpy.random.Generator
        Source of every random choice (seeded by the caller for reproducible views).
    config : EmbedderConfig
        Probabilities ``augment_grayscale``, ``augment_recolour``, ``augment_sketch``,
        ``augment_low_res``, ``augment_jpeg`` (mutually exclusive, at most 1 in total) and
        ``augment_background``.

    Returns
    -------
    float32 ndarray of shape (n, s, s, 3)
        Augmented pixels in [0, 255].
    """
    out = np.asarray(images, dtype=np.float32).copy()
    n = len(out)
    if n == 0:
        return out
    replace = rng.random(n) < config.augment_background
    if replace.any():
        mask = _background_mask(out[replace])[..., None]
        out[replace] = np.where(mask, _busy_backgrounds(int(replace.sum()), out.shape[1:3], rng), out[replace])
    probabilities = np.array([getattr(config, f"augment_{name}") for name in APPEARANCE])
    choice = np.searchsorted(np.cumsum(probabilities), rng.random(n), side="right")  # len(APPEARANCE): none
    for k, name in enumerate(APPEARANCE):
        at = choice == k
        if not at.any():
            continue
        if name == "grayscale":
            out[at] = _grayscale(out[at])
        elif name == "recolour":
            out[at] = _recolour(out[at], rng)
        elif name == "sketch":
            out[at] = _sketch(out[at])
        elif name == "low_res":
            out[at] = _low_res(out[at], rng)
        else:
            out[at] = _jpeg(out[at], rng)
    return np.clip(out, 0, 255)
