"""Similarity search over embeddings: the FAISS index, neighbour votes, and the bundle that answers queries."""

from .audit import Audit, audit, imagenet_features
from .bundle import FORMAT_VERSION, Bundle, BundleError, QueryResult
from .classifiers import KNNClassifier, NearestCentroidClassifier, SoftmaxClassifier
from .evaluation import Evaluation, evaluate
from .projection import EmbeddingMap, MapConfig
from .neighbors import knn_vote, nearest_classes
from .search import EmbeddingIndex, Hit, IndexSpec, SearchResult

__all__ = [
    "FORMAT_VERSION",
    "Audit",
    "Bundle",
    "BundleError",
    "EmbeddingIndex",
    "EmbeddingMap",
    "Evaluation",
    "Hit",
    "IndexSpec",
    "KNNClassifier",
    "MapConfig",
    "NearestCentroidClassifier",
    "QueryResult",
    "SearchResult",
    "SoftmaxClassifier",
    "audit",
    "evaluate",
    "imagenet_features",
    "knn_vote",
    "nearest_classes",
]
