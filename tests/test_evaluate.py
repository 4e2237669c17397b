"""The few-shot split protocol, and evaluate / compare through the CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from lookalike.app.cli import main
from lookalike.data import DEFAULT_DATASET, load_folder
from lookalike.data.split import few_shot_split
from lookalike.bundle import evaluate
from lookalike.index.evaluation import CLASSIFIERS


def test_split_follows_the_protocol(tmp_path):
    counts = few_shot_split(DEFAULT_DATASET, tmp_path / "split", per_class=6, seed=0)
    assert counts == {"train": 234, "test": 772}  # the figures of the shared datasets' README
    files = sorted((DEFAULT_DATASET / "arthur").glob("*.png"))
    chosen = {files[i].name for i in np.random.default_rng(0).permutation(len(files))[:6]}
    assert {p.name for p in (tmp_path / "split" / "train" / "arthur").iterdir()} == chosen
    assert (tmp_path / "split" / "train" / "arthur" / sorted(chosen)[0]).resolve().parent == DEFAULT_DATASET / "arthur"
    dataset = load_folder(tmp_path / "split")
    assert {r.split for r in dataset.records} == {"train", "test"}
    with pytest.raises(FileExistsError):
        few_shot_split(DEFAULT_DATASET, tmp_path / "split", per_class=6)


def test_evaluate_scores_the_three_classifiers_on_held_out_images(bundle):
    evaluation = evaluate(bundle)
    held_out = sum(r.split != "train" for r in bundle.index.records)
    assert len(evaluation.y_true) == held_out > 0
    assert evaluation.n_reference == len(bundle.index) - held_out
    for name in CLASSIFIERS:
        scores = evaluation.scores[name]
        assert scores.confusion.sum() == held_out
        assert scores.accuracy == pytest.approx(np.trace(scores.confusion) / held_out)
        assert 0.0 <= scores.macro_f1 <= 1.0
    assert evaluation.scores["softmax"].accuracy == pytest.approx(bundle.manifest.val_accuracy)


def test_evaluate_and_compare_commands_write_reports(bundle_path, tmp_path, capsys):
    copy = tmp_path / "second.bundle"
    shutil.copytree(bundle_path, copy)
    for path in (bundle_path, copy):
        assert main(["evaluate", str(path)]) == 0
    report = json.loads((bundle_path / "report" / "report.json").read_text())
    assert set(report["summary"]) == set(CLASSIFIERS)
    assert report["config"]["fine_tune_blocks"] == 3
    for name in ("confusion_softmax.png", "confusion_knn.png", "confusion_centroid.png", "curves.png"):
        assert (bundle_path / "report" / name).stat().st_size > 1000
    capsys.readouterr()
    chart = tmp_path / "compare.png"
    assert main(["compare", str(bundle_path), str(copy), "--out", str(chart)]) == 0
    table = capsys.readouterr().out
    assert bundle_path.name in table and "second.bundle" in table
    assert chart.stat().st_size > 1000


def test_compare_asks_for_evaluate_first(tmp_path, capsys):
    (tmp_path / "fresh.bundle").mkdir()
    assert main(["compare", str(tmp_path / "fresh.bundle")]) == 1
    assert "run `lookalike evaluate" in capsys.readouterr().err
