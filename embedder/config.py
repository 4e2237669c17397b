"""Configuration of an embedder: its architecture and how its head is trained."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True, kw_only=True)
class EmbedderConfig:
    """Architecture and training settings of an :class:`~lookalike.embedder.Embedder`.

    Attributes
    ----------
    image_size : int
        Side of the square RGB input in pixels (MobileNetV2's ImageNet resolution is 224).
    embedding_dim : int
        Size d of the embedding (the dense layer before the softmax).
    dropout : float
        Dropout rate applied to the pooled backbone features during training.
    logit_scale : float
        Fixed scale of the L2-normalised embedding before the softmax layer (NormFace, Wang et al. 2017,
        arXiv:1704.06369): unit-length inputs bound the logits, and without a scale the softmax stays
        under-confident even for an exact match.
    augment_views : int
        Augmented copies of each training image (random flip, rotation, zoom) whose backbone
        features are computed once and cached next to the clean view; 0 trains on clean views only.
    flip : bool
        Random horizontal flips in augmentation.
    rotation : float
        Maximum random rotation, as a fraction of a full turn (0.05 is +-18 degrees).
    zoom : float
        Maximum random zoom in or out, as a fraction of the image side.
    learning_rate : float
        Adam learning rate of the head.
    batch_size : int
        Batch size, both for training the head and for running the backbone.
    epochs : int
        Maximum number of head training epochs (over clean and augmented views).
    patience : int
        Epochs without a better validation accuracy before training stops; the best weights are restored.
    seed : int
        Seed for weight initialisation, augmentation and shuffling.
    """

    image_size: int = 224
    embedding_dim: int = 256
    dropout: float = 0.2
    logit_scale: float = 8.0
    augment_views: int = 2
    flip: bool = True
    rotation: float = 0.05
    zoom: float = 0.1
    learning_rate: float = 1e-3
    batch_size: int = 64
    epochs: int = 100
    patience: int = 10
    seed: int = 0

    def to_dict(self) -> dict:
        """The settings as a JSON-serialisable dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> EmbedderConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``TypeError`` naming them."""
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise TypeError(f"unknown EmbedderConfig settings: {', '.join(sorted(unknown))}")
        return cls(**values)
