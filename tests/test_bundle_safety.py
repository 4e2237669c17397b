"""Bundles survive a killed writer, report damage by file name, and never run code from their files."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from lookalike.bundle import Bundle, BundleError

WRITER = """
import sys
from lookalike.bundle import Bundle
bundle = Bundle.load(sys.argv[1])
print("ready", flush=True)
while True:
    bundle.save(sys.argv[2])
"""


def _answers(bundle: Bundle, queries) -> list[list[int]]:
    return [[hit.id for hit in result.neighbors] for result in bundle.query_files(queries, k=5)]


def test_killed_writer_leaves_the_previous_bundle_loadable(bundle, bundle_path, small_dataset, tmp_path):
    _, queries = small_dataset
    probe = [queries["cook"][0], queries["123"][0]]
    target = tmp_path / "live.bundle"
    bundle.save(target)
    expected = _answers(Bundle.load(target), probe)
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(bundle_path), str(target)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(".live.bundle.writing-*")):  # wait until a write is under way
            assert time.monotonic() < deadline, "the writer never started writing"
            time.sleep(0.002)
    finally:
        writer.kill()
        writer.wait()
    reloaded = Bundle.load(target)
    assert _answers(reloaded, probe) == expected


def test_interrupted_replace_is_finished_on_load(bundle, tmp_path):
    target = tmp_path / "swap.bundle"
    bundle.save(target)
    retired = tmp_path / ".swap.bundle.old-x1y2"
    retired.mkdir()
    target.rename(retired / "swap.bundle")  # killed after the first rename, before the second
    assert len(Bundle.load(target).index) == len(bundle.index)
    assert target.is_dir() and not retired.exists()


@pytest.mark.parametrize("name", ["index.faiss", "metadata.json", "model.keras", "embedder.json"])
def test_damaged_or_missing_file_is_named(bundle_path, tmp_path, name):
    copy = tmp_path / "damaged.bundle"
    shutil.copytree(bundle_path, copy)
    data = bytearray((copy / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / name).write_bytes(bytes(data))
    with pytest.raises(BundleError, match=rf"damaged bundle file .*{name}"):
        Bundle.load(copy)
    (copy / name).unlink()
    with pytest.raises(BundleError, match=rf"bundle file missing: .*{name}"):
        Bundle.load(copy)


def test_model_file_with_code_is_refused_even_with_a_forged_checksum(bundle_path, tmp_path):
    import keras

    copy = tmp_path / "tampered.bundle"
    shutil.copytree(bundle_path, copy)
    image = keras.Input((8,))
    keras.Model(image, keras.layers.Lambda(lambda x: x * 2.0)(image)).save(copy / "model.keras")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"]["model.keras"] = hashlib.sha256((copy / "model.keras").read_bytes()).hexdigest()
    (copy / "manifest.json").write_text(json.dumps(manifest))
    bundle = Bundle.load(copy)  # searching runs on the LiteRT runtime: the Keras model is read only when needed
    with pytest.raises(BundleError, match="(?i)lambda|unsafe|safe_mode"):
        bundle.keras_embedder


def test_no_pickle_in_a_bundle(bundle_path):
    """Every file of a bundle is JSON, CSV, a NumPy array without objects, a FAISS index or a Keras zip."""
    for path in bundle_path.rglob("*"):
        if path.is_file():
            head = path.read_bytes()[:2]
            assert head not in (b"\x80\x03", b"\x80\x04", b"\x80\x05"), f"{path} looks like a pickle"
    for array in bundle_path.rglob("*.npy"):
        np.load(array, allow_pickle=False)
