"""The search core: FAISS indexes with stable ids, neighbor votes, classifiers over embeddings, maps, the label
audit, open-set calibration and evaluation. Pure numpy, FAISS and scikit-learn: nothing here imports
TensorFlow or Keras (the bundle, which adds the embedder, is :mod:`lookalike.bundle`).
"""

from ..data.lazy import lazy_exports

_LAZY = {
    "Audit": ".label_audit",
    "audit": ".label_audit",
    "KNNClassifier": ".classifiers",
    "NearestCentroidClassifier": ".classifiers",
    "SoftmaxClassifier": ".classifiers",
    "Evaluation": ".evaluation",
    "score_classifiers": ".evaluation",
    "EmbeddingMap": ".projection",
    "MapConfig": ".projection",
    "knn_vote": ".neighbors",
    "nearest_classes": ".neighbors",
    "OpenSetCalibration": ".open_set",
    "EmbeddingIndex": ".search",
    "Hit": ".search",
    "IndexSpec": ".search",
    "SearchResult": ".search",
}

__all__ = list(_LAZY)
__getattr__ = lazy_exports(__name__, _LAZY)
