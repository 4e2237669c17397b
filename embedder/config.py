"""Configuration of an embedder: its architecture and how it is trained."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class BackboneSpec:
    """What lookalike knows about a backbone, so that nothing branches on its name.

    Attributes
    ----------
    name : str
        The value of :attr:`EmbedderConfig.backbone`.
    label : str
        How the manifest and the app name it.
    default_image_size : int
        Input side in pixels when none is given.
    pretrained : bool
        ImageNet weights, frozen below the fine-tuned blocks, features cached during training (MobileNetV2);
        else trained from random weights end to end on pixels (the small CNN).
    """

    name: str
    label: str
    default_image_size: int
    pretrained: bool


#: The backbones: the ImageNet MobileNetV2 (transfer learning) and a small CNN trained from random weights (a
#: baseline; a scratch CNN gains little from 224 px and costs 5x more, hence 96 px).
BACKBONE_SPECS = {
    "mobilenet_v2": BackboneSpec("mobilenet_v2", "MobileNetV2 (alpha 1.0, ImageNet)", 224, True),
    "small-cnn": BackboneSpec("small-cnn", "small CNN (from scratch)", 96, False),
}
BACKBONES = tuple(BACKBONE_SPECS)
#: Probabilities of the mutually exclusive appearance changes of an augmented view.
APPEARANCE_SETTINGS = ("augment_grayscale", "augment_recolour", "augment_sketch", "augment_low_res", "augment_jpeg")
#: Values of settings added after the first bundles, for configs saved without them (the behaviour then).
LEGACY_VALUES = {
    "augment_background": 0.0,
    **dict.fromkeys(APPEARANCE_SETTINGS, 0.0),
    "pooled_weight": 0.0,
    "crop_to_content": False,
}


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
    crop_to_content : bool
        Every image (training, indexed, query) that shows a character small on a flat background (a drawing on
        white paper, a screenshot with a wide backdrop, a sprite with transparent padding) is cropped to its
        content before it is padded to a square and resized (:func:`lookalike.data.images.crop_to_content`);
        images whose content fills the frame, or with a busy background, are unchanged. On
        ``benchmarks/generalisation`` it changed only queries with wide margins (the "small-white" kind, and a
        few rotated ones) and lifted those from 0.51-0.79 to 0.87-0.98 on the datasets where it was measured.
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
    augment_background : float
        Probability that an augmented view has its white surroundings replaced by a busy random background
        (see :mod:`lookalike.embedder.augment`).
    augment_grayscale, augment_recolour, augment_sketch, augment_low_res, augment_jpeg : float
        Probabilities of the appearance changes of an augmented view (grayscale, hue rotation, line
        drawing, downscaled, JPEG-compressed; see :mod:`lookalike.embedder.augment`); at most one per view,
        so they sum to at most 1. Like ``augment_background``, ignored by ``small-cnn``. Measured on
        ``benchmarks/generalisation`` (wesnoth_units, frozen backbone): nearest-character top-1 averaged over
        the query kinds 0.553 -> 0.634, at a cost on clean queries (0.928 -> 0.897; colour tells units apart).
        Grayscale and recolour at 0.1 each (0.15 before) keep more of the colour that tells palette variants
        apart (freedink's knights): best classifier 0.913 -> 0.927-0.933 there (frozen backbone 0.900), with every
        kind still at least as good as the frozen backbone on the selection datasets.
    flip : bool
        Random horizontal flips in augmentation.
    rotation : float
        Maximum random rotation, as a fraction of a full turn (0.05 is +-18 degrees).
    zoom : float
        Maximum random zoom in or out, as a fraction of the image side. 0.25 (0.1 before) also teaches partial
        views: on ``benchmarks/generalisation`` cropped queries went from 0.891 to 0.915-0.930 (2 seeds; frozen
        backbone 0.907) on freedroidrpg and from 0.671 to 0.696-0.702 on wesnoth_units; the mean over the query
        kinds stayed within a point.
    learning_rate : float
        Initial Adam learning rate of the head (cosine decay to 0 over ``epochs``).
    batch_size : int
        Batch size, both for training and for running the backbone.
    epochs : int
        Head epochs (over clean and augmented views); fewer when early stopping ends training.
    patience : int
        Epochs without a lower validation loss before training stops and the best weights are
        restored. Only a ``val`` split is watched; without one, all ``epochs`` run.
    balance_classes : bool
        Weight the loss by inverse class frequency (scikit-learn's ``"balanced"`` class weights).
    fine_tune_blocks : int
        MobileNetV2 inverted-residual blocks, counted from the top (plus the final 1x1 convolution), that
        are fine-tuned after the head has converged; 0 keeps the backbone frozen. Batch-norm layers stay
        in inference mode (keras-io transfer-learning guide). Frozen by default: on
        ``benchmarks/generalisation`` fine-tuning 3 blocks did not beat a head trained on the frozen
        backbone (wesnoth_units, 6 images per character: 0.917 against 0.928) for twice the training time.
    fine_tune_epochs : int
        Epochs of the fine-tuning phase.
    fine_tune_learning_rate : float
        Initial Adam learning rate of the fine-tuning phase (cosine decay to 0).
    pooled_weight : float
        Share of the backbone's pooled features in the embedding, in [0, 1). The embedding concatenates
        ``sqrt(1 - pooled_weight)`` times the trained (head) embedding with ``sqrt(pooled_weight)`` times the
        pooled features, L2-normalised, centred on the training images' mean and L2-normalised again
        (SimpleShot's "CL2N", Wang et al. 2019, arXiv:1911.04623), so a cosine similarity of embeddings is
        ``(1 - w) * cos(trained) + w * cos(pooled)``: what the ImageNet features already tell apart is kept
        for characters and query kinds that training never saw. 0 gives the trained embedding alone.
    pooled_dim : int
        The pooled part is reduced to this many dimensions by a random orthogonal projection (Johnson and
        Lindenstrauss), so the embedding has ``embedding_dim + pooled_dim`` dimensions; 0 keeps all 1280.
    seed : int
        Seed for weight initialisation, augmentation and shuffling.
    """

    backbone: str = "mobilenet_v2"
    image_size: int = 224
    crop_to_content: bool = True
    embedding_dim: int = 256
    dropout: float = 0.2
    logit_scale: float = 8.0
    augment_views: int = 4
    augment_background: float = 0.3
    augment_grayscale: float = 0.1
    augment_recolour: float = 0.1
    augment_sketch: float = 0.1
    augment_low_res: float = 0.15
    augment_jpeg: float = 0.1
    flip: bool = True
    rotation: float = 0.05
    zoom: float = 0.25
    learning_rate: float = 1e-3
    batch_size: int = 64
    epochs: int = 40
    patience: int = 10
    balance_classes: bool = True
    fine_tune_blocks: int = 0
    fine_tune_epochs: int = 6
    fine_tune_learning_rate: float = 1e-4
    pooled_weight: float = 0.0
    pooled_dim: int = 256
    seed: int = 0

    def __post_init__(self):
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}; got {self.backbone!r}")
        if self.fine_tune_blocks < 0:  # the upper bound is the backbone's block count, checked on the model
            raise ValueError(f"fine_tune_blocks must be 0 (frozen) or positive; got {self.fine_tune_blocks}")
        appearance = {name: getattr(self, name) for name in APPEARANCE_SETTINGS}
        for name, value in appearance.items() | {"augment_background": self.augment_background}.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} is a probability and must be in [0, 1]; got {value}")
        if sum(appearance.values()) > 1.0 + 1e-9:
            raise ValueError(
                f"at most one appearance change per view: {', '.join(appearance)} must sum to at most 1; "
                f"got {sum(appearance.values()):.3f}"
            )
        if not 0.0 <= self.pooled_weight < 1.0:
            raise ValueError(f"pooled_weight must be in [0, 1); got {self.pooled_weight}")
        if self.pooled_dim < 0:
            raise ValueError(f"pooled_dim must be 0 (all pooled features) or positive; got {self.pooled_dim}")

    @property
    def spec(self) -> BackboneSpec:
        """The :class:`BackboneSpec` of :attr:`backbone`."""
        return BACKBONE_SPECS[self.backbone]

    @classmethod
    def for_backbone(cls, backbone: str, *, image_size: int | None = None, **settings) -> EmbedderConfig:
        """A config for ``backbone`` at its default image size unless ``image_size`` is given."""
        if backbone not in BACKBONE_SPECS:
            raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}; got {backbone!r}")
        return cls(backbone=backbone, image_size=image_size or BACKBONE_SPECS[backbone].default_image_size, **settings)

    @property
    def fuses(self) -> bool:
        """True when the embedding includes the backbone's pooled features (``pooled_weight > 0``)."""
        return self.spec.pretrained and self.pooled_weight > 0

    @property
    def fine_tunes(self) -> bool:
        """True when training has a fine-tuning phase."""
        return self.spec.pretrained and self.fine_tune_blocks > 0 and self.fine_tune_epochs > 0

    def to_dict(self) -> dict:
        """The settings as a JSON-serialisable dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> EmbedderConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``TypeError`` naming them."""
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise TypeError(f"unknown EmbedderConfig settings: {', '.join(sorted(unknown))}")
        # Settings added later are off in configs written before them (that is how those models were built).
        return cls(**(LEGACY_VALUES | values))
