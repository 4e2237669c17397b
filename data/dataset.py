"""Folder-per-class datasets: ``ROOT/<class>/<image>``, optionally pre-split into ``train/`` and ``val/``."""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .images import IMAGE_EXTENSIONS

logger = logging.getLogger(__name__)

#: Sub-folder names that mark a pre-split dataset, and the split name each maps to.
TRAIN_DIR = "train"
HELD_OUT_DIRS = {"val": "val", "validation": "val", "test": "test"}
#: Classes with fewer images than this hold none out for validation when a folder is split here. A few-shot
#: class of 6 images would spare 1: its validation accuracy is 1.0 from the first epoch and tells early
#: stopping nothing (measured in ``benchmarks/generalisation``), while the image is worth more in training.
MIN_CLASS_SIZE_FOR_VAL = 10


class DatasetError(ValueError):
    """A dataset folder does not have the expected ``ROOT/<class>/<image>`` layout."""


def class_codes(labels: Sequence[str], class_names: Sequence[str]) -> np.ndarray:
    """Position of each label in ``class_names``: int64 ndarray of shape (len(labels),).

    Raises
    ------
    ValueError
        A label is not a class name (the message lists them).
    """
    position = {name: i for i, name in enumerate(class_names)}
    unknown = sorted(set(labels) - set(position))
    if unknown:
        raise ValueError(f"labels that are not class names: {', '.join(unknown[:10])}")
    return np.array([position[label] for label in labels], dtype=np.int64)


@dataclass(frozen=True)
class ImageRecord:
    """One labelled image: its file, its class name and its split (``"train"``, ``"val"`` or ``"test"``)."""

    path: Path
    label: str
    split: str


@dataclass(frozen=True)
class Dataset:
    """A labelled image collection.

    Attributes
    ----------
    root : Path
        The folder the dataset was read from.
    class_names : tuple of str
        Sorted class names; a class's position is its integer label everywhere in lookalike.
    records : tuple of ImageRecord
        Every image, sorted by split, class and file name.
    """

    root: Path
    class_names: tuple[str, ...]
    records: tuple[ImageRecord, ...]

    def subset(self, split: str) -> list[ImageRecord]:
        """Records of one split, in dataset order."""
        return [r for r in self.records if r.split == split]

    def labels(self, records: list[ImageRecord] | None = None) -> np.ndarray:
        """Integer labels (int64 array of shape (n,)) of ``records`` (default: all records)."""
        return class_codes([r.label for r in (self.records if records is None else records)], self.class_names)

    def summary(self) -> str:
        """One line: classes and images per split."""
        counts = Counter(r.split for r in self.records)
        splits = ", ".join(f"{n} {split}" for split, n in sorted(counts.items(), key=lambda kv: kv[0] != "train"))
        return f"{len(self.class_names)} classes, {len(self.records)} images ({splits})"


def _is_visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _class_images(root: Path) -> dict[str, list[Path]]:
    """Image files of each class folder under ``root`` (empty classes included, warned about)."""
    classes = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and _is_visible(p)):
        files = sorted(
            p for p in folder.iterdir() if p.is_file() and _is_visible(p) and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not files:
            logger.warning("class folder %s has no images (%s); skipped", folder, ", ".join(sorted(IMAGE_EXTENSIONS)))
            continue
        classes[folder.name] = files
    return classes


def find_images(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Image files named by ``paths``: files as given, folders searched recursively.

    In folders, files with an image extension (:data:`IMAGE_EXTENSIONS`) are taken and hidden files and
    folders skipped; files named directly are taken whatever their extension (decoding will tell).

    Returns
    -------
    list of Path
        Absolute paths, without duplicates, folders' files sorted.

    Raises
    ------
    FileNotFoundError
        A path does not exist.
    """
    found: dict[Path, None] = {}
    for path in map(lambda p: Path(p).expanduser().resolve(), paths):
        if path.is_dir():
            for file in sorted(path.rglob("*")):
                relative = file.relative_to(path).parts
                if (
                    file.is_file()
                    and file.suffix.lower() in IMAGE_EXTENSIONS
                    and not any(p.startswith(".") for p in relative)
                ):
                    found[file] = None
        elif path.is_file():
            found[path] = None
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
    return list(found)


def stratified_split(
    n_per_class: list[int], *, val_fraction: float, seed: int, min_class_size: int = MIN_CLASS_SIZE_FOR_VAL
) -> list[np.ndarray]:
    """Choose held-out images per class.

    Each class of n images gives ``round(val_fraction * n)`` images to validation, clipped to
    ``[0, n - 1]`` so that every class keeps at least one training image; which ones is decided by one
    ``numpy.random.default_rng(seed)`` drawing a permutation per class, in class order. Classes of fewer
    than ``min_class_size`` images give none: all of them train (see :data:`MIN_CLASS_SIZE_FOR_VAL`).

    Returns
    -------
    list of bool ndarray, one of shape (n,) per class
        True where the image is held out.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1); got {val_fraction}")
    rng = np.random.default_rng(seed)
    masks = []
    for n in n_per_class:
        n_val = min(int(round(val_fraction * n)), n - 1) if n >= min_class_size else 0
        mask = np.zeros(n, dtype=bool)
        mask[rng.permutation(n)[:n_val]] = True
        masks.append(mask)
    return masks


def load_folder(
    root: str | os.PathLike, *, val_fraction: float = 0.2, seed: int = 0, min_class_size: int = MIN_CLASS_SIZE_FOR_VAL
) -> Dataset:
    """Read a folder-per-class dataset.

    Layouts
    -------
    ``ROOT/<class>/<image>``
        Split here with :func:`stratified_split` (``val_fraction``, ``seed``, ``min_class_size``: smaller
        classes hold nothing out).
    ``ROOT/train/<class>/<image>`` and ``ROOT/val/<class>/<image>`` (or ``validation/``, or ``test/``)
        The given split is used as it is; held-out classes absent from ``train/`` are dropped with a warning.

    Image files are those with an extension in :data:`IMAGE_EXTENSIONS` (any case); hidden files and
    other files are ignored. Files are only listed here; decoding (and reporting unreadable files)
    happens when they are embedded.

    Raises
    ------
    FileNotFoundError
        ``root`` does not exist or is not a folder.
    DatasetError
        No class folder with images was found, or fewer than two classes.
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    held_out_dir = next((root / name for name in HELD_OUT_DIRS if (root / name).is_dir()), None)
    if (root / TRAIN_DIR).is_dir() and held_out_dir is not None:
        train = _class_images(root / TRAIN_DIR)
        held_out = _class_images(held_out_dir)
        held_out_split = HELD_OUT_DIRS[held_out_dir.name]
        dropped = sorted(set(held_out) - set(train))
        if dropped:
            logger.warning("%s classes not in train/ are ignored: %s", held_out_dir.name, ", ".join(dropped))
        records = [ImageRecord(p, label, "train") for label, files in train.items() for p in files]
        records += [
            ImageRecord(p, label, held_out_split) for label, files in held_out.items() if label in train for p in files
        ]
        class_names = tuple(train)
    else:
        classes = _class_images(root)
        masks = stratified_split(
            [len(f) for f in classes.values()], val_fraction=val_fraction, seed=seed, min_class_size=min_class_size
        )
        records = [
            ImageRecord(p, label, "val" if held else "train")
            for (label, files), mask in zip(classes.items(), masks)
            for p, held in zip(files, mask)
        ]
        records.sort(key=lambda r: r.split != "train")
        class_names = tuple(classes)
    if not class_names:
        raise DatasetError(
            f"no images found under {root}; expected ROOT/<class>/<image> with extensions "
            f"{', '.join(sorted(IMAGE_EXTENSIONS))}"
        )
    if len(class_names) < 2:
        raise DatasetError(
            f"the number of classes has to be greater than one; got 1 class ({class_names[0]}) in {root}"
        )
    return Dataset(root=root, class_names=class_names, records=tuple(records))
