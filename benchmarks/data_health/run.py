"""Data health benchmark (issue 13): duplicates, leaky splits, image quality, and duplicates at 100,000 embeddings.

For each dataset, a seeded sample of original images is copied into a scratch folder, and transformed copies
of some of them are injected (resized, JPEG-compressed, slightly cropped, brightness-shifted, re-saved as
another format), half of them into the ``val`` split (leaky pairs). Then

- lookalike's duplicates (frozen ImageNet MobileNetV2 features + FAISS range search + pixel hashes) are scored
  by precision and recall of the injected pairs, beside imagededup's PHash and CleanVision's near/exact
  duplicates on the same files; the threshold is chosen on the first dataset and confirmed on the second;
- quality checks (dark, blurry, low information, odd size, grayscale) are scored on injected images beside
  CleanVision, with the false alarms on the clean originals;
- duplicates over 100,000 embeddings are timed (real features with noise, planted pairs), exact and IVF.

Usage::

    LOOKALIKE_BACKBONE_WEIGHTS=... .venv/bin/python benchmarks/data_health/run.py [--per-dataset 300] [--out results.json]

Benchmark-only packages: ``pip install -e '.[benchmarks]'`` (imagededup, cleanvision). imagededup's CNN needs
torchvision and its ImageNet weights from download.pytorch.org, neither available offline here: it is
reported as not run. imagededup imports torch at package import even for its hashing methods, so the torch
modules it names are stubbed before importing ``imagededup.methods.hashing``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from lookalike.data.hashing import hash_files
from lookalike.data.quality import check_quality
from lookalike.index.duplicates import find_duplicates, find_near_duplicates

DATASETS = {
    "freedroidrpg": Path("/work/shared/datasets/freedroidrpg"),
    "wesnoth_units": Path("/work/shared/datasets/wesnoth_units"),
}
TRANSFORMS = ("resize", "jpeg", "crop", "brightness", "format")
QUALITY_INJECTIONS = ("dark", "blurry", "low_information", "odd_size", "grayscale")
THRESHOLDS = np.round(np.arange(0.80, 0.991, 0.01), 2)


def transformed(image: Image.Image, kind: str, rng: np.random.Generator) -> tuple[Image.Image, str]:
    """A near-duplicate copy of ``image`` and the file suffix to save it with."""
    w, h = image.size
    if kind == "resize":
        scale = rng.choice([0.75, 1.5])
        return image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BICUBIC), ".png"
    if kind == "jpeg":
        return image, ".jpg"  # saved with quality 75 below
    if kind == "crop":
        dx, dy = max(1, round(0.05 * w)), max(1, round(0.05 * h))
        return image.crop((dx, dy, w - dx, h - dy)), ".png"
    if kind == "brightness":
        return ImageEnhance.Brightness(image).enhance(rng.choice([0.85, 1.15])), ".png"
    return image, rng.choice([".bmp", ".webp"])  # "format": the same pixels in another format


def degraded(image: Image.Image, kind: str, rng: np.random.Generator) -> Image.Image:
    """A copy of ``image`` with one quality issue."""
    w, h = image.size
    if kind == "dark":
        return ImageEnhance.Brightness(image).enhance(0.25)
    if kind == "blurry":
        return image.filter(ImageFilter.GaussianBlur(max(1.5, max(w, h) / 40)))
    if kind == "low_information":
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        return Image.new("RGB", (w, h), colour)
    if kind == "odd_size":
        return image.resize((2000, 20)) if rng.random() < 0.5 else image.resize((8, 8))
    return image.convert("L")  # grayscale


def build_dataset(name: str, source: Path, root: Path, per_dataset: int, seed: int) -> dict:
    """Copy originals, inject duplicates and degraded images; return the ground truth."""
    rng = np.random.default_rng(seed)
    files = sorted(source.glob("*/*.png"))
    originals = [files[i] for i in np.sort(rng.choice(len(files), per_dataset, replace=False))]
    dup_root, quality_root = root / name / "dups", root / name / "quality"
    truth = {"originals": [], "copies": [], "quality": {}}
    for path in originals:
        target = dup_root / "train" / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
        truth["originals"].append(str(target))
    chosen = rng.choice(len(originals), len(originals) // 2, replace=False)
    for n, i in enumerate(chosen):
        kind = TRANSFORMS[n % len(TRANSFORMS)]
        split = "val" if n % 2 else "train"
        original = Path(truth["originals"][i])
        copy, suffix = transformed(Image.open(original).convert("RGB"), kind, rng)
        target = dup_root / split / original.parent.name / f"{original.stem}-{kind}{suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        copy.save(target, quality=75) if suffix == ".jpg" else copy.save(
            target, lossless=True
        ) if suffix == ".webp" else copy.save(target)
        truth["copies"].append({"original": str(original), "copy": str(target), "kind": kind, "split": split})
    # Quality: the clean originals plus 20 degraded copies of each kind (of other originals).
    for path in truth["originals"]:
        target = quality_root / Path(path).parent.name / Path(path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    picks = rng.choice(len(originals), 20 * len(QUALITY_INJECTIONS), replace=False)
    for n, i in enumerate(picks):
        kind = QUALITY_INJECTIONS[n % len(QUALITY_INJECTIONS)]
        original = Path(truth["originals"][i])
        target = quality_root / original.parent.name / f"{original.stem}-{kind}.png"
        degraded(Image.open(original).convert("RGB"), kind, rng).save(target)
        truth["quality"][str(target)] = kind
    return truth


def score_pairs(found: set[frozenset], truth: set[frozenset]) -> dict:
    hits = len(found & truth)
    return {
        "pairs": len(found),
        "true": hits,
        "precision": hits / len(found) if found else 1.0,
        "recall": hits / len(truth) if truth else 1.0,
    }


def frozen_features(paths: list[str]) -> tuple[np.ndarray, float]:
    from lookalike.embedder import Embedder, EmbedderConfig

    started = time.perf_counter()
    encoder = Embedder.build(EmbedderConfig(image_size=224, fine_tune_blocks=0), ["a", "b"])
    encoded = encoder.encode_files(paths)
    assert not encoded.failures, encoded.failures
    features = encoded.features / np.linalg.norm(encoded.features, axis=1, keepdims=True)
    return features.astype(np.float32), time.perf_counter() - started


def imagededup_hashing():
    for name, attributes in {"imagededup.methods.cnn": ["CNN"], "imagededup.utils.models": ["CustomModel"]}.items():
        if name not in sys.modules:
            stub = types.ModuleType(name)
            for attribute in attributes:
                setattr(stub, attribute, None)
            sys.modules[name] = stub
    from imagededup.methods.hashing import DHash, PHash

    return {"PHash": PHash, "DHash": DHash}


def run_imagededup(root: Path, method, threshold: int) -> tuple[set[frozenset], float]:
    started = time.perf_counter()
    hasher = method(verbose=False)
    encodings = hasher.encode_images(image_dir=str(root), recursive=True, num_enc_workers=2)
    duplicates = hasher.find_duplicates(encoding_map=encodings, max_distance_threshold=threshold, num_dist_workers=2)
    pairs = {frozenset((str(root / a), str(root / b))) for a, others in duplicates.items() for b in others}
    return pairs, time.perf_counter() - started


def run_cleanvision(paths: list[str], issue_types: dict) -> tuple[object, float]:
    from cleanvision import Imagelab

    started = time.perf_counter()
    lab = Imagelab(filepaths=paths)
    lab.find_issues(issue_types=issue_types, n_jobs=2, verbose=False)
    return lab, time.perf_counter() - started


def duplicates_benchmark(name: str, root: Path, truth: dict, threshold: float | None) -> tuple[dict, np.ndarray]:
    paths = truth["originals"] + [c["copy"] for c in truth["copies"]]
    splits = ["train"] * len(truth["originals"]) + [c["split"] for c in truth["copies"]]
    # True pairs: an injected copy and its original, and any two images whose originals have the same pixels
    # (the datasets hold a few identical animation frames), closed under both.
    root_hash = dict(zip(truth["originals"], hash_files(truth["originals"]).hashes))
    group = [root_hash[p] for p in truth["originals"]] + [root_hash[c["original"]] for c in truth["copies"]]
    pair_truth = {frozenset((paths[i], paths[j])) for i in range(len(paths)) for j in range(i) if group[i] == group[j]}
    leaky_truth = {p for p in pair_truth if len({splits[paths.index(q)] for q in p}) == 2}
    features, embed_seconds = frozen_features(paths)
    started = time.perf_counter()
    hashes = hash_files(paths)
    hash_seconds = time.perf_counter() - started

    def lookalike(t):
        started = time.perf_counter()
        report = find_duplicates(features, t, paths=paths, splits=splits, hashes=hashes.hashes, sizes=hashes.sizes)
        seconds = time.perf_counter() - started
        found = {frozenset((paths[a], paths[b])) for a, b in report.pairs}
        return report, found, seconds

    sweep = {}
    for t in THRESHOLDS:
        sweep[float(t)] = score_pairs(lookalike(float(t))[1], pair_truth)
    if threshold is None:  # tune: the highest recall at precision >= 0.95, else the best F1 (rounded to 0.01)
        good = [t for t, s in sweep.items() if s["precision"] >= 0.95]
        f1 = lambda s: 2 * s["precision"] * s["recall"] / max(s["precision"] + s["recall"], 1e-9)  # noqa: E731
        threshold = max(good, key=lambda t: (sweep[t]["recall"], t)) if good else max(sweep, key=lambda t: f1(sweep[t]))
    report, found, search_seconds = lookalike(threshold)
    result = {"threshold": threshold, "sweep": sweep}
    result["lookalike"] = {
        **score_pairs(found, pair_truth),
        "seconds": embed_seconds + hash_seconds + search_seconds,
        "seconds_embed": embed_seconds,
        "seconds_hash": hash_seconds,
        "seconds_search": search_seconds,
    }
    frame = report.to_frame()
    leaky_found = {frozenset(p) for p in frame.loc[frame.cross_split, ["path_a", "path_b"]].itertuples(index=False)}
    result["lookalike"]["leaky_recall"] = len(leaky_found & leaky_truth) / len(leaky_truth)
    result["lookalike"]["recall_by_kind"] = {
        kind: float(
            np.mean([frozenset((c["original"], c["copy"])) in found for c in truth["copies"] if c["kind"] == kind])
        )
        for kind in TRANSFORMS
    }
    false = [sorted(p) for p in found - pair_truth]
    result["lookalike"]["false_pairs_examples"] = false[:10]
    result["lookalike"]["truth_pairs"] = len(pair_truth)
    result["lookalike"]["injected_pairs"] = len(truth["copies"])
    result["lookalike"]["false_pairs_same_class"] = int(
        sum(Path(a).parent.name == Path(b).parent.name for a, b in false)
    )
    scan_root = root / name / "dups"
    for method_name, method in imagededup_hashing().items():
        for t in (10, 4):
            pairs, seconds = run_imagededup(scan_root, method, t)
            result[f"imagededup {method_name} (max distance {t})"] = {
                **score_pairs(pairs, pair_truth),
                "seconds": seconds,
            }
    result["imagededup CNN"] = (
        "not run: needs torchvision and its ImageNet weights (no CPU torchvision build, no internet)"
    )
    lab, seconds = run_cleanvision(paths, {"exact_duplicates": {}, "near_duplicates": {}})
    sets = lab.info["exact_duplicates"]["sets"] + lab.info["near_duplicates"]["sets"]
    pairs = {frozenset((a, b)) for group in sets for a in group for b in group if a != b}
    result["CleanVision near+exact duplicates"] = {**score_pairs(pairs, pair_truth), "seconds": seconds}
    return result, features[: len(truth["originals"])]


def quality_benchmark(root: Path, name: str, truth: dict) -> dict:
    paths = sorted(str(p) for p in (root / name / "quality").glob("*/*"))
    injected = truth["quality"]
    clean = [p for p in paths if p not in injected]
    started = time.perf_counter()
    report = check_quality(paths)
    ours_seconds = time.perf_counter() - started
    flags = {str(p): {issue for issue, f in report.flags.items() if f[i]} for i, p in enumerate(report.paths)}
    lab, cv_seconds = run_cleanvision(
        paths,
        {k: {} for k in ("dark", "light", "blurry", "low_information", "grayscale", "odd_size", "odd_aspect_ratio")},
    )
    issues = lab.issues
    cv_flags = {
        p: {c[3:-6] for c in issues.columns if c.startswith("is_") and bool(issues.loc[p, c])} for p in issues.index
    }
    result = {"lookalike_seconds": ours_seconds, "cleanvision_seconds": cv_seconds, "images": len(paths)}
    for label, found in (("lookalike", flags), ("CleanVision", cv_flags)):
        per_kind = {}
        for kind in QUALITY_INJECTIONS:
            targets = [p for p, k in injected.items() if k == kind]
            wanted = {"odd_size": {"odd_size", "odd_aspect_ratio"}}.get(kind, {kind})
            per_kind[kind] = float(np.mean([bool(found.get(p, set()) & wanted) for p in targets]))
        per_kind["all"] = float(
            np.mean(
                [
                    bool(found.get(p, set()) & ({"odd_size", "odd_aspect_ratio"} if k == "odd_size" else {k}))
                    for p, k in injected.items()
                ]
            )
        )
        per_kind["clean flagged (any issue)"] = float(np.mean([bool(found.get(p)) for p in clean]))
        per_kind["clean flagged by issue"] = {
            issue: int(sum(issue in found.get(p, set()) for p in clean))
            for issue in ("dark", "light", "blurry", "low_information", "grayscale", "odd_size", "odd_aspect_ratio")
        }
        result[label] = per_kind
    return result


def scale_benchmark(features: np.ndarray, n: int, seed: int) -> dict:
    """Duplicates among ``n`` embeddings: real features plus noise (cosine ~0.7 to their base), 1 % planted pairs."""
    rng = np.random.default_rng(seed)
    result = {}
    for dim in (features.shape[1], 256):
        base = features[:, :dim] / np.linalg.norm(features[:, :dim], axis=1, keepdims=True)
        vectors = base[rng.integers(0, len(base), n)] + rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(dim)
        planted = rng.choice(n, n // 100, replace=False)
        vectors[planted[: len(planted) // 2]] = vectors[planted[len(planted) // 2 :]] + 0.1 * rng.standard_normal(
            (len(planted) // 2, dim)
        ).astype(np.float32) / np.sqrt(dim)
        vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
        row = {}
        found = {}
        for method in ("ivf", "exact"):
            started = time.perf_counter()
            pairs, _ = find_near_duplicates(vectors, threshold=0.9, method=method)
            row[f"{method}_seconds"] = time.perf_counter() - started
            row[f"{method}_pairs"] = len(pairs)
            found[method] = {tuple(p) for p in pairs.tolist()}
        row["ivf_recall_of_exact_pairs"] = len(found["ivf"] & found["exact"]) / max(len(found["exact"]), 1)
        result[f"n={n}, d={dim}"] = row
        logging.info("scale %s", row)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-dataset", type=int, default=300)
    parser.add_argument("--scale", type=int, default=100_000, help="embeddings of the timing run; 0 skips it")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(Path(__file__).with_name("results.json")))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    results = {"per_dataset": args.per_dataset, "datasets": {}}
    threshold = None
    all_features = []
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        for name, source in DATASETS.items():
            truth = build_dataset(name, source, root, args.per_dataset, args.seed)
            logging.info("%s: %d originals, %d copies", name, len(truth["originals"]), len(truth["copies"]))
            dups, features = duplicates_benchmark(name, root, truth, threshold)
            threshold = dups["threshold"]  # chosen on the first dataset, confirmed on the second
            quality = quality_benchmark(root, name, truth)
            results["datasets"][name] = {"duplicates": dups, "quality": quality}
            all_features.append(features)
            logging.info(
                "%s: %s", name, json.dumps({k: v for k, v in dups.items() if k != "sweep"}, default=str)[:2000]
            )
            logging.info("%s quality: %s", name, json.dumps(quality))
            Path(args.out).write_text(json.dumps(results, indent=1, default=str))
    if args.scale:
        results["scale"] = scale_benchmark(np.concatenate(all_features), args.scale, args.seed)
    Path(args.out).write_text(json.dumps(results, indent=1, default=str))
    logging.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
