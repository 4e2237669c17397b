"""Train through the CLI on 4 real characters, reload the bundle, and look up images it has never seen."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lookalike.bundle import FORMAT_VERSION, Bundle, BundleError
from lookalike.embedder import load_embedder
from lookalike.index import EmbeddingIndex
from conftest import CLASSES, CORRUPT_NAME


def test_bundle_manifest_describes_the_run(bundle, small_dataset):
    manifest = bundle.manifest
    root, _ = small_dataset
    assert manifest.format_version == FORMAT_VERSION
    assert manifest.class_names == sorted(CLASSES)
    assert manifest.embedding_dim == bundle.index.dim == bundle.embedder.embedding_dim
    assert manifest.training["phase_epochs"] == {"head": 2, "fine_tune": 1}
    assert 0.0 <= manifest.val_accuracy <= 1.0
    assert manifest.versions["tensorflow"] != "not installed"
    n_images = sum(1 for p in root.rglob("*.png")) - 1  # all but the corrupt file
    assert len(bundle.index) == manifest.dataset["images"] == n_images


def test_corrupt_training_file_is_reported_and_skipped(bundle):
    skipped = [failure.path.name for failure in bundle.failures]
    assert skipped == [CORRUPT_NAME]
    assert all(record.path.name != CORRUPT_NAME for record in bundle.index.records)


def test_indexed_vectors_equal_a_fresh_embedding_of_the_files(bundle):
    """The cached-feature training path and the full model (exported, in fp32) give the same embeddings."""
    ids = np.arange(0, len(bundle.index), 9)
    embedded = load_embedder(bundle.path, precision="fp32").embed_files([bundle.index.records[i].path for i in ids])
    stored = bundle.index.faiss_index.reconstruct_batch(ids)
    assert embedded.embeddings.dtype == np.float32 and embedded.embeddings.shape == (len(ids), bundle.index.dim)
    np.testing.assert_allclose(np.linalg.norm(embedded.embeddings, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(embedded.embeddings, stored, atol=1e-5)


def test_unseen_images_find_their_own_character(bundle, small_dataset):
    _, queries = small_dataset
    paths = [path for name in CLASSES for path in queries[name]]
    truth = [name for name in CLASSES for _ in queries[name]]
    results = bundle.query_files(paths, k=5, n_characters=4)
    for label, result in zip(truth, results):
        assert label in [hit.label for hit in result.characters[:2]]
        assert sum(hit.label == label for hit in result.neighbors) >= 3
        assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    assert np.mean([r.characters[0].label == t for r, t in zip(results, truth)]) >= 0.75
    assert np.mean([r.knn_predicted == t for r, t in zip(results, truth)]) >= 0.75
    assert not {str(p) for p in paths} & {str(r.path) for r in bundle.index.records}  # truly unseen


def test_reloaded_bundle_answers_identically(bundle, bundle_path, small_dataset):
    _, queries = small_dataset
    path = queries[CLASSES[0]][0]
    again = Bundle.load(bundle_path)
    first, second = bundle.query_files([path])[0], again.query_files([path])[0]
    assert [h.id for h in first.neighbors] == [h.id for h in second.neighbors]
    assert first.probabilities == pytest.approx(second.probabilities, abs=1e-6)


def test_newer_format_version_is_refused(bundle_path, tmp_path):
    import shutil

    copy = tmp_path / "future.bundle"
    shutil.copytree(bundle_path, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="newer than this lookalike reads"):
        Bundle.load(copy)


def test_index_and_model_of_different_sizes_are_refused(bundle):
    other = EmbeddingIndex.build(np.eye(4, 8, dtype=np.float32), bundle.index.records[:4], bundle.class_names)
    with pytest.raises(BundleError, match="256-d embeddings but the index holds 8-d"):
        Bundle(bundle.embedder, other, bundle.manifest)


def test_save_replaces_a_bundle_atomically_and_never_a_foreign_folder(bundle, tmp_path):
    target = tmp_path / "out.bundle"
    bundle.save(target)
    (target / "stale-file").write_text("from the previous bundle")
    bundle.save(target)
    assert not (target / "stale-file").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bundle"]  # no staging or retired folders left
    foreign = tmp_path / "documents"
    foreign.mkdir()
    (foreign / "thesis.txt").write_text("precious")
    with pytest.raises(BundleError, match="not a lookalike bundle"):
        bundle.save(foreign)
    assert (foreign / "thesis.txt").read_text() == "precious"
