"""Inference without TensorFlow: a loaded bundle answers with its exported runtime (LiteRT, or OpenVINO in bf16),
equal to Keras in fp32; Keras is the fallback and stays available on demand."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from lookalike.bundle import Bundle
from lookalike.data import load_image
from lookalike.embedder import RuntimeEmbedder, load_embedder
from lookalike.embedder import inference as inference_module
from lookalike.embedder.runtime import RuntimeUnavailable

#: Runs ``lookalike`` in a fresh process and reports on stderr whether TensorFlow or Keras was imported.
_WRAPPER = (
    "import sys; from lookalike.app.cli import main; code = main(sys.argv[1:]); "
    "print('IMPORTED', [m for m in ('tensorflow', 'keras') if m in sys.modules], file=sys.stderr); sys.exit(code)"
)


def _run_without_tensorflow(*args: str, runtime: str | None = None) -> tuple[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "LOOKALIKE_RUNTIME"}
    if runtime:
        env["LOOKALIKE_RUNTIME"] = runtime
    done = subprocess.run([sys.executable, "-c", _WRAPPER, *args], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert "IMPORTED []" in done.stderr, done.stderr  # neither tensorflow nor keras
    return done.stdout, done.stderr


def test_search_runs_without_tensorflow_and_answers_as_keras(bundle, bundle_path, small_dataset):
    _, queries = small_dataset
    query = queries["cook"][0]
    _run_without_tensorflow("search", str(bundle_path), str(query), "--json")  # the bundle's chosen runtime
    printed, _ = _run_without_tensorflow("search", str(bundle_path), str(query), "--json", runtime="fp32")
    answer = json.loads(printed)
    keras = bundle.keras_embedder
    image = load_image(query, keras.config.image_size)[None]
    reference = bundle.query(*keras.embed_images(image), k=5, n_characters=5)[0]
    expected = reference.to_dict()
    assert answer["predicted"] == expected["predicted"]
    assert [h["id"] for h in answer["neighbors"]] == [h["id"] for h in expected["neighbors"]]
    assert [h["label"] for h in answer["characters"]] == [h["label"] for h in expected["characters"]]
    np.testing.assert_allclose(
        [h["score"] for h in answer["neighbors"]], [h["score"] for h in expected["neighbors"]], atol=1e-4
    )


def test_add_and_embed_run_without_tensorflow(bundle_path, small_dataset, tmp_path):
    _, queries = small_dataset
    copy = tmp_path / "copy.bundle"
    Bundle.load(bundle_path).save(copy)
    _run_without_tensorflow("embed", str(copy), str(queries["arthur"][0]), "--out", str(tmp_path / "parts"))
    _run_without_tensorflow("add", str(copy), str(queries["arthur"][0]))
    assert len(Bundle.load(copy).index) == len(Bundle.load(bundle_path).index) + 1


def test_fp32_runtime_matches_keras(bundle, bundle_path, small_dataset):
    assert (bundle_path / "inference.tflite").is_file() and "inference.tflite" in bundle.manifest.files
    assert isinstance(bundle.embedder, RuntimeEmbedder)
    _, queries = small_dataset
    paths = [p for ps in queries.values() for p in ps]
    fast = load_embedder(bundle_path, precision="fp32").embed_files(paths)
    reference = bundle.keras_embedder.embed_files(paths)
    assert np.abs(fast.embeddings - reference.embeddings).max() <= 1e-4
    assert np.array_equal(fast.probabilities.argmax(axis=1), reference.probabilities.argmax(axis=1))
    stored = bundle.index.vectors[:20]  # computed by Keras during training
    again = load_embedder(bundle_path).embed_files([r.path for r in bundle.index.records[:20]])
    assert np.abs(again.embeddings - stored).max() <= 1e-4
    kernel, bias = bundle.embedder.softmax_weights()  # stored beside the runtime: evaluation needs no Keras
    for stored_weights, keras_weights in zip((kernel, bias), bundle.keras_embedder.softmax_weights()):
        np.testing.assert_array_equal(stored_weights, keras_weights)


def test_bf16_starts_with_the_first_batch_and_keeps_the_answers(bundle_path, small_dataset):
    _, queries = small_dataset
    paths = [p for ps in queries.values() for p in ps]
    assert len(paths) >= inference_module.FEW_IMAGES
    bf16 = load_embedder(bundle_path, precision="bf16")
    assert (bf16.precision, bf16.few_runner.precision) == ("bf16", "fp32")
    exact = load_embedder(bundle_path, precision="fp32")
    one = bf16.embed_files(paths[:1])  # a query: the quick fp32 runner answers, OpenVINO has not started
    assert not bf16.runtime.started
    np.testing.assert_array_equal(one.embeddings, exact.embed_files(paths[:1]).embeddings)
    reduced, reference = bf16.embed_files(paths), exact.embed_files(paths)
    assert bf16.runtime.started
    assert np.sum(reduced.embeddings * reference.embeddings, axis=1).min() >= 0.97  # cosine, both L2-normalised
    assert not np.array_equal(reduced.embeddings, reference.embeddings)  # computed by the other runtime
    agree = np.mean(reduced.probabilities.argmax(axis=1) == reference.probabilities.argmax(axis=1))
    assert agree >= 0.95


def test_without_a_runtime_the_bundle_falls_back_to_keras(bundle_path, small_dataset, monkeypatch):
    def unavailable(*args, **kwargs):
        raise RuntimeUnavailable("the ai-edge-litert package is not installed")

    monkeypatch.setattr(inference_module, "open_runner", unavailable)
    bundle = Bundle.load(bundle_path)
    assert not isinstance(bundle.embedder, RuntimeEmbedder)
    assert bundle.keras_embedder is bundle.embedder
    _, queries = small_dataset
    assert bundle.query_files([queries["cook"][0]], k=3)[0].predicted in bundle.class_names


def test_runtime_environment_variable_is_checked(bundle_path, monkeypatch):
    monkeypatch.setenv("LOOKALIKE_RUNTIME", "fp16")
    with pytest.raises(ValueError, match="keras or one of fp32, bf16, int8; got 'fp16'"):
        load_embedder(bundle_path)
