"""The nearest classes ("characters") of a query, checked against the exact ranking: every class by the best
similarity of any of its images, computed by brute force over all stored embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from lookalike.data import ImageRecord
from lookalike.index import EmbeddingIndex, IndexSpec
from lookalike.index.search import EXACT_CLASS_DEPTH

TOP = 5


def views(n_classes=40, images=12, n_views=8, d=32, seed=0):
    """Unit vectors shaped like the benchmark's real set: classes, their images, and views of each image.

    Many close views per image make a query's first neighbors mostly one class, so finding five classes takes
    the further, filtered searches of ``nearest_classes``.
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_classes, d))
    image_centres = np.repeat(centres, images, axis=0) + 0.6 * rng.standard_normal((n_classes * images, d))
    x = np.repeat(image_centres, n_views, axis=0) + 0.15 * rng.standard_normal((n_classes * images * n_views, d))
    labels = np.repeat(np.arange(n_classes), images * n_views)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


def build(vectors, labels, kind):
    names = [f"class{c:02d}" for c in range(labels.max() + 1)]
    records = [ImageRecord(Path(f"/img/{i}.png"), names[c], "train") for i, c in enumerate(labels)]
    return EmbeddingIndex.build(vectors, records, names, spec=IndexSpec(type=kind))


def exact_classes(index: EmbeddingIndex, queries: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute force: each class's best similarity over all its stored embeddings; the ``top`` classes and scores."""
    similarity = queries @ np.asarray(index.vectors).T
    best = np.full((len(queries), len(index.class_names)), -np.inf)
    for c in np.unique(index.labels):
        best[:, c] = similarity[:, index.labels == c].max(axis=1)
    order = np.argsort(-best, axis=1, kind="stable")[:, :top]
    return order, np.take_along_axis(best, order, axis=1)


def queries_near(vectors, n=60, seed=1):
    rng = np.random.default_rng(seed)
    q = vectors[rng.choice(len(vectors), n, replace=False)] + 0.1 * rng.standard_normal((n, vectors.shape[1]))
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def test_exact_index_ranks_classes_exactly_with_filtered_searches():
    vectors, labels = views()
    index = build(vectors, labels, "flat")
    queries = queries_near(vectors)
    found = index.search(queries, 10)
    needs_more = [len(set(row[row >= 0].tolist())) < TOP for row in found.labels]
    assert sum(needs_more) >= len(queries) // 2  # most queries need the filtered searches: they are tested
    nearest = index.nearest_classes(queries, TOP, found=found)
    classes, scores = exact_classes(index, queries, TOP)
    np.testing.assert_array_equal(nearest.labels, classes)
    np.testing.assert_allclose(nearest.scores, scores, rtol=0, atol=1e-5)
    # each class is represented by its best image, whose stored embedding gives the score
    stored = np.einsum("qkd,qd->qk", np.asarray(index.vectors)[nearest.rows], queries)
    np.testing.assert_allclose(stored, nearest.scores, atol=1e-5)
    np.testing.assert_array_equal(index.labels[nearest.rows], nearest.labels)


def test_without_found_neighbors_the_ranking_is_the_same():
    vectors, labels = views(seed=2)
    index = build(vectors, labels, "flat")
    queries = queries_near(vectors, n=20)
    a = index.nearest_classes(queries, TOP)
    b = index.nearest_classes(queries, TOP, found=index.search(queries, 50))
    np.testing.assert_array_equal(a.ids, b.ids)


@pytest.mark.parametrize("kind", ["hnsw", "ivf", "ivfpq"])
def test_approximate_indexes_agree_with_the_exact_ranking(kind):
    vectors, labels = views(seed=3)
    index = build(vectors, labels, kind)
    queries = queries_near(vectors, n=100, seed=4)
    nearest = index.nearest_classes(queries, TOP, found=index.search(queries, 10))
    classes, _ = exact_classes(index, queries, TOP)
    top1 = np.mean(nearest.labels[:, 0] == classes[:, 0])
    overlap = np.mean([len(set(a) & set(b)) / TOP for a, b in zip(nearest.labels, classes)])
    # IVF-PQ codes of these 32-d vectors are 4 bytes (8 x 4 bits): coarse, hence the lower bound for it
    assert top1 >= 0.98 and overlap >= (0.9 if kind == "ivfpq" else 0.95), (top1, overlap)


def count_searches(index: EmbeddingIndex, monkeypatch) -> list[int]:
    """Record the depth of every FAISS search ``index`` makes from now on."""
    depths, search = [], index._search
    monkeypatch.setattr(index, "_search", lambda queries, k, params: depths.append(k) or search(queries, k, params))
    return depths


def test_one_exact_search_serves_the_neighbors_and_the_classes(monkeypatch):
    vectors, labels = views(n_classes=20, images=6, n_views=8, seed=8)
    index = build(vectors, labels, "flat")
    queries = queries_near(vectors, n=30, seed=9)
    expected = index.search(queries, 10)
    depths = count_searches(index, monkeypatch)
    neighbors, nearest = index.search_with_classes(queries, 10, top=TOP)
    assert depths == [len(index)]  # 960 vectors < EXACT_CLASS_DEPTH: one search of all of them, no filtered round
    np.testing.assert_allclose(neighbors.scores, expected.scores, atol=1e-6)
    np.testing.assert_array_equal(index.labels[neighbors.rows], neighbors.labels)
    classes, scores = exact_classes(index, queries, TOP)
    np.testing.assert_array_equal(nearest.labels, classes)
    np.testing.assert_allclose(nearest.scores, scores, atol=1e-5)


def test_filtered_rounds_only_after_the_deep_search_falls_short(monkeypatch):
    vectors, labels = views(seed=10)  # 3,840 vectors, 96 per class: a query's first 1,024 hold ~11 classes
    index = build(vectors, labels, "flat")
    queries = queries_near(vectors, n=20, seed=11)
    depths = count_searches(index, monkeypatch)
    _, nearest = index.search_with_classes(queries, 10, top=30)
    assert depths[0] == EXACT_CLASS_DEPTH and len(depths) > 1  # 30 classes take filtered rounds of that depth too
    assert set(depths[1:]) == {EXACT_CLASS_DEPTH}
    classes, scores = exact_classes(index, queries, 30)
    np.testing.assert_array_equal(nearest.labels, classes)
    np.testing.assert_allclose(nearest.scores, scores, atol=1e-5)


def test_hnsw_neighbors_of_the_deeper_search_are_those_of_a_plain_search():
    vectors, labels = views(seed=12)
    index = build(vectors, labels, "hnsw")
    queries = queries_near(vectors, n=50, seed=13)
    assert index.class_depth(10) == index.spec.ef_search  # the candidates an HNSW search visits anyway
    neighbors, _ = index.search_with_classes(queries, 10, top=TOP)
    np.testing.assert_allclose(neighbors.scores, index.search(queries, 10).scores, atol=1e-6)


def test_class_depth_by_index_type():
    vectors, labels = views(n_classes=20, seed=14)  # 1,920 vectors
    assert build(vectors, labels, "flat").class_depth(10) == EXACT_CLASS_DEPTH
    assert build(vectors, labels, "ivfpq").class_depth(10) == 10  # every result costs k_factor re-rankings
    assert build(vectors[:50], labels[:50], "flat").class_depth(10) == 50  # never deeper than the index
    assert build(vectors[:5], labels[:5], "flat").class_depth(10) == 10  # nor shallower than k (padded with -1)


def test_removed_images_are_never_a_class_representative():
    vectors, labels = views(n_classes=10, seed=5)
    index = build(vectors, labels, "flat")
    queries = queries_near(vectors, n=20, seed=6)
    best = index.nearest_classes(queries, TOP).ids
    index.remove(np.unique(best[best >= 0]))
    nearest = index.nearest_classes(queries, TOP)
    assert not set(nearest.ids.ravel().tolist()) & set(best.ravel().tolist())
    np.testing.assert_array_equal(nearest.labels, exact_classes(index, queries, TOP)[0])


def test_more_classes_asked_than_indexed_pads_with_minus_one():
    vectors, labels = views(n_classes=3, images=4, n_views=3, seed=7)
    index = build(vectors, labels, "flat")
    nearest = index.nearest_classes(vectors[:2], 5)
    assert (nearest.labels[:, :3] >= 0).all() and sorted(nearest.labels[0, :3].tolist()) == [0, 1, 2]
    assert (nearest.ids[:, 3:] == -1).all() and (nearest.rows[:, 3:] == -1).all()


def test_bundle_characters_are_the_exact_class_ranking(bundle, small_dataset):
    _, queries = small_dataset
    paths = [p for files in queries.values() for p in files]
    embeddings, probabilities = bundle.embed_files(paths)
    results = bundle.query(embeddings, probabilities, k=3, n_characters=3)
    classes, scores = exact_classes(bundle.index, embeddings, 3)
    for result, expected, expected_scores in zip(results, classes, scores):
        assert [hit.label for hit in result.characters] == [bundle.class_names[c] for c in expected]
        np.testing.assert_allclose([hit.score for hit in result.characters], expected_scores, atol=1e-5)
        assert result.unknown == (result.match_score < result.unknown_threshold)
        assert result.match_score == pytest.approx(result.centroid_characters[0].score)
