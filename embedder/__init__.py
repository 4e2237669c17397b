"""The embedder: MobileNetV2 backbone + trained head, image -> L2-normalised embedding and class probabilities.

Only :class:`EmbedderConfig` is imported eagerly; the other names load on first use, so that reading the
configuration (e.g. for ``lookalike --help``) does not start TensorFlow. :func:`load_embedder` and
:class:`RuntimeEmbedder` (inference with the exported runtime) never import it; :class:`Embedder` (Keras) does.
"""

from ..data.lazy import lazy_exports
from .config import EmbedderConfig

_LAZY = {
    "IMAGENET_WEIGHTS_FILE": ".backbone",
    "WEIGHTS_ENV": ".backbone",
    "BackboneWeightsError": ".errors",
    "build_backbone": ".backbone",
    "resolve_weights": ".backbone",
    "BackboneFeatures": ".model",
    "Embedder": ".model",
    "Embeddings": ".inference",
    "RuntimeEmbedder": ".inference",
    "load_embedder": ".inference",
    "EmbeddingStore": ".stream",
    "embed_to_store": ".stream",
    "RayUnavailable": ".ray_engine",
    "embed_to_store_on_ray": ".ray_engine",
    "TrainingError": ".errors",
    "TrainingResult": ".training",
    "train": ".training",
}

__all__ = ["EmbedderConfig", *_LAZY]
__getattr__ = lazy_exports(__name__, _LAZY)
