"""IVF-PQ with exact re-ranking from the stored (memory-mapped) embeddings, checked against exact search, and
the search settings every index type shares."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest
from faiss.contrib.evaluation import knn_intersection_measure
from lookalike.index import EmbeddingIndex, IndexSpec
from lookalike.index.search import VECTORS_FILE
from test_search_classes import build, queries_near, views


@pytest.fixture(scope="module")
def data():
    vectors, labels = views(n_classes=30, images=10, n_views=10, d=64, seed=10)
    return vectors, labels, queries_near(vectors, n=200, seed=11)


def exact(vectors, queries, k):
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    return index.search(queries, k)


def test_ivfpq_reranked_results_are_exact_scores_with_high_recall(data):
    vectors, labels, queries = data
    index = build(vectors, labels, "ivfpq")
    assert index.spec.factory_string() == f"IVF{index.spec.nlist},PQ16x4fs"  # 64-d: one 4-bit code per 4 dimensions
    found = index.search(queries, 10)
    truth = exact(vectors, queries, 10)[1]
    assert knn_intersection_measure(found.ids, truth) >= 0.9
    # scores are the stored embeddings' inner products, best first
    np.testing.assert_allclose(found.scores, np.einsum("qkd,qd->qk", vectors[found.ids], queries), atol=1e-5)
    assert np.all(np.diff(found.scores, axis=1) <= 0)
    # searching every cell with every code as a candidate is exact search
    deep = EmbeddingIndex.build(vectors, index.records, index.class_names, spec=IndexSpec(type="ivfpq", k_factor=300))
    everything = deep.search(queries, 10, nprobe=deep.spec.nlist).ids
    np.testing.assert_array_equal(np.sort(everything, axis=1), np.sort(truth, axis=1))  # up to the order of ties


@pytest.mark.parametrize("kind", ["hnsw", "ivf", "ivfpq"])
def test_approximate_indexes_reach_high_recall_on_views_of_images(kind, data):
    vectors, labels, queries = data
    index = build(vectors, labels, kind)
    recall = knn_intersection_measure(index.search(queries, 10).ids, exact(vectors, queries, 10)[1])
    assert recall >= 0.9, recall


def test_ivfpq_round_trip_reranks_from_the_memory_mapped_embeddings(data, tmp_path):
    vectors, labels, queries = data
    index = build(vectors, labels, "ivfpq")
    before = index.search(queries, 10)
    index.save(tmp_path)
    loaded = EmbeddingIndex.load(tmp_path)
    assert isinstance(loaded.vectors.base, np.memmap) and Path(loaded.vectors.base.filename) == tmp_path / VECTORS_FILE
    assert loaded.spec == index.spec and loaded.spec.type == "ivfpq"
    after = loaded.search(queries, 10)
    np.testing.assert_array_equal(after.ids, before.ids)
    np.testing.assert_array_equal(after.scores, before.scores)
    # updates after loading: the new images are found, the removed ones never
    new = loaded.add(vectors[:5], index.records[:5])
    loaded.remove(new[:2])
    ids = loaded.search(vectors[:5], 3).ids
    assert not set(ids.ravel().tolist()) & set(new[:2].tolist())
    assert set(new[2:].tolist()) <= set(ids.ravel().tolist())


def test_truncated_embeddings_file_is_named(data, tmp_path):
    vectors, labels, _ = data
    build(vectors, labels, "ivfpq").save(tmp_path)
    path = tmp_path / VECTORS_FILE
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(ValueError, match="cannot read embeddings .*vectors.npy"):
        EmbeddingIndex.load(tmp_path)


def test_fewer_candidates_than_k_pads_like_faiss(data):
    vectors, labels, _ = data
    small = EmbeddingIndex.build(
        vectors[:1000], build(vectors[:1000], labels[:1000], "flat").records, [f"class{c:02d}" for c in range(30)],
        spec=IndexSpec(type="ivfpq", nlist=4, k_factor=1),
    )  # fmt: skip
    found = small.search(vectors[:2], 1200)
    assert (found.ids[:, :1000] >= 0).all() and (found.ids[:, 1000:] == -1).all()
    assert (found.rows[:, 1000:] == -1).all() and (found.labels[:, 1000:] == -1).all()


def test_bad_ivfpq_settings_are_refused():
    with pytest.raises(ValueError, match="pq_m must divide the embedding size 64; got 7"):
        IndexSpec(type="ivfpq", pq_m=7).resolve(10_000, 64)
    with pytest.raises(ValueError, match="k_factor must be at least 1; got 0"):
        IndexSpec(type="ivfpq", k_factor=0)
    vectors, labels = views(n_classes=5, images=5, n_views=4, d=16)
    with pytest.raises(ValueError, match="needs at least 1000 vectors to train on; got 100"):
        build(vectors, labels, "ivfpq")


def test_one_query_searches_leave_faiss_threads_as_they_were(data):
    vectors, labels, queries = data
    index = build(vectors, labels, "hnsw")
    threads = faiss.omp_get_max_threads()
    index.search(queries[:1], 10)
    index.nearest_classes(queries[:1], 5)
    assert faiss.omp_get_max_threads() == threads
