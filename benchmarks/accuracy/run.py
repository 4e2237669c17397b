"""Few-shot accuracy benchmark: lookalike's runs beside frozen-embedding baselines, on one split, in one run.

Protocol (../shared/datasets/README.md): per character, sort the file names, reorder them with
numpy.random.default_rng(0).permutation(n), take the first 6 for training and test on the rest. No
validation split: every run trains its full schedule, and the test images are never used in training.

Baselines, on the same split and the same ImageNet MobileNetV2 (224 px, global average pooling,
L2-normalised): cosine 1-nearest-neighbor, nearest class centroid, scikit-learn logistic regression.

    python benchmarks/accuracy/run.py                       # both shared datasets
    python benchmarks/accuracy/run.py --datasets freedroidrpg
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

from lookalike.data import load_folder
from lookalike.data.split import few_shot_split
from lookalike.embedder import Embedder, EmbedderConfig
from lookalike.bundle import Bundle, evaluate
from lookalike.index.classifiers import KNNClassifier, NearestCentroidClassifier

HERE = Path(__file__).resolve().parent
RUNS = {
    "lookalike, frozen backbone": EmbedderConfig(fine_tune_blocks=0),
    "lookalike, fine-tuned top 3 blocks (default)": EmbedderConfig(),
    "lookalike, small-cnn from scratch (96 px)": EmbedderConfig(backbone="small-cnn", image_size=96),
}


def baselines(dataset) -> dict[str, tuple[float, float]]:
    """Top-1 accuracy and seconds of the frozen-embedding baselines."""
    started = time.perf_counter()
    encoder = Embedder.build(EmbedderConfig(), dataset.class_names)
    train, test = dataset.subset("train"), dataset.subset("test")
    x_train = encoder.encode_files([r.path for r in train], progress=True)
    x_test = encoder.encode_files([r.path for r in test], progress=True)
    y_train, y_test = dataset.labels(train)[x_train.indices], dataset.labels(test)[x_test.indices]
    normalise = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    f_train, f_test = normalise(x_train.features), normalise(x_test.features)
    encode_seconds = time.perf_counter() - started
    results = {}
    for name, classifier in {
        "frozen ImageNet embeddings, cosine 1-NN": KNNClassifier(k=1),
        "frozen ImageNet embeddings, nearest centroid": NearestCentroidClassifier(),
        "frozen ImageNet embeddings, logistic regression": LogisticRegression(max_iter=2000),
    }.items():
        started = time.perf_counter()
        accuracy = float(np.mean(classifier.fit(f_train, y_train).predict(f_test) == y_test))
        results[name] = (accuracy, encode_seconds + time.perf_counter() - started)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=HERE.parents[2] / "shared" / "datasets")
    parser.add_argument("--datasets", nargs="+", default=["wesnoth_units", "freedroidrpg"])
    parser.add_argument(
        "--runs", nargs="+", choices=list(RUNS), default=list(RUNS), metavar="RUN", help="lookalike runs (default all)"
    )
    parser.add_argument("--no-baselines", action="store_true", help="skip the frozen-embedding baselines")
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.datasets:
            split_dir = Path(scratch) / name
            few_shot_split(args.shared / name, split_dir, per_class=6, seed=0)
            dataset = load_folder(split_dir)
            print(f"== {name}: {dataset.summary()}", flush=True)
            rows = (
                {}
                if args.no_baselines
                else {label: {"accuracy": a, "seconds": s} for label, (a, s) in baselines(dataset).items()}
            )
            for label in args.runs:
                config = RUNS[label]
                started = time.perf_counter()
                bundle = Bundle.train(dataset, config=config, progress=True)
                scores = evaluate(bundle).summary()
                seconds = time.perf_counter() - started
                rows[label] = {c: s["accuracy"] for c, s in scores.items()} | {"seconds": seconds}
                print(label, rows[label], flush=True)
            results[name] = {"summary": dataset.summary(), "runs": rows}
    args.out.write_text(json.dumps(results, indent=2))
    for name, result in results.items():
        print(f"\n{name} ({result['summary']}): top-1 test accuracy")
        print("| run | baseline | softmax head | k-NN (k=10) | nearest centroid | seconds |\n|---|---|---|---|---|---|")
        for label, row in result["runs"].items():
            cells = [f"{row[key]:.3f}" if key in row else "" for key in ("accuracy", "softmax", "knn", "centroid")]
            print(f"| {label} | {' | '.join(cells)} | {row['seconds']:.0f} |")


if __name__ == "__main__":
    main()
