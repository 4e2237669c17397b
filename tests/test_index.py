"""The FAISS index against numpy brute force, its persistence, and the neighbor votes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lookalike.data import ImageRecord
from lookalike.index import EmbeddingIndex, knn_vote, nearest_classes

CLASSES = ("a", "b", "c")


def _normalised(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def indexed():
    rng = np.random.default_rng(0)
    embeddings = _normalised(rng, 200, 16)
    records = [
        ImageRecord(Path(f"/images/{i:03d}.png"), CLASSES[i % 3], "train" if i % 5 else "val") for i in range(200)
    ]
    return embeddings, records, EmbeddingIndex.build(embeddings, records, CLASSES)


def test_search_equals_numpy_brute_force(indexed):
    embeddings, _, index = indexed
    queries = _normalised(np.random.default_rng(1), 25, 16)
    result = index.search(queries, 10)
    similarities = queries @ embeddings.T
    expected_ids = np.argsort(-similarities, axis=1, kind="stable")[:, :10]
    assert result.ids.shape == result.scores.shape == (25, 10)
    assert np.array_equal(result.ids, expected_ids)
    np.testing.assert_allclose(result.scores, np.take_along_axis(similarities, expected_ids, axis=1), atol=1e-5)


def test_ids_map_to_metadata(indexed):
    embeddings, records, index = indexed
    result = index.search(embeddings[[7, 42]], 3)
    for query, query_id in enumerate([7, 42]):
        hits = index.hits(result, query)
        assert hits[0].id == query_id and hits[0].score == pytest.approx(1.0, abs=1e-5)
        for hit in hits:
            assert (hit.path, hit.label, hit.split) == (
                records[hit.row].path,
                records[hit.row].label,
                records[hit.row].split,
            )
        assert result.labels[query].tolist() == [CLASSES.index(h.label) for h in hits]
    assert len(index.hits(result, 1, k=2)) == 2


def test_more_neighbors_than_images_pads_with_minus_one():
    rng = np.random.default_rng(2)
    records = [ImageRecord(Path(f"{i}.png"), CLASSES[i], "train") for i in range(3)]
    index = EmbeddingIndex.build(_normalised(rng, 3, 8), records, CLASSES)
    result = index.search(_normalised(rng, 1, 8), 5)
    assert result.ids[0, 3:].tolist() == [-1, -1] and result.labels[0, 3:].tolist() == [-1, -1]
    assert result.rows[0, 3:].tolist() == [-1, -1]
    assert len(index.hits(result)) == 3


def test_save_load_round_trip(indexed, tmp_path):
    _, records, index = indexed
    index.save(tmp_path)
    loaded = EmbeddingIndex.load(tmp_path)
    queries = _normalised(np.random.default_rng(3), 5, 16)
    assert loaded.records == records and loaded.class_names == CLASSES
    before, after = index.search(queries, 7), loaded.search(queries, 7)
    assert np.array_equal(before.ids, after.ids) and np.array_equal(before.scores, after.scores)
    np.testing.assert_array_equal(loaded.vectors, index.vectors)


def test_truncated_index_file_error_names_the_file(indexed, tmp_path):
    _, _, index = indexed
    index.save(tmp_path)
    path = tmp_path / "index.faiss"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="index.faiss"):
        EmbeddingIndex.load(tmp_path)


def test_bad_queries_are_refused(indexed):
    _, _, index = indexed
    with pytest.raises(ValueError, match=r"\(n_queries, 16\); got \(2, 8\)"):
        index.search(np.zeros((2, 8), np.float32), 3)
    with pytest.raises(ValueError, match="k must be at least 1"):
        index.search(np.zeros((1, 16), np.float32), 0)


def test_knn_vote_weights_by_similarity_and_ignores_padding():
    labels = np.array([[0, 1, 1, -1], [2, 2, 2, 2]])
    scores = np.array([[0.9, 0.3, 0.3, 0.0], [0.5, 0.4, 0.3, 0.2]], dtype=np.float32)
    weighted = knn_vote(labels, scores, 3)
    np.testing.assert_allclose(weighted[0], [0.6, 0.4, 0.0], atol=1e-6)
    np.testing.assert_allclose(weighted[1], [0.0, 0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(knn_vote(labels, scores, 3, weighted=False)[0], [1 / 3, 2 / 3, 0.0], atol=1e-6)


def test_nearest_classes_rank_by_best_image():
    labels = np.array([[2, 2, 0, 1, 0, -1]])
    ((positions, classes),) = nearest_classes(labels, top=2)
    assert classes.tolist() == [2, 0] and positions.tolist() == [0, 2]
