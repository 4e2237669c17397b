"""Data health of a bundle's images beyond label errors: duplicates and leaky splits, outliers, image quality,
class balance. Each check is a function of :mod:`lookalike.index` or :mod:`lookalike.data` on arrays or files;
this module feeds it the bundle's images. Nothing here changes the user's files.

Duplicates and outliers are judged on the frozen ImageNet features (:func:`imagenet_features`, cached in the
bundle), which do not learn the labels; exact duplicates by a hash of the decoded pixels. Near-duplicate
candidates from the features are verified on small pixel thumbnails (:mod:`lookalike.index.verify`); the
hashes, sizes and thumbnails of the indexed images are cached in the bundle's ``audit/`` too
(:func:`bundle_pixels`), so checking new files (:func:`new_file_duplicates`) decodes only the new files.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..data.files import write_array, write_atomic
from ..data.hashing import THUMBNAIL_SIZE, FileHashes, hash_files
from ..data.quality import QualityReport, check_quality
from ..index.balance import BalanceReport, class_balance
from ..index.duplicates import CANDIDATE_THRESHOLD, DuplicateReport, check_new, index_duplicates
from ..index.outliers import OutlierReport, index_outliers
from .audit import AUDIT_DIR, frozen_features, imagenet_features
from .bundle import Bundle
from .updates import records_of

#: The checks of :func:`lookalike audit --issues`, in report order.
ISSUES = ("label", "outlier", "duplicate", "quality", "balance")


def _pixels_key(paths: Sequence[Path]) -> str:
    """Changes when an indexed file is added, removed, rewritten or touched."""
    digest = hashlib.sha256(THUMBNAIL_SIZE.to_bytes(4, "little"))
    for path in paths:
        try:
            stat = os.stat(path)
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}\0missing\n".encode())
    return digest.hexdigest()


def bundle_pixels(bundle: Bundle) -> FileHashes:
    """Pixel hashes, native sizes and thumbnails of the bundle's indexed images (same rows as ``bundle.index``).

    Computed by :func:`lookalike.data.hashing.hash_files` and cached in the bundle's ``audit/``
    (``pixels.json`` and ``thumbnails.npy``, 2.3 KB per image) while the indexed files stay the same (their
    paths, sizes and modification times). Only the cache is written; the images are only read.

    Returns
    -------
    FileHashes
        With ``thumbnails`` of shape (n, THUMBNAIL_SIZE, THUMBNAIL_SIZE); an unreadable file has hash None.
    """
    paths = [Path(r.path) for r in bundle.index.records]
    key = _pixels_key(paths)
    folder = bundle.path / AUDIT_DIR if bundle.path else None
    if folder is not None and (folder / "pixels.json").is_file() and (folder / "thumbnails.npy").is_file():
        stored = json.loads((folder / "pixels.json").read_text())
        thumbnails = np.load(folder / "thumbnails.npy", allow_pickle=False) if stored.get("key") == key else None
        # The two files are written one after the other: use them only when they agree.
        if thumbnails is not None and thumbnails.shape == (len(paths), THUMBNAIL_SIZE, THUMBNAIL_SIZE):
            return FileHashes(
                tuple(paths),
                tuple(stored["hashes"]),
                np.asarray(stored["sizes"], np.int64).reshape(-1, 2),
                (),
                thumbnails,
            )
    pixels = hash_files(paths)
    if folder is not None:
        folder.mkdir(exist_ok=True)
        write_array(folder / "thumbnails.npy", pixels.thumbnails)
        write_atomic(
            folder / "pixels.json",
            json.dumps({"key": key, "hashes": list(pixels.hashes), "sizes": pixels.sizes.tolist()}),
        )
    return pixels


def bundle_duplicates(
    bundle: Bundle, *, threshold: float = CANDIDATE_THRESHOLD, verify: bool = True, progress: bool = False
) -> DuplicateReport:
    """Exact and near duplicates among the bundle's indexed images, with leaky splits flagged.

    Parameters
    ----------
    bundle : Bundle
    threshold : float
        Cosine similarity of frozen ImageNet features from which two images are near-duplicate candidates
        (see :data:`lookalike.index.duplicates.CANDIDATE_THRESHOLD` and ``benchmarks/data_health``).
    verify : bool
        Keep only candidates whose pixel thumbnails agree (:func:`lookalike.index.verify.verify_pairs`); without
        it every candidate is reported, so use a higher threshold
        (:data:`lookalike.index.duplicates.DEFAULT_THRESHOLD`).
    progress : bool
    """
    features = imagenet_features(bundle, progress=progress)
    pixels = bundle_pixels(bundle)
    return index_duplicates(
        features,
        threshold,
        hashes=pixels.hashes,
        sizes=pixels.sizes,
        thumbnails=pixels.thumbnails if verify else None,
    )


def new_file_duplicates(
    bundle: Bundle,
    paths: Sequence[str | os.PathLike],
    *,
    threshold: float = CANDIDATE_THRESHOLD,
    verify: bool = True,
    progress: bool = False,
) -> DuplicateReport:
    """Duplicates of new image files among themselves and against the bundle's images, without changing the
    bundle (the incremental check: nothing is re-indexed, and only the new files are decoded when the bundle's
    pixel cache, :func:`bundle_pixels`, is up to date)."""
    features = imagenet_features(bundle, progress=progress)
    records = records_of(paths)
    vectors, indices, _ = frozen_features(bundle, [r.path for r in records], progress=progress)
    readable = [records[i] for i in indices]
    new_pixels = hash_files([r.path for r in readable])
    folder = bundle.path / AUDIT_DIR if bundle.path else None
    if folder is not None and (folder / "pixels.json").is_file():
        old = bundle_pixels(bundle)  # the cache, or all indexed images decoded once if it is stale
        old_hashes, old_thumbnails = list(old.hashes), old.thumbnails
    else:
        # An exact copy is also a near-duplicate candidate, so only indexed images within the threshold need
        # decoding, not every image of the bundle.
        old_hashes = [None] * len(features)
        old_thumbnails = np.zeros((len(features), THUMBNAIL_SIZE, THUMBNAIL_SIZE), dtype=np.uint8)
        if len(vectors):
            _, _, near_ids = features.faiss_index.range_search(vectors, threshold)
            near_rows = np.unique(features.rows_of(near_ids))
            near = hash_files([bundle.index.records[row].path for row in near_rows])
            for i, row in enumerate(near_rows.tolist()):
                old_hashes[row] = near.hashes[i]
            old_thumbnails[near_rows] = near.thumbnails
    return check_new(
        vectors,
        features,
        threshold,
        paths=[str(r.path) for r in readable],
        labels=[r.label for r in readable],
        splits=[r.split for r in readable],
        hashes=new_pixels.hashes,
        index_hashes=old_hashes,
        thumbnails=new_pixels.thumbnails if verify else None,
        index_thumbnails=old_thumbnails if verify else None,
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
