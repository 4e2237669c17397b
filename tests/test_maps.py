"""Embedding maps: computed once and stored, recomputed when embeddings change, queries placed on them."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.app.cli import main
from lookalike.bundle import Bundle
from lookalike.bundle import bundle as bundle_module
from lookalike.index import MapConfig
from lookalike.index.projection import place_queries


def test_place_queries_is_the_similarity_weighted_mean():
    coordinates = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 8.0]], dtype=np.float32)
    ids = np.array([[0, 1, -1], [2, 2, 2]])
    scores = np.array([[0.75, 0.25, 0.9], [-0.1, -0.2, -0.3]], dtype=np.float32)
    placed = place_queries(coordinates, ids, scores)
    np.testing.assert_allclose(placed, [[1.0, 0.0], [0.0, 8.0]], atol=1e-6)


def test_map_is_stored_reused_and_recomputed_when_embeddings_change(bundle_path, tmp_path, monkeypatch):
    import shutil

    copy = tmp_path / "maps.bundle"
    shutil.copytree(bundle_path, copy)
    config = MapConfig(method="umap", dims=2)
    first = Bundle.load(copy).embedding_map(config)
    assert first.coordinates.shape == (len(Bundle.load(copy).index), 2)
    assert (copy / "maps" / "umap_2d.npy").is_file()

    def refuse(*args, **kwargs):
        raise AssertionError("the stored map should have been reused")

    monkeypatch.setattr(bundle_module, "compute_map", refuse)
    again = Bundle.load(copy).embedding_map(config)
    np.testing.assert_array_equal(first.coordinates, again.coordinates)

    changed = Bundle.load(copy)  # one image fewer: the stored map is stale
    changed.index.remove([int(changed.index.ids[0])])
    with pytest.raises(AssertionError, match="should have been reused"):
        changed.embedding_map(config)


def test_queries_land_near_their_own_class(bundle, small_dataset):
    _, queries = small_dataset
    embedding_map = bundle.embedding_map(MapConfig(method="tsne", dims=2))
    labels, names = bundle.index.labels, bundle.class_names
    centres = np.stack([embedding_map.coordinates[labels == c].mean(axis=0) for c in range(len(names))])
    hits = 0
    for name, paths in queries.items():
        embeddings = bundle.embedder.embed_files(paths).embeddings
        positions, neighbor_ids = bundle.place_on_map(embeddings, embedding_map)
        assert neighbor_ids.shape == (len(paths), 10)
        nearest = np.argmin(np.linalg.norm(positions[:, None] - centres[None], axis=2), axis=1)
        hits += int(np.sum(nearest == names.index(name)))
    assert hits >= 0.75 * sum(len(p) for p in queries.values())


@pytest.mark.parametrize("suffix, dims", [(".html", 3), (".png", 2)])
def test_map_command_writes_html_and_png(bundle_path, small_dataset, tmp_path, suffix, dims):
    _, queries = small_dataset
    out = tmp_path / f"map{suffix}"
    assert (
        main(["map", str(bundle_path), "--out", str(out), "--dims", str(dims), "--query", str(queries["123"][0])]) == 0
    )
    assert out.stat().st_size > 10_000
    if suffix == ".html":
        text = out.read_text()
        assert "plotly" in text and "query" in text and "class centroids" in text
