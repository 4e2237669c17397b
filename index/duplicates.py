"""Exact and near duplicates among indexed images, grouped into clusters with a suggested keeper.

**Near duplicates** are pairs of images whose L2-normalised embeddings have a cosine similarity above a
threshold, found by FAISS range search (``Index.range_search``: every stored vector within the radius of
each query), never by comparing all pairs in Python:

- ``method="exact"``: an ``IndexFlatIP`` queried in batches (one BLAS matrix product per batch); the answer
  is exact and the work grows as n^2 d, which is fine up to :data:`EXACT_LIMIT` vectors;
- ``method="ivf"``: an ``IVFFlat`` index over about 2 sqrt(n) k-means cells, ``nprobe`` of them visited per
  query (Jegou et al., 2011); near duplicates are so close that they almost always share a cell, and the work
  grows as n^1.5 d (measured against exact search in ``benchmarks/data_health``);
- or the caller's own index (``index=``, e.g. a bundle's HNSW or IVF index), which already holds the vectors.

**Verification.** With pixel thumbnails (``thumbnails=``, from :func:`lookalike.data.hashing.hash_files`), the
range search only proposes candidates, at a lower threshold (:data:`CANDIDATE_THRESHOLD`), and each candidate
pair is kept only when its thumbnails agree after alignment (:func:`lookalike.index.verify.verify_pairs`):
frames of one animation are close in every embedding space, but differ locally in their pixels.

**Exact duplicates** are images with the same decoded pixels (:func:`lookalike.data.hashing.hash_files`);
their pair is marked ``exact`` whether or not their embeddings were compared, and needs no verification.

Pairs form an undirected graph whose connected components (``scipy.sparse.csgraph``) are the **clusters**.
Each cluster's suggested **keeper** is its image with the most pixels (when sizes are known), then the most
typical one: the largest sum of similarities to the other members it is paired with. A pair is
**cross-split** when its two images are in different splits (train beside val or test: the held-out score
is inflated, a *leaky split*). Nothing here touches the files; the keeper is a suggestion.

:data:`DEFAULT_THRESHOLD` is chosen for the frozen ImageNet MobileNetV2 features
(:func:`lookalike.bundle.imagenet_features`) in ``benchmarks/data_health``; a trained embedder pulls images of
a class together, so its embeddings need a higher threshold.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import faiss
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .verify import MAX_LOCAL_DIFFERENCE, verify_pairs

if TYPE_CHECKING:
    from .search import EmbeddingIndex

logger = logging.getLogger(__name__)

#: Cosine similarity above which two frozen-feature embeddings are near duplicates without pixel verification.
DEFAULT_THRESHOLD = 0.92
#: Cosine similarity of frozen features above which a pair is a candidate for pixel verification (see
#: benchmarks/data_health: every injected copy of both shared datasets lies above it).
CANDIDATE_THRESHOLD = 0.8
#: ``method="auto"`` searches exactly up to this many vectors and with IVF above.
EXACT_LIMIT = 50_000
METHODS = ("auto", "exact", "ivf")


def _check_vectors(vectors: np.ndarray, name: str = "vectors") -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"{name} must have shape (n, d); got {vectors.shape}")
    return vectors


def _range_search(index: faiss.Index, queries: np.ndarray, threshold: float, batch_size: int):
    """Query rows, stored ids and similarities of every result above ``threshold``, in query batches."""
    query_rows, found, scores = [], [], []
    for start in range(0, len(queries), batch_size):
        lims, similarity, ids = index.range_search(queries[start : start + batch_size], threshold)
        query_rows.append(start + np.repeat(np.arange(len(lims) - 1), np.diff(lims.astype(np.int64))))
        found.append(ids)
        scores.append(similarity)
    if not query_rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return np.concatenate(query_rows), np.concatenate(found).astype(np.int64), np.concatenate(scores)


def _own_index(vectors: np.ndarray, method: str, nprobe: int, seed: int) -> faiss.Index:
    """A FAISS index of ``vectors`` under ids 0 .. n - 1 for ``method`` ("exact" or "ivf")."""
    n, d = vectors.shape
    if method == "exact":
        index = faiss.IndexFlatIP(d)
    else:
        # About 2 sqrt(n) cells with nprobe 4 balances the coarse assignment (nlist inner products per query)
        # against the scan (nprobe n / nlist); 40 training points per cell keep k-means short.
        nlist = max(1, round(2 * math.sqrt(n)))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(seed).choice(n, min(n, 40 * nlist), replace=False)
        index.cp.seed = seed
        index.train(vectors[np.sort(sample)])
        index.nprobe = min(nprobe, nlist)
    index.add(vectors)
    return index


def find_near_duplicates(
    vectors: np.ndarray,
    ids: np.ndarray | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    index: faiss.Index | None = None,
    method: str = "auto",
    nprobe: int = 4,
    batch_size: int = 4096,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of vectors with a cosine similarity above ``threshold``, by FAISS range search.

    Parameters
    ----------
    vectors : float32 ndarray of shape (n, d), L2-normalised
    ids : int64 ndarray of shape (n,), optional
        Id of each vector; default its row ``0 .. n - 1``. With ``index``, the ids ``index`` holds them under.
    threshold : float
        Similarity in (-1, 1); a pair is kept when its inner product is above it.
    index : faiss.Index, optional
        An inner-product index that already holds ``vectors`` under ``ids`` (e.g. ``EmbeddingIndex.faiss_index``,
        flat, HNSW or IVF); searched as it is configured. Default: an index built here, see ``method``.
    method : {"auto", "exact", "ivf"}
        Without ``index``: exact batched search, IVF search (approximate), or exact up to :data:`EXACT_LIMIT`
        vectors and IVF above.
    nprobe : int
        IVF: cells visited per query.
    batch_size : int
        Queries per range search call (bounds the memory of one call's results).
    seed : int
        IVF: k-means sample and initialisation.

    Returns
    -------
    pairs : int64 ndarray of shape (m, 2)
        Ids of each pair, ``pairs[:, 0] < pairs[:, 1]``, every pair once.
    similarity : float32 ndarray of shape (m,)
        Their cosine similarity, in descending order.

    Raises
    ------
    ValueError
        ``vectors`` is not 2-D, ``ids`` has another length, or ``method`` is unknown.
    """
    vectors = _check_vectors(vectors)
    ids = np.arange(len(vectors), dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
    if ids.shape != (len(vectors),):
        raise ValueError(f"expected {len(vectors)} ids, one per vector; got shape {ids.shape}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    started = time.perf_counter()
    if index is None:
        method = method if method != "auto" else ("exact" if len(vectors) <= EXACT_LIMIT else "ivf")
        index, stored_ids = _own_index(vectors, method, nprobe, seed), ids
    else:
        if index.d != vectors.shape[1]:
            raise ValueError(f"the index holds vectors of size {index.d}; got vectors of shape {vectors.shape}")
        method, stored_ids = type(index).__name__, None
    rows, found, similarity = _range_search(index, vectors, threshold, batch_size)
    a, b = ids[rows], (found if stored_ids is None else stored_ids[found])
    pairs, similarity = _unique_pairs(a, b, similarity)
    logger.info(
        "%d near-duplicate pairs above %.3f among %d vectors (%s) in %.1f s",
        len(pairs),
        threshold,
        len(vectors),
        method,
        time.perf_counter() - started,
    )
    return pairs, similarity


def _unique_pairs(a: np.ndarray, b: np.ndarray, similarity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Undirected pairs without self pairs, each once (its larger similarity), most similar first."""
    keep = a != b
    low, high, similarity = np.minimum(a, b)[keep], np.maximum(a, b)[keep], similarity[keep]
    order = np.lexsort((-similarity, high, low))
    low, high, similarity = low[order], high[order], similarity[order]
    first = np.ones(len(low), dtype=bool)
    first[1:] = (low[1:] != low[:-1]) | (high[1:] != high[:-1])
    pairs = np.stack([low[first], high[first]], axis=1).astype(np.int64).reshape(-1, 2)
    similarity = similarity[first].astype(np.float32)
    order = np.argsort(-similarity, kind="stable")
    return pairs[order], similarity[order]


def _hash_pairs(hashes: Sequence[str | None]) -> np.ndarray:
    """Row pairs (i < j) of equal hashes: int64 ndarray of shape (m, 2)."""
    groups: dict[str, list[int]] = {}
    for row, value in enumerate(hashes):
        if value is not None:
            groups.setdefault(value, []).append(row)
    pairs = [(g[i], g[j]) for g in groups.values() if len(g) > 1 for i in range(len(g)) for j in range(i + 1, len(g))]
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)


def duplicate_clusters(
    pairs: np.ndarray, n: int, *, similarity: np.ndarray | None = None, sizes: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Group duplicate pairs into clusters (connected components) and suggest one keeper per cluster.

    Parameters
    ----------
    pairs : int64 ndarray of shape (m, 2)
        Rows ``0 .. n - 1`` of duplicate images.
    n : int
        Number of images.
    similarity : float32 ndarray of shape (m,), optional
        Similarity of each pair; default 1.
    sizes : int64 ndarray of shape (n,) or (n, 2), optional
        Pixel count, or ``(width, height)``, of each image.

    Returns
    -------
    cluster : int64 ndarray of shape (n,)
        Cluster of each image, ``0 .. n_clusters - 1`` numbered by the smallest member row; -1 for an
        image in no pair.
    keepers : int64 ndarray of shape (n_clusters,)
        Row of each cluster's keeper: the most pixels, then the largest sum of similarities to its paired
        members, then the smallest row.
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    similarity = np.ones(len(pairs)) if similarity is None else np.asarray(similarity, dtype=np.float64)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    in_pair = np.zeros(n, dtype=bool)
    in_pair[pairs.ravel()] = True
    # Number the clusters 0.. by their first member; images in no pair get -1.
    present, first_row = np.unique(component[in_pair], return_index=True)
    renumber = np.full(component.max() + 1 if n else 0, -1, dtype=np.int64)
    renumber[present[np.argsort(first_row)]] = np.arange(len(present))
    cluster = np.where(in_pair, renumber[component], -1)
    typicality = np.bincount(pairs.ravel(), weights=np.repeat(similarity, 2), minlength=n)
    if sizes is None:
        pixels = np.zeros(n)
    else:
        sizes = np.asarray(sizes, dtype=np.int64)
        pixels = sizes.prod(axis=1) if sizes.ndim == 2 else sizes
    members = np.flatnonzero(in_pair)
    order = members[np.lexsort((members, -typicality[members], -pixels[members], cluster[members]))]
    keepers = order[np.r_[True, cluster[order][1:] != cluster[order][:-1]]] if len(order) else order
    return cluster, keepers.astype(np.int64)


@dataclass(frozen=True)
class DuplicateReport:
    """Duplicate pairs and clusters over a set of images ("items"); pair ends are item rows.

    Attributes
    ----------
    pairs : int64 ndarray of shape (m, 2)
        Item rows of each pair, most similar first.
    similarity : float32 ndarray of shape (m,)
        Cosine similarity of the pair's embeddings.
    exact : bool ndarray of shape (m,)
        The two images have the same decoded pixels (needs hashes).
    cross_split : bool ndarray of shape (m,)
        The two images are in different known splits (a leaky split).
    cluster : int64 ndarray of shape (n,)
        Cluster of each item; -1 for an item in no pair.
    keepers : int64 ndarray of shape (n_clusters,)
        Item row of each cluster's suggested keeper.
    ids : int64 ndarray of shape (n,)
        Index id of each item; -1 for a new image that is not indexed (:func:`check_new`).
    paths, labels, splits : tuple of (str or None), length n
    threshold : float
        The similarity threshold used.
    pixel_difference : float32 ndarray of shape (m,), optional
        With pixel verification: the pair's local difference (:func:`lookalike.index.verify.verify_pairs`),
        at most ``max_pixel_difference``; 0 for an exact pair.
    max_pixel_difference : float, optional
        The verification threshold used; None without verification.
    """

    pairs: np.ndarray
    similarity: np.ndarray
    exact: np.ndarray
    cross_split: np.ndarray
    cluster: np.ndarray
    keepers: np.ndarray
    ids: np.ndarray
    paths: tuple
    labels: tuple
    splits: tuple
    threshold: float
    pixel_difference: np.ndarray | None = None
    max_pixel_difference: float | None = None

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def n_clusters(self) -> int:
        return len(self.keepers)

    def removable(self) -> np.ndarray:
        """Item rows of clustered images that are not their cluster's keeper (a suggestion; nothing is removed)."""
        rows = np.flatnonzero(self.cluster >= 0)
        return np.setdiff1d(rows, self.keepers)

    def to_frame(self):
        """One row per pair: ``path_a, path_b, similarity, exact, cross_split, id_a, id_b, label_a, label_b,
        split_a, split_b, cluster, keeper`` (the keeper's path), and ``pixel_difference`` when the pairs were
        verified on pixels. A pandas DataFrame, most similar first."""
        import pandas as pd

        a, b = self.pairs[:, 0], self.pairs[:, 1]
        cluster = self.cluster[a]
        column = lambda values, rows: [values[r] for r in rows]
        frame = pd.DataFrame(
            {
                "path_a": column(self.paths, a),
                "path_b": column(self.paths, b),
                "similarity": self.similarity,
                "exact": self.exact,
                "cross_split": self.cross_split,
                "id_a": self.ids[a],
                "id_b": self.ids[b],
                "label_a": column(self.labels, a),
                "label_b": column(self.labels, b),
                "split_a": column(self.splits, a),
                "split_b": column(self.splits, b),
                "cluster": cluster,
                "keeper": column(self.paths, self.keepers[cluster]),
            }
        )
        if self.pixel_difference is not None:
            frame["pixel_difference"] = self.pixel_difference
        return frame

    def clusters_frame(self):
        """One row per clustered image: ``cluster, size, path, id, label, split, keeper`` (bool). A pandas DataFrame."""
        import pandas as pd

        rows = np.flatnonzero(self.cluster >= 0)
        rows = rows[np.argsort(self.cluster[rows], kind="stable")]
        sizes = np.bincount(self.cluster[rows], minlength=self.n_clusters)
        is_keeper = np.zeros(len(self.cluster), dtype=bool)
        is_keeper[self.keepers] = True
        return pd.DataFrame(
            {
                "cluster": self.cluster[rows],
                "size": sizes[self.cluster[rows]],
                "path": [self.paths[r] for r in rows],
                "id": self.ids[rows],
                "label": [self.labels[r] for r in rows],
                "split": [self.splits[r] for r in rows],
                "keeper": is_keeper[rows],
            }
        )

    def to_csv(self, path) -> None:
        """Write :meth:`to_frame` as CSV to ``path`` (a new file of the caller's choosing)."""
        self.to_frame().to_csv(path, index=False)


def _metadata(values: Sequence | None, n: int, name: str) -> tuple:
    if values is None:
        return (None,) * n
    values = tuple(None if v is None else str(v) for v in values)
    if len(values) != n:
        raise ValueError(f"expected {n} {name}, one per vector; got {len(values)}")
    return values


def _report(
    vectors: np.ndarray,
    pairs: np.ndarray,
    similarity: np.ndarray,
    *,
    ids: np.ndarray,
    paths: Sequence | None,
    labels: Sequence | None,
    splits: Sequence | None,
    hashes: Sequence[str | None] | None,
    sizes: np.ndarray | None,
    threshold: float,
    keep=None,
    thumbnails: np.ndarray | None = None,
    max_pixel_difference: float = MAX_LOCAL_DIFFERENCE,
) -> DuplicateReport:
    """Add the pairs of equal hashes, verify the others on ``thumbnails`` (if given), flag exact and cross-split
    pairs, cluster; ``keep`` filters pairs by row."""
    n = len(vectors)
    paths, labels, splits = (_metadata(v, n, k) for v, k in ((paths, "paths"), (labels, "labels"), (splits, "splits")))
    hashes = _metadata(hashes, n, "hashes")
    same = _hash_pairs(hashes)
    if len(same):
        same_similarity = np.einsum("md,md->m", vectors[same[:, 0]], vectors[same[:, 1]])
        pairs, similarity = _unique_pairs(
            np.r_[pairs[:, 0], same[:, 0]], np.r_[pairs[:, 1], same[:, 1]], np.r_[similarity, same_similarity]
        )
    if keep is not None:
        kept = keep(pairs)
        pairs, similarity = pairs[kept], similarity[kept]
    exact = np.array([hashes[i] is not None and hashes[i] == hashes[j] for i, j in pairs], dtype=bool).reshape(-1)
    difference = None
    if thumbnails is not None:
        difference = np.zeros(len(pairs), dtype=np.float32)
        verified, _, difference[~exact] = verify_pairs(
            thumbnails, pairs[~exact], max_local_difference=max_pixel_difference
        )
        kept = exact.copy()
        kept[~exact] = verified
        pairs, similarity, exact, difference = pairs[kept], similarity[kept], exact[kept], difference[kept]
    a, b = pairs[:, 0], pairs[:, 1]
    cross_split = np.array(
        [splits[i] is not None and splits[j] is not None and splits[i] != splits[j] for i, j in pairs], dtype=bool
    )
    cluster, keepers = duplicate_clusters(pairs, n, similarity=similarity, sizes=sizes)
    logger.info(
        "%d duplicate pairs (%d exact, %d cross-split) in %d clusters",
        len(pairs),
        exact.sum(),
        cross_split.sum(),
        len(keepers),
    )
    return DuplicateReport(
        pairs=pairs.reshape(-1, 2), similarity=similarity.astype(np.float32), exact=exact.reshape(len(a)),
        cross_split=cross_split.reshape(len(b)), cluster=cluster, keepers=keepers, ids=np.asarray(ids, np.int64),
        paths=paths, labels=labels, splits=splits, threshold=float(threshold), pixel_difference=difference,
        max_pixel_difference=None if thumbnails is None else float(max_pixel_difference),
    )  # fmt: skip


def find_duplicates(
    vectors: np.ndarray,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    ids: np.ndarray | None = None,
    paths: Sequence | None = None,
    labels: Sequence | None = None,
    splits: Sequence | None = None,
    hashes: Sequence[str | None] | None = None,
    sizes: np.ndarray | None = None,
    index: faiss.Index | None = None,
    method: str = "auto",
    nprobe: int = 4,
    thumbnails: np.ndarray | None = None,
    max_pixel_difference: float = MAX_LOCAL_DIFFERENCE,
) -> DuplicateReport:
    """Exact and near duplicates among ``n`` images, as pairs and clusters.

    Parameters
    ----------
    vectors : float32 ndarray of shape (n, d), L2-normalised
        One embedding per image (e.g. :func:`lookalike.bundle.imagenet_features`).
    threshold : float
        Cosine similarity above which two images are near duplicates.
    ids : int64 ndarray of shape (n,), optional
        Index ids (default ``0 .. n - 1``); with ``index``, the ids it holds the vectors under.
    paths, labels, splits : sequence of length n, optional
        Shown in the tables; ``splits`` decides ``cross_split``.
    hashes : sequence of (str or None), length n, optional
        Pixel hashes (:attr:`lookalike.data.hashing.FileHashes.hashes`); equal hashes make an exact pair.
    sizes : int64 ndarray of shape (n, 2), optional
        Native ``(width, height)`` (:attr:`~lookalike.data.hashing.FileHashes.sizes`), for the keeper.
    index, method, nprobe
        How to search, see :func:`find_near_duplicates`.
    thumbnails : uint8 ndarray of shape (n, side, side), optional
        Pixel thumbnails (:attr:`lookalike.data.hashing.FileHashes.thumbnails`): verify every non-exact pair on
        them (:func:`lookalike.index.verify.verify_pairs`) and keep only the verified ones; then ``threshold``
        only proposes candidates (e.g. :data:`CANDIDATE_THRESHOLD`).
    max_pixel_difference : float
        Verification threshold, see :func:`~lookalike.index.verify.verify_pairs`.

    Returns
    -------
    DuplicateReport
        Items are the ``n`` images in the order given.

    Raises
    ------
    ValueError
        A per-image argument has another length than ``vectors``, or see :func:`find_near_duplicates`.
    """
    vectors = _check_vectors(vectors)
    ids = np.arange(len(vectors), dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
    pairs, similarity = find_near_duplicates(vectors, ids, threshold, index=index, method=method, nprobe=nprobe)
    rows = np.searchsorted(ids, pairs) if np.all(np.diff(ids) > 0) else _rows_by_id(ids, pairs)
    return _report(
        vectors, rows, similarity, ids=ids, paths=paths, labels=labels, splits=splits, hashes=hashes, sizes=sizes,
        threshold=threshold, thumbnails=_check_thumbnails(thumbnails, len(vectors)),
        max_pixel_difference=max_pixel_difference,
    )  # fmt: skip


def _check_thumbnails(thumbnails: np.ndarray | None, n: int) -> np.ndarray | None:
    if thumbnails is not None and len(thumbnails) != n:
        raise ValueError(f"expected {n} thumbnails, one per vector; got {len(thumbnails)}")
    return thumbnails


def _rows_by_id(ids: np.ndarray, found: np.ndarray) -> np.ndarray:
    order = np.argsort(ids)
    return order[np.searchsorted(ids, found, sorter=order)]


def index_duplicates(
    index: EmbeddingIndex,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    hashes: Sequence[str | None] | None = None,
    sizes: np.ndarray | None = None,
    thumbnails: np.ndarray | None = None,
    use_index: bool | None = None,
) -> DuplicateReport:
    """Duplicates among the images of an :class:`~lookalike.index.EmbeddingIndex` (items are its rows).

    Parameters
    ----------
    index : EmbeddingIndex
        E.g. ``bundle.index`` or, for the default threshold, :func:`lookalike.bundle.imagenet_features`.
    threshold : float
    hashes, sizes, thumbnails : optional
        Of ``index.records`` in row order (``hash_files([r.path for r in index.records])``); with
        ``thumbnails``, candidates are verified on pixels (see :func:`find_duplicates`).
    use_index : bool, optional
        Range-search the index's own FAISS index instead of an exact or IVF one built here; default: when it
        is approximate (HNSW or IVF), i.e. large.
    """
    use_index = index.spec.type != "flat" if use_index is None else use_index
    records = index.records
    return find_duplicates(
        index.vectors, threshold, ids=index.ids, paths=[str(r.path) for r in records],
        labels=[r.label for r in records], splits=[r.split for r in records], hashes=hashes, sizes=sizes,
        index=index.faiss_index if use_index else None, thumbnails=thumbnails,
    )  # fmt: skip


def check_new(
    query_vectors: np.ndarray,
    index: EmbeddingIndex,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    paths: Sequence | None = None,
    labels: Sequence | None = None,
    splits: Sequence | None = None,
    hashes: Sequence[str | None] | None = None,
    index_hashes: Sequence[str | None] | None = None,
    thumbnails: np.ndarray | None = None,
    index_thumbnails: np.ndarray | None = None,
    max_pixel_difference: float = MAX_LOCAL_DIFFERENCE,
) -> DuplicateReport:
    """Duplicates of new images, among themselves and against an index, without rebuilding it (incremental mode).

    Parameters
    ----------
    query_vectors : float32 ndarray of shape (q, d), L2-normalised
        Embeddings of the new images, by the same embedder as ``index``.
    index : EmbeddingIndex
        Searched as it is (flat, HNSW or IVF).
    threshold : float
    paths, labels, splits, hashes : sequence of length q, optional
        Of the new images; ``splits`` (e.g. ``"val"``) decides ``cross_split`` against indexed images.
    index_hashes : sequence of length len(index), optional
        Pixel hashes of the indexed images in row order, to flag exact pairs with them.
    thumbnails, index_thumbnails : uint8 ndarray of shape (q, side, side) and (len(index), side, side), optional
        Pixel thumbnails of the new and the indexed images: verify the candidates on them (both needed; only the
        rows of indexed images within ``threshold`` of a new one are read).
    max_pixel_difference : float

    Returns
    -------
    DuplicateReport
        Items are the index's rows followed by the ``q`` new images (ids -1); only pairs that include a new
        image are listed.
    """
    query_vectors = _check_vectors(query_vectors, "query_vectors")
    if query_vectors.shape[1] != index.dim:
        raise ValueError(f"query_vectors must have shape (q, {index.dim}); got {query_vectors.shape}")
    n, q = len(index), len(query_vectors)
    rows, found, similarity = _range_search(index.faiss_index, query_vectors, threshold, 4096)
    against = np.stack([n + rows, index.rows_of(found)], axis=1)
    within, within_similarity = find_near_duplicates(query_vectors, threshold=threshold)
    pairs, similarity = _unique_pairs(
        np.r_[against[:, 0], n + within[:, 0]],
        np.r_[against[:, 1], n + within[:, 1]],
        np.r_[similarity, within_similarity],
    )
    records = index.records

    def joined(old, new, name):
        return None if new is None and old is None else [*(old or [None] * n), *_metadata(new, q, name)]

    return _report(
        np.concatenate([index.vectors, query_vectors]), pairs, similarity,
        ids=np.r_[index.ids, np.full(q, -1, np.int64)],
        paths=joined([str(r.path) for r in records], paths, "paths"),
        labels=joined([r.label for r in records], labels, "labels"),
        splits=joined([r.split for r in records], splits, "splits"),
        hashes=joined(None if index_hashes is None else list(index_hashes), hashes, "hashes"),
        sizes=None, threshold=threshold, keep=lambda p: p.max(axis=1) >= n,
        thumbnails=None if thumbnails is None or index_thumbnails is None else np.concatenate(
            [_check_thumbnails(index_thumbnails, n), _check_thumbnails(thumbnails, q)]
        ), max_pixel_difference=max_pixel_difference,
    )  # fmt: skip
