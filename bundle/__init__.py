"""The bundle: a trained embedder composed with the index of the images it embedded, stored as one directory.

:class:`Bundle` trains, answers queries and saves; :mod:`~lookalike.bundle.manifest` types its manifest,
:mod:`~lookalike.bundle.storage` writes and reads it atomically with checksums, :mod:`~lookalike.bundle.updates`
adds and removes images, and :func:`evaluate` and :func:`audit_bundle` score and audit it. Names load on first
use: the bundle needs TensorFlow, and ``lookalike --help`` should not wait for it.
"""

from ..data.lazy import lazy_exports

_LAZY = {
    "Bundle": ".bundle",
    "QueryResult": ".bundle",
    "search_image": ".answer",
    "BundleError": ".storage",
    "Manifest": ".manifest",
    "FORMAT_VERSION": ".manifest",
    "AddResult": ".updates",
    "EmbeddingJob": ".updates",
    "add_files": ".updates",
    "remove_paths": ".updates",
    "reindex": ".updates",
    "evaluate": ".evaluation",
    "audit_bundle": ".audit",
    "imagenet_features": ".audit",
    "HealthReport": ".health_report",
    "health_report": ".health_report",
    "SimilarityExplanation": ".explain",
    "explain_result": ".explain",
    "explain_similarity": ".explain",
}

__all__ = list(_LAZY)
__getattr__ = lazy_exports(__name__, _LAZY)
