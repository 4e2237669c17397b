"""Evaluation reports: figures (matplotlib) and the ``report/`` folder written into a bundle.

Figures are bare ``matplotlib.figure.Figure`` objects, not registered with pyplot: nothing to close, and
safe to build from the web app's worker threads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..data.files import write_atomic
from ..index.evaluation import CLASSIFIERS, Evaluation

REPORT_DIR = "report"
REPORT_FILE = "report.json"
#: Above this many classes, confusion matrices are drawn without tick labels.
MAX_LABELLED_CLASSES = 40
CLASSIFIER_TITLES = {"softmax": "softmax head", "knn": "k-NN vote", "centroid": "nearest centroid"}


def confusion_figure(evaluation: Evaluation, classifier: str) -> Figure:
    """Row-normalised confusion matrix (true class by row) of one classifier."""
    counts = evaluation.scores[classifier].confusion.astype(float)
    rows = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    n = len(evaluation.class_names)
    side = min(4 + 0.25 * n, 16)
    fig = Figure(figsize=(side, side))
    ax = fig.subplots()
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    if n <= MAX_LABELLED_CLASSES:
        ax.set_xticks(range(n), evaluation.class_names, rotation=90, fontsize=7)
        ax.set_yticks(range(n), evaluation.class_names, fontsize=7)
    scores = evaluation.scores[classifier]
    ax.set(
        xlabel="predicted class",
        ylabel="true class",
        title=f"{CLASSIFIER_TITLES[classifier]}: accuracy {scores.accuracy:.3f}, macro-F1 {scores.macro_f1:.3f}",
    )
    fig.tight_layout()
    return fig


def curves_figure(history: dict[str, list[float]], phase_epochs: dict[str, int]) -> Figure:
    """Per-epoch loss and accuracy (training solid, validation dashed), phases separated by a line."""
    fig = Figure(figsize=(10, 3.8))
    axes = fig.subplots(1, 2)
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    for ax, metric in zip(axes, ("loss", "accuracy")):
        if metric in history:
            ax.plot(epochs, history[metric], label=f"train {metric}")
        if f"val_{metric}" in history:
            ax.plot(epochs, history[f"val_{metric}"], "--", label=f"val {metric}")
        boundary = 0
        for phase, n in list(phase_epochs.items())[:-1]:
            boundary += n
            ax.axvline(boundary + 0.5, color="grey", lw=0.8)
            ax.text(boundary + 0.7, ax.get_ylim()[1], f"{phase.replace('_', '-')} ends", fontsize=7, va="top")
        ax.set(xlabel="epoch", title=metric)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def comparison_figure(runs: dict[str, dict[str, dict[str, float]]], metric: str = "accuracy") -> Figure:
    """Grouped bars: ``runs[name][classifier][metric]`` for every run and classifier."""
    names = list(runs)
    width = 0.8 / len(CLASSIFIERS)
    fig = Figure(figsize=(max(6, 1.6 * len(names) + 2), 4))
    ax = fig.subplots()
    for i, classifier in enumerate(CLASSIFIERS):
        values = [runs[name].get(classifier, {}).get(metric, np.nan) for name in names]
        bars = ax.bar(np.arange(len(names)) + (i - 1) * width, values, width, label=CLASSIFIER_TITLES[classifier])
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
    ax.set_xticks(range(len(names)), names, rotation=15, ha="right")
    ax.set(ylabel=metric, ylim=(0, 1.08), title=f"held-out {metric} by run and classifier")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def write_report(bundle_dir: str | os.PathLike, evaluation: Evaluation, manifest) -> Path:
    """Write ``report.json``, ``confusion_<classifier>.png`` and ``curves.png`` into ``BUNDLE/report/``.

    Returns
    -------
    Path
        The report folder.
    """
    folder = Path(bundle_dir) / REPORT_DIR
    folder.mkdir(exist_ok=True)
    training = manifest.training
    payload = evaluation.to_dict() | {
        "bundle": str(Path(bundle_dir).resolve()),
        "config": training.get("config"),
        "training_seconds": training.get("seconds"),
    }
    write_atomic(folder / REPORT_FILE, json.dumps(payload, indent=1))
    for classifier in CLASSIFIERS:
        confusion_figure(evaluation, classifier).savefig(folder / f"confusion_{classifier}.png", dpi=110)
    if training.get("history"):
        curves_figure(training["history"], training.get("phase_epochs", {})).savefig(folder / "curves.png", dpi=110)
    return folder


def read_report(bundle_dir: str | os.PathLike) -> dict | None:
    """The bundle's ``report/report.json``, or None if it has not been evaluated."""
    path = Path(bundle_dir) / REPORT_DIR / REPORT_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def comparison_table(bundle_dirs: list[Path]):
    """The evaluation summaries of several bundles as one table, and the runs for :func:`comparison_figure`.

    Returns
    -------
    (pandas.DataFrame, dict)
        Columns ``bundle, backbone, tuned, train_s`` and ``<classifier> acc``, ``<classifier> F1`` per
        classifier; and ``{bundle name: summary}``.

    Raises
    ------
    FileNotFoundError
        A bundle has not been evaluated yet (the message says the command to run).
    """
    import pandas as pd

    runs, rows = {}, []
    for path in bundle_dirs:
        report = read_report(path)
        if report is None:
            raise FileNotFoundError(f"{path} has no report yet: run `lookalike evaluate {path}` first")
        config = report.get("config") or {}
        runs[path.name] = summary = report["summary"]
        row = {
            "bundle": path.name,
            "backbone": config.get("backbone", "?"),
            "tuned": config.get("fine_tune_blocks", "?"),
            "train_s": report.get("training_seconds"),
        }
        for c in CLASSIFIERS:
            row[f"{c} acc"], row[f"{c} F1"] = summary[c]["accuracy"], summary[c]["macro_f1"]
        rows.append(row)
    return pd.DataFrame(rows), runs
