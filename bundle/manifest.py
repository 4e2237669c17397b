"""The bundle manifest: what a bundle holds and how it was made, written last as ``manifest.json``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from ..data import DecodeFailure

#: Version of the bundle layout written by this lookalike; bundles of another version are refused.
FORMAT_VERSION = 2
_VERSIONED_PACKAGES = ("lookalike", "tensorflow", "keras", "ai-edge-litert", "openvino", "faiss-cpu", "numpy", "pillow")


def package_versions() -> dict[str, str]:
    """Installed versions of the packages a bundle depends on ("not installed" for a missing one)."""
    versions = {}
    for name in _VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """Typed contents of ``manifest.json``.

    Attributes
    ----------
    format_version : int
        :data:`FORMAT_VERSION` of the writer.
    created : str
        ISO 8601 UTC time of training.
    backbone : str
        Human-readable backbone label, e.g. ``"MobileNetV2 (alpha 1.0, ImageNet)"``.
    image_size : int
        Input side in pixels.
    embedding_dim : int
        Size d of the embeddings.
    class_names : list of str
        Every class of the index (the embedder's, then classes added later).
    dataset : dict
        ``root`` (str), ``images`` (int, indexed at training) and ``skipped`` (list of ``{path, reason}``).
    training : dict
        ``phase_epochs``, ``seconds``, ``val_accuracy`` (float or None), ``history``, ``config``.
    open_set : dict or None
        The "no close match" calibration (:class:`lookalike.index.open_set.OpenSetCalibration` as a dict);
        None in bundles written before it was stored.
    precision : dict or None
        The runtime the bundle answers with and how each precision did against fp32 on the held-out images
        (:func:`lookalike.bundle.precision.summary`: ``asked``, ``chosen``, ``held_out_images``, ``criteria``,
        ``runtimes``); None in bundles written before precisions were measured (they use fp32).
    versions : dict of str to str
        Package versions of the writer.
    index : dict
        Index type and parameters, ``size`` and ``metric`` (written on save).
    files : dict of str to str
        SHA-256 of each bundle file (written on save, verified on load).
    """

    format_version: int = FORMAT_VERSION
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    backbone: str
    image_size: int
    embedding_dim: int
    class_names: list[str]
    dataset: dict
    training: dict
    open_set: dict | None = None
    precision: dict | None = None
    versions: dict = field(default_factory=package_versions)
    index: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)

    @property
    def val_accuracy(self) -> float | None:
        """Top-1 accuracy of the softmax head on the ``val`` split at training; None without one."""
        return self.training.get("val_accuracy")

    @property
    def skipped(self) -> list[DecodeFailure]:
        """Dataset files that could not be read when the bundle was built."""
        return [DecodeFailure(Path(f["path"]), f["reason"]) for f in self.dataset.get("skipped", [])]

    def replace(self, **changes) -> Manifest:
        """A copy with ``changes`` applied."""
        return replace(self, **changes)

    def to_dict(self) -> dict:
        """JSON-serialisable form (the keys of ``manifest.json``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Manifest:
        """Inverse of :meth:`to_dict`.

        Raises
        ------
        TypeError
            Unknown keys (named), or required keys missing.
        """
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise TypeError(f"unknown manifest keys: {', '.join(sorted(unknown))}")
        return cls(**values)
