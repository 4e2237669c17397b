"""Listing folder-per-class datasets and splitting them."""

from __future__ import annotations

import logging
from collections import Counter

import pytest
from PIL import Image

from lookalike.data import DEFAULT_DATASET, DatasetError, load_folder


def _make(root, layout):
    for relative, count in layout.items():
        folder = root / relative
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.new("RGB", (4, 4)).save(folder / f"{i:03d}.png")


def test_embedded_default_is_complete():
    dataset = load_folder(DEFAULT_DATASET)
    assert len(dataset.class_names) == 39
    assert len(dataset.records) == 1006
    assert (DEFAULT_DATASET / "COPYRIGHT.debian").is_file() and (DEFAULT_DATASET / "README.md").is_file()


def test_stratified_split_is_seeded_and_keeps_every_class_in_train(tmp_path):
    _make(tmp_path, {"a": 10, "b": 5, "c": 1})
    first = load_folder(tmp_path, val_fraction=0.2, seed=3)
    again = load_folder(tmp_path, val_fraction=0.2, seed=3)
    other = load_folder(tmp_path, val_fraction=0.2, seed=4)
    assert first == again
    assert [r.path for r in first.subset("val")] != [r.path for r in other.subset("val")]
    val = Counter(r.label for r in first.subset("val"))
    train = Counter(r.label for r in first.subset("train"))
    assert val == {"a": 2}  # b (5 images) and c (1) are under MIN_CLASS_SIZE_FOR_VAL: they hold nothing out
    assert train == {"a": 8, "b": 5, "c": 1}
    few = load_folder(tmp_path, val_fraction=0.2, seed=3, min_class_size=1)
    assert Counter(r.label for r in few.subset("val")) == {"a": 2, "b": 1}


def test_given_train_val_split_is_used(tmp_path):
    _make(tmp_path, {"train/a": 3, "train/b": 2, "validation/a": 1, "validation/b": 1, "validation/z": 1})
    dataset = load_folder(tmp_path)
    assert dataset.class_names == ("a", "b")
    assert Counter(r.split for r in dataset.records) == {"train": 5, "val": 2}
    assert all(r.path.parent.parent.name == ("train" if r.split == "train" else "validation") for r in dataset.records)


def test_other_files_hidden_files_and_empty_classes_are_ignored(tmp_path, caplog):
    _make(tmp_path, {"a": 2, "b": 2})
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    (tmp_path / "a" / ".hidden.png").write_bytes(b"")
    (tmp_path / "a" / "UPPER.PNG").write_bytes(b"")  # listed: decoding reports it later
    (tmp_path / "empty").mkdir()
    with caplog.at_level(logging.WARNING):
        dataset = load_folder(tmp_path, val_fraction=0.0)
    assert dataset.class_names == ("a", "b")
    assert sorted(r.path.name for r in dataset.records if r.label == "a") == ["000.png", "001.png", "UPPER.PNG"]
    assert "empty" in caplog.text


def test_single_class_and_empty_folders_are_refused(tmp_path):
    _make(tmp_path / "one", {"only": 3})
    with pytest.raises(DatasetError, match="greater than one; got 1 class"):
        load_folder(tmp_path / "one")
    (tmp_path / "none").mkdir()
    with pytest.raises(DatasetError, match="no images found"):
        load_folder(tmp_path / "none")
    with pytest.raises(FileNotFoundError):
        load_folder(tmp_path / "missing")
