"""The audit: leave-one-out maths, planted label errors, outliers, and the CLI."""

from __future__ import annotations

import csv
import importlib
from pathlib import Path

import numpy as np

from lookalike.app.cli import main
from lookalike.data import ImageRecord
from lookalike.bundle import imagenet_features
from lookalike.index import EmbeddingIndex, audit
from lookalike.index.outliers import centroid_similarities


def _clusters(seed=0, per_class=12, n_classes=3, d=16, spread=0.3):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_classes, d)) * 2
    labels = np.repeat(np.arange(n_classes), per_class)
    x = centres[labels] + spread * rng.standard_normal((len(labels), d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


def test_leave_one_out_centroid_similarity_equals_recomputing_without_the_image():
    x, labels = _clusters()
    similarities = centroid_similarities(x, labels, 3)
    for i in (0, 13, 35):
        keep = (labels == labels[i]) & (np.arange(len(x)) != i)
        centroid = x[keep].mean(axis=0)
        assert abs(similarities[i, labels[i]] - x[i] @ centroid / np.linalg.norm(centroid)) < 1e-5
        other = (labels + 1) % 3
        full = x[labels == other[i]].mean(axis=0)
        assert abs(similarities[i, other[i]] - x[i] @ full / np.linalg.norm(full)) < 1e-5


def test_flipped_label_ranks_first_and_far_point_is_an_outlier():
    x, labels = _clusters(per_class=15)
    far = np.random.default_rng(5).standard_normal((1, x.shape[1])).astype(np.float32)
    x = np.concatenate([x, far / np.linalg.norm(far)])
    labels = np.append(labels, 0)
    names = ("a", "b", "c")
    labels[7] = 2  # image 7 sits in cluster "a" but is labelled "c"
    records = [ImageRecord(Path(f"{i}.png"), names[c], "train") for i, c in enumerate(labels)]
    result = audit(EmbeddingIndex.build(x, records, names), k=5)
    assert result.ranking()[0] == 7
    assert result.predicted("knn")[7] == 0 and result.predicted("centroid")[7] == 0 and result.margin[7] < 0
    assert result.suspicion[7] > 0.8
    assert result.outlier[len(x) - 1] and result.outlier.sum() <= 3


def test_mislabelled_real_image_is_found(bundle):
    """Relabel one real image: on the frozen ImageNet features the audit puts it on top."""
    features = imagenet_features(bundle)
    assert features.dim == 1280 and features.records == bundle.index.records
    victim = next(i for i, r in enumerate(features.records) if r.label == "cook")
    records = list(features.records)
    records[victim] = ImageRecord(records[victim].path, "123", records[victim].split)
    result = audit(EmbeddingIndex.build(features.vectors, records, features.class_names))
    assert result.ranking()[0] == victim
    assert result.class_names[result.predicted("knn")[victim]] == "cook"
    assert set(result.class_spread()) == set(features.class_names)


def test_audit_features_are_cached_in_the_bundle(bundle, monkeypatch):
    audit_module = importlib.import_module("lookalike.bundle.audit")
    first = imagenet_features(bundle)
    assert (bundle.path / "audit" / "features.npy").is_file()

    def refuse(*args, **kwargs):
        raise AssertionError("the cached features should have been reused")

    monkeypatch.setattr(audit_module, "frozen_features", refuse)
    np.testing.assert_array_equal(imagenet_features(bundle).vectors, first.vectors)


def test_audit_command_prints_and_writes_csv(bundle, bundle_path, tmp_path, capsys):
    out = tmp_path / "audit.csv"
    assert main(["audit", str(bundle_path), "--top", "5", "--csv", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "suspicion" in printed and "loosest classes" in printed
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    suspicion = [float(r["suspicion"]) for r in rows]
    assert len(rows) == len(bundle.index)
    assert suspicion == sorted(suspicion, reverse=True)
    assert {r["label"] for r in rows} == set(bundle.class_names)


def test_two_class_probabilities_are_logistic_regressions_predict_proba():
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from lookalike.index.label_audit import _cross_validated_softmax

    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 8)).astype(np.float32)
    y = (X[:, 0] + 0.8 * rng.standard_normal(60) > 0).astype(np.int64)
    ours = _cross_validated_softmax(X, y, 2, folds=5, seed=0)
    cv = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    expected = cross_val_predict(LogisticRegression(C=10.0, max_iter=1000), X, y, cv=cv, method="predict_proba")
    np.testing.assert_allclose(ours, expected, atol=1e-6)
