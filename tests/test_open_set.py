"""'No close match': the threshold is calibrated leave-one-out on the held-out (else all indexed) images and every
answer carries it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from lookalike.app.cli import main
from lookalike.bundle import Bundle, BundleError
from lookalike.index import open_set
from lookalike.index.open_set import calibrate, leave_one_out_scores


def test_leave_one_out_scores_equal_brute_force(bundle):
    vectors, labels = bundle.index.vectors, bundle.index.labels
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    expected = similarity.max(axis=1)
    np.testing.assert_allclose(leave_one_out_scores(bundle.index, score="best-image"), expected, atol=1e-5)
    # Centroid score: each image against every class's mean, its own class's without it.
    n_classes = len(bundle.class_names)
    expected = []
    for row in range(len(vectors)):
        others = np.arange(len(vectors)) != row
        centroids = [vectors[others & (labels == c)].mean(axis=0) for c in range(n_classes)]
        expected.append(max(float(vectors[row] @ c / np.linalg.norm(c)) for c in centroids))
    np.testing.assert_allclose(leave_one_out_scores(bundle.index), expected, atol=1e-5)
    with pytest.raises(ValueError, match="match score"):
        leave_one_out_scores(bundle.index, score="softmax")


def test_threshold_is_the_quantile_of_the_held_out_images(bundle, monkeypatch):
    held_out = np.flatnonzero([r.split != "train" for r in bundle.index.records])
    assert 0 < len(held_out) < len(bundle.index)
    monkeypatch.setattr(open_set, "MIN_HELD_OUT", len(held_out))
    on_held_out = calibrate(bundle.index, quantile=0.1)
    assert (on_held_out.source, on_held_out.images) == ("held-out", len(held_out))
    held_out_scores = leave_one_out_scores(bundle.index, rows=held_out)
    assert on_held_out.threshold == pytest.approx(float(np.quantile(held_out_scores, 0.1)))
    monkeypatch.setattr(open_set, "MIN_HELD_OUT", len(held_out) + 1)  # too few: every indexed image
    scores = leave_one_out_scores(bundle.index)
    calibration = calibrate(bundle.index, quantile=0.1)
    assert (calibration.source, calibration.images) == ("indexed", len(bundle.index))
    assert calibration.threshold == pytest.approx(float(np.quantile(scores, 0.1)))
    assert np.mean(scores < calibration.threshold) <= 0.1 + 1 / len(scores)
    assert calibrate(bundle.index, quantile=0.0).threshold == pytest.approx(float(scores.min()))
    with pytest.raises(ValueError, match="quantile"):
        calibrate(bundle.index, quantile=1.0)


def test_training_stores_the_calibration_in_the_manifest(bundle):
    stored = bundle.manifest.open_set
    held_out = sum(r.split != "train" for r in bundle.index.records)
    source = "held-out" if held_out >= open_set.MIN_HELD_OUT else "indexed"
    assert stored["quantile"] == 0.05 and stored["source"] == source
    assert stored["images"] == (held_out if source == "held-out" else len(bundle.index))
    assert stored["threshold"] == pytest.approx(calibrate(bundle.index).threshold, abs=1e-6)


def test_answers_say_whether_the_best_match_is_close_enough(bundle, small_dataset, tmp_path):
    _, queries = small_dataset
    known = bundle.query_files([queries["cook"][0]], k=3)[0]
    assert known.unknown_threshold == pytest.approx(bundle.open_set.threshold)
    assert bundle.open_set.score == "centroid"
    assert known.match_score == pytest.approx(known.centroid_characters[0].score)
    assert known.unknown == (known.match_score < known.unknown_threshold)
    score = known.match_score
    assert bundle.query_files([queries["cook"][0]], unknown_threshold=score + 1e-3)[0].unknown
    assert not bundle.query_files([queries["cook"][0]], unknown_threshold=score - 1e-3)[0].unknown
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)).save(noise)
    assert bundle.query_files([noise])[0].unknown  # static is no character of the index


def _copy_with_manifest(bundle_path, folder, edit):
    """A copy of the test bundle in ``folder``, its manifest changed by ``edit`` (a function of the dict)."""
    shutil.copytree(bundle_path, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    edit(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_a_bundle_without_calibration_is_calibrated_on_load(bundle_path, tmp_path):
    loaded = Bundle.load(_copy_with_manifest(bundle_path, tmp_path / "old.bundle", lambda m: m.pop("open_set")))
    assert loaded.open_set.threshold == pytest.approx(calibrate(loaded.index).threshold)


def test_a_bundle_calibrated_on_best_images_keeps_that_score(bundle_path, small_dataset, tmp_path):
    """Bundles from before the centroid score carry a threshold for the best image's similarity."""
    _, queries = small_dataset
    old = _copy_with_manifest(bundle_path, tmp_path / "best-image.bundle", lambda m: m["open_set"].pop("score"))
    loaded = Bundle.load(old)
    assert loaded.open_set.score == "best-image"
    answer = loaded.query_files([queries["arthur"][0]], k=3)[0]
    assert answer.match_score == pytest.approx(answer.characters[0].score)
    assert answer.match_score != pytest.approx(answer.centroid_characters[0].score)
    assert answer.unknown == (answer.match_score < answer.unknown_threshold)


def test_search_json_reports_unknown(bundle_path, small_dataset, capsys):
    _, queries = small_dataset
    assert main(["search", str(bundle_path), str(queries["arthur"][0]), "--json", "--unknown-threshold", "1.01"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["unknown"] is True and answer["unknown_threshold"] == pytest.approx(1.01)
    assert answer["match_score"] == pytest.approx(answer["centroid"]["characters"][0]["score"])
    assert main(["search", str(bundle_path), str(queries["arthur"][0])]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith(("match: ", "no close match: "))


def test_few_shot_bundles_calibrate_on_cross_fitted_heads(small_dataset, tmp_path):
    from lookalike.bundle.updates import add_files
    from lookalike.data import load_folder
    from lookalike.embedder import EmbedderConfig

    root, queries = small_dataset
    few = tmp_path / "few"
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        (few / folder.name).mkdir(parents=True)
        for path in sorted(folder.glob("*.png"))[:6]:
            (few / folder.name / path.name).write_bytes(path.read_bytes())
    dataset = load_folder(few)  # classes of 6 images: no validation split
    assert {r.split for r in dataset.records} == {"train"}
    config = EmbedderConfig(epochs=3, augment_views=1)
    bundle = Bundle.train(dataset, config=config)
    calibration = bundle.open_set
    assert (calibration.source, calibration.images) == ("cross-fit", len(dataset.records))
    assert -1.0 <= calibration.threshold <= 1.0
    assert calibration.threshold != pytest.approx(calibrate(bundle.index).threshold)  # not the indexed images' own
    saved = bundle.save(tmp_path / "few.bundle")
    loaded = Bundle.load(saved)
    assert loaded.open_set == calibration
    add_files(loaded, [queries["cook"][0]], label="cook")  # and saves
    assert len(Bundle.load(saved).index) == len(dataset.records) + 1
    assert Bundle.load(saved).open_set == calibration  # kept: no held-out images to calibrate on instead


def test_a_bundle_calibrated_for_an_unknown_score_is_refused(bundle_path, tmp_path):
    """A threshold is only meaningful for the score it was set on: one this version cannot compute is an error,
    not a silent fallback to another score."""
    other = _copy_with_manifest(
        bundle_path, tmp_path / "other.bundle", lambda m: m["open_set"].update(score="centroid+backbone")
    )
    with pytest.raises(BundleError, match="centroid\\+backbone"):
        Bundle.load(other)
