"""Shared fixtures: a small real dataset cut from the embedded default and one bundle trained on it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lookalike.data import DEFAULT_DATASET

#: Four characters of the embedded FreedroidRPG set: two droids and two humans.
CLASSES = ("123", "autogun", "arthur", "cook")
#: Images per class kept out of the bundle, to query it with.
HELD_OUT_PER_CLASS = 2
#: A file with an image extension that is not an image, planted in the training folder.
CORRUPT_NAME = "corrupt.png"
#: A training image whose name has spaces and non-ASCII characters.
UNUSUAL_NAME = "copie d'écran n°1 – ロボ.png"


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory) -> tuple[Path, dict[str, list[Path]]]:
    """A 4-class copy of the embedded dataset with one corrupt file, and the held-out query images per class."""
    root = tmp_path_factory.mktemp("dataset") / "characters"
    queries_root = tmp_path_factory.mktemp("queries")
    queries = {}
    for name in CLASSES:
        files = sorted((DEFAULT_DATASET / name).glob("*.png"))
        (root / name).mkdir(parents=True)
        for path in files[HELD_OUT_PER_CLASS:]:
            shutil.copy(path, root / name / path.name)
        queries[name] = []
        for path in files[:HELD_OUT_PER_CLASS]:
            target = queries_root / f"{name}-{path.name}"
            shutil.copy(path, target)
            queries[name].append(target)
    (root / CLASSES[0] / CORRUPT_NAME).write_bytes(b"this is not a PNG file" * 10)
    shutil.move(root / "cook" / sorted(p.name for p in (root / "cook").iterdir())[0], root / "cook" / UNUSUAL_NAME)
    return root, queries


@pytest.fixture(scope="session")
def bundle_path(small_dataset, tmp_path_factory) -> Path:
    """A bundle trained on ``small_dataset`` through the CLI: 2 head epochs, 1 fine-tuning epoch of the top 3 blocks."""
    from lookalike.app.cli import EXIT_SKIPPED, main

    root, _ = small_dataset
    out = tmp_path_factory.mktemp("bundles") / "small.bundle"
    code = main(
        [
            "train",
            str(root),
            "--out",
            str(out),
            "--epochs",
            "2",
            "--augment-views",
            "1",
            "--fine-tune-blocks",
            "3",
            "--fine-tune-epochs",
            "1",
        ]  # fmt: skip
    )
    assert code == EXIT_SKIPPED  # the corrupt file was skipped
    return out


@pytest.fixture(scope="session")
def bundle(bundle_path):
    from lookalike.bundle import Bundle

    return Bundle.load(bundle_path)
