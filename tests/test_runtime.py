"""The LiteRT inference runtime: exported with every bundle, equal to Keras, Keras as the fallback."""

from __future__ import annotations

import numpy as np

from lookalike.embedder import runtime as runtime_module
from lookalike.bundle import Bundle


def test_loaded_bundle_uses_litert_and_matches_keras(bundle, bundle_path, small_dataset):
    assert (bundle_path / "inference.tflite").is_file()
    assert "inference.tflite" in bundle.manifest.files
    assert bundle.embedder.runtime is not None
    _, queries = small_dataset
    paths = [p for ps in queries.values() for p in ps]
    fast = bundle.embedder.embed_files(paths)
    runtime, bundle.embedder.runtime = bundle.embedder.runtime, None
    try:
        reference = bundle.embedder.embed_files(paths)
    finally:
        bundle.embedder.runtime = runtime
    assert np.abs(fast.embeddings - reference.embeddings).max() <= 1e-4
    assert np.array_equal(fast.probabilities.argmax(axis=1), reference.probabilities.argmax(axis=1))
    stored = bundle.index.vectors[:20]  # computed by Keras during training
    again = bundle.embedder.embed_files([r.path for r in bundle.index.records[:20]])
    assert np.abs(again.embeddings - stored).max() <= 1e-4


def test_without_litert_the_bundle_falls_back_to_keras(bundle_path, small_dataset, monkeypatch):
    def unavailable():
        raise runtime_module.RuntimeUnavailable("the ai-edge-litert package is not installed")

    monkeypatch.setattr(runtime_module, "_interpreter_class", unavailable)
    bundle = Bundle.load(bundle_path)
    assert bundle.embedder.runtime is None
    _, queries = small_dataset
    assert bundle.query_files([queries["cook"][0]], k=3)[0].predicted in bundle.class_names
