"""Classifiers over embeddings, checked against direct computations and against the model itself."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier

from lookalike.index.classifiers import KNNClassifier, NearestCentroidClassifier, SoftmaxClassifier


@pytest.fixture
def blobs():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((4, 12))
    y = np.repeat(np.array(["w", "x", "y", "z"]), 30)
    X = centres[np.searchsorted(["w", "x", "y", "z"], y)] + 0.8 * rng.standard_normal((120, 12))
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    return X[::2], y[::2], X[1::2], y[1::2]


def test_unweighted_knn_equals_scikit_learn(blobs):
    X, y, Q, _ = blobs
    ours = KNNClassifier(k=5, weighted=False).fit(X, y)
    reference = KNeighborsClassifier(n_neighbors=5, metric="cosine", algorithm="brute").fit(X, y)
    np.testing.assert_allclose(ours.predict_proba(Q), reference.predict_proba(Q), atol=1e-6)
    assert list(ours.classes_) == list(reference.classes_)


def test_nearest_centroid_is_cosine_to_normalised_class_means(blobs):
    X, y, Q, q_labels = blobs
    model = NearestCentroidClassifier().fit(X, y)
    means = np.stack([X[y == c].mean(axis=0) for c in model.classes_])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    np.testing.assert_allclose(model.centroids_, means, atol=1e-6)
    assert list(model.predict(Q)) == list(model.classes_[np.argmax(Q @ means.T, axis=1)])
    assert np.mean(model.predict(Q) == q_labels) > 0.9
    np.testing.assert_allclose(model.predict_proba(Q).sum(axis=1), 1.0, atol=1e-5)


def test_given_classes_fix_the_columns_even_when_a_class_is_absent(blobs):
    X, y, Q, _ = blobs
    keep = y != "x"
    for model in (
        KNNClassifier(k=3, classes=["w", "x", "y", "z"]),
        NearestCentroidClassifier(classes=["w", "x", "y", "z"]),
    ):
        probabilities = model.fit(X[keep], y[keep]).predict_proba(Q)
        assert probabilities.shape == (len(Q), 4)
        assert "x" not in set(model.predict(Q))
    with pytest.raises(ValueError, match="labels not in classes: q"):
        KNNClassifier(classes=["w"]).fit(X[:2], ["w", "q"])


def test_softmax_classifier_reproduces_the_model(bundle, small_dataset):
    _, queries = small_dataset
    embedded = bundle.keras_embedder.embed_files(queries["cook"] + queries["123"])  # the model, in fp32
    from lookalike.bundle.evaluation import softmax_classifier

    classifier = softmax_classifier(bundle)
    assert isinstance(classifier, SoftmaxClassifier)
    np.testing.assert_allclose(classifier.predict_proba(embedded.embeddings), embedded.probabilities, atol=1e-5)
    assert tuple(classifier.classes_) == bundle.class_names


@pytest.mark.parametrize("estimator", [KNNClassifier(), NearestCentroidClassifier()], ids=lambda e: type(e).__name__)
def test_scikit_learn_estimator_checks_pass(estimator):
    from sklearn.utils.estimator_checks import check_estimator

    check_estimator(estimator)
