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

import faiss
import numpy as np
from lookalike.data.hashing import decode_native, hash_files
from lookalike.data.quality import check_quality
from lookalike.index.duplicates import CANDIDATE_THRESHOLD, DEFAULT_THRESHOLD, find_duplicates, find_near_duplicates
from PIL import Image, ImageEnhance, ImageFilter

DATASETS = {
    "freedroidrpg": Path("/work/shared/datasets/freedroidrpg"),
    "wesnoth_units": Path("/work/shared/datasets/wesnoth_units"),
}
TRANSFORMS = ("resize", "jpeg", "crop", "brightness", "format")
QUALITY_INJECTIONS = ("dark", "blurry", "low_information", "odd_size", "grayscale")
THRESHOLDS = np.round(np.arange(0.80, 0.991, 0.01), 2)
#: Frozen features of the duplicate part, reused by the timing part.
CACHE = Path(tempfile.gettempdir()) / "lookalike-data-health"
PIXEL_THRESHOLDS = np.round(np.arange(0.10, 0.501, 0.025), 3)
#: Two originals are natural near duplicates when they have the same size and at most this fraction of their
#: pixels differ by more than NATURAL_LEVELS in some channel (a pixel-aligned check at native size,
#: independent of the method under test).
NATURAL_FRACTION = 0.01
NATURAL_LEVELS = 8


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


def natural_groups(originals: list[str]) -> dict[str, int]:
    """Group id of each original: identical pixels, or natural near duplicates (see NATURAL_FRACTION), joined."""
    pixels = {p: decode_native(p).pixels.astype(np.int16) for p in originals}
    parent = list(range(len(originals)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, a in enumerate(originals):
        for j in range(i):
            b = originals[j]
            if pixels[a].shape == pixels[b].shape:
                differ = (np.abs(pixels[a] - pixels[b]).max(axis=2) > NATURAL_LEVELS).mean()
                if differ <= NATURAL_FRACTION:
                    parent[find(i)] = find(j)
    return {p: find(i) for i, p in enumerate(originals)}


def duplicates_benchmark(name: str, root: Path, truth: dict, pixel_threshold: float | None) -> tuple[dict, np.ndarray]:
    paths = truth["originals"] + [c["copy"] for c in truth["copies"]]
    splits = ["train"] * len(truth["originals"]) + [c["split"] for c in truth["copies"]]
    source = truth["originals"] + [c["original"] for c in truth["copies"]]
    # Strict truth: an injected copy and its original, and any two images whose originals have the same pixels,
    # closed under both. Natural truth: also originals that are natural near duplicates (NATURAL_FRACTION).
    root_hash = dict(zip(truth["originals"], hash_files(truth["originals"]).hashes))
    natural = natural_groups(truth["originals"])

    def closure(group):
        return {frozenset((paths[i], paths[j])) for i in range(len(paths)) for j in range(i) if group[i] == group[j]}

    pair_truth = closure([root_hash[p] for p in source])
    natural_truth = closure([natural[p] for p in source])
    leaky_truth = {p for p in pair_truth if len({splits[paths.index(q)] for q in p}) == 2}
    features, embed_seconds = frozen_features(paths)
    CACHE.mkdir(exist_ok=True)
    np.save(CACHE / f"{name}-features.npy", features)
    started = time.perf_counter()
    hashes = hash_files(paths)
    hash_seconds = time.perf_counter() - started

    def scored(found):
        strict, loose = score_pairs(found, pair_truth), score_pairs(found, natural_truth)
        return {**strict, "precision_natural": loose["precision"], "true_natural": loose["true"]}

    # Every candidate above CANDIDATE_THRESHOLD with its local pixel difference, once; then sweep the threshold.
    candidates = find_duplicates(
        features, CANDIDATE_THRESHOLD, hashes=hashes.hashes, thumbnails=hashes.thumbnails, max_pixel_difference=np.inf
    )
    pair_sets = [frozenset((paths[a], paths[b])) for a, b in candidates.pairs]
    sweep = {}
    for t in PIXEL_THRESHOLDS:
        keep = candidates.exact | (candidates.pixel_difference <= t)
        sweep[float(t)] = scored({p for p, k in zip(pair_sets, keep) if k})
    if pixel_threshold is None:
        # Tune: the highest recall at natural precision >= 0.95; at equal recall the most tolerant threshold.
        good = [t for t, s in sweep.items() if s["precision_natural"] >= 0.95]
        pixel_threshold = max(good, key=lambda t: (sweep[t]["recall"], t)) if good else min(sweep)
    started = time.perf_counter()
    report = find_duplicates(
        features, CANDIDATE_THRESHOLD, paths=paths, splits=splits, hashes=hashes.hashes, sizes=hashes.sizes,
        thumbnails=hashes.thumbnails, max_pixel_difference=pixel_threshold,
    )  # fmt: skip
    search_seconds = time.perf_counter() - started
    found = {frozenset((paths[a], paths[b])) for a, b in report.pairs}
    result = {
        "candidate_threshold": CANDIDATE_THRESHOLD,
        "pixel_threshold": pixel_threshold,
        "candidates": len(candidates),
        "candidate_recall": score_pairs(set(pair_sets), pair_truth)["recall"],
        "pixel_sweep": sweep,
        "natural_pairs": sorted(sorted(p) for p in natural_truth - pair_truth),
    }
    result["lookalike"] = {
        **scored(found),
        "seconds": embed_seconds + hash_seconds + search_seconds,
        "seconds_embed": embed_seconds,
        "seconds_hash_and_thumbnails": hash_seconds,
        "seconds_search_and_verify": search_seconds,
    }
    unverified = find_duplicates(features, DEFAULT_THRESHOLD, paths=paths, hashes=hashes.hashes)
    result[f"lookalike frozen features only (cosine {DEFAULT_THRESHOLD}, no verification)"] = scored(
        {frozenset((paths[a], paths[b])) for a, b in unverified.pairs}
    )
    frame = report.to_frame()
    leaky_found = {frozenset(p) for p in frame.loc[frame.cross_split, ["path_a", "path_b"]].itertuples(index=False)}
    result["lookalike"]["leaky_recall"] = len(leaky_found & leaky_truth) / len(leaky_truth)
    result["lookalike"]["leaky_pairs"] = len(leaky_truth)
    result["lookalike"]["recall_by_kind"] = {
        kind: float(
            np.mean([frozenset((c["original"], c["copy"])) in found for c in truth["copies"] if c["kind"] == kind])
        )
        for kind in TRANSFORMS
    }
    false = [sorted(p) for p in found - natural_truth]
    result["lookalike"]["false_pairs"] = false
    result["lookalike"]["missed_pairs"] = [sorted(p) for p in pair_truth - found]
    result["lookalike"]["truth_pairs"] = len(pair_truth)
    result["lookalike"]["injected_pairs"] = len(truth["copies"])
    result["lookalike"]["false_pairs_same_class"] = int(
        sum(Path(a).parent.name == Path(b).parent.name for a, b in false)
    )
    scan_root = root / name / "dups"
    for method_name, method in imagededup_hashing().items():
        for t in (10, 4):
            pairs, seconds = run_imagededup(scan_root, method, t)
            result[f"imagededup {method_name} (max distance {t})"] = {**scored(pairs), "seconds": seconds}
    result["imagededup CNN"] = (
        "not run: needs torchvision and its ImageNet weights (no CPU torchvision build, no internet)"
    )
    lab, seconds = run_cleanvision(paths, {"exact_duplicates": {}, "near_duplicates": {}})
    sets = lab.info["exact_duplicates"]["sets"] + lab.info["near_duplicates"]["sets"]
    pairs = {frozenset((a, b)) for group in sets for a in group for b in group if a != b}
    result["CleanVision near+exact duplicates"] = {**scored(pairs), "seconds": seconds}
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


def scale_benchmark(n: int, seed: int, threshold: float = 0.9, sample: int = 1000) -> dict:
    """Near duplicates among ``n`` real-derived embeddings by IVF range search, timed, with the recall of its
    pairs against exact range search for ``sample`` random queries.

    The vectors are the frozen features of the shared datasets' images (both datasets, cached by the duplicate
    part) plus Gaussian noise (cosine about 0.7 to their image), and 1 % of them planted near copies of others.
    Timed both as wall-clock seconds and as process CPU seconds (all threads), since the machine is shared.
    """
    features = [np.load(p) for p in sorted(CACHE.glob("*-features.npy"))]
    if not features:
        raise SystemExit(f"no cached features in {CACHE}: run the duplicate part first")
    features = np.concatenate(features)
    rng = np.random.default_rng(seed)
    result = {"n": n, "threshold": threshold, "real_images": len(features)}
    for dim in (256, features.shape[1]):
        base = features[:, :dim] / np.linalg.norm(features[:, :dim], axis=1, keepdims=True)
        noise = rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(dim)
        vectors = base[rng.integers(0, len(base), n)] + noise
        planted = rng.choice(n, n // 100, replace=False)
        half = len(planted) // 2
        copies = 0.1 * rng.standard_normal((half, dim)).astype(np.float32) / np.sqrt(dim)
        vectors[planted[:half]] = vectors[planted[half:]] + copies
        vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
        wall, cpu = time.perf_counter(), time.process_time()
        pairs, _ = find_near_duplicates(vectors, threshold=threshold, method="ivf", seed=seed)
        row = {"ivf_seconds": time.perf_counter() - wall, "ivf_cpu_seconds": time.process_time() - cpu}
        row["pairs"] = len(pairs)
        found = set(map(tuple, pairs.tolist()))
        queries = rng.choice(n, sample, replace=False)
        exact = faiss.IndexFlatIP(dim)
        exact.add(vectors)
        lims, _, ids = exact.range_search(vectors[queries], threshold)
        truth = {
            (min(q, j), max(q, j))
            for q, lo, hi in zip(queries.tolist(), lims[:-1], lims[1:])
            for j in ids[lo:hi].tolist()
            if j != q
        }
        row["exact_pairs_of_sample"] = len(truth)
        row["recall_of_sample"] = len(truth & found) / max(len(truth), 1)
        row["planted_recall"] = float(
            np.mean([(min(a, b), max(a, b)) in found for a, b in zip(planted[:half].tolist(), planted[half:].tolist())])
        )
        result[f"d={dim}"] = row
        logging.info("scale n=%d d=%d: %s", n, dim, row)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-dataset", type=int, default=300)
    parser.add_argument("--scale", type=int, default=100_000, help="embeddings of the timing run; 0 skips it")
    parser.add_argument("--skip-datasets", action="store_true", help="only the timing run (keeps the rest of --out)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(Path(__file__).with_name("results.json")))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    if not args.skip_datasets:
        results.update({"per_dataset": args.per_dataset, "datasets": {}})
        threshold = None
        with tempfile.TemporaryDirectory() as scratch:
            root = Path(scratch)
            for name, source in DATASETS.items():
                truth = build_dataset(name, source, root, args.per_dataset, args.seed)
                logging.info("%s: %d originals, %d copies", name, len(truth["originals"]), len(truth["copies"]))
                dups, _ = duplicates_benchmark(name, root, truth, threshold)
                threshold = dups["pixel_threshold"]  # chosen on the first dataset, confirmed on the second
                quality = quality_benchmark(root, name, truth)
                results["datasets"][name] = {"duplicates": dups, "quality": quality}
                summary = {k: v for k, v in dups.items() if k not in ("pixel_sweep", "natural_pairs")}
                logging.info("%s: %s", name, json.dumps(summary, default=str)[:3000])
                logging.info("%s quality: %s", name, json.dumps(quality))
                out.write_text(json.dumps(results, indent=1, default=str))
    if args.scale:
        results["scale"] = scale_benchmark(args.scale, args.seed)
    out.write_text(json.dumps(results, indent=1, default=str))
    logging.info("wrote %s", out)


if __name__ == "__main__":
    main()
