"""What the nearest neighbors say: a k-nearest-neighbor vote and the nearest classes ("characters")."""

from __future__ import annotations

import numpy as np


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
