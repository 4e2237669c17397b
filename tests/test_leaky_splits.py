"""`evaluate` warns when duplicates cross the train/val/test splits (a leaky split inflates the scores)."""

from __future__ import annotations

import json
import shutil

import numpy as np
from lookalike.app.cli import main
from lookalike.bundle import Bundle, evaluate
from lookalike.data import ImageRecord
from lookalike.index import EmbeddingIndex


def _leaky_copy(bundle_path, tmp_path) -> Bundle:
    """A saved copy of the test bundle with one more val image: a copy of a train image, under another name."""
    copy_path = tmp_path / "leaky.bundle"
    shutil.copytree(bundle_path, copy_path)
    bundle = Bundle.load(copy_path)
    records = list(bundle.index.records)
    train_row = next(row for row, r in enumerate(records) if r.split == "train")
    planted = tmp_path / "planted" / f"copy of {records[train_row].path.name}"
    planted.parent.mkdir()
    shutil.copy(records[train_row].path, planted)
    records.append(ImageRecord(planted, records[train_row].label, "val"))
    vectors = np.concatenate([bundle.index.vectors, bundle.index.vectors[[train_row]]])
    leaky = Bundle(bundle.embedder, EmbeddingIndex.build(vectors, records, bundle.class_names), bundle.manifest)
    leaky.path = bundle.path  # its embedder files are linked from there when saved
    leaky.save(copy_path)
    return Bundle.load(copy_path)


def test_evaluate_counts_and_warns_about_a_planted_cross_split_copy(bundle, bundle_path, tmp_path, capsys):
    clean = evaluate(bundle)
    assert clean.leaky_pairs is not None
    assert (clean.leaky_pairs == 0) == (clean.warnings == ())
    leaky = _leaky_copy(bundle_path, tmp_path)
    evaluation = evaluate(leaky)
    assert evaluation.leaky_pairs >= clean.leaky_pairs + 1
    (warning,) = evaluation.warnings
    assert f"{evaluation.leaky_pairs} duplicate pairs cross the train/val/test splits" in warning
    assert "`lookalike duplicates BUNDLE` lists them" in warning
    assert evaluate(leaky, check_leaks=False).leaky_pairs is None

    assert main(["evaluate", str(leaky.path)]) == 0
    captured = capsys.readouterr()
    assert f"warning: leaky splits: {evaluation.leaky_pairs} duplicate pairs" in captured.err
    report = json.loads((leaky.path / "report" / "report.json").read_text())
    assert report["leaky_pairs"] == evaluation.leaky_pairs and report["warnings"] == [warning]
    assert main(["evaluate", str(leaky.path), "--no-leak-check"]) == 0
    assert "leaky" not in capsys.readouterr().err
