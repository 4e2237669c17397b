"""Data health (issue 13): pixel hashes, near duplicates, clusters, leaky splits, outliers, quality and balance."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageFilter

from lookalike.data import DEFAULT_DATASET, ImageRecord
from lookalike.data.hashing import hash_files
from lookalike.data.quality import check_quality
from lookalike.index.balance import class_balance
from lookalike.index.duplicates import check_new, duplicate_clusters, find_duplicates, find_near_duplicates
from lookalike.index.outliers import find_outliers
from lookalike.index.search import EmbeddingIndex, IndexSpec

CLASSES = ("123", "cook", "arthur", "autogun")


@pytest.fixture(scope="module")
def injected(tmp_path_factory) -> tuple[list[Path], dict[str, Path], Path]:
    """~40 real images (10 per class) plus one injected file per issue; returns (clean, injections, source)."""
    root = tmp_path_factory.mktemp("health")
    clean = []
    for name in CLASSES:
        (root / name).mkdir()
        for path in sorted((DEFAULT_DATASET / name).glob("*.png"))[:10]:
            clean.append(Path(shutil.copy(path, root / name / path.name)))
    source = clean[3]
    image = Image.open(source).convert("RGB")
    w, h = image.size
    injections = {
        "resized": (image.resize((w * 3 // 2, h * 3 // 2)), "png"),
        "jpeg": (image, "jpg"),
        "format": (image, "bmp"),  # the same pixels in another format: an exact duplicate
        "dark": (ImageEnhance.Brightness(Image.open(clean[15]).convert("RGB")).enhance(0.2), "png"),
        "blurry": (Image.open(clean[25]).convert("RGB").filter(ImageFilter.GaussianBlur(3)), "png"),
        "low_information": (Image.new("RGB", (100, 100), (40, 120, 200)), "png"),
        "odd_aspect_ratio": (image.resize((2000, 20)), "png"),
    }
    paths = {}
    for kind, (picture, suffix) in injections.items():
        paths[kind] = root / "123" / f"injected-{kind}.{suffix}"
        picture.save(paths[kind], quality=80) if suffix == "jpg" else picture.save(paths[kind])
    return clean, paths, source


def test_pixel_hash_finds_the_same_pixels_in_another_format_only(injected):
    clean, paths, source = injected
    hashes = hash_files([source, paths["format"], paths["jpeg"], paths["resized"], *clean[5:10]])
    assert hashes.hashes[0] == hashes.hashes[1]
    assert len(set(hashes.hashes)) == len(hashes.hashes) - 1  # JPEG and resized copies change the pixels
    assert [g.tolist() for g in hashes.groups()] == [[0, 1]]
    assert tuple(hashes.sizes[0]) == Image.open(source).size


def test_hashing_reports_unreadable_files(tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    hashes = hash_files([broken])
    assert hashes.hashes == (None,) and hashes.failures[0].path == broken


@pytest.mark.parametrize("method", ["exact", "ivf"])
def test_near_duplicates_match_brute_force(method):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((3000, 24)).astype(np.float32)
    vectors[1500:1600] = vectors[:100] + 0.15 * rng.standard_normal((100, 24)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(3000, dtype=np.int64) * 7 + 5
    pairs, similarity = find_near_duplicates(vectors, ids, 0.9, method=method, batch_size=700)
    gram = vectors @ vectors.T
    i, j = np.nonzero(np.triu(gram > 0.9, 1))
    truth = set(zip(ids[i].tolist(), ids[j].tolist()))
    found = set(map(tuple, pairs.tolist()))
    assert len(found) == len(pairs) and np.all(pairs[:, 0] < pairs[:, 1]) and np.all(np.diff(similarity) <= 0)
    if method == "exact":
        assert found == truth
    else:
        assert found <= truth and len(found) >= 0.95 * len(truth)
    rows = np.searchsorted(ids, pairs)
    np.testing.assert_allclose(similarity, gram[rows[:, 0], rows[:, 1]], atol=1e-5)


def test_range_search_on_an_hnsw_index_and_incremental_check():
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((400, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    records = [ImageRecord(Path(f"{i}.png"), "a" if i % 2 else "b", "train") for i in range(400)]
    index = EmbeddingIndex.build(vectors, records, ["a", "b"], spec=IndexSpec(type="hnsw"))
    index.remove([0, 1])
    # Three new images: a near copy of id 10, a near copy of that copy, and one unlike anything.
    new = np.stack([vectors[10], vectors[10], rng.standard_normal(16)]).astype(np.float32)
    new[:2] += 0.02 * rng.standard_normal((2, 16)).astype(np.float32)
    new /= np.linalg.norm(new, axis=1, keepdims=True)
    report = check_new(new, index, 0.95, paths=["n0", "n1", "n2"], splits=["val", "val", "val"])
    frame = report.to_frame()
    got = {frozenset(pair) for pair in frame[["path_a", "path_b"]].itertuples(index=False)}
    assert got == {frozenset(("n0", "10.png")), frozenset(("n1", "10.png")), frozenset(("n0", "n1"))}
    assert frame.set_index("path_a")["cross_split"].to_dict().get("n1", True)
    assert report.n_clusters == 1 and len(index) == 398  # the index was only read
    # The same duplicates through the index's own HNSW graph as through exact search.
    exact = find_near_duplicates(index.vectors, index.ids, 0.3)[0]
    approximate = find_near_duplicates(index.vectors, index.ids, 0.3, index=index.faiss_index)[0]
    assert len(set(map(tuple, approximate.tolist())) ^ set(map(tuple, exact.tolist()))) <= 0.02 * len(exact)


def test_duplicates_of_real_images_with_clusters_keepers_and_leaky_splits(injected):
    clean, paths, source = injected
    files = [*clean, paths["resized"], paths["jpeg"], paths["format"]]
    splits = ["train"] * len(clean) + ["val", "train", "test"]
    hashes = hash_files(files)
    # Pixel features of a tiny image stand in for embeddings here (the benchmark uses the frozen backbone).
    small = np.stack([np.asarray(Image.open(f).convert("L").resize((16, 16)), np.float32).ravel() for f in files])
    small -= small.mean(axis=1, keepdims=True)
    vectors = small / np.linalg.norm(small, axis=1, keepdims=True)
    report = find_duplicates(vectors, 0.98, paths=files, splits=splits, hashes=hashes.hashes, sizes=hashes.sizes)
    frame = report.to_frame()
    source_row = clean.index(source)
    cluster = report.cluster[source_row]
    members = set(np.flatnonzero(report.cluster == cluster).tolist())
    assert {source_row, len(clean), len(clean) + 1, len(clean) + 2} <= members
    assert files[report.keepers[cluster]] == paths["resized"]  # the most pixels
    exact = frame[frame.exact]
    assert {frozenset(p) for p in exact[["path_a", "path_b"]].itertuples(index=False)} == {
        frozenset((str(source), str(paths["format"])))
    }
    leaky = frame[frame.cross_split]
    assert frozenset((str(source), str(paths["resized"]))) in {
        frozenset(p) for p in leaky[["path_a", "path_b"]].itertuples(index=False)
    }
    assert not frame[(frame.split_a == frame.split_b)]["cross_split"].any()
    assert set(report.clusters_frame()["path"]) >= {
        str(source),
        *(str(paths[k]) for k in ("resized", "jpeg", "format")),
    }
    assert len(report.removable()) == len(members) - 1 + sum(
        len(np.flatnonzero(report.cluster == c)) - 1 for c in range(report.n_clusters) if c != cluster
    )


def test_clusters_are_connected_components_and_keepers_follow_size_then_typicality():
    pairs = np.array([[0, 1], [1, 2], [5, 6]])
    cluster, keepers = duplicate_clusters(
        pairs, 8, similarity=np.array([0.9, 0.99, 0.95]), sizes=np.array([1, 1, 1, 0, 0, 1, 4, 0])
    )
    assert cluster.tolist() == [0, 0, 0, -1, -1, 1, 1, -1]
    assert keepers.tolist() == [1, 6]  # 1 has the largest similarity sum; 6 the most pixels


def test_quality_flags_each_injected_image_and_not_the_clean_ones(injected):
    clean, paths, _ = injected
    quality = [paths[k] for k in ("dark", "blurry", "low_information", "odd_aspect_ratio")]
    report = check_quality([*clean, *quality])
    flags = dict(zip(report.paths, report.to_frame()["issues"]))
    assert "dark" in flags[paths["dark"]]
    assert "blurry" in flags[paths["blurry"]]
    assert "low_information" in flags[paths["low_information"]]
    assert "odd_aspect_ratio" in flags[paths["odd_aspect_ratio"]]  # sqrt(2000 x 20) = 200 px is not an odd size
    assert [p for p in clean if flags[p]] == []
    assert set(report.issues_frame()["path"]) == {str(p) for p in quality}


def test_grayscale_among_colour(injected, tmp_path):
    clean, _, _ = injected
    gray = tmp_path / "gray.png"
    Image.open(clean[0]).convert("L").convert("RGB").save(gray)  # gray pixels in an RGB file
    report = check_quality([*clean[:20], gray])
    assert report.flags["grayscale"].tolist() == [False] * 20 + [True]
    assert not check_quality([gray, gray]).flags["grayscale"].any()  # an all-gray set has no grayscale issue


def test_outliers_rank_typicality_and_flag_an_image_far_from_every_class():
    rng = np.random.default_rng(2)
    centres = rng.standard_normal((3, 32))
    labels = np.repeat(np.arange(3), 30)
    vectors = centres[labels] + 0.3 * rng.standard_normal((90, 32))
    vectors[7] = rng.standard_normal(32) * 3  # labelled 0, like no class
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    report = find_outliers(vectors, labels, class_names=["a", "b", "c"], k=5)
    assert report.far_from_all[7] and np.argmax(report.nearest_class_distance) == 7 and report.far_from_all.sum() <= 2
    assert report.class_outlier[7] and report.typicality_rank[7] == 29
    # Leave-one-out centroid distance, recomputed directly.
    others = vectors[(labels == 0) & (np.arange(90) != 7)].sum(axis=0)
    assert report.centroid_distance[7] == pytest.approx(1 - vectors[7] @ others / np.linalg.norm(others), abs=1e-5)
    # Neighbor distance, recomputed by brute force without the image itself.
    gram = vectors @ vectors.T
    np.fill_diagonal(gram, -np.inf)
    assert report.neighbor_distance[7] == pytest.approx(1 - np.sort(gram[7])[-5:].mean(), abs=1e-5)
    assert report.to_frame().iloc[0]["id"] == 7
    assert len(report.least_typical(2)) == 6


def test_class_balance_names_classes_too_small_for_few_shot():
    labels = ["a"] * 10 + ["b"] * 5 + ["c"] * 8
    splits = ["train"] * 8 + ["val"] * 2 + ["train"] * 5 + ["train"] * 3 + ["test"] * 5
    report = class_balance(labels, splits)
    assert report.split_names == ("train", "test", "val")
    assert report.too_small() == ["c", "b"]
    frame = report.to_frame()
    assert frame["class"].tolist() == ["b", "c", "a"] and frame["total"].tolist() == [5, 8, 10]
    with pytest.raises(ValueError, match="got 2 labels and 1 splits"):
        class_balance(["a", "b"], ["train"])


def test_core_modules_do_not_import_tensorflow():
    code = (
        "import sys; import lookalike.index.duplicates, lookalike.index.outliers, lookalike.index.balance, "
        "lookalike.data.quality, lookalike.data.hashing; print('tensorflow' in sys.modules or 'keras' in sys.modules)"
    )
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )


def test_errors_say_what_was_received():
    with pytest.raises(ValueError, match=r"got \(3,\)"):
        find_near_duplicates(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="unknown method 'lsh'"):
        find_near_duplicates(np.zeros((3, 2), np.float32), method="lsh")
    with pytest.raises(ValueError, match="holds vectors of size 4"):
        find_near_duplicates(np.zeros((3, 2), np.float32), index=faiss.IndexFlatIP(4))
