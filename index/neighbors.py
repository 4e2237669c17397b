"""What the nearest neighbors say: a k-nearest-neighbor vote and the nearest classes ("characters")."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # search.py imports this module for its class ranking
    from .search import EmbeddingIndex, SearchResult


def knn_vote(labels: np.ndarray, scores: np.ndarray, n_classes: int, *, weighted: bool = True) -> np.ndarray:
    """Class probabilities from a vote of each query's nearest neighbors.

    Each neighbor votes for its class with weight ``max(score, 0)`` (similarity-weighted) or 1
    (``weighted=False``); votes are normalised to sum to one per query. A query whose neighbors all have
    zero weight gets an unweighted vote.

    Parameters
    ----------
    labels : int64 ndarray of shape (n_queries, k)
        Class index of each neighbor, -1 for no neighbor (ignored).
    scores : float32 ndarray of shape (n_queries, k)
        Cosine similarity of each neighbor.
    n_classes : int
    weighted : bool

    Returns
    -------
    float32 ndarray of shape (n_queries, n_classes)
        Rows sum to 1 (all zero for a query without neighbors).
    """
    valid = labels >= 0
    weights = np.where(valid, np.maximum(scores, 0.0) if weighted else 1.0, 0.0)
    no_weight = weights.sum(axis=1) == 0
    weights[no_weight] = valid[no_weight]
    votes = np.zeros((len(labels), n_classes), dtype=np.float64)
    rows = np.broadcast_to(np.arange(len(labels))[:, None], labels.shape)
    np.add.at(votes, (rows[valid], labels[valid]), weights[valid])
    totals = votes.sum(axis=1, keepdims=True)
    return (votes / np.where(totals > 0, totals, 1.0)).astype(np.float32)


def nearest_classes(labels: np.ndarray, *, top: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Rank classes by their best-matching image, for each query.

    A class's score is the similarity of its most similar image among the neighbors (its first
    occurrence, since neighbors come best first); classes with no image among them are not ranked.

    Parameters
    ----------
    labels : int64 ndarray of shape (n_queries, k)
        Class index of each neighbor, best first; -1 for no neighbor.
    top : int
        Number of classes to return per query (fewer when fewer classes are among the neighbors).

    Returns
    -------
    list of (positions, classes), one per query
        ``positions``: int64 ndarray of shape (t,), column in ``labels`` of each class's best image;
        ``classes``: int64 ndarray of shape (t,), class indices, best first; t <= top.
    """
    ranked = []
    for row in labels:
        classes, first = np.unique(row, return_index=True)
        keep = classes >= 0
        order = np.argsort(first[keep], kind="stable")[:top]
        ranked.append((first[keep][order].astype(np.int64), classes[keep][order].astype(np.int64)))
    return ranked


def indexed_neighbors(index: EmbeddingIndex, *, k: int = 10, batch_size: int = 4096) -> SearchResult:
    """The ``k`` nearest *other* indexed images of every indexed image (each image left out of its own search).

    Parameters
    ----------
    index : EmbeddingIndex
    k : int
        Neighbors per image, at least 1; rows are padded with -1 when the index holds ``k`` images or fewer.
    batch_size : int
        Images searched per FAISS call (bounds the memory of one call).

    Returns
    -------
    SearchResult
        ``scores, ids, rows, labels`` of shape (len(index), k), best first; an image's own id never appears in
        its row (an exact duplicate of it may). Searched with the index's own settings (exact for ``flat``).

    Raises
    ------
    ValueError
        ``k`` < 1.
    """
    from .search import SearchResult  # here, not at the top: search.py imports this module

    if k < 1:
        raise ValueError(f"k must be at least 1; got {k}")
    n = len(index)
    parts = []
    for start in range(0, n, batch_size):
        found = index.search(index.vectors[start : start + batch_size], min(k + 1, max(n, 1)))
        own = found.ids == index.ids[start : start + batch_size, None]
        # Drop the image itself where it was found, else the last column (a duplicate outranked it).
        drop = np.where(own.any(axis=1), own.argmax(axis=1), found.ids.shape[1] - 1)
        keep = np.ones(found.ids.shape, dtype=bool)
        keep[np.arange(len(drop)), drop] = False
        columns = (found.scores, found.ids, found.rows, found.labels)
        parts.append([_pad(a[keep].reshape(len(drop), -1), k) for a in columns])
    if not parts:
        empty = np.empty((0, k), dtype=np.int64)
        return SearchResult(scores=empty.astype(np.float32), ids=empty, rows=empty, labels=empty)
    scores, ids, rows, labels = (np.concatenate(column) for column in zip(*parts))
    return SearchResult(scores=scores, ids=ids, rows=rows, labels=labels)


def _pad(values: np.ndarray, k: int) -> np.ndarray:
    """``values`` of shape (m, j <= k) padded on the right to (m, k): -1 for ids, rows and labels, -inf scores."""
    if values.shape[1] >= k:
        return values[:, :k]
    fill = -np.inf if values.dtype.kind == "f" else -1
    return np.pad(values, ((0, 0), (0, k - values.shape[1])), constant_values=fill).astype(values.dtype)
