"""Fast ablations of the head on cached backbone features: seeds, head ensembles, flip averaging, open-set scores.

With ``fine_tune_blocks=0`` (the default) a trained embedding is ``head(pooled backbone features)``, so the protocol
of ``run.py`` (same datasets, unknown characters, few-shot split, query kinds and frozen features) can be replayed
without the LiteRT export and the bundle: the head is trained by ``lookalike.embedder.training._fit`` on the
training images and their augmented views (encoded once, cached), and queried in NumPy, all without crop to content
(``crop_to_content=False``, as the frozen backbone's cached features are). Nearest character = best
image per character (``run.frozen_answers``, for every setup), as in ``run.py``; the numbers agree with ``run.py``'s
to a few queries (Keras instead of LiteRT, another draw of views).

Setups (``--seeds`` heads, each alone and together):

- ``seed<i>``: one head, ``EmbedderConfig(seed=i)``;
- ``ensemble``: the seeds' heads, their embeddings concatenated (cosine = mean of the heads' cosines);
- ``+flip``: each image's embedding averaged with its mirror image's (test-time augmentation), on the query side
  (``qflip``), the index side (``iflip``) or both (``flip``);
- open-set scores of each seed's head, AUROC known (as-is queries) against unknown characters, other datasets'
  images and (when ``build_datasets.py`` has written them) photo crops, and the shares accepted at the threshold
  that accepts 95 % of the known as-is queries, with the known characters' queries of the other 15 kinds:
  ``best-image`` (similarity to the most similar indexed image), ``centroid`` (to the nearest class
  centroid), ``knn3`` (to the 3rd most similar image, Sun et al. 2022, arXiv:2204.06507), ``max-softmax``
  (Hendrycks & Gimpel 2017), ``energy`` (Liu et al. 2020, arXiv:2010.03759), ``relative-mahalanobis`` (Ren
  et al. 2021, arXiv:2106.09022), ``frozen-centroid`` (the centroid score on the pooled backbone features) and
  ``centroid+frozen`` (the sum of the trained and the frozen centroid similarities, per class; the same ranking as
  their mean), ``centroid+frozen/4`` (the frozen one at a quarter of the weight: 0.8 and 0.2) and
  ``centroid+colour/4``, ``centroid+colour`` (the centroid similarity plus, at weight 0.25 or 1, the colour
  similarity to the class's most similar indexed image: Bhattacharyya coefficient of HSV histograms of the
  non-white pixels, :func:`colour_histograms`), a test of whether colour tells unknown palette variants from
  known characters.

    python benchmarks/generalisation/head_ablation.py                    # every dataset, seeds 0 1 2
    python benchmarks/generalisation/head_ablation.py --datasets freedink --seeds 0

Results go to ``head_ablation.json`` beside this script (one key per dataset).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.special import logsumexp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # the benchmark's protocol, variants and cached frozen features

FEATURES = run.CACHE / "head_ablation"


def _cached(key: str, compute) -> np.ndarray:
    path = FEATURES / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.npy"
    if path.exists():
        return np.load(path)
    FEATURES.mkdir(parents=True, exist_ok=True)
    values = compute()
    np.save(path, values)
    return values


def mirrored_features(encoder, paths: list[Path]) -> np.ndarray:
    """Pooled backbone features of the mirror images: float32 ndarray of shape (n, 1280)."""
    from lookalike.data import load_image

    def compute():
        images = np.stack([load_image(p, run.SIZE)[:, ::-1] for p in paths])
        return encoder.encode(images)

    return _cached("mirror" + run.files_digest(paths), compute)


def training_views(config, paths: list[Path]) -> np.ndarray:
    """Pooled features of ``config.augment_views`` augmented views per image: float32 ndarray (v, n, 1280)."""
    from lookalike.embedder import Embedder

    augmentation = {k: v for k, v in config.to_dict().items() if k.startswith("augment") or k in ("rotation", "zoom")}
    if config.crop_to_content:  # part of the key only when on, so the views cached before the setting stay valid
        augmentation["crop_to_content"] = True

    def compute():
        encoded = Embedder.build(config, ["a", "b"]).encode_files(paths, augment_views=config.augment_views)
        if len(encoded.indices) != len(paths):
            raise RuntimeError(f"unreadable training images: {encoded.failures}")
        return encoded.views

    return _cached(json.dumps(augmentation, sort_keys=True) + str(config.seed) + run.files_digest(paths), compute)


def l2(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def colour_histograms(paths: list[Path], hue_bins: int = 12, sat_bins: int = 3, gray_bins: int = 4) -> np.ndarray:
    """Colour descriptors of images: float32 (n, hue_bins * sat_bins + gray_bins), unit L2 norm.

    The HSV histogram of an image's pixels that are not white (any channel <= 242; the datasets' sprites are on
    white), at 64 x 64 px: hue x saturation bins for pixels of saturation >= 40 (of 255), value bins for the
    greys; square-rooted, so the dot product of two descriptors is the Bhattacharyya coefficient of the histograms.
    """
    from PIL import Image

    out = np.zeros((len(paths), hue_bins * sat_bins + gray_bins), np.float32)
    for i, path in enumerate(paths):
        rgb = np.asarray(Image.open(path).convert("RGB").resize((64, 64), Image.BILINEAR))
        hsv = np.asarray(Image.fromarray(rgb).convert("HSV")).reshape(-1, 3).astype(np.int32)
        mask = ~(rgb.reshape(-1, 3) > 242).all(axis=1)
        if not mask.any():
            mask[:] = True
        h, s, v = hsv[mask, 0], hsv[mask, 1], hsv[mask, 2]
        chroma = s >= 40
        hue = np.minimum(h * hue_bins // 256, hue_bins - 1)
        saturation = np.minimum((s - 40) * sat_bins // 216, sat_bins - 1)
        grey = np.minimum(v * gray_bins // 256, gray_bins - 1)
        counts = np.concatenate(
            [
                np.bincount(hue[chroma] * sat_bins + saturation[chroma], minlength=hue_bins * sat_bins),
                np.bincount(grey[~chroma], minlength=gray_bins),
            ]
        ).astype(np.float32)
        out[i] = np.sqrt(counts / counts.sum())
    return out


def class_means(x: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Mean of each class's rows: float ndarray of shape (classes, d)."""
    return np.stack([x[codes == c].mean(axis=0) for c in range(codes.max() + 1)])


def relative_mahalanobis(index: np.ndarray, codes: np.ndarray):
    """Relative Mahalanobis score (Ren et al. 2021, arXiv:2106.09022) fitted on the indexed embeddings.

    Class means with one shared covariance, and one Gaussian of all indexed embeddings as the background, both
    Ledoit-Wolf shrunk (few images per class); a query's score is minus its smallest class distance less its
    background distance. Returns a function of queries (n, d) giving float ndarray scores of shape (n,).
    """
    from sklearn.covariance import LedoitWolf

    means = class_means(index, codes)
    precision = LedoitWolf().fit(index - means[codes]).precision_
    centre = index.mean(axis=0)
    background = LedoitWolf().fit(index - centre).precision_

    def score(queries: np.ndarray) -> np.ndarray:
        diff = queries[:, None, :] - means[None]
        distances = np.einsum("ncd,de,nce->nc", diff, precision, diff)
        offset = np.einsum("nd,de,ne->n", queries - centre, background, queries - centre)
        return -(distances - offset[:, None]).min(axis=1)

    return score


def open_set_scorer(head, raw_index: np.ndarray, codes: np.ndarray, colour_index: np.ndarray):
    """Open-set scores of one head, fitted on the indexed images' pooled features ``raw_index`` (n, 1280) and
    colour descriptors ``colour_index`` (n, d) (:func:`colour_histograms`).

    Returns a function of queries' pooled features (m, 1280) and colour descriptors (m, d) giving a dict of float
    ndarrays of shape (m,).
    """
    from lookalike.index.centroids import ClassCentroids

    kernel, bias = head.softmax_weights()
    index = head.head_outputs(raw_index)[0]
    n_classes = codes.max() + 1
    centroids = ClassCentroids.fit(index, codes, n_classes)
    frozen_centroids = ClassCentroids.fit(l2(raw_index), codes, n_classes)
    mahalanobis = relative_mahalanobis(index, codes)

    def scores(features: np.ndarray, colours: np.ndarray) -> dict[str, np.ndarray]:
        embedding, probabilities = head.head_outputs(features)
        similar = colours @ colour_index.T  # (m, n): per class, its most similar image
        colour = np.stack([similar[:, codes == c].max(axis=1) for c in range(n_classes)], axis=1)
        similarity = np.sort(embedding @ index.T, axis=1)
        logits = head.config.logit_scale * embedding @ kernel + bias
        centroid = centroids.similarities(embedding)
        frozen = frozen_centroids.similarities(l2(features))
        return {
            "best-image": similarity[:, -1],
            "centroid": centroid.max(axis=1),
            "knn3": similarity[:, -3],
            "max-softmax": probabilities.max(axis=1),
            "energy": logsumexp(logits, axis=1),
            "relative-mahalanobis": mahalanobis(embedding),
            "frozen-centroid": frozen.max(axis=1),
            "centroid+frozen": (centroid + frozen).max(axis=1),
            "centroid+frozen/4": (centroid + frozen / 4).max(axis=1),
            "centroid+colour/4": (centroid + colour / 4).max(axis=1),
            "centroid+colour": (centroid + colour).max(axis=1),
        }

    return scores


def run_dataset(name: str, roots: dict, seeds: list[int], foreign_count: int) -> dict:
    from lookalike.embedder import Embedder, EmbedderConfig
    from lookalike.embedder.training import _fit

    spec = run.protocol(name, roots[name], 5)
    classes = sorted({label for _, label in spec.train})
    codes = np.array([classes.index(label) for _, label in spec.train])
    test_codes = np.array([classes.index(label) for _, label in spec.test])
    train_paths = [p for p, _ in spec.train]
    kinds = run.KINDS + run.HELD_OUT_KINDS
    variants = {kind: run.write_variants(name, kind, [p for p, _ in spec.test], []) for kind in kinds}
    unknown = run.write_variants(name, "as-is", [p for p, _ in spec.unknown], [])
    foreign = run.write_variants("foreign", "as-is", run.foreign_queries(roots, name, foreign_count), [])
    raw = {kind: run.frozen_raw_features(paths, f"{name} {kind}") for kind, paths in variants.items()}
    raw |= {
        "index": run.frozen_raw_features(train_paths, f"{name} index"),
        "unknown": run.frozen_raw_features(unknown, f"{name} unknown"),
        "foreign": run.frozen_raw_features(foreign, f"{name} foreign"),
    }
    photos = run.photo_queries()
    if photos:
        raw["photo"] = run.frozen_raw_features(photos, "photos")
    # The frozen backbone's features (run.frozen_raw_features) are of uncropped images, so the heads are trained and
    # queried without crop to content too; for the kinds it changes (small-white), run.py has the product's answers.
    config = EmbedderConfig(crop_to_content=False)
    encoder = Embedder.build(config, ["a", "b"])
    paths = dict(variants, index=train_paths, unknown=unknown, foreign=foreign)
    mirrored = {key: mirrored_features(encoder, p) for key, p in paths.items()}
    colours = {key: colour_histograms(p) for key, p in dict(paths, photo=photos).items() if p}
    views = training_views(config, train_paths)

    heads = []
    for seed in seeds:
        embedder = Embedder.build(dataclasses.replace(config, seed=seed), classes)
        x = np.concatenate([raw["index"], *views])
        y = np.tile(codes, 1 + len(views))
        options = {"epochs": config.epochs, "learning_rate": config.learning_rate, "config": config, "progress": False}
        _fit(embedder.head, x, y, None, phase="head", log_dir=None, callbacks=(), **options)
        heads.append(embedder)

    def embed(members, key, flip):
        parts = []
        for member in members:
            embedding = member.head_outputs(raw[key])[0]
            if flip:
                embedding = l2(embedding + member.head_outputs(mirrored[key])[0])
            parts.append(embedding)
        return l2(np.concatenate(parts, axis=1))

    setups = {"frozen": (None, False, False)}
    for i, seed in enumerate(seeds):
        for suffix, index_flip, query_flip in (("", 0, 0), ("+flip", 1, 1), ("+qflip", 0, 1), ("+iflip", 1, 0)):
            setups[f"seed{seed}{suffix}"] = ([heads[i]], index_flip, query_flip)
    if len(heads) > 1:
        setups["ensemble"], setups["ensemble+flip"] = (heads, False, False), (heads, True, True)
    accuracy = {}
    for setup, (members, index_flip, query_flip) in setups.items():
        if members is None:
            index, queries = l2(raw["index"]), {kind: l2(raw[kind]) for kind in kinds}
        else:
            index = embed(members, "index", index_flip)
            queries = {kind: embed(members, kind, query_flip) for kind in kinds}
        row = {kind: float(np.mean(run.frozen_answers(index, codes, queries[kind])[0] == test_codes)) for kind in kinds}
        row["mean over kinds"] = float(np.mean([row[kind] for kind in run.KINDS]))
        row["mean over held-out kinds"] = float(np.mean([row[kind] for kind in run.HELD_OUT_KINDS]))
        accuracy[setup] = row

    open_set = {}
    for seed, head in zip(seeds, heads):
        scores = open_set_scorer(head, raw["index"], codes, colours["index"])
        known = scores(raw["as-is"], colours["as-is"])
        negatives = {key: scores(raw[key], colours[key]) for key in ("unknown", "foreign", "photo") if key in raw}
        transformed = {kind: scores(raw[kind], colours[kind]) for kind in kinds if kind != "as-is"}
        open_set[f"seed{seed}"] = {}
        for score in known:
            # At the threshold that accepts 95 % of the known as-is queries (the bundle's nominal quantile): the
            # negatives accepted, and the known characters' queries of the other 15 kinds accepted (mean of kinds).
            threshold = np.quantile(known[score], 0.05)
            entry = {f"auroc_{kind}": run.auroc(known[score], values[score]) for kind, values in negatives.items()}
            entry |= {
                f"accepted_{kind}": float(np.mean(values[score] >= threshold)) for kind, values in negatives.items()
            }
            accepted = {kind: float(np.mean(t[score] >= threshold)) for kind, t in transformed.items()}
            entry["accepted_known_other_kinds"] = float(np.mean(list(accepted.values())))
            entry["accepted_known_by_kind"] = accepted
            open_set[f"seed{seed}"][score] = entry
    return {"accuracy": accuracy, "open_set": open_set}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", help="dataset names (default: every available one)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="head seeds (default 0 1 2)")
    parser.add_argument("--foreign", type=int, default=150, help="images of other datasets as queries (default 150)")
    parser.add_argument("--out", type=Path, default=run.HERE / "head_ablation.json")
    args = parser.parse_args()
    roots, all_roots = run.dataset_roots(args.datasets), run.dataset_roots(None)
    stored = json.loads(args.out.read_text()) if args.out.exists() else {}
    for name in roots:
        started = time.perf_counter()
        result = run_dataset(name, all_roots, args.seeds, args.foreign)
        result["seconds"] = time.perf_counter() - started
        stored[name] = result
        args.out.write_text(json.dumps(stored, indent=2))
        print(
            f"== {name} ({result['seconds']:.0f} s)\n"
            + "setup".ljust(16)
            + " ".join(k[:8].rjust(8) for k in result["accuracy"]["frozen"])
        )
        for setup, row in result["accuracy"].items():
            print(setup.ljust(16) + " ".join(f"{v:8.3f}" for v in row.values()))
        for seed, scores in result["open_set"].items():
            print(
                f"open set, {seed} (AUROC unknown / other datasets; accepted known of the other kinds / other "
                "datasets): "
                + ", ".join(
                    f"{s} {v['auroc_unknown']:.3f}/{v['auroc_foreign']:.3f}; "
                    f"{v['accepted_known_other_kinds']:.2f}/{v['accepted_foreign']:.2f}"
                    for s, v in scores.items()
                )
            )
    print(f"results in {args.out}")


if __name__ == "__main__":
    main()
