"""Configuration of an embedder: its architecture and how it is trained."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

#: Backbones: the ImageNet MobileNetV2 (transfer learning) or a small CNN trained from random weights (baseline).
BACKBONES = ("mobilenet_v2", "small-cnn")


@dataclass(frozen=True, kw_only=True)
class EmbedderConfig:
    """Architecture and training settings of an :class:`~lookalike.embedder.Embedder`.

    Attributes
    ----------
    backbone : str
        ``"mobilenet_v2"`` (ImageNet weights, frozen, top blocks optionally fine-tuned) or ``"small-cnn"``
        (four convolution blocks with batch-norm, max-pooling and dropout, trained from random weights:
        the classic tutorial CNN, a baseline that shows what transfer learning buys).
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
        Augmented copies of each training image (random flip, rotation, zoom) whose backbone activations
        are computed once and cached next to the clean view; 0 trains on clean views only. Ignored by
        ``small-cnn``, which draws fresh augmentations every epoch.
    flip : bool
        Random horizontal flips in augmentation.
    rotation : float
        Maximum random rotation, as a fraction of a full turn (0.05 is +-18 degrees).
    zoom : float
        Maximum random zoom in or out, as a fraction of the image side.
    learning_rate : float
        Initial Adam learning rate of the head (cosine decay to 0 over ``epochs``).
    batch_size : int
        Batch size, both for training and for running the backbone.
    epochs : int
        Head epochs (over clean and augmented views); fewer when early stopping ends training.
    patience : int
        Epochs without a better validation accuracy before training stops and the best weights are
        restored. Only a ``val`` split is watched; without one, all ``epochs`` run.
    balance_classes : bool
        Weight the loss by inverse class frequency (scikit-learn's ``"balanced"`` class weights).
    fine_tune_blocks : int
        MobileNetV2 inverted-residual blocks, counted from the top (plus the final 1x1 convolution), that
        are fine-tuned after the head has converged; 0 keeps the backbone frozen. Batch-norm layers stay
        in inference mode (keras-io transfer-learning guide).
    fine_tune_epochs : int
        Epochs of the fine-tuning phase.
    fine_tune_learning_rate : float
        Initial Adam learning rate of the fine-tuning phase (cosine decay to 0).
    seed : int
        Seed for weight initialisation, augmentation and shuffling.
    """

    backbone: str = "mobilenet_v2"
    image_size: int = 224
    embedding_dim: int = 256
    dropout: float = 0.2
    logit_scale: float = 8.0
    augment_views: int = 4
    flip: bool = True
    rotation: float = 0.05
    zoom: float = 0.1
    learning_rate: float = 1e-3
    batch_size: int = 64
    epochs: int = 40
    patience: int = 10
    balance_classes: bool = True
    fine_tune_blocks: int = 3
    fine_tune_epochs: int = 6
    fine_tune_learning_rate: float = 1e-4
    seed: int = 0

    def __post_init__(self):
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}; got {self.backbone!r}")
        if not 0 <= self.fine_tune_blocks <= 16:
            raise ValueError(
                f"fine_tune_blocks must be in [0, 16] (MobileNetV2 has 16 blocks); got {self.fine_tune_blocks}"
            )

    @property
    def fine_tunes(self) -> bool:
        """True when training has a fine-tuning phase."""
        return self.backbone == "mobilenet_v2" and self.fine_tune_blocks > 0 and self.fine_tune_epochs > 0

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
