"""Finding the backbone weights: explicit file, environment variable, Keras' cache, and the offline error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lookalike.embedder import IMAGENET_WEIGHTS_FILE, WEIGHTS_ENV, BackboneWeightsError, build_backbone, resolve_weights
from lookalike.embedder import backbone as backbone_module


@pytest.fixture(scope="module")
def weights_file() -> Path:
    """The real ImageNet weights file this machine has (from $LOOKALIKE_BACKBONE_WEIGHTS or Keras' cache)."""
    return resolve_weights()


def test_explicit_file_and_environment_variable(weights_file, monkeypatch, tmp_path):
    assert resolve_weights(weights_file) == weights_file
    monkeypatch.setenv(WEIGHTS_ENV, str(weights_file))
    assert resolve_weights() == weights_file
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "missing.h5"))
    with pytest.raises(BackboneWeightsError, match=rf"missing\.h5 \(given by \${WEIGHTS_ENV}\)"):
        resolve_weights()


def test_imagenet_is_found_in_the_keras_cache(weights_file, tmp_path):
    """With no explicit file, "imagenet" is Keras' own cache; KERAS_HOME is read when Keras is imported."""
    (tmp_path / "models").mkdir()
    os.symlink(weights_file, tmp_path / "models" / IMAGENET_WEIGHTS_FILE)
    env = {k: v for k, v in os.environ.items() if k != WEIGHTS_ENV} | {"KERAS_HOME": str(tmp_path)}
    code = "from lookalike.embedder import resolve_weights; print(resolve_weights())"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == str(tmp_path / "models" / IMAGENET_WEIGHTS_FILE)


def test_failed_download_tells_the_user_what_to_do(monkeypatch, tmp_path):
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(backbone_module, "IMAGENET_WEIGHTS_FILE", f"not-cached-{tmp_path.name}.h5")
    monkeypatch.setattr(backbone_module, "IMAGENET_WEIGHTS_URL", (tmp_path / "unreachable.h5").as_uri())
    with pytest.raises(BackboneWeightsError) as caught:
        resolve_weights()
    message = str(caught.value)
    assert "--weights PATH" in message and WEIGHTS_ENV in message and "$KERAS_HOME/models/" in message


def test_a_file_of_other_weights_is_refused(tmp_path):
    import keras

    wrong = tmp_path / "other.weights.h5"
    keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]).save_weights(wrong)
    with pytest.raises(BackboneWeightsError, match="not a MobileNetV2"):
        build_backbone(96, wrong)


def test_backbone_is_frozen_and_gives_1280_channels(weights_file):
    backbone = build_backbone(96, weights_file)
    assert not backbone.trainable
    assert backbone.output.shape[-1] == 1280
