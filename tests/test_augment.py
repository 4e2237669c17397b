"""Appearance augmentations of the cached training views, their configuration, and the fused embedding."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.data import DEFAULT_DATASET, load_image
from lookalike.embedder import EmbedderConfig
from lookalike.embedder.augment import _background_mask, augment_appearance

ONLY = dict.fromkeys(
    (
        "augment_grayscale",
        "augment_recolour",
        "augment_sketch",
        "augment_low_res",
        "augment_jpeg",
        "augment_background",
    ),
    0.0,
)


@pytest.fixture(scope="module")
def sprites() -> np.ndarray:
    paths = sorted((DEFAULT_DATASET / "cook").glob("*.png"))[:3] + sorted((DEFAULT_DATASET / "123").glob("*.png"))[:3]
    return np.stack([load_image(p, 64) for p in paths])


@pytest.mark.parametrize(
    "setting", ["augment_grayscale", "augment_recolour", "augment_sketch", "augment_low_res", "augment_jpeg"]
)
def test_each_appearance_change_keeps_shape_and_range_and_is_seeded(sprites, setting):
    config = EmbedderConfig(**ONLY | {setting: 1.0})
    out = augment_appearance(sprites, np.random.default_rng(0), config)
    again = augment_appearance(sprites, np.random.default_rng(0), config)
    assert out.shape == sprites.shape and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 255.0
    np.testing.assert_array_equal(out, again)
    assert np.abs(out - sprites).mean() > 1.0, f"{setting} changed nothing"
    if setting in ("augment_grayscale", "augment_sketch"):
        np.testing.assert_allclose(out[..., 0], out[..., 2], atol=1e-3)
    if setting == "augment_sketch":
        assert np.mean(out > 200) > 0.5  # mostly white paper


def test_no_augmentation_returns_the_images(sprites):
    out = augment_appearance(sprites, np.random.default_rng(0), EmbedderConfig(**ONLY))
    np.testing.assert_array_equal(out, sprites.astype(np.float32))


def test_background_replaces_only_white_connected_to_the_border():
    image = np.full((1, 32, 32, 3), 255, np.uint8)
    image[0, 8:24, 8:24] = 40  # a dark square ...
    image[0, 14:18, 14:18] = 255  # ... with a white hole inside: part of the character
    mask = _background_mask(image)
    assert mask[0, 0, 0] and mask[0, 31, 31] and not mask[0, 10, 10] and not mask[0, 15, 15]
    out = augment_appearance(image, np.random.default_rng(1), EmbedderConfig(**ONLY | {"augment_background": 1.0}))
    np.testing.assert_array_equal(out[0, 8:24, 8:24], image[0, 8:24, 8:24])
    assert out[0][mask[0]].std() > 10  # busy, not white


def test_appearance_probabilities_are_validated():
    with pytest.raises(ValueError, match="sum to at most 1; got 1.200"):
        EmbedderConfig(**ONLY | {"augment_grayscale": 0.6, "augment_sketch": 0.6})
    with pytest.raises(ValueError, match="augment_background is a probability"):
        EmbedderConfig(augment_background=1.5)
    with pytest.raises(ValueError, match="pooled_weight must be in"):
        EmbedderConfig(pooled_weight=1.0)


def test_configs_saved_before_the_new_settings_load_with_them_off():
    old = EmbedderConfig().to_dict()
    for name in ("pooled_weight", "pooled_dim", *ONLY):
        old.pop(name)
    config = EmbedderConfig.from_dict(old)
    assert config.pooled_weight == 0.0 and not config.fuses
    assert all(getattr(config, name) == 0.0 for name in ONLY)


def test_fused_embedding_is_normalised_mixes_cosines_and_exports_to_litert(small_dataset, tmp_path):
    from lookalike.data import load_folder
    from lookalike.embedder import train
    from lookalike.embedder.runtime import export_litert

    root, queries = small_dataset
    config = EmbedderConfig(
        image_size=96, embedding_dim=16, pooled_weight=0.4, pooled_dim=32, epochs=2, augment_views=1, fine_tune_blocks=0
    )
    result = train(load_folder(root).records, load_folder(root).class_names, config=config)
    embedder = result.embedder
    assert embedder.embedding_dim == 16 + 32
    embeddings = result.embedded.embeddings
    assert embeddings.shape[1] == 48
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    trained, pooled = embeddings[:, :16] / np.sqrt(0.6), embeddings[:, 16:] / np.sqrt(0.4)
    np.testing.assert_allclose(np.linalg.norm(trained, axis=1), 1.0, atol=1e-4)
    np.testing.assert_allclose(
        embeddings @ embeddings.T, 0.6 * trained @ trained.T + 0.4 * pooled @ pooled.T, atol=1e-5
    )
    export_litert(embedder, tmp_path / "inference.tflite")  # raises if LiteRT differs from Keras by > 1e-4
    assert embedder.attach_runtime(tmp_path)
    images = np.stack([load_image(p, 96) for p in queries["cook"]])
    fast, reference = embedder.runtime(images), embedder.head_outputs(embedder.encode(images))
    assert np.abs(fast[0] - reference[0]).max() <= 1e-4


def test_few_shot_classes_train_on_every_image(tmp_path):
    from lookalike.data import load_folder

    for name, n in {"a": 6, "b": 6, "c": 12}.items():
        (tmp_path / name).mkdir()
        for i in range(n):
            (tmp_path / name / f"{i:03d}.png").write_bytes(b"")
    dataset = load_folder(tmp_path)  # the `lookalike train` defaults: val_fraction 0.2
    held_out = {r.label for r in dataset.records if r.split == "val"}
    assert held_out == {"c"}  # 6-image classes keep all six for training
