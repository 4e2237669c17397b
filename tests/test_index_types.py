"""Index types (flat, HNSW, IVF) and updates: stable ids across adds and removes, recall@10 against exact search."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lookalike.data import ImageRecord
from lookalike.index import EmbeddingIndex, IndexSpec
from lookalike.index.search import EXACT_SEARCH_LIMIT

CLASSES = ("a", "b")
TYPES = ("flat", "hnsw", "ivf")


def _clustered(n, d=32, seed=0):
    """Unit vectors around 20 cluster centres, like embeddings of 20 classes."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, d))
    x = centres[rng.integers(0, 20, n)] + 0.5 * rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _records(n, start=0, label=None):
    return [ImageRecord(Path(f"/img/{i}.png"), label or CLASSES[i % 2], "train") for i in range(start, start + n)]


@pytest.mark.parametrize("kind", TYPES)
def test_ids_stay_stable_across_adds_removes_and_save(kind, tmp_path):
    vectors = _clustered(1200)
    index = EmbeddingIndex.build(vectors[:1000], _records(1000), CLASSES, spec=IndexSpec(type=kind))
    assert index.spec.type == kind
    index.remove([3, 500, 999])
    new_ids = index.add(vectors[1000:], _records(200, start=1000))
    assert new_ids.tolist() == list(range(1000, 1200))  # never reuses 999
    index.remove([1000])
    index.save(tmp_path)
    loaded = EmbeddingIndex.load(tmp_path)
    assert len(loaded) == 1196 and loaded.next_id == 1200 and loaded.spec == index.spec
    for image_id in (0, 4, 501, 1001, 1199):
        row = loaded.rows_of([image_id])[0]
        assert loaded.records[row].path == Path(f"/img/{image_id}.png")
        np.testing.assert_array_equal(loaded.vectors[row], vectors[image_id])
        found = loaded.search(vectors[image_id][None], 1)
        assert found.ids[0, 0] == image_id and found.rows[0, 0] == row
    for removed in (3, 500, 999, 1000):
        assert removed not in set(loaded.search(vectors[removed][None], 20).ids[0].tolist())
    assert loaded.add(vectors[:1], _records(1)).tolist() == [1200]


def test_removing_an_unknown_id_changes_nothing():
    index = EmbeddingIndex.build(_clustered(50), _records(50), CLASSES, spec=IndexSpec(type="flat"))
    with pytest.raises(KeyError, match="no image with id 77"):
        index.remove([1, 77])
    assert len(index) == 50 and index.faiss_index.ntotal == 50


def test_added_labels_become_new_classes():
    index = EmbeddingIndex.build(_clustered(40), _records(40), CLASSES)
    index.add(_clustered(5, seed=1), _records(5, start=40, label="newcomer"))
    assert index.class_names == ("a", "b", "newcomer")
    assert index.labels[-5:].tolist() == [2] * 5


@pytest.mark.parametrize("kind", ("hnsw", "ivf"))
def test_approximate_indexes_reach_high_recall(kind):
    index = EmbeddingIndex.build(_clustered(5000), _records(5000), CLASSES, spec=IndexSpec(type=kind))
    recall, index_ms, exact_ms = index.recall_at_k(10, queries=200)
    assert 0.9 <= recall <= 1.0
    assert index_ms > 0 and exact_ms > 0


def test_exact_index_has_recall_one_and_auto_picks_by_size():
    index = EmbeddingIndex.build(_clustered(300), _records(300), CLASSES)
    assert index.spec.type == "flat"
    assert index.recall_at_k(10, queries=50)[0] == pytest.approx(1.0)
    assert IndexSpec(type="ivf").resolve(10_000).nlist == 256  # 39+ vectors per cell, 4 sqrt(n) cells at most


def test_auto_is_exact_below_25000_vectors_and_hnsw_from_there():
    # chosen from benchmarks/ann: exact search and ranking took 3.3 ms at 25,000 vectors, 11.8 ms at 100,000
    assert EXACT_SEARCH_LIMIT == 25_000
    assert IndexSpec().resolve(EXACT_SEARCH_LIMIT - 1).type == "flat"
    for n in (EXACT_SEARCH_LIMIT, 100_000, 1_000_000):  # the sizes of the latency targets: HNSW
        spec = IndexSpec().resolve(n)
        assert (spec.type, spec.hnsw_m, spec.ef_construction, spec.ef_search) == ("hnsw", 32, 80, 256)
    assert IndexSpec(type="flat").resolve(1_000_000).type == "flat"  # a type asked for is kept
    assert IndexSpec(ef_search=64).resolve(100_000).ef_search == 64  # and so are parameters asked for


def test_auto_index_from_the_limit_on_is_hnsw_with_high_recall():
    n = EXACT_SEARCH_LIMIT
    index = EmbeddingIndex.build(_clustered(n, d=16), _records(n), CLASSES)
    assert index.spec.type == "hnsw" and index.spec.ef_search == 256
    assert index.recall_at_k(10, queries=100)[0] >= 0.95


def test_reindex_keeps_ids_and_metadata():
    vectors = _clustered(400)
    index = EmbeddingIndex.build(vectors, _records(400), CLASSES)
    index.remove([0, 1])
    ids, records = index.ids.tolist(), list(index.records)
    index.reindex(IndexSpec(type="hnsw"))
    assert index.spec.type == "hnsw" and index.ids.tolist() == ids and index.records == records
    assert index.search(vectors[10][None], 1).ids[0, 0] == 10


def test_search_parameters_apply_to_one_call_only():
    vectors = _clustered(2000)
    index = EmbeddingIndex.build(vectors, _records(2000), CLASSES, spec=IndexSpec(type="ivf", nlist=40, nprobe=1))
    exact = EmbeddingIndex.build(vectors, _records(2000), CLASSES, spec=IndexSpec(type="flat"))
    queries = vectors[::20] + 0.05
    truth = exact.search(queries, 10).ids
    probed_all = index.search(queries, 10, nprobe=40).ids
    np.testing.assert_array_equal(np.sort(probed_all, axis=1), np.sort(truth, axis=1))  # every cell: exact
    assert index.spec.nprobe == 1 and index.faiss_index.nprobe == 1  # the index itself is unchanged


def test_unknown_index_type_is_refused():
    with pytest.raises(ValueError, match="unknown index type 'annoy'"):
        IndexSpec(type="annoy")
