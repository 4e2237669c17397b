"""Class balance: images per class and split, and the classes too small for the few-shot protocol."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Training images per class in the few-shot protocol (``lookalike split --per-class 6``).
FEW_SHOT_TRAIN = 6


@dataclass(frozen=True)
class BalanceReport:
    """Image counts per class and split.

    Attributes
    ----------
    class_names : tuple of str
        Sorted.
    split_names : tuple of str
        ``train`` first, then the others sorted.
    counts : int64 ndarray of shape (n_classes, n_splits)
    min_train : int
        A class with fewer training images than this is too small.
    """

    class_names: tuple[str, ...]
    split_names: tuple[str, ...]
    counts: np.ndarray
    min_train: int

    @property
    def train_counts(self) -> np.ndarray:
        """Training images per class: int64 ndarray of shape (n_classes,)."""
        if "train" not in self.split_names:
            return np.zeros(len(self.class_names), dtype=np.int64)
        return self.counts[:, self.split_names.index("train")]

    def too_small(self) -> list[str]:
        """Classes with fewer than ``min_train`` training images, smallest first."""
        order = np.argsort(self.train_counts, kind="stable")
        return [self.class_names[c] for c in order if self.train_counts[c] < self.min_train]

    def imbalance(self) -> float:
        """Largest over smallest class total (inf when a class has no image)."""
        totals = self.counts.sum(axis=1)
        return float(totals.max() / totals.min()) if totals.min() > 0 else float("inf")

    def to_frame(self):
        """One row per class: ``class``, one column per split, ``total``, ``share`` (of all images) and
        ``too_small``; smallest class first. A pandas DataFrame."""
        import pandas as pd

        totals = self.counts.sum(axis=1)
        frame = pd.DataFrame(self.counts, columns=list(self.split_names))
        frame.insert(0, "class", list(self.class_names))
        frame["total"] = totals
        frame["share"] = totals / max(totals.sum(), 1)
        frame["too_small"] = self.train_counts < self.min_train
        return frame.sort_values("total", kind="stable").reset_index(drop=True)


def class_balance(labels: Sequence[str], splits: Sequence[str], *, min_train: int = FEW_SHOT_TRAIN) -> BalanceReport:
    """Count the images of each class in each split.

    Parameters
    ----------
    labels, splits : sequence of str, length n
        Class and split of each image (e.g. ``[r.label for r in index.records]``, ``[r.split for r in ...]``).
    min_train : int
        Training images a class needs (default :data:`FEW_SHOT_TRAIN`).

    Raises
    ------
    ValueError
        ``labels`` and ``splits`` differ in length.
    """
    if len(labels) != len(splits):
        raise ValueError(f"expected one split per label; got {len(labels)} labels and {len(splits)} splits")
    class_names, class_codes = np.unique(np.asarray(labels, dtype=str), return_inverse=True)
    split_values, split_codes = np.unique(np.asarray(splits, dtype=str), return_inverse=True)
    order = sorted(range(len(split_values)), key=lambda s: (split_values[s] != "train", split_values[s]))
    counts = np.zeros((len(class_names), len(split_values)), dtype=np.int64)
    np.add.at(counts, (class_codes, split_codes), 1)
    return BalanceReport(
        class_names=tuple(class_names.tolist()),
        split_names=tuple(split_values[order].tolist()),
        counts=counts[:, order],
        min_train=min_train,
    )
