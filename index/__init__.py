"""Similarity search over embeddings: the FAISS index, neighbour votes, and the bundle that answers queries.

Names load on first use (PEP 562), so that reading index options (e.g. for ``lookalike --help``) does not
start TensorFlow.
"""

from importlib import import_module

_LAZY = {
    "Audit": ".label_audit",
    "audit": ".label_audit",
    "imagenet_features": ".label_audit",
    "FORMAT_VERSION": ".bundle",
    "Bundle": ".bundle",
    "BundleError": ".bundle",
    "QueryResult": ".bundle",
    "KNNClassifier": ".classifiers",
    "NearestCentroidClassifier": ".classifiers",
    "SoftmaxClassifier": ".classifiers",
    "Evaluation": ".evaluation",
    "evaluate": ".evaluation",
    "EmbeddingMap": ".projection",
    "MapConfig": ".projection",
    "knn_vote": ".neighbors",
    "nearest_classes": ".neighbors",
    "EmbeddingIndex": ".search",
    "Hit": ".search",
    "IndexSpec": ".search",
    "SearchResult": ".search",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
