"""Similarity search over embeddings: the FAISS index, neighbour votes, and the bundle that answers queries."""

from .bundle import FORMAT_VERSION, Bundle, BundleError, QueryResult
from .neighbors import knn_vote, nearest_classes
from .search import EmbeddingIndex, Hit, SearchResult

__all__ = [
    "FORMAT_VERSION",
    "Bundle",
    "BundleError",
    "EmbeddingIndex",
    "Hit",
    "QueryResult",
    "SearchResult",
    "knn_vote",
    "nearest_classes",
]
