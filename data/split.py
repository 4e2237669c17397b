"""Few-shot splits: a fixed number of training images per class, the rest for testing."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np

from .dataset import DatasetError, _class_images

logger = logging.getLogger(__name__)


def few_shot_split(
    source: str | os.PathLike, out: str | os.PathLike, *, per_class: int, seed: int = 0, copy: bool = False
) -> dict[str, int]:
    """Write ``out/train/<class>/`` and ``out/test/<class>/`` from a folder-per-class dataset.

    Per class: sort the file names, reorder them with ``numpy.random.default_rng(seed).permutation(n)``
    (a fresh generator for each class), and take the first ``per_class`` for training and the rest for
    testing. With ``per_class=6, seed=0`` this is the few-shot protocol of the project's reference
    figures (a published cartoon look-alike project trained on 6 images per character).

    Parameters
    ----------
    source : path-like
        ``SOURCE/<class>/<image>``.
    out : path-like
        Must not exist yet, or be empty.
    per_class : int
        Training images per class, at least 1; classes with no more than ``per_class`` images are put
        entirely in training (and warned about).
    seed : int
    copy : bool
        Copy the files instead of symlinking them (symlinks point at the absolute source path).

    Returns
    -------
    dict
        ``{"train": n_train, "test": n_test}`` image counts.

    Raises
    ------
    FileExistsError
        ``out`` exists and is not empty.
    DatasetError
        ``source`` holds no class folder with images.
    """
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1; got {per_class}")
    source, out = Path(source).expanduser().resolve(), Path(out).expanduser()
    if not source.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {source}")
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} already exists and is not empty")
    classes = _class_images(source)
    if not classes:
        raise DatasetError(f"no images found under {source}; expected SOURCE/<class>/<image>")
    counts = {"train": 0, "test": 0}
    for label, files in classes.items():
        order = np.random.default_rng(seed).permutation(len(files))
        if len(files) <= per_class:
            logger.warning("class %s has only %d images: all of them go to train/", label, len(files))
        for rank, position in enumerate(order):
            split = "train" if rank < per_class else "test"
            target = out / split / label / files[position].name
            target.parent.mkdir(parents=True, exist_ok=True)
            if copy:
                shutil.copy2(files[position], target)
            else:
                target.symlink_to(files[position])
            counts[split] += 1
    return counts
