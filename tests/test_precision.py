"""Reduced precision judged by retrieval agreement: each runtime is measured against fp32 on the bundle's
held-out images when it is exported, the fastest that passes is used, and the measurement is in the manifest."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.app.cli import main
from lookalike.bundle import Bundle, BundleError
from lookalike.bundle.precision import MIN_SPEED_UP, RuntimeTrial, choose, describe
from lookalike.embedder import load_embedder


def _trial(precision, speed, passes):
    return RuntimeTrial(precision, speed, 1.0, 1.0, {}, 0.0, passes)


def test_auto_chooses_the_fastest_runtime_that_passes():
    trials = {"fp32": _trial("fp32", 100, True), "bf16": _trial("bf16", 150, True), "int8": _trial("int8", 300, False)}
    assert choose(trials, "auto") == "bf16"
    assert choose({**trials, "bf16": "the openvino package is not installed"}, "auto") == "fp32"
    assert choose(trials, "int8") == "int8"  # asked for explicitly: used, with a warning
    assert choose({**trials, "bf16": _trial("bf16", 110, True)}, "auto") == "fp32"  # 10 % faster: within the noise
    with pytest.raises(BundleError, match="bf16 is not available here: the openvino package"):
        choose({**trials, "bf16": "the openvino package is not installed"}, "bf16")


def test_the_manifest_records_the_agreement_of_each_precision(bundle, bundle_path):
    entry = bundle.manifest.precision
    assert entry["asked"] == "auto" and entry["chosen"] == bundle.precision
    held_out = sum(r.split in ("val", "test") for r in bundle.index.records)
    assert entry["held_out_images"] == held_out > 0
    runtimes = entry["runtimes"]
    assert runtimes["fp32"]["passes"] and runtimes["fp32"]["top1_agreement"] == 1.0
    assert runtimes["fp32"]["recall_at_10"] == 1.0 and runtimes["fp32"]["accuracy_change"] == 0.0
    assert (bundle_path / "inference-int8.tflite").is_file()
    int8 = runtimes["int8"]
    assert 0.0 <= int8["top1_agreement"] <= 1.0 and 0.0 <= int8["recall_at_10"] <= 1.0
    assert int8["passes"] == (
        int8["top1_agreement"] >= 0.99 and int8["recall_at_10"] >= 0.95 and int8["accuracy_change"] <= 0.005
    )
    assert runtimes[entry["chosen"]]["passes"]
    fp32_speed = runtimes["fp32"]["images_per_second"]
    worth_it = {  # passing reduced precisions fast enough for auto to prefer them
        p: t["images_per_second"]
        for p, t in runtimes.items()
        if p != "fp32" and t.get("passes") and t["images_per_second"] >= MIN_SPEED_UP * fp32_speed
    }
    assert entry["chosen"] == (max(worth_it, key=worth_it.get) if worth_it else "fp32")
    assert describe(entry)[0].startswith(f"precision: {entry['chosen']} (asked: auto; {held_out} held-out images)")


def test_int8_runtime_embeds_close_to_fp32(bundle_path, small_dataset):
    _, queries = small_dataset
    paths = [p for ps in queries.values() for p in ps]
    int8 = load_embedder(bundle_path, precision="int8")
    assert int8.precision == "int8"
    quantized = int8.embed_files(paths).embeddings
    exact = load_embedder(bundle_path, precision="fp32").embed_files(paths).embeddings
    cosines = np.einsum("nd,nd->n", quantized, exact)
    assert cosines.min() > 0.8  # close, not equal: the answers decide (see the manifest)
    assert cosines.min() < 0.99999


def test_precision_command_sets_the_runtime(bundle_path, tmp_path, capsys):
    copy = tmp_path / "copy.bundle"
    Bundle.load(bundle_path).save(copy)
    assert main(["precision", str(copy), "--precision", "fp32"]) == 0
    assert "precision: fp32 (asked: fp32;" in capsys.readouterr().out
    reloaded = Bundle.load(copy)
    assert reloaded.precision == "fp32" and reloaded.manifest.precision["asked"] == "fp32"
    assert not (copy / "inference-int8.tflite").exists()  # only what fp32 needs
