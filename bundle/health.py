"""Data health of a bundle's images beyond label errors: duplicates and leaky splits, outliers, image quality,
class balance. Each check is a function of :mod:`lookalike.index` or :mod:`lookalike.data` on arrays or files;
this module feeds it the bundle's images. Nothing here changes the user's files.

Duplicates and outliers are judged on the frozen ImageNet features (:func:`imagenet_features`, cached in the
bundle), which do not learn the labels; exact duplicates by a hash of the decoded pixels.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from ..data.hashing import hash_files
from ..data.quality import QualityReport, check_quality
from ..index.balance import BalanceReport, class_balance
from ..index.duplicates import DEFAULT_THRESHOLD, DuplicateReport, check_new, index_duplicates
from ..index.outliers import OutlierReport, index_outliers
from .audit import frozen_features, imagenet_features
from .bundle import Bundle
from .updates import records_of

#: The checks of :func:`lookalike audit --issues`, in report order.
ISSUES = ("label", "outlier", "duplicate", "quality", "balance")


def bundle_duplicates(
    bundle: Bundle, *, threshold: float = DEFAULT_THRESHOLD, progress: bool = False
) -> DuplicateReport:
    """Exact and near duplicates among the bundle's indexed images, with leaky splits flagged.

    Parameters
    ----------
    bundle : Bundle
    threshold : float
        Cosine similarity of frozen ImageNet features from which two images are near duplicates (see
        :data:`lookalike.index.duplicates.DEFAULT_THRESHOLD` and ``benchmarks/data_health``).
    progress : bool
    """
    features = imagenet_features(bundle, progress=progress)
    hashes = hash_files([r.path for r in bundle.index.records])
    return index_duplicates(features, threshold, hashes=hashes.hashes, sizes=hashes.sizes)


def new_file_duplicates(
    bundle: Bundle,
    paths: Sequence[str | os.PathLike],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    progress: bool = False,
) -> DuplicateReport:
    """Duplicates of new image files among themselves and against the bundle's images, without changing the
    bundle (the incremental check: nothing is re-indexed)."""
    features = imagenet_features(bundle, progress=progress)
    records = records_of(paths)
    vectors, indices, _ = frozen_features(bundle, [r.path for r in records], progress=progress)
    readable = [records[i] for i in indices]
    new_hashes = hash_files([r.path for r in readable]).hashes
    # An exact copy is also a near duplicate, so only indexed images within the threshold need hashing,
    # not every image of the bundle.
    old_hashes: list[str | None] = [None] * len(features)
    if len(vectors):
        _, _, near_ids = features.faiss_index.range_search(vectors, threshold)
        near_rows = np.unique(features.rows_of(near_ids))
        near_hashes = hash_files([bundle.index.records[row].path for row in near_rows]).hashes
        for row, value in zip(near_rows.tolist(), near_hashes):
            old_hashes[row] = value
    return check_new(
        vectors,
        features,
        threshold,
        paths=[str(r.path) for r in readable],
        labels=[r.label for r in readable],
        splits=[r.split for r in readable],
        hashes=new_hashes,
        index_hashes=old_hashes,
    )


def bundle_outliers(bundle: Bundle, *, k: int = 10, progress: bool = False) -> OutlierReport:
    """Per image: distance to its class centroid and to its k nearest neighbors; outliers and typicality."""
    return index_outliers(imagenet_features(bundle, progress=progress), k=k)


def bundle_quality(bundle: Bundle) -> QualityReport:
    """Dark, light, blurry, low-information, grayscale, odd-size and odd-aspect images among the indexed files."""
    return check_quality([r.path for r in bundle.index.records])


def bundle_balance(bundle: Bundle) -> BalanceReport:
    """Images per class and split, with the classes too small for the few-shot protocol."""
    return class_balance([r.label for r in bundle.index.records], [r.split for r in bundle.index.records])
