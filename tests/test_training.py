"""Training internals: where the backbone is cut, what fine-tuning may change, the scratch CNN, the logs."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from conftest import CLASSES

from lookalike.data import load_folder
from lookalike.embedder import EmbedderConfig, build_backbone, train
from lookalike.embedder.training import cut_layer


def test_cut_layer_reads_the_blocks_from_the_model(bundle):
    backbone = bundle.keras_embedder.backbone
    assert cut_layer(backbone, 1) == "block_15_add" and cut_layer(backbone, 3) == "block_13_project_BN"
    with pytest.raises(ValueError, match="has 16 blocks"):
        cut_layer(backbone, 16)


@pytest.mark.parametrize("blocks", [1, 3, 5, 15])
def test_cut_then_top_equals_the_whole_backbone(bundle, small_dataset, blocks):
    embedder = bundle.keras_embedder
    _, queries = small_dataset
    from lookalike.data import load_image

    images = np.stack([load_image(p, embedder.config.image_size) for p in queries["arthur"]])
    layer = cut_layer(embedder.backbone, blocks)
    via_cut = embedder.top(layer).predict(embedder.encode(images, layer=layer), verbose=0)
    np.testing.assert_allclose(via_cut, embedder.encode(images), atol=1e-4)


def test_fine_tuning_changes_only_the_top_blocks(bundle):
    """Blocks 14-16 and Conv_1 were fine-tuned (3 blocks); everything below, and every batch-norm, is ImageNet's."""
    tuned = bundle.keras_embedder.backbone
    original = build_backbone(bundle.keras_embedder.config.image_size)
    changed = {
        layer.name
        for layer in tuned.layers
        if layer.weights
        and any(
            not np.array_equal(a, b) for a, b in zip(layer.get_weights(), original.get_layer(layer.name).get_weights())
        )
    }
    assert changed, "fine-tuning changed nothing"
    assert all(name.startswith(("block_14", "block_15", "block_16", "Conv_1")) for name in changed), changed
    assert not any(name.endswith("BN") or name.endswith("_bn") for name in changed), changed


def test_training_logs_are_in_the_bundle(bundle_path):
    with open(bundle_path / "logs" / "head.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(rows[0])
    assert (bundle_path / "logs" / "fine_tune.csv").is_file()
    assert list((bundle_path / "logs" / "tensorboard").rglob("events.out.tfevents.*"))


def test_small_cnn_trains_from_scratch_and_ignores_test_images(small_dataset, tmp_path):
    root, _ = small_dataset
    dataset = load_folder(root, val_fraction=0.25)
    records = [
        r if r.label != CLASSES[1] or r.split == "train" else r.__class__(r.path, r.label, "test")
        for r in dataset.records
    ]
    config = EmbedderConfig(backbone="small-cnn", image_size=32, epochs=3, embedding_dim=16)
    result = train(records, dataset.class_names, config=config)
    assert result.phase_epochs == {"end_to_end": 3}
    assert result.embedder.backbone.trainable
    embeddings = result.embedded.embeddings
    assert embeddings.shape == (len(records) - 1, 16)  # all but the corrupt file
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    n_val = sum(r.split == "val" for r in records)
    assert len(result.history["val_accuracy"]) == 3 and n_val > 0


def test_backbone_specs_give_label_and_default_size():
    from lookalike.embedder.config import BACKBONE_SPECS

    small = EmbedderConfig.for_backbone("small-cnn")
    assert small.image_size == 96 and not small.spec.pretrained and small.spec.label.startswith("small CNN")
    assert EmbedderConfig.for_backbone("mobilenet_v2").image_size == 224
    assert EmbedderConfig.for_backbone("small-cnn", image_size=64).image_size == 64
    assert set(BACKBONE_SPECS) == {"mobilenet_v2", "small-cnn"}
    with pytest.raises(ValueError, match="backbone must be one of"):
        EmbedderConfig.for_backbone("resnet")


def test_fine_tuning_without_held_out_images(small_dataset):
    """Few-shot folders have no val split now; fine-tuning must not need one (Keras' predict fails on empty input)."""
    root, _ = small_dataset
    dataset = load_folder(root, val_fraction=0.0)
    config = EmbedderConfig(image_size=96, epochs=1, augment_views=0, fine_tune_blocks=1, fine_tune_epochs=1)
    result = train(dataset.records, dataset.class_names, config=config)
    assert result.phase_epochs == {"head": 1, "fine_tune": 1} and result.val_accuracy is None
    assert len(result.embedded.embeddings) == len(dataset.records) - 1  # all but the corrupt file
