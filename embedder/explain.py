"""Per-location embeddings: the embedding of an image written as the mean of one vector per backbone location.

The head reads the backbone's feature map ``F`` of shape (h, w, c) only through its global average
``f = mean_ij F_ij``, and every layer from there to the embedding is affine in ``f`` up to a scalar that depends on
the image (the L2 normalisations; dropout is the identity at inference, batch-norm an affine map with its moving
statistics)::

    t = BN(W f + b) = A f + a                                   (embedding_dense, embedding_bn)
    e = t / |t|                                                 (embedding)
    e = [sqrt(1 - w) t / |t|,  sqrt(w) p / |p|] / |.|,  p = P f / |f| + q   (with fusion, see lookalike.embedder.model)

so ``e = mean_ij e_ij`` with ``e_ij = (A F_ij + a) / |t|`` (and likewise for the pooled part): the bias is shared
evenly by the locations and the normalisers are the whole image's. The cosine similarity of two images is then
exactly the sum of per-location contributions ``e^q_ij . e^m / (h w)``: the decomposition of Stylianou et al.,
"Visualizing Deep Similarity Networks" (WACV 2019, arXiv:1901.00536), extended here from a linear to an affine
head. No gradients are needed; for a global-average-pooled network with a linear head it coincides with CAM
(Zhou et al. 2016) and Grad-CAM (Selvaraju et al. 2017, arXiv:1610.02391) of the similarity.

This module is the only place where the explanation touches the Keras model.
"""

from __future__ import annotations

import numpy as np

from .model import Embedder


def _unit_norm(x: np.ndarray) -> np.ndarray:
    """Norm of the last axis, as Keras' UnitNormalization divides by it (never below its 1e-12 floor)."""
    return np.sqrt(np.maximum(np.sum(np.square(x), axis=-1, keepdims=True), 1e-12))


def location_embeddings(embedder: Embedder, images: np.ndarray) -> np.ndarray:
    """Per-location embedding vectors of a batch of images, whose mean over the locations is the embedding.

    Parameters
    ----------
    embedder : Embedder
        A Keras embedder (the head described in :mod:`lookalike.embedder.model`).
    images : uint8 or float32 ndarray of shape (n, s, s, 3)
        RGB pixels in [0, 255], s = ``embedder.config.image_size``.

    Returns
    -------
    float32 ndarray of shape (n, h, w, d)
        ``e_ij`` for each of the h x w locations of the backbone's last feature map (7 x 7 for MobileNetV2 at
        224 px); ``mean over (h, w)`` equals the L2-normalised embedding of each image (d =
        ``embedder.embedding_dim``) to float32 precision, so its dot product with another embedding, divided
        by h w, is that location's share of the cosine similarity.

    Raises
    ------
    ValueError
        ``images`` does not have shape (n, s, s, 3).
    """
    size = embedder.config.image_size
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1:] != (size, size, 3):
        raise ValueError(f"images must have shape (n, {size}, {size}, 3); got {images.shape}")
    feature_map = embedder.encode(images, layer=embedder.backbone.layers[-1].name).astype(np.float64)
    pooled = feature_map.mean(axis=(1, 2))[:, None, None, :]  # (n, 1, 1, c), what the head's "pool" layer gives
    head = embedder.head
    kernel, bias = head.get_layer("embedding_dense").get_weights()
    bn = head.get_layer("embedding_bn")
    gamma, beta, mean, variance = bn.get_weights()
    scale = gamma / np.sqrt(variance + bn.epsilon)
    trained = feature_map @ (kernel * scale) + ((bias - mean) * scale + beta)  # (n, h, w, embedding_dim)
    parts = trained / _unit_norm(trained.mean(axis=(1, 2), keepdims=True))
    if embedder.config.fuses:
        weight = embedder.config.pooled_weight
        projection, offset = head.get_layer("pooled_projection").get_weights()
        pooled_part = (feature_map / _unit_norm(pooled)) @ projection + offset
        pooled_part /= _unit_norm(pooled_part.mean(axis=(1, 2), keepdims=True))
        parts = np.concatenate([np.sqrt(1.0 - weight) * parts, np.sqrt(weight) * pooled_part], axis=-1)
        parts /= _unit_norm(parts.mean(axis=(1, 2), keepdims=True))  # the final "embedding" normalisation
    return parts.astype(np.float32)
