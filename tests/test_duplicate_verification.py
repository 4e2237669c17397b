"""Near duplicates in two stages (issue 13): pixel verification of candidate pairs, on real sprites."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from lookalike.data import DEFAULT_DATASET, ImageRecord
from lookalike.data.hashing import THUMBNAIL_SIZE, hash_files, pixel_thumbnail
from lookalike.index.duplicates import check_new, find_duplicates
from lookalike.index.search import EmbeddingIndex
from lookalike.index.verify import MAX_LOCAL_DIFFERENCE, verify_pairs
from PIL import Image, ImageEnhance

CLASSES = ("123", "cook", "arthur", "autogun")


def _copy(image: Image.Image, kind: str) -> tuple[Image.Image, str]:
    """A transformed copy as the benchmark injects it, and its file suffix."""
    w, h = image.size
    if kind == "resized":
        return image.resize((w * 3 // 2, h * 3 // 2), Image.Resampling.BICUBIC), ".png"
    if kind == "jpeg":
        return image, ".jpg"
    if kind == "cropped":
        dx, dy = round(0.05 * w), round(0.05 * h)
        return image.crop((dx, dy, w - dx, h - dy)), ".png"
    if kind == "darker":
        return ImageEnhance.Brightness(image).enhance(0.85), ".png"
    return ImageEnhance.Brightness(image).enhance(1.15), ".png"  # "brighter"


KINDS = ("resized", "jpeg", "cropped", "darker", "brighter")


@pytest.fixture(scope="module")
def sprites(tmp_path_factory) -> tuple[list[Path], dict[tuple[int, str], Path]]:
    """The first 10 frames of 4 animated characters, and 5 transformed copies of frames 2 and 7 of each."""
    root = tmp_path_factory.mktemp("sprites")
    frames = []
    for name in CLASSES:
        for path in sorted((DEFAULT_DATASET / name).glob("*.png"))[:10]:
            frames.append(Path(shutil.copy(path, root / f"{name}-{path.name}")))
    copies = {}
    for row in [c * 10 + f for c in range(len(CLASSES)) for f in (2, 7)]:
        image = Image.open(frames[row]).convert("RGB")
        for kind in KINDS:
            copy, suffix = _copy(image, kind)
            copies[row, kind] = root / f"{frames[row].stem}-{kind}{suffix}"
            copy.save(copies[row, kind], quality=75) if suffix == ".jpg" else copy.save(copies[row, kind])
    return frames, copies


def test_thumbnails_are_small_grayscale_and_come_with_the_hashes(sprites):
    frames, _ = sprites
    hashes = hash_files(frames[:3])
    assert hashes.thumbnails.shape == (3, THUMBNAIL_SIZE, THUMBNAIL_SIZE) and hashes.thumbnails.dtype == np.uint8
    pixels = np.asarray(Image.open(frames[0]).convert("RGB"))
    np.testing.assert_array_equal(hashes.thumbnails[0], pixel_thumbnail(pixels))
    white = pixel_thumbnail(np.full((30, 90, 3), 255, np.uint8))  # any size and aspect: a square thumbnail
    assert white.shape == (THUMBNAIL_SIZE, THUMBNAIL_SIZE) and white.min() == 255


def test_every_transformed_copy_is_verified_and_no_two_frames_are(sprites):
    frames, copies = sprites
    files = [*frames, *copies.values()]
    thumbnails = hash_files(files).thumbnails
    copy_pairs = np.array([(row, len(frames) + i) for i, (row, _) in enumerate(copies)])
    verified, correlation, difference = verify_pairs(thumbnails, copy_pairs)
    assert verified.all(), [k for k, ok in zip(copies, verified) if not ok]
    assert np.all(difference <= MAX_LOCAL_DIFFERENCE) and np.all(correlation > 0.95)
    # Every two frames of one character: animation frames, never copies, although some are globally very alike.
    frame_pairs = np.array([(i, j) for i in range(len(frames)) for j in range(i) if i // 10 == j // 10])
    verified, correlation, difference = verify_pairs(thumbnails, frame_pairs)
    assert not verified.any(), [(frames[i].name, frames[j].name) for i, j in frame_pairs[verified]]
    assert (correlation > 0.95).sum() >= 3  # a global correlation test would have passed these
    # Symmetric: the order within a pair does not matter.
    again = verify_pairs(thumbnails, frame_pairs[:, ::-1])
    np.testing.assert_allclose(again[2], difference, rtol=1e-5)


def test_find_duplicates_keeps_verified_copies_and_exact_pairs_and_flags_the_leaky_split(sprites):
    frames, copies = sprites
    row = 2
    same_pixels = frames[0].with_name("same-pixels.bmp")
    Image.open(frames[row]).convert("RGB").save(same_pixels)
    files = [*frames, copies[row, "cropped"], copies[row, "jpeg"], same_pixels]
    splits = ["train"] * len(frames) + ["val", "train", "train"]
    pixels = hash_files(files)
    # Stand-in embeddings that make *every* pair of one character a candidate: only the pixels can decide.
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((len(CLASSES), 16))
    character = [i // 10 for i in range(len(frames))] + [row // 10] * 3
    vectors = centres[character] + 0.05 * rng.standard_normal((len(files), 16))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    unverified = find_duplicates(vectors, 0.9, paths=files, splits=splits, hashes=pixels.hashes)
    assert len(unverified) > 150 and unverified.pixel_difference is None
    report = find_duplicates(
        vectors, 0.9, paths=files, splits=splits, hashes=pixels.hashes, thumbnails=pixels.thumbnails
    )
    found = {frozenset((files[a].name, files[b].name)): i for i, (a, b) in enumerate(report.pairs)}
    group = [frames[row], *files[len(frames) :]]
    assert set(found) == {frozenset((a.name, b.name)) for a in group for b in group if a != b}
    frame = report.to_frame()
    assert frame["exact"].tolist() == [bool(report.exact[i]) for i in range(len(report))]
    assert frame.loc[frame.exact, "pixel_difference"].eq(0).all()
    assert set(frame.loc[frame.exact, "path_b"].map(lambda p: Path(p).name)) | set(
        frame.loc[frame.exact, "path_a"].map(lambda p: Path(p).name)
    ) == {frames[row].name, same_pixels.name}
    leaky = {
        frozenset((Path(a).name, Path(b).name)) for a, b in frame.loc[frame.cross_split, ["path_a", "path_b"]].values
    }
    assert leaky == {frozenset((copies[row, "cropped"].name, g.name)) for g in group if g != copies[row, "cropped"]}
    assert report.n_clusters == 1 and report.max_pixel_difference == MAX_LOCAL_DIFFERENCE


def test_incremental_check_verifies_new_files_against_stored_thumbnails(sprites):
    frames, copies = sprites
    pixels = hash_files(frames)
    rng = np.random.default_rng(1)
    vectors = np.repeat(rng.standard_normal((len(CLASSES), 8)), 10, axis=0)  # one point per character
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    records = [ImageRecord(p, CLASSES[i // 10], "train") for i, p in enumerate(frames)]
    index = EmbeddingIndex.build(vectors, records, list(CLASSES))
    new = [copies[12, "resized"], copies[37, "jpeg"]]
    new_pixels = hash_files(new)
    report = check_new(
        vectors[[12, 37]], index, 0.9, paths=new, splits=["val", "val"], hashes=new_pixels.hashes,
        index_hashes=pixels.hashes, thumbnails=new_pixels.thumbnails, index_thumbnails=pixels.thumbnails,
    )  # fmt: skip
    frame = report.to_frame()
    assert {(Path(a).name, Path(b).name) for a, b in frame[["path_a", "path_b"]].values} == {
        (frames[12].name, new[0].name),
        (frames[37].name, new[1].name),
    }
    assert frame["cross_split"].all() and len(index) == len(frames)


def test_verification_errors_say_what_was_received():
    with pytest.raises(ValueError, match=r"got \(2, 4, 5\)"):
        verify_pairs(np.zeros((2, 4, 5), np.uint8), np.array([[0, 1]]))
    with pytest.raises(ValueError, match=r"rows in \[0, 2\)"):
        verify_pairs(np.zeros((2, 4, 4), np.uint8), np.array([[0, 2]]))
    with pytest.raises(ValueError, match="expected 3 thumbnails"):
        find_duplicates(np.eye(3, dtype=np.float32), 0.5, thumbnails=np.zeros((2, 4, 4), np.uint8))
