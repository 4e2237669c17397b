"""The embedder: MobileNetV2 backbone + trained head, image -> L2-normalised embedding and class probabilities.

Only :class:`EmbedderConfig` is imported eagerly; the Keras-backed names load on first use, so that reading
the configuration (e.g. for ``lookalike --help``) does not start TensorFlow.
"""

from importlib import import_module

from .config import EmbedderConfig

_LAZY = {
    "FEATURE_DIM": ".backbone",
    "IMAGENET_WEIGHTS_FILE": ".backbone",
    "WEIGHTS_ENV": ".backbone",
    "BackboneWeightsError": ".backbone",
    "build_backbone": ".backbone",
    "resolve_weights": ".backbone",
    "BackboneFeatures": ".model",
    "Embedder": ".model",
    "Embeddings": ".model",
    "EmbeddingStore": ".stream",
    "embed_to_store": ".stream",
    "RayUnavailable": ".ray_engine",
    "embed_to_store_on_ray": ".ray_engine",
    "TrainingError": ".training",
    "TrainingResult": ".training",
    "train": ".training",
}

__all__ = ["EmbedderConfig", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
