"""Verification of near-duplicate candidates by their pixels: the second stage of duplicate search.

Embeddings find candidates with high recall, but two frames of one animation are often as close in embedding
space as an image and its JPEG-compressed or cropped copy. A copy differs from its original *everywhere a
little* (compression noise, resampling, a brightness shift); another frame differs *somewhere a lot* (an arm,
a weapon). The check compares small grayscale thumbnails (:func:`lookalike.data.hashing.pixel_thumbnail`):

1. each thumbnail is smoothed (Gaussian, :data:`BLUR` px) and standardised (zero mean, unit variance), which
   makes the comparison indifferent to brightness and contrast shifts and to resampling and JPEG noise;
2. the two are aligned: one of them is zoomed by each of :data:`ZOOMS` about its centre (a copy cropped by
   up to ~8 % per side) and shifted by each of :data:`SHIFTS` pixels, both ways round, and the alignment with
   the largest normalised correlation is kept;
3. the **local difference** is the largest mean squared difference of the aligned standardised thumbnails
   in any :data:`WINDOW` x :data:`WINDOW` window (units: variances; 0 for identical pictures, 2 for unrelated
   ones). A pair is verified when it is at most :data:`MAX_LOCAL_DIFFERENCE`.

This is template matching by normalised cross-correlation (Lewis, "Fast normalized cross-correlation", 1995)
over a small grid of similarity transforms, with a local rather than a global acceptance test. The thresholds
are chosen in ``benchmarks/data_health`` on freedroidrpg and confirmed on wesnoth_units.
"""

from __future__ import annotations

import functools
import logging

import numpy as np
from scipy import ndimage, sparse

logger = logging.getLogger(__name__)

#: Zoom factors tried (a crop of ``c`` per side is a zoom of ``1 / (1 - 2c)``).
ZOOMS = (1.0, 1.05, 1.11, 1.17)
#: Shifts tried along each axis, in thumbnail pixels.
SHIFTS = (-1, 0, 1)
#: Standard deviation of the Gaussian smoothing, in thumbnail pixels.
BLUR = 1.0
#: Side of the window of the local difference, in thumbnail pixels.
WINDOW = 6
#: A candidate pair is verified when its local difference is at most this (see ``benchmarks/data_health``).
MAX_LOCAL_DIFFERENCE = 0.25


def _standardise(images: np.ndarray) -> np.ndarray:
    """Rows of zero mean and unit norm: float32 ndarray of shape (m, side * side)."""
    flat = images.reshape(len(images), -1)
    flat = (flat - flat.mean(axis=1, keepdims=True)).astype(np.float32, copy=False)
    return flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-6)


def _smooth(images: np.ndarray) -> np.ndarray:
    """Gaussian smoothing of each image of a stack of shape (..., side, side)."""
    sigma = (0,) * (images.ndim - 2) + (BLUR, BLUR)
    return ndimage.gaussian_filter(images.astype(np.float32), sigma)


@functools.lru_cache(maxsize=4)
def _warp_operator(side: int) -> sparse.csr_matrix:
    """Bilinear resampling of a flattened side x side image by every zoom and shift: a sparse matrix of shape
    (n_variants * side**2, side**2), edges clamped."""
    centre = (side - 1) / 2
    y, x = np.mgrid[0:side, 0:side].astype(np.float64)
    rows, cols, weights = [], [], []
    n = 0
    for zoom in ZOOMS:
        for dy in SHIFTS:
            for dx in SHIFTS:
                # Output pixel (y, x) samples the input at centre + (p - centre) / zoom + shift.
                sy = np.clip(centre + (y - centre) / zoom + dy, 0, side - 1).ravel()
                sx = np.clip(centre + (x - centre) / zoom + dx, 0, side - 1).ravel()
                y0, x0 = np.minimum(np.floor(sy).astype(int), side - 2), np.minimum(np.floor(sx).astype(int), side - 2)
                fy, fx = sy - y0, sx - x0
                out = n * side * side + np.arange(side * side)
                for oy, ox, w in (
                    (0, 0, (1 - fy) * (1 - fx)),
                    (0, 1, (1 - fy) * fx),
                    (1, 0, fy * (1 - fx)),
                    (1, 1, fy * fx),
                ):
                    rows.append(out)
                    cols.append((y0 + oy) * side + x0 + ox)
                    weights.append(w)
                n += 1
    return sparse.csr_matrix(
        (np.concatenate(weights).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n * side * side, side * side),
    )


def _variants(thumbnails: np.ndarray) -> np.ndarray:
    """Standardised, smoothed zooms and shifts of thumbnails of shape (u, side, side): float32 ndarray of shape
    (u, n_variants, side**2)."""
    u, side = len(thumbnails), thumbnails.shape[1]
    warped = (_warp_operator(side) @ thumbnails.reshape(u, -1).T.astype(np.float32)).T  # (u, n_variants * side**2)
    return _standardise(_smooth(warped.reshape(-1, side, side))).reshape(u, -1, side * side)


def _best_alignment(variants, reference, movers, partners):
    """For each pair (mover, partner): the best correlation of a variant of mover with partner, and the residual."""
    scores = np.einsum("pvd,pd->pv", variants[movers], reference[partners])
    best = scores.argmax(axis=1)
    chosen = variants[movers, best]
    return scores[np.arange(len(movers)), best], chosen - reference[partners]


def verify_pairs(
    thumbnails: np.ndarray,
    pairs: np.ndarray,
    *,
    max_local_difference: float = MAX_LOCAL_DIFFERENCE,
    batch_size: int = 256,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check candidate near-duplicate pairs on their pixel thumbnails.

    Parameters
    ----------
    thumbnails : uint8 ndarray of shape (n, side, side)
        Grayscale thumbnails (:attr:`lookalike.data.hashing.FileHashes.thumbnails`).
    pairs : int64 ndarray of shape (m, 2)
        Rows of ``thumbnails`` to compare.
    max_local_difference : float
        Largest local difference of a verified pair, in variances (see the module docstring).
    batch_size : int
        Pairs compared at once (bounds memory: about 0.7 MB per pair for 48 px thumbnails).

    Returns
    -------
    verified : bool ndarray of shape (m,)
    correlation : float32 ndarray of shape (m,)
        Normalised correlation of the best alignment, in [-1, 1].
    local_difference : float32 ndarray of shape (m,)
        Largest windowed mean squared difference of the aligned standardised thumbnails, >= 0.

    Raises
    ------
    ValueError
        ``thumbnails`` is not a stack of square images, or ``pairs`` is not of shape (m, 2) within its rows.
    """
    thumbnails = np.asarray(thumbnails)
    if thumbnails.ndim != 3 or thumbnails.shape[1] != thumbnails.shape[2]:
        raise ValueError(f"thumbnails must have shape (n, side, side); got {thumbnails.shape}")
    pairs = np.asarray(pairs, dtype=np.int64)
    if pairs.ndim != 2 or pairs.shape[1] != 2 or (pairs.size and (pairs.min() < 0 or pairs.max() >= len(thumbnails))):
        raise ValueError(f"pairs must have shape (m, 2) with rows in [0, {len(thumbnails)}); got shape {pairs.shape}")
    side = thumbnails.shape[1]
    if not len(pairs):
        empty = np.zeros(0, dtype=np.float32)
        return np.zeros(0, dtype=bool), empty, empty
    correlation = np.zeros(len(pairs), dtype=np.float32)
    local = np.zeros(len(pairs), dtype=np.float32)
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))  # adjacent pairs share images
    for start in range(0, len(pairs), batch_size):
        rows = order[start : start + batch_size]
        used, inverse = np.unique(pairs[rows], return_inverse=True)
        local_pairs = inverse.reshape(-1, 2)
        reference = _standardise(_smooth(thumbnails[used]))
        variants = _variants(thumbnails[used])
        # Both ways round: zoom the first onto the second, and the second onto the first; keep the better.
        forward = _best_alignment(variants, reference, local_pairs[:, 0], local_pairs[:, 1])
        backward = _best_alignment(variants, reference, local_pairs[:, 1], local_pairs[:, 0])
        take_back = backward[0] > forward[0]
        correlation[rows] = np.where(take_back, backward[0], forward[0])
        residual = np.where(take_back[:, None], backward[1], forward[1])
        # Residuals of unit-norm rows, scaled to per-pixel units of the standardised images (variance 1 each).
        squared = (residual * side).reshape(len(rows), side, side) ** 2
        local[rows] = ndimage.uniform_filter(squared, size=(1, WINDOW, WINDOW)).max(axis=(1, 2))
    verified = local <= max_local_difference
    logger.info("%d of %d candidate pairs verified on pixels", int(verified.sum()), len(pairs))
    return verified, correlation, local
