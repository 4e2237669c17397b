"""Exports of a bundle, each opened with its own reader: TensorBoard's projector config and tensor reader, pyarrow,
pandas and DuckDB, onnxruntime."""

from __future__ import annotations

import csv
import sys

import numpy as np
import pytest
from lookalike.app.cli import main
from lookalike.bundle import export
from lookalike.bundle.export import METADATA_COLUMNS, SPRITE_LIMIT, ExportError, export_bundle, sprite_layout
from lookalike.data import load_image
from lookalike.data.thumbnails import decode_thumbnail
from lookalike.embedder.runtime import MAX_EXPORT_ERROR
from PIL import Image


def test_sprite_layout_fits_the_projector_limit():
    assert sprite_layout(1) == (1, 128)
    assert sprite_layout(1006) == (32, 128)  # the demo bundle: full-size thumbnails in a 4096 px sprite
    columns, cell = sprite_layout(20_000)
    assert columns**2 >= 20_000 and columns * cell <= SPRITE_LIMIT and cell == SPRITE_LIMIT // columns == 57


def test_projector_export_is_read_by_tensorboard(bundle, tmp_path):
    from google.protobuf import text_format
    from tensorboard.plugins.projector import ProjectorConfig, projector_plugin

    out = export_bundle(bundle, tmp_path / "projector", "projector").path
    config = text_format.Parse((out / "projector_config.pbtxt").read_text(), ProjectorConfig())
    (embedding,) = config.embeddings
    vectors = bundle.index.vectors
    assert list(embedding.tensor_shape) == list(vectors.shape)
    config_path = str(out / "projector_config.pbtxt")
    paths = {
        name: projector_plugin._rel_to_abs_asset_path(relative, config_path)  # the plugin's own path check
        for name, relative in (
            ("tensor", embedding.tensor_path),
            ("metadata", embedding.metadata_path),
            ("sprite", embedding.sprite.image_path),
        )
    }
    tensor = projector_plugin._read_tensor_tsv_file(paths["tensor"])
    assert tensor.dtype == np.float32 and np.array_equal(tensor, vectors)

    with open(paths["metadata"], newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    assert tuple(rows[0]) == METADATA_COLUMNS and len(rows) == len(vectors) + 1
    records = bundle.index.records
    assert [r[0] for r in rows[1:]] == [r.label for r in records]
    assert [r[1] for r in rows[1:]] == [r.split for r in records]
    assert [r[2] for r in rows[1:]] == [str(r.path) for r in records]  # incl. the name with spaces and non-ASCII
    assert [int(r[3]) for r in rows[1:]] == bundle.index.ids.tolist()

    columns, cell = sprite_layout(len(vectors))
    assert list(embedding.sprite.single_image_dim) == [cell, cell]
    with Image.open(paths["sprite"]) as sprite:
        assert sprite.size == (columns * cell, columns * cell) and max(sprite.size) <= SPRITE_LIMIT
        pixels = np.asarray(sprite.convert("RGB"), dtype=np.float32)
    last = len(vectors) - 1  # the last image's cell, compared with its thumbnail
    thumbnail = decode_thumbnail(bundle.thumbnails.get(int(bundle.index.ids[last]))).astype(np.float32)
    top, left = (last // columns) * cell, (last % columns) * cell
    assert np.abs(pixels[top : top + cell, left : left + cell] - thumbnail).mean() < 1.0
    assert (pixels[-cell:, -cell:] == 255).all() or columns**2 == len(vectors)  # unused cells stay blank


def test_parquet_export_is_read_by_pyarrow_pandas_and_duckdb(bundle, tmp_path):
    import duckdb
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = export_bundle(bundle, tmp_path / "embeddings.parquet", "parquet").path
    vectors, records, ids = bundle.index.vectors, bundle.index.records, bundle.index.ids
    table = pq.read_table(path)
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), vectors.shape[1])
    assert table.column_names == ["id", "path", "label", "split", "embedding"]
    assert np.array_equal(table["id"].to_numpy(), ids)
    embeddings = table["embedding"].combine_chunks().flatten().to_numpy().reshape(vectors.shape)
    assert embeddings.dtype == np.float32 and np.array_equal(embeddings, vectors)

    frame = pd.read_parquet(path)
    assert frame["path"].tolist() == [str(r.path) for r in records]
    assert frame["label"].tolist() == [r.label for r in records]
    assert frame["split"].tolist() == [r.split for r in records]
    assert np.array_equal(np.stack(frame["embedding"].to_numpy()), vectors)

    counts = dict(duckdb.sql(f"SELECT label, count(*) FROM read_parquet('{path}') GROUP BY label").fetchall())
    assert counts == pd.Series([r.label for r in records]).value_counts().to_dict()
    row = len(records) // 2
    ((stored,),) = duckdb.sql(f"SELECT embedding FROM read_parquet('{path}') WHERE id = {int(ids[row])}").fetchall()
    assert np.array_equal(np.asarray(stored, dtype=np.float32), vectors[row])


def test_onnx_export_matches_keras_on_real_images(bundle, small_dataset, tmp_path):
    import onnxruntime as ort

    result = export_bundle(bundle, tmp_path / "embedder.onnx", "onnx")
    path = result.path
    assert result.max_difference <= MAX_EXPORT_ERROR
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    size = bundle.embedder.config.image_size
    (image,) = session.get_inputs()
    assert (image.name, image.type, image.shape) == ("image", "tensor(float)", ["batch", size, size, 3])
    outputs = {o.name: o.shape for o in session.get_outputs()}
    assert outputs == {
        "embedding": ["batch", bundle.embedder.embedding_dim],
        "probabilities": ["batch", len(bundle.embedder.class_names)],
    }
    _, queries = small_dataset  # held-out images the export was not checked on
    images = np.stack([load_image(p, size) for ps in queries.values() for p in ps]).astype(np.float32)
    embedding, probabilities = session.run(["embedding", "probabilities"], {"image": images})
    keras_embedder = export._keras_embedder(bundle)
    reference = keras_embedder.head_outputs(keras_embedder.encode(images))
    assert np.abs(embedding - reference[0]).max() <= MAX_EXPORT_ERROR
    assert np.array_equal(probabilities.argmax(axis=1), reference[1].argmax(axis=1))
    assert np.allclose(np.linalg.norm(embedding, axis=1), 1.0, atol=1e-5)


def test_export_refuses_to_overwrite_and_unknown_formats(bundle, bundle_path, tmp_path, capsys):
    target = tmp_path / "embeddings.parquet"
    assert main(["export", str(bundle_path), "--format", "parquet", "--out", str(target)]) == 0
    assert f"written to {target}" in capsys.readouterr().out
    first = target.read_bytes()
    assert main(["export", str(bundle_path), "--format", "parquet", "--out", str(target)]) == 1
    assert "--force" in capsys.readouterr().err and target.read_bytes() == first
    assert main(["export", str(bundle_path), "--format", "parquet", "--out", str(target), "--force"]) == 0

    kept = tmp_path / "projector"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--force"):
        export_bundle(bundle, kept, "projector")
    assert [p.name for p in kept.iterdir()] == ["notes.txt"]
    with pytest.raises(FileExistsError, match="is a folder"):
        export_bundle(bundle, kept, "parquet", force=True)
    with pytest.raises(ExportError, match="unknown export format 'csv'; choose one of projector, parquet, onnx"):
        export_bundle(bundle, tmp_path / "x.csv", "csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["embeddings.parquet", "projector"]  # no staging left


def test_a_failed_export_leaves_nothing(bundle, tmp_path, monkeypatch):
    def fail(bundle, path):
        path.write_bytes(b"half a table")
        raise OSError("disk full")

    monkeypatch.setattr(export, "export_parquet", fail)
    with pytest.raises(OSError, match="disk full"):
        export_bundle(bundle, tmp_path / "out" / "embeddings.parquet", "parquet")
    assert list((tmp_path / "out").iterdir()) == []


def test_a_missing_onnx_converter_names_the_install_command(bundle, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # import tf2onnx now raises ImportError
    with pytest.raises(
        ExportError, match=r'tf2onnx package, which is not installed: pip install "lookalike\[export\]"'
    ):
        export_bundle(bundle, tmp_path / "embedder.onnx", "onnx")
    assert list(tmp_path.iterdir()) == []
