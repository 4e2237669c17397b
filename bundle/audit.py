"""The audit of a bundle's images on label-independent features (see :mod:`lookalike.index.label_audit`)."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

from ..data.files import write_array, write_atomic
from ..embedder.config import EmbedderConfig
from ..index.label_audit import Audit, audit
from ..index.search import EmbeddingIndex
from .bundle import Bundle
from .storage import BundleError

#: Folder of a bundle holding the cached audit features.
AUDIT_DIR = "audit"


def frozen_features(
    bundle: Bundle, paths: list, *, progress: bool = False, weights: str | os.PathLike | None = None
) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Frozen ImageNet MobileNetV2 features (global average pooling) of image files, at the bundle's image size.

    Returns
    -------
    features : float32 ndarray of shape (m, 1280), L2-normalised
    indices : int64 ndarray of shape (m,)
        Positions in ``paths`` of the files that could be read.
    failures : tuple of DecodeFailure
    """
    from ..embedder.model import Embedder  # TensorFlow, only when the features are not cached

    size = bundle.embedder.config.image_size
    encoder = Embedder.build(EmbedderConfig(image_size=size, fine_tune_blocks=0), bundle.class_names, weights=weights)
    encoded = encoder.encode_files(paths, progress=progress)
    norms = np.linalg.norm(encoded.features, axis=1, keepdims=True)
    return (encoded.features / np.maximum(norms, 1e-12)).astype(np.float32), encoded.indices, tuple(encoded.failures)


def imagenet_features(
    bundle: Bundle, *, progress: bool = False, weights: str | os.PathLike | None = None
) -> EmbeddingIndex:
    """Frozen ImageNet features of every indexed image, as an index with the bundle's ids, paths and labels.

    Computed with the untouched ImageNet MobileNetV2 at the bundle's image size (global average pooling,
    L2-normalised), stored in the bundle's ``audit/`` and reused while the indexed files stay the same.

    Parameters
    ----------
    bundle : Bundle
    progress : bool
        Show a progress bar while encoding.
    weights : str or path-like, optional
        Backbone weights, see :func:`lookalike.embedder.resolve_weights`.

    Returns
    -------
    EmbeddingIndex
        float32 vectors of size 1280, L2-normalised, one per indexed image (same rows as ``bundle.index``).

    Raises
    ------
    BundleError
        Some indexed images cannot be read any more.
    """
    records = bundle.index.records
    size = bundle.embedder.config.image_size
    key = hashlib.sha256(json.dumps([size, *[str(r.path) for r in records]]).encode()).hexdigest()
    folder = bundle.path / AUDIT_DIR if bundle.path else None
    if folder is not None and (folder / "features.json").is_file():
        stored = json.loads((folder / "features.json").read_text())
        if stored.get("key") == key:
            features = np.load(folder / "features.npy", allow_pickle=False)
            return EmbeddingIndex.build(features, records, bundle.class_names)
    features, _, failures = frozen_features(bundle, [r.path for r in records], progress=progress, weights=weights)
    if failures:
        listed = "; ".join(f"{f.path}: {f.reason}" for f in failures[:3])
        raise BundleError(f"cannot audit: {len(failures)} indexed images cannot be read any more ({listed})")
    if folder is not None:
        folder.mkdir(exist_ok=True)
        write_array(folder / "features.npy", features.astype(np.float32))
        write_atomic(folder / "features.json", json.dumps({"key": key, "backbone": "MobileNetV2 ImageNet, frozen"}))
    return EmbeddingIndex.build(features, records, bundle.class_names)


def audit_bundle(bundle: Bundle, *, progress: bool = False) -> tuple[Audit, EmbeddingIndex]:
    """Audit every indexed image of ``bundle`` on its frozen ImageNet features.

    Returns
    -------
    (Audit, EmbeddingIndex)
        The audit (arrays by row) and the feature index it was computed on (same rows, ids and records as
        ``bundle.index``; pass it to :meth:`Audit.to_frame`).
    """
    features = imagenet_features(bundle, progress=progress)
    return audit(features), features
