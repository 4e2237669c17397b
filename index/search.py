"""A FAISS inner-product index over L2-normalised embeddings, with stable ids mapping to image records.

Three index types (FAISS names in brackets):

- ``flat``: exact search (``IDMap2,Flat``), the default for small indexes;
- ``hnsw``: a graph of nearest neighbors (``IDMap2,HNSW32,Flat``; Malkov & Yashunin, "Efficient and
  robust approximate nearest neighbor search using Hierarchical Navigable Small World graphs", 2016);
- ``ivf``: an inverted file over k-means cells (``IVF<nlist>,Flat``; Jegou et al., "Product quantization
  for nearest neighbor search", 2011, section 4);
- ``ivfpq``: the same cells holding product-quantized codes (``IVF<nlist>,PQ<m>x4fs``, SIMD "fast-scan" codes
  of 4 bits per sub-vector: André et al., "Quicker ADC", 2019; Jegou et al. 2011), whose ``k_factor * k``
  best candidates are re-ranked by exact inner product with the stored embeddings (Jegou et al.,
  "Searching in one billion vectors: re-rank with source coding", 2011). In memory it holds only the codes
  (m / 2 bytes) and ids (8 bytes) per vector; the embeddings are read from ``vectors.npy``, memory-mapped.

The embeddings themselves are kept beside the FAISS index (``vectors.npy``, memory-mapped when loaded), so
maps, the audit and the evaluation read exact vectors whatever the index type, and an index can be rebuilt as
another type.

``benchmarks/ann`` measures recall@10 against milliseconds per query of every type on 206,190 real embeddings
and on 1,000,000 derived from them, and the latency of the full answer; the ``auto`` rule
(:meth:`IndexSpec.resolve`) and the defaults are chosen from it (see :class:`IndexSpec` and
``benchmarks/README.md``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Sequence

import faiss
import numpy as np
from faiss.contrib.evaluation import knn_intersection_measure

from ..data import ImageRecord, class_codes
from ..data.files import write_array
from .neighbors import nearest_classes

logger = logging.getLogger(__name__)

INDEX_FILE = "index.faiss"
VECTORS_FILE = "vectors.npy"
METADATA_FILE = "metadata.json"
INDEX_TYPES = ("auto", "flat", "hnsw", "ivf", "ivfpq")
#: ``auto`` chooses exact search below this many vectors and HNSW from it on (see :class:`IndexSpec`).
EXACT_SEARCH_LIMIT = 25_000
#: Below this many queries per call, FAISS searches in the calling thread: one query gains nothing from a
#: thread team, and waiting for one on a busy machine cost 40 ms instead of 0.6 ms per HNSW query (2 cores,
#: load 17; see benchmarks/ann).
PARALLEL_QUERIES = 16
#: The searches of :meth:`EmbeddingIndex.nearest_classes` that filter classes out search this many times harder
#: (HNSW efSearch, IVF nprobe): the excluded images nearest the query take up an HNSW search's candidate list.
FILTERED_EFFORT = 4
#: On an exact (flat) index, :meth:`EmbeddingIndex.nearest_classes` first reads this many neighbors in one search
#: before filtering classes out: one flat scan, where each filtered round is another (measured in
#: ``benchmarks/ann``: at 100,000 vectors 7.2 ms against 26 ms of filtered rounds).
EXACT_CLASS_DEPTH = 1024
#: Score FAISS gives a missing inner-product result (id -1): -FLT_MAX.
NO_SCORE = float(np.finfo(np.float32).min)
#: Fewest vectors an IVF-PQ index trains on (its 4-bit sub-quantizers have 16 centroids each).
MIN_PQ_TRAINING = 1_000


@dataclass(frozen=True)
class Hit:
    """One search result: an indexed image and its similarity to the query.

    Attributes
    ----------
    id : int
        Stable id of the image in the index (never reused after a removal).
    row : int
        Its current position in ``EmbeddingIndex.records`` and ``EmbeddingIndex.embeddings()``.
    label : str
        Its class.
    path : Path
        Its file.
    split : str
        Its split in the dataset it came from (``"train"``, ``"val"`` or ``"test"``).
    score : float
        Cosine similarity to the query, in [-1, 1].
    """

    id: int
    row: int
    label: str
    path: Path
    split: str
    score: float

    def to_dict(self) -> dict:
        """JSON-serialisable form: ``{id, label, path, split, score}``."""
        return {"id": self.id, "label": self.label, "path": str(self.path), "split": self.split, "score": self.score}


@dataclass(frozen=True)
class IndexSpec:
    """Which FAISS index to build, with its parameters; stored in the bundle's metadata and manifest.

    Attributes
    ----------
    type : str
        ``"flat"`` (exact), ``"hnsw"``, ``"ivf"`` (IVF-Flat), ``"ivfpq"`` (IVF-PQ re-ranked from the stored
        embeddings), or ``"auto"`` (resolved when the index is built): flat below :data:`EXACT_SEARCH_LIMIT`
        (25,000) vectors, HNSW from there on, with the defaults below. Chosen from ``benchmarks/ann`` (2 cores,
        one query per call, 2026-11-22): an exact query's search and nearest-characters ranking took 3.3 ms
        (p50) at 25,000 real embeddings, 7.2 ms at 50,000 and 11.8 ms at 100,000, against 1.7 ms for HNSW at
        100,000 (3.7 ms in a noisier run), while embedding the query image takes about 5 ms of the 8 ms that a
        full answer at 100,000 vectors may take.
    hnsw_m : int
        HNSW: neighbors per node (graph degree). 32: on the 206,190 real embeddings M 32 reached recall@10 0.992
        at efSearch 96 in 0.38 ms against M 16's 0.988 in 0.35 ms, for 1,304 instead of 1,176 bytes per vector.
    ef_construction : int
        HNSW: candidate list size while building.
    ef_search : int
        HNSW: candidate list size while searching (raised to k when k is larger). 256: recall@10 0.991 on
        1,000,000 vectors (1.0 ms per query; 0.979 at 128, 0.959 at 64), and a candidate list deep enough that
        fewer queries need the filtered searches of :meth:`EmbeddingIndex.nearest_classes` (44 % of them at 1M,
        57 % at efSearch 128), so that the full answer's search and ranking took 2.5-4.3 ms p50 at 1M (three runs)
        against 5.0-6.5 ms at efSearch 128-192. With this rule the full answer (image file to ``QueryResult``)
        took p50 6.6 ms at 100,000 vectors and 7.2 ms at 1,000,000 on the quiet machine.
    nlist : int, optional
        IVF and IVF-PQ: number of k-means cells; default about 4 sqrt(n), at least 39 training vectors per cell.
    nprobe : int
        IVF and IVF-PQ: cells visited per query.
    pq_m : int, optional
        IVF-PQ: sub-quantizers (4-bit codes each, so m / 2 bytes per vector); must divide the embedding size;
        default one per 4 dimensions (64, i.e. 32 bytes, for 256-d embeddings).
    k_factor : int
        IVF-PQ: candidates re-ranked by exact inner product per requested result (FAISS ``IndexRefine``'s
        ``k_factor``); 16: on the 206,190 real embeddings recall@10 levelled off at 0.82 with 4 and at 0.958 with
        16 (0.910 at 1M): near-identical views of one image are told apart only by the re-ranking.
    """

    type: str = "auto"
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 256
    nlist: int | None = None
    nprobe: int = 32
    pq_m: int | None = None
    k_factor: int = 16

    def __post_init__(self):
        if self.type not in INDEX_TYPES:
            raise ValueError(f"unknown index type {self.type!r}; choose one of {', '.join(INDEX_TYPES)}")
        if self.k_factor < 1:
            raise ValueError(f"k_factor must be at least 1; got {self.k_factor}")

    def resolve(self, n: int, dim: int | None = None) -> IndexSpec:
        """The concrete spec for an index of ``n`` vectors of ``dim`` dimensions: ``auto``, ``nlist`` and
        ``pq_m`` decided.

        Raises
        ------
        ValueError
            ``pq_m`` does not divide ``dim``.
        """
        spec = self
        if spec.type == "auto":
            spec = replace(spec, type="flat" if n < EXACT_SEARCH_LIMIT else "hnsw")
        if spec.type in ("ivf", "ivfpq") and spec.nlist is None:
            spec = replace(spec, nlist=max(1, min(round(4 * math.sqrt(n)), n // 39)))
        if spec.type == "ivfpq" and dim is not None:
            if spec.pq_m is None:
                spec = replace(spec, pq_m=max(m for m in range(1, dim // 4 + 1) if dim % m == 0))
            if dim % spec.pq_m:
                raise ValueError(f"pq_m must divide the embedding size {dim}; got {spec.pq_m}")
        return spec

    def factory_string(self) -> str:
        """The FAISS ``index_factory`` description of a resolved spec, e.g. ``IDMap2,HNSW32,Flat``."""
        return {
            "flat": "IDMap2,Flat",
            "hnsw": f"IDMap2,HNSW{self.hnsw_m},Flat",
            "ivf": f"IVF{self.nlist},Flat",
            "ivfpq": f"IVF{self.nlist},PQ{self.pq_m}x4fs",
        }[self.type]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> IndexSpec:
        return cls(**{k: v for k, v in values.items() if k in cls.__dataclass_fields__})


def _fewer_classes(labels: np.ndarray, top: int) -> bool:
    """Whether some row of ``labels`` (int64, (n_queries, k), -1 for none) holds fewer than ``top`` classes."""
    return any(len(np.unique(row[row >= 0])) < top for row in labels)


def fingerprint(embeddings: np.ndarray) -> str:
    """SHA-256 of an embedding matrix's shape and bytes: what caches derived from the embeddings are keyed by."""
    digest = hashlib.sha256(repr(embeddings.shape).encode())
    digest.update(np.ascontiguousarray(embeddings, dtype=np.float32).tobytes())
    return digest.hexdigest()


def _new_faiss_index(spec: IndexSpec, vectors: np.ndarray, ids: np.ndarray) -> faiss.Index:
    index = faiss.index_factory(vectors.shape[1], spec.factory_string(), faiss.METRIC_INNER_PRODUCT)
    if spec.type == "hnsw":
        faiss.downcast_index(index.index).hnsw.efConstruction = spec.ef_construction
    if spec.type in ("ivf", "ivfpq"):
        needed = spec.nlist if spec.type == "ivf" else max(spec.nlist, MIN_PQ_TRAINING)
        if len(vectors) < needed:
            raise ValueError(
                f"an {spec.type.upper()} index with {spec.nlist} cells needs at least {needed} vectors to train on; "
                f"got {len(vectors)}"
            )
        index.train(vectors)
    _set_search_parameters(index, spec)
    if len(vectors):
        index.add_with_ids(vectors, ids)
    return index


@contextmanager
def _threads(count: int | None):
    """FAISS's OpenMP threads for the searches of the calling thread (an OpenMP setting of that thread only);
    ``None`` keeps them."""
    if count is None:
        yield
        return
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(count)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def _set_search_parameters(index: faiss.Index, spec: IndexSpec) -> None:
    if spec.type == "hnsw":
        faiss.downcast_index(index.index).hnsw.efSearch = spec.ef_search
    elif spec.type in ("ivf", "ivfpq"):
        index.nprobe = spec.nprobe


@dataclass(frozen=True)
class SearchResult:
    """The k nearest indexed images of each query, best first (FAISS's search contract).

    Attributes
    ----------
    scores : float32 ndarray of shape (n_queries, k)
        Inner products (cosine similarities for L2-normalised embeddings), descending along each row.
    ids : int64 ndarray of shape (n_queries, k)
        Stable ids of the matched images; -1 where fewer than k images were found.
    rows : int64 ndarray of shape (n_queries, k)
        Their positions in ``EmbeddingIndex.records`` and ``embeddings()``; -1 where ``ids`` is -1.
    labels : int64 ndarray of shape (n_queries, k)
        Class index of each matched image (position in ``class_names``); -1 where ``ids`` is -1.
    """

    scores: np.ndarray
    ids: np.ndarray
    rows: np.ndarray
    labels: np.ndarray


class EmbeddingIndex:
    """Cosine-similarity search over L2-normalised embeddings, with per-image metadata and stable ids.

    Every image has a row (its position in ``records`` and ``embeddings()``, which shifts when earlier
    images are removed) and an id (given when it is added, ascending with the rows, never reused).
    FAISS holds the ids.

    Parameters
    ----------
    faiss_index : faiss.Index
        Inner-product index holding ``vectors`` under ``ids``.
    vectors : float32 ndarray of shape (n, d), L2-normalised
        The embeddings, by row.
    ids : int64 ndarray of shape (n,)
        Strictly ascending ids, by row.
    records : sequence of ImageRecord, length n
    class_names : sequence of str
        Every label of ``records`` must be one of them.
    spec : IndexSpec
        The resolved spec ``faiss_index`` was built with.
    next_id : int
        Id the next added image gets; greater than every id ever given.

    Raises
    ------
    ValueError
        The parts disagree in length, ids are not ascending, or a label is not a class name.
    """

    def __init__(
        self,
        faiss_index: faiss.Index,
        vectors: np.ndarray,
        ids: np.ndarray,
        records: Sequence[ImageRecord],
        class_names: Sequence[str],
        *,
        spec: IndexSpec,
        next_id: int,
    ):
        if not faiss_index.ntotal == len(vectors) == len(ids) == len(records):
            raise ValueError(
                f"the index holds {faiss_index.ntotal} vectors, {len(vectors)} embeddings, {len(ids)} ids "
                f"and {len(records)} records; they must agree"
            )
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) and (np.any(np.diff(ids) <= 0) or ids[0] < 0 or ids[-1] >= next_id):
            raise ValueError("index ids must be ascending, unique, non-negative and below next_id")
        self.faiss_index = faiss_index
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.ids = ids
        self.records = list(records)
        self.class_names = tuple(class_names)
        self.spec = spec
        self.next_id = int(next_id)
        self.labels = self._codes(self.records)
        #: Incremented by every :meth:`add` and :meth:`remove`, for caches of derived values.
        self.version = 0

    def _codes(self, records: Sequence[ImageRecord]) -> np.ndarray:
        return class_codes([r.label for r in records], self.class_names)

    @classmethod
    def build(
        cls,
        embeddings: np.ndarray,
        records: Sequence[ImageRecord],
        class_names: Sequence[str],
        *,
        spec: IndexSpec = IndexSpec(),
    ) -> EmbeddingIndex:
        """Index ``embeddings`` with ids ``0 .. n - 1``.

        Parameters
        ----------
        embeddings : float32 ndarray of shape (n, d), L2-normalised
            Row i is the embedding of ``records[i]``.
        records : sequence of ImageRecord, length n
        class_names : sequence of str
        spec : IndexSpec
            Index type and parameters (``auto``: exact below :data:`EXACT_SEARCH_LIMIT` vectors).

        Raises
        ------
        ValueError
            ``embeddings`` is not 2-D, its row count differs from ``len(records)``, or an IVF index has
            fewer vectors than cells.
        """
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or len(embeddings) != len(records):
            raise ValueError(f"expected embeddings of shape ({len(records)}, d); got {embeddings.shape}")
        spec = spec.resolve(len(embeddings), embeddings.shape[1])
        ids = np.arange(len(embeddings), dtype=np.int64)
        started = time.perf_counter()
        index = _new_faiss_index(spec, embeddings, ids)
        logger.info("built a %s index of %d vectors in %.1f s", spec.type, len(ids), time.perf_counter() - started)
        return cls(index, embeddings, ids, records, class_names, spec=spec, next_id=len(ids))

    def reindex(self, spec: IndexSpec) -> None:
        """Rebuild the FAISS index as type ``spec`` in place: the same images, ids and metadata."""
        self.spec = spec.resolve(len(self), self.dim)
        self.faiss_index = _new_faiss_index(self.spec, self.vectors, self.ids)
        self.version += 1

    @property
    def dim(self) -> int:
        """Embedding size d."""
        return self.faiss_index.d

    def _changed(self) -> None:
        """After images were added or removed: a new version, and the values derived from the old one dropped."""
        self.version += 1
        for name in ("fingerprint", "_present_classes", "_ids_by_class", "_id_bitmap"):
            self.__dict__.pop(name, None)

    @cached_property
    def fingerprint(self) -> str:
        """SHA-256 of the stored embeddings (see :func:`fingerprint`); kept until they change."""
        return fingerprint(self.vectors)

    def __len__(self) -> int:
        return len(self.ids)

    def rows_of(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Rows of the images with these ids: int64 ndarray of the same shape.

        Raises
        ------
        KeyError
            An id is not in the index (the message lists them).
        """
        ids = np.asarray(ids, dtype=np.int64)
        rows = np.minimum(np.searchsorted(self.ids, ids), max(len(self.ids) - 1, 0))
        missing = ids[(self.ids[rows] != ids) if len(self.ids) else np.ones(ids.shape, bool)]
        if len(missing):
            raise KeyError(f"no image with id {', '.join(map(str, missing[:10].tolist()))} in the index")
        return rows

    def search(
        self, queries: np.ndarray, k: int, *, ef_search: int | None = None, nprobe: int | None = None
    ) -> SearchResult:
        """The ``k`` most similar indexed images of each query.

        Parameters
        ----------
        queries : float32 ndarray of shape (n_queries, d), L2-normalised
        k : int
            Number of results per query, at least 1; rows are padded with id -1 beyond ``len(self)``.
        ef_search, nprobe : int, optional
            For this call only, how hard an HNSW (``efSearch``) or IVF / IVF-PQ (``nprobe``) index searches (FAISS
            ``SearchParametersHNSW`` / ``SearchParametersIVF``); default the index's spec. Ignored by other types.

        Returns
        -------
        SearchResult
            Of shape (n_queries, k). An IVF-PQ index's candidates are re-ranked by their exact inner products,
            so its scores, like every other type's, are the cosine similarities of the stored embeddings.

        Raises
        ------
        ValueError
            ``queries`` does not have shape (n_queries, d), or ``k`` < 1.
        """
        queries = self._checked(queries, k)
        return self._search(queries, k, self._parameters(ef_search=ef_search, nprobe=nprobe))

    def _checked(self, queries: np.ndarray, k: int) -> np.ndarray:
        """``queries`` as contiguous float32; ValueError unless of shape (n_queries, d) and ``k`` >= 1."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries must have shape (n_queries, {self.dim}); got {queries.shape}")
        if k < 1:
            raise ValueError(f"k must be at least 1; got {k}")
        return queries

    def _parameters(
        self, *, ef_search: int | None = None, nprobe: int | None = None, selector: faiss.IDSelector | None = None
    ) -> faiss.SearchParameters | None:
        """FAISS search parameters for one call: search effort and an id filter; None for the index's own."""
        options = {"sel": selector} if selector is not None else {}
        if self.spec.type == "hnsw":
            if ef_search is not None:
                options["efSearch"] = int(ef_search)
            return faiss.SearchParametersHNSW(**options) if options else None
        if self.spec.type in ("ivf", "ivfpq"):
            options["nprobe"] = int(self.spec.nprobe if nprobe is None else nprobe)
            return faiss.SearchParametersIVF(**options)
        return faiss.SearchParameters(**options) if options else None

    def _search(self, queries: np.ndarray, k: int, params: faiss.SearchParameters | None) -> SearchResult:
        with _threads(1 if len(queries) < PARALLEL_QUERIES else None):
            if self.spec.type == "ivfpq":
                candidates = min(k * self.spec.k_factor, max(len(self), k))
                ids = self.faiss_index.search(queries, candidates, params=params)[1]
                scores, ids = self._rerank(queries, ids, k)
            else:
                scores, ids = self.faiss_index.search(queries, k, params=params)
        found = ids >= 0
        rows = np.full_like(ids, -1)
        if found.any():
            rows[found] = self.rows_of(ids[found])
        labels = np.where(found, self.labels[np.maximum(rows, 0)] if len(self) else -1, -1)
        return SearchResult(scores=scores, ids=ids, rows=rows, labels=labels)

    def _rerank(self, queries: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Scores and ids of shape (n_queries, k): the candidates ``ids`` (-1 for none) ordered by their exact
        inner products with ``queries``, computed from the stored (memory-mapped) embeddings."""
        found = ids >= 0
        rows = np.zeros_like(ids)
        rows[found] = self.rows_of(ids[found])
        order = np.argsort(rows, axis=None, kind="stable")  # read the file in order, once per row
        candidates = np.empty((ids.size, self.dim), np.float32)
        candidates[order] = self.vectors[rows.ravel()[order]]
        exact = np.einsum("qkd,qd->qk", candidates.reshape(*ids.shape, self.dim), queries)
        exact = np.where(found, exact, NO_SCORE)
        best = np.argsort(-exact, axis=1, kind="stable")[:, :k]
        scores = np.take_along_axis(exact, best, axis=1)
        ids = np.take_along_axis(ids, best, axis=1)
        if best.shape[1] < k:  # fewer candidates than k (a tiny index): pad as FAISS does
            pad = ((0, 0), (0, k - best.shape[1]))
            ids, scores = np.pad(ids, pad, constant_values=-1), np.pad(scores, pad, constant_values=NO_SCORE)
        return scores.astype(np.float32), ids

    def search_with_classes(self, queries: np.ndarray, k: int, *, top: int) -> tuple[SearchResult, SearchResult]:
        """The ``k`` most similar images and the ``top`` most similar classes of each query, from one search where
        one suffices.

        The search goes as deep as the index type allows at (almost) no extra cost (:meth:`class_depth`): an
        exact index scans every vector whatever the depth, an HNSW search visits ``efSearch`` candidates
        whatever the k. Its first ``k`` results are the neighbors (those of :meth:`search`, up to the order of
        ties); all of them name the classes for :meth:`nearest_classes`, which searches again only for queries
        whose results hold fewer than ``top`` classes.

        Parameters
        ----------
        queries : float32 ndarray of shape (n_queries, d), L2-normalised
        k : int
            Neighbors per query, at least 1.
        top : int
            Classes per query, at least 1.

        Returns
        -------
        neighbors : SearchResult of shape (n_queries, k)
            As :meth:`search` returns them.
        classes : SearchResult of shape (n_queries, top)
            As :meth:`nearest_classes` returns them.

        Raises
        ------
        ValueError
            ``queries`` does not have shape (n_queries, d), or ``k`` or ``top`` < 1.
        """
        queries = self._checked(queries, k)
        if top < 1:
            raise ValueError(f"top must be at least 1; got {top}")
        found = self._search(queries, self.class_depth(k), self._parameters())
        neighbors = SearchResult(*(getattr(found, field)[:, :k] for field in SearchResult.__dataclass_fields__))
        return neighbors, self.nearest_classes(queries, top, found=found)

    def class_depth(self, k: int) -> int:
        """How many neighbors a search of ``k`` can return at (almost) no extra cost, for ranking classes.

        ``flat`` and ``ivf``: :data:`EXACT_CLASS_DEPTH` (the scan of all vectors, or of ``nprobe`` cells, costs
        the same at any depth); ``hnsw``: ``efSearch`` (the candidates it visits anyway); ``ivfpq``: ``k``
        (each result costs ``k_factor`` exact re-rankings). Never more than the index holds, never less than k.
        """
        depth = {"flat": EXACT_CLASS_DEPTH, "ivf": EXACT_CLASS_DEPTH, "hnsw": self.spec.ef_search}.get(
            self.spec.type, k
        )
        return max(k, min(depth, len(self)))

    def nearest_classes(self, queries: np.ndarray, top: int, *, found: SearchResult | None = None) -> SearchResult:
        """Each query's ``top`` most similar classes, each represented by its most similar indexed image.

        A class's score is the similarity of its best image. Classes are taken in the order of their first
        image among the query's neighbors (``found``, else a search of depth :meth:`class_depth`); while fewer
        than ``top`` have appeared, the index is searched again with the classes already found filtered out (a
        FAISS ``IDSelectorBitmap`` over the ids), so that every round ranks the next classes. With an exact index
        this is exactly the ranking of every class by the maximum similarity of its images (brute force over all
        vectors, which ``tests/test_search_classes.py`` compares it with); with an approximate one it is as
        good as the index's recall.

        Parameters
        ----------
        queries : float32 ndarray of shape (n_queries, d), L2-normalised
        top : int
            Number of classes per query, at least 1.
        found : SearchResult, optional
            This index's answer for ``queries`` at any depth (e.g. the neighbors already searched): when it
            holds ``top`` classes for every query, no further search is made; when it does not and is shallower
            than :meth:`class_depth`, one search of that depth comes first.

        Returns
        -------
        SearchResult of shape (n_queries, top)
            The best image of each class, most similar class first; id -1 beyond the classes that have images.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        depth = self.class_depth(top)
        if found is None or (found.ids.shape[1] < depth and _fewer_classes(found.labels, top)):
            found = self._search(queries, depth, self._parameters())
        depth = found.ids.shape[1]
        shape = (len(queries), top)
        out = SearchResult(
            scores=np.full(shape, -np.inf, np.float32),
            ids=np.full(shape, -1, np.int64),
            rows=np.full(shape, -1, np.int64),
            labels=np.full(shape, -1, np.int64),
        )
        for q in range(len(queries)):
            result, row, taken, bitmap = found, q, 0, None
            while True:
                ((positions, _),) = nearest_classes(result.labels[row : row + 1], top=top - taken)
                for field in ("scores", "ids", "rows", "labels"):
                    getattr(out, field)[q, taken : taken + len(positions)] = getattr(result, field)[row, positions]
                if (
                    taken + len(positions) == top
                    or len(positions) == 0
                    or taken + len(positions) >= self._present_classes
                ):
                    break
                bitmap = self._without_classes(out.labels[q, taken : taken + len(positions)], bitmap)
                taken += len(positions)
                params = self._parameters(
                    ef_search=FILTERED_EFFORT * max(self.spec.ef_search, depth),
                    nprobe=FILTERED_EFFORT * self.spec.nprobe,
                    selector=faiss.IDSelectorBitmap(self.next_id, faiss.swig_ptr(bitmap)),
                )
                result, row = self._search(queries[q : q + 1], depth, params), 0
        return out

    @cached_property
    def _present_classes(self) -> int:
        return len(np.unique(self.labels))

    @cached_property
    def _ids_by_class(self) -> tuple[np.ndarray, np.ndarray]:
        """Ids sorted by class (int64, (n,)), and where each class starts in them (int64, (n_classes + 1,))."""
        order = np.argsort(self.labels, kind="stable")
        return self.ids[order], np.searchsorted(self.labels[order], np.arange(len(self.class_names) + 1))

    @cached_property
    def _id_bitmap(self) -> np.ndarray:
        """Bit i set for every indexed id i (uint8, (ceil(next_id / 8),), FAISS ``IDSelectorBitmap`` order)."""
        present = np.zeros(self.next_id, dtype=bool)
        present[self.ids] = True
        return np.packbits(present, bitorder="little")

    def _without_classes(self, classes: np.ndarray, bitmap: np.ndarray | None = None) -> np.ndarray:
        """``bitmap`` (default: every indexed id) with the ids of ``classes`` cleared: a new array for
        ``faiss.IDSelectorBitmap``, which reads it during the search (keep it alive until then)."""
        ids, starts = self._ids_by_class
        excluded = np.concatenate([ids[starts[c] : starts[c + 1]] for c in classes])
        bitmap = (self._id_bitmap if bitmap is None else bitmap).copy()
        np.bitwise_and.at(bitmap, excluded >> 3, ~np.left_shift(1, excluded & 7).astype(np.uint8))
        return bitmap

    def hit(self, row: int, score: float) -> Hit:
        """The :class:`Hit` for the image at ``row``, at similarity ``score``."""
        record = self.records[row]
        return Hit(
            id=int(self.ids[row]), row=int(row), label=record.label, path=record.path, split=record.split, score=score
        )

    def hits(self, result: SearchResult, query: int = 0, k: int | None = None) -> list[Hit]:
        """The first ``k`` (default: all) results of query number ``query`` as :class:`Hit` records."""
        rows, scores = result.rows[query, :k], result.scores[query, :k]
        return [self.hit(int(r), float(s)) for r, s in zip(rows, scores) if r >= 0]

    def add(self, embeddings: np.ndarray, records: Sequence[ImageRecord]) -> np.ndarray:
        """Append images; labels that are not yet class names become new classes (appended to ``class_names``).

        Parameters
        ----------
        embeddings : float32 ndarray of shape (m, d), L2-normalised
        records : sequence of ImageRecord, length m

        Returns
        -------
        int64 ndarray of shape (m,)
            The new images' ids.
        """
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32).reshape(len(records), self.dim)
        new_classes = sorted({r.label for r in records} - set(self.class_names))
        self.class_names += tuple(new_classes)
        ids = np.arange(self.next_id, self.next_id + len(records), dtype=np.int64)
        self.faiss_index.add_with_ids(embeddings, ids)
        self.vectors = np.concatenate([self.vectors, embeddings])
        self.ids = np.concatenate([self.ids, ids])
        self.records += list(records)
        self.labels = np.concatenate([self.labels, self._codes(records)])
        self.next_id += len(records)
        self._changed()
        return ids

    def remove(self, ids: Sequence[int] | np.ndarray) -> None:
        """Remove the images with these ids (their ids are never given again).

        Raises
        ------
        KeyError
            An id is not in the index; nothing is removed then.
        """
        rows = self.rows_of(np.unique(np.asarray(ids, dtype=np.int64)))
        keep = np.ones(len(self), dtype=bool)
        keep[rows] = False
        if self.spec.type == "hnsw":  # FAISS cannot delete from an HNSW graph: build it again
            self.faiss_index = _new_faiss_index(self.spec, self.vectors[keep], self.ids[keep])
        else:
            self.faiss_index.remove_ids(faiss.IDSelectorArray(self.ids[rows]))
        self.vectors, self.ids, self.labels = self.vectors[keep], self.ids[keep], self.labels[keep]
        self.records = [r for r, kept in zip(self.records, keep) if kept]
        self._changed()

    def recall_at_k(self, k: int = 10, *, queries: int = 1000, seed: int = 0) -> tuple[float, float, float]:
        """Recall@k of this index against exact search, with stored embeddings as queries.

        Recall@k is the share of each query's exact k nearest ids that the index also returns in its top k
        (the "k-recall@k" of the ANN benchmarks), averaged over the queries, computed by
        ``faiss.contrib.evaluation.knn_intersection_measure``.

        Parameters
        ----------
        k : int
        queries : int
            Number of stored embeddings drawn (without replacement, seeded) as queries.
        seed : int

        Returns
        -------
        recall : float
            In [0, 1]; 1.0 for an exact index, up to ties.
        index_ms, exact_ms : float
            Milliseconds per query, one query at a time, for this index and for exact search.
        """
        n = min(queries, len(self))
        sample = self.vectors[np.random.default_rng(seed).choice(len(self), n, replace=False)]
        exact = faiss.IndexFlatIP(self.dim)
        exact.add(self.vectors)
        timings, results = [], []
        searches = (lambda q: self.search(q, k).ids, lambda q: exact.search(q, k)[1])  # IVF-PQ: with re-ranking
        for search in searches:
            search(sample[:1])  # warm-up: thread pool, caches
            started = time.perf_counter()
            with _threads(1):  # one query per call, as the app searches (see PARALLEL_QUERIES)
                results.append(np.concatenate([search(q[None]) for q in sample]))
            timings.append(1000 * (time.perf_counter() - started) / max(n, 1))
        found, truth = results[0], self.ids[results[1]]
        recall = knn_intersection_measure(found, truth) if n else 1.0
        return float(recall), timings[0], timings[1]

    def save(self, directory: str | os.PathLike) -> None:
        """Write ``index.faiss``, ``vectors.npy`` and ``metadata.json`` into ``directory``."""
        directory = Path(directory)
        faiss.write_index(self.faiss_index, str(directory / INDEX_FILE))
        write_array(directory / VECTORS_FILE, self.vectors)
        items = [
            {"id": int(i), "path": str(r.path), "label": r.label, "split": r.split}
            for i, r in zip(self.ids, self.records)
        ]
        payload = {
            "class_names": list(self.class_names),
            "next_id": self.next_id,
            "index": self.spec.to_dict(),
            "items": items,
        }
        (directory / METADATA_FILE).write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, directory: str | os.PathLike) -> EmbeddingIndex:
        """Read an index written by :meth:`save`; the embeddings are memory-mapped (read-only), not read.

        Raises
        ------
        FileNotFoundError
            A file is missing.
        ValueError
            A file is damaged (the message names it), or the files disagree.
        """
        directory = Path(directory)
        paths = [directory / name for name in (INDEX_FILE, VECTORS_FILE, METADATA_FILE)]
        for path in paths:
            if not path.is_file():
                raise FileNotFoundError(f"index file missing: {path}")
        index_path, vectors_path, metadata_path = paths
        try:
            index = faiss.read_index(str(index_path))
        except RuntimeError as error:
            raise ValueError(f"cannot read FAISS index {index_path}: {error}") from error
        try:
            vectors = np.load(vectors_path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as error:
            raise ValueError(f"cannot read embeddings {vectors_path}: {error}") from error
        try:
            payload = json.loads(metadata_path.read_text(encoding="utf-8"))
            items = payload["items"]
            records = [ImageRecord(Path(item["path"]), item["label"], item["split"]) for item in items]
            ids = np.array([item["id"] for item in items], dtype=np.int64)
            spec = IndexSpec.from_dict(payload["index"])
            class_names, next_id = payload["class_names"], payload["next_id"]
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"cannot read index metadata {metadata_path}: {error!r}") from error
        _set_search_parameters(index, spec)
        return cls(index, vectors, ids, records, class_names, spec=spec, next_id=next_id)
