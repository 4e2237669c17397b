"""Label-noise benchmark: flip 5 % of the labels, train on the noisy labels, and see how many flips the audit finds.

For each dataset: flip the labels of 5 % of the images (seeded) to a uniformly drawn other class, write the
noisy dataset as symlinks, train a bundle with lookalike's defaults on the noisy labels, run the audit, and
count the flipped images among its top N suspects (N = the number flipped). In the same run, cleanlab's
``find_label_issues`` gets the same out-of-fold probabilities (the mean of the audit's softmax, k-NN and
centroid probabilities) and is scored the same way (its first N ranked issues).

    pip install cleanlab   # benchmark-only dependency
    python benchmarks/label_noise/run.py
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from cleanlab.filter import find_label_issues

from lookalike.data import load_folder
from lookalike.bundle import Bundle, imagenet_features
from lookalike.index import audit

HERE = Path(__file__).resolve().parent


def noisy_copy(source: Path, target: Path, *, rate: float, seed: int) -> set[str]:
    """Write ``target/<label>/<true class>__<file>`` symlinks with ``rate`` of the labels flipped; return flipped names."""
    dataset = load_folder(source, val_fraction=0.0)
    rng = np.random.default_rng(seed)
    n = len(dataset.records)
    flipped_at = set(rng.choice(n, size=int(round(rate * n)), replace=False).tolist())
    names = dataset.class_names
    flipped = set()
    for i, record in enumerate(dataset.records):
        label = record.label
        if i in flipped_at:
            others = [c for c in names if c != record.label]
            label = others[rng.integers(len(others))]
        name = f"{record.label}__{record.path.name}"
        (target / label).mkdir(parents=True, exist_ok=True)
        (target / label / name).symlink_to(record.path)
        if i in flipped_at:
            flipped.add(name)
    return flipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=HERE.parents[2] / "shared" / "datasets")
    parser.add_argument("--datasets", nargs="+", default=["wesnoth_units", "freedroidrpg"])
    parser.add_argument("--rate", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.datasets:
            root = Path(scratch) / name
            flipped = noisy_copy(args.shared / name, root, rate=args.rate, seed=args.seed)
            dataset = load_folder(root)
            print(f"== {name}: {dataset.summary()}, {len(flipped)} labels flipped", flush=True)
            started = time.perf_counter()
            bundle = Bundle.train(dataset, progress=True)
            train_seconds = time.perf_counter() - started
            started = time.perf_counter()
            result = audit(imagenet_features(bundle))
            audit_seconds = time.perf_counter() - started
            is_flipped = np.array([r.path.name in flipped for r in bundle.index.records])
            n = int(is_flipped.sum())
            ours = int(is_flipped[result.ranking()[:n]].sum())
            mean_probabilities = np.mean(list(result.probabilities.values()), axis=0)
            ranked = find_label_issues(result.labels, mean_probabilities, return_indices_ranked_by="self_confidence")
            theirs = int(is_flipped[ranked[:n]].sum())
            per_classifier = {
                c: int(is_flipped[np.argsort(p[np.arange(len(p)), result.labels], kind="stable")[:n]].sum())
                for c, p in result.probabilities.items()
            }
            results[name] = {
                "images": len(bundle.index),
                "flipped": n,
                "lookalike_audit_top_n": ours,
                "cleanlab_top_n": theirs,
                "cleanlab_issues_found": int(len(ranked)),
                "single_classifier_top_n": per_classifier,
                "train_seconds": round(train_seconds, 1),
                "audit_seconds": round(audit_seconds, 2),
            }
            print(results[name], flush=True)
    args.out.write_text(json.dumps(results, indent=2))
    print("\n| dataset | images | flipped | lookalike audit: flips in top N | cleanlab: flips in top N |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        n = r["flipped"]
        print(
            f"| {name} | {r['images']} | {n} | {r['lookalike_audit_top_n']} ({r['lookalike_audit_top_n'] / n:.1%}) "
            f"| {r['cleanlab_top_n']} ({r['cleanlab_top_n'] / n:.1%}) |"
        )


if __name__ == "__main__":
    main()
