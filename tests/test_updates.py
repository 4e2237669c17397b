"""Growing and shrinking a bundle without retraining (add, remove, reindex), and streaming, resumable embedding."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import CLASSES

from lookalike.app.cli import EXIT_SKIPPED, main
from lookalike.data import DEFAULT_DATASET, ImageRecord
from lookalike.embedder import load_embedder
from lookalike.embedder.stream import EmbeddingStore, embed_to_store
from lookalike.bundle import Bundle

#: A character the test bundle was not trained on.
NEWCOMER = next(p.name for p in sorted(DEFAULT_DATASET.iterdir()) if p.is_dir() and p.name not in CLASSES)


@pytest.fixture
def bundle_copy(bundle_path, tmp_path) -> Path:
    copy = tmp_path / "copy.bundle"
    shutil.copytree(bundle_path, copy)
    return copy


@pytest.fixture
def newcomer_folder(tmp_path) -> Path:
    """Four images of a new character in NEWCOMER/, plus a corrupt file."""
    folder = tmp_path / "new" / NEWCOMER
    folder.mkdir(parents=True)
    for path in sorted((DEFAULT_DATASET / NEWCOMER).glob("*.png"))[:4]:
        shutil.copy(path, folder / path.name)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    return folder


def test_add_then_remove_keeps_ids_stable(bundle_copy, newcomer_folder, capsys):
    before = Bundle.load(bundle_copy)
    first_new_id = before.index.next_id
    assert main(["add", str(bundle_copy), str(newcomer_folder.parent)]) == EXIT_SKIPPED  # the broken file
    out, err = capsys.readouterr()
    assert f"added 4 images (ids {first_new_id}-{first_new_id + 3})" in out and NEWCOMER in out
    assert "broken.png" in err
    assert not list(bundle_copy.parent.glob(".*adding*"))  # the work folder is gone

    grown = Bundle.load(bundle_copy)  # checksums verified
    assert len(grown.index) == len(before.index) + 4 and grown.class_names[-1] == NEWCOMER
    assert grown.manifest.index["size"] == len(grown.index)
    query = sorted(newcomer_folder.glob("*.png"))[1]
    result = grown.query_files([query], k=3)[0]
    assert result.neighbors[0].path == query and result.neighbors[0].score == pytest.approx(1.0, abs=1e-4)
    assert result.knn_predicted == NEWCOMER and result.centroid_predicted == NEWCOMER
    assert result.predicted in CLASSES  # the softmax head knows only the trained classes
    old = {int(i): r.path for i, r in zip(before.index.ids, before.index.records)}
    assert {int(i): r.path for i, r in zip(grown.index.ids, grown.index.records) if int(i) in old} == old

    # Adding the same folder again adds nothing.
    assert main(["add", str(bundle_copy), str(newcomer_folder)]) == EXIT_SKIPPED
    assert "4 of 5 files are already in the bundle" in capsys.readouterr().out
    assert len(Bundle.load(bundle_copy).index) == len(grown.index)

    victim = int(before.index.ids[0])
    assert main(["remove", str(bundle_copy), str(victim), str(newcomer_folder)]) == 0
    assert "removed 5 images" in capsys.readouterr().out
    shrunk = Bundle.load(bundle_copy)
    assert len(shrunk.index) == len(before.index) - 1
    assert victim not in shrunk.index.ids and shrunk.index.next_id == first_new_id + 4
    kept = {int(i): r.path for i, r in zip(shrunk.index.ids, shrunk.index.records)}
    assert all(old[i] == path for i, path in kept.items())


def test_a_failed_remove_changes_nothing(bundle_copy, tmp_path, capsys):
    metadata = (bundle_copy / "metadata.json").read_bytes()
    assert main(["remove", str(bundle_copy), "0", "999999"]) == 1
    assert "no image with id 999999" in capsys.readouterr().err
    assert main(["remove", str(bundle_copy), str(tmp_path / "elsewhere")]) == 1
    assert "nothing removed" in capsys.readouterr().err
    assert (bundle_copy / "metadata.json").read_bytes() == metadata


def test_reindex_as_hnsw_reports_recall(bundle_copy, small_dataset, capsys):
    assert main(["reindex", str(bundle_copy), "--index", "hnsw", "--ef-search", "64"]) == 0
    out = capsys.readouterr().out
    recall = float(re.search(r"recall@10 ([0-9.]+)", out).group(1))
    assert out.startswith("hnsw index of") and 0.9 <= recall <= 1.0
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    assert manifest["index"]["type"] == "hnsw" and manifest["index"]["ef_search"] == 64
    reloaded = Bundle.load(bundle_copy)
    _, queries = small_dataset
    assert reloaded.query_files([queries["cook"][0]])[0].knn_predicted == "cook"
    assert main(["recall", str(bundle_copy), "-k", "5", "--queries", "20"]) == 0
    assert "recall@5" in capsys.readouterr().out


def test_an_interrupted_embedding_run_resumes_where_it_stopped(bundle, tmp_path, monkeypatch):
    records = [ImageRecord(r.path, r.label, "added") for r in bundle.index.records[:40]]
    embedder = load_embedder(bundle.path, precision="fp32")  # the bundle's training embedded in fp32
    store = EmbeddingStore(tmp_path / "store")
    real_write, writes = EmbeddingStore.write, []

    def write_then_die(self, part):
        if len(writes) == 2:
            raise KeyboardInterrupt  # the run is killed after two parts
        writes.append(real_write(self, part))

    monkeypatch.setattr(EmbeddingStore, "write", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        embed_to_store(embedder, records, store, chunk_size=10)
    monkeypatch.setattr(EmbeddingStore, "write", real_write)
    assert len(store.part_files()) == 2

    summary = embed_to_store(embedder, records, store, chunk_size=10)
    assert summary.resumed >= 20 and summary.resumed + summary.embedded == 40
    stored = store.read()
    assert sorted(str(r.path) for r in stored.records) == sorted(str(r.path) for r in records)  # each once
    rows = bundle.index.rows_of(np.arange(40))  # the first 40 ids are rows 0..39 of a fresh bundle
    by_path = {str(r.path): e for r, e in zip(stored.records, stored.embeddings)}
    expected = bundle.index.vectors[rows]
    np.testing.assert_allclose(np.stack([by_path[str(r.path)] for r in records]), expected, atol=1e-4)


def test_embed_on_ray_matches_the_local_engine(bundle_path, small_dataset, tmp_path, capsys):
    root, _ = small_dataset
    folder = root / CLASSES[1]
    assert main(["embed", str(bundle_path), str(folder), "--out", str(tmp_path / "local")]) == 0
    code = main(
        ["embed", str(bundle_path), str(folder), "--out", str(tmp_path / "ray"), "--engine", "ray", "--actors", "2"]
    )
    assert code == 0
    assert "embedded" in capsys.readouterr().out
    local, on_ray = EmbeddingStore(tmp_path / "local").read(), EmbeddingStore(tmp_path / "ray").read()
    assert [r.path for r in on_ray.records] == [r.path for r in local.records]
    assert len(local.records) == len(list(folder.glob("*.png")))
    np.testing.assert_allclose(on_ray.embeddings, local.embeddings, atol=1e-5)
    # A second run finds everything done.
    assert main(["embed", str(bundle_path), str(folder), "--out", str(tmp_path / "ray"), "--engine", "ray"]) == 0
    assert f"{len(local.records)} were already done" in capsys.readouterr().out
