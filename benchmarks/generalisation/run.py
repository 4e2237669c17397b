"""Generalisation benchmark (issue 11): lookalike beside the frozen ImageNet backbone, per kind of query.

Per dataset, in one run:

1. **unknown characters**: about 22 % of the characters (``numpy.random.default_rng(0)`` over the sorted names)
   are kept out of training and out of the index entirely; they are open-set queries;
2. **few-shot split** of the others (``../shared/datasets/README.md``): per character, sorted file names
   reordered with ``numpy.random.default_rng(0).permutation(n)``, the first 6 for training, the rest for testing;
3. **lookalike** is trained as ``lookalike train FOLDER`` does with no options, on a folder holding only the
   training images: ``Bundle.train(load_folder(FOLDER, val_fraction=0.2, seed=0))`` with the default
   ``EmbedderConfig`` (``--config KEY=VALUE`` overrides settings, for ablations);
4. **queries**: up to ``--per-character`` test images per known character (test order), each in every
   query kind of :data:`KINDS` (made deterministically with Pillow, cached under
   ``~/.cache/lookalike/bench/variants/``); "as-is" is another frame of the character (another pose);
   open-set queries are as-is images of the unknown characters and of the other datasets; the query kinds of
   :data:`HELD_OUT_KINDS` (blurred, noisy, dark, small in the frame, photographed at an angle) were added after
   every setting had been chosen, and are reported apart as a check on kinds lookalike was not tuned on;
5. **answers**: lookalike through ``Bundle.query`` (nearest character by its best image, softmax, k-NN vote,
   nearest centroid); the frozen backbone (224 px, global average pooling, L2-normalised, cosine) by its
   nearest character by best image, i.e. 1-NN over the same indexed images. Frozen features are cached under
   ``~/.cache/lookalike/bench/frozen/`` keyed by the SHA-256 of the image files;
6. **open set**: AUROC (scikit-learn ``roc_auc_score``) of the match score, known (as-is test images of
   indexed characters) against unknown characters and against other datasets' images; and the acceptance
   rates at a threshold. lookalike: its ``QueryResult.match_score`` (similarity to the nearest class centroid)
   and the bundle's own "no close match" threshold (``Bundle.open_set``, calibrated when it was trained); its
   best-character similarity's AUROC is kept too (``auroc_unknown_best_image``), and per unknown character the
   share accepted and the known character it is most often matched to (``unknown_by_character``). Frozen
   backbone: the best-character similarity and the 5th percentile of the indexed images' leave-one-out best
   similarity.

    python benchmarks/generalisation/run.py                        # every dataset, today's defaults
    python benchmarks/generalisation/run.py --datasets freedroidrpg --config fine_tune_blocks=0 --name frozen

Results go to ``results.json`` beside this script, under ``--name`` (default ``"defaults"``).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps
from sklearn.metrics import roc_auc_score
from tqdm.auto import tqdm

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[2] / "shared" / "datasets"
CACHE = Path(os.environ.get("LOOKALIKE_BENCH_CACHE", Path.home() / ".cache" / "lookalike" / "bench"))
BUILT = Path.home() / ".cache" / "lookalike" / "datasets"
#: Datasets never used (their art is reserved for other purposes).
EXCLUDED = ("supertux", "flare")
KINDS = (
    "as-is",
    "grayscale",
    "recoloured",
    "sketch",
    "low-res",
    "jpeg",
    "background",
    "cropped",
    "mirrored",
    "rotated",
)
#: Query kinds added after every setting was chosen (2026-11-22, third round): a check on kinds of query that
#: lookalike was not tuned on, reported apart, not in the mean over kinds. "small-white" has since been used to
#: choose crop_to_content (same day), so it no longer counts as held out; the other five do.
HELD_OUT_KINDS = ("blur", "noise", "dark", "small-busy", "small-white", "perspective")
#: Version of the variant recipes: part of the cache key, bump it when a recipe changes.
VARIANTS_VERSION = 2
SIZE = 224
TRAIN_PER_CHARACTER = 6
UNKNOWN_FRACTION = 0.22


@dataclass(frozen=True)
class Protocol:
    """Files and labels of one dataset's benchmark (labels are character names)."""

    name: str
    train: list[tuple[Path, str]]
    test: list[tuple[Path, str]]  # as-is originals of the query images, known characters
    unknown: list[tuple[Path, str]]  # as-is originals, unknown characters
    unknown_characters: list[str]


def dataset_roots(names: list[str] | None) -> dict[str, Path]:
    """Benchmark datasets: the shared ones and those built into ~/.cache/lookalike/datasets/."""
    roots = {p.name: p for p in sorted(SHARED.iterdir()) if p.is_dir()} if SHARED.is_dir() else {}
    if BUILT.is_dir():
        roots |= {p.name: p for p in sorted(BUILT.iterdir()) if p.is_dir() and p.name not in ("backgrounds", "photos")}
    roots = {n: p for n, p in roots.items() if not any(x in n.lower() for x in EXCLUDED)}
    if names:
        missing = sorted(set(names) - set(roots))
        if missing:
            raise SystemExit(f"unknown datasets {missing}; available: {sorted(roots)}")
        roots = {n: roots[n] for n in names}
    return roots


def character_files(root: Path) -> dict[str, list[Path]]:
    from lookalike.data.dataset import _class_images

    return _class_images(root)


def protocol(name: str, root: Path, per_character: int) -> Protocol:
    """The unknown characters, the few-shot split of the others and the query originals (deterministic)."""
    characters = character_files(root)
    names = sorted(characters)
    n_unknown = round(UNKNOWN_FRACTION * len(names))
    unknown = sorted(names[i] for i in np.random.default_rng(0).permutation(len(names))[:n_unknown])
    train, test, unknown_queries = [], [], []
    for label in names:
        files = characters[label]
        order = [files[i] for i in np.random.default_rng(0).permutation(len(files))]
        if label in unknown:
            unknown_queries += [(p, label) for p in order[:per_character]]
        else:
            train += [(p, label) for p in order[:TRAIN_PER_CHARACTER]]
            test += [(p, label) for p in order[TRAIN_PER_CHARACTER:][:per_character]]
    return Protocol(name, train, test, unknown_queries, unknown)


def photo_queries() -> list[Path]:
    """Crops of photographs (``build_datasets.py`` writes them to ``~/.cache/lookalike/datasets/photos``), off-topic
    queries for the open set; none when they have not been built."""
    return sorted((BUILT / "photos").glob("*.png"))


def foreign_queries(roots: dict[str, Path], own: str, n: int) -> list[Path]:
    """``n`` images of the other datasets (as-is), taken round-robin over their characters, seeded."""
    pool = []
    for name, root in roots.items():
        if name != own:
            for files in character_files(root).values():
                pool.append(files[int(np.random.default_rng(0).integers(len(files)))])
    pool.sort()
    return [pool[i] for i in np.random.default_rng(1).permutation(len(pool))[:n]]


# ---------------------------------------------------------------------------------------------------- variants


def _rng(*key) -> np.random.Generator:
    digest = hashlib.sha256("/".join(map(str, key)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _busy_background(rng: np.random.Generator, backgrounds: list[Path]) -> Image.Image:
    """A photo from ``backgrounds`` (random crop) or, without photos, random shapes, gradients and noise."""
    if backgrounds:
        with Image.open(backgrounds[int(rng.integers(len(backgrounds)))]) as photo:
            return ImageOps.fit(photo.convert("RGB"), (SIZE, SIZE), centering=tuple(rng.uniform(0, 1, 2)))
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    a, b = rng.uniform(0, 255, (2, 3))
    t = (x * rng.uniform(-1, 1) + y * rng.uniform(-1, 1))[..., None]
    image = Image.fromarray(np.clip(a + (b - a) * t, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(15, 40))):
        box = sorted(rng.integers(-40, SIZE + 40, 2)), sorted(rng.integers(-40, SIZE + 40, 2))
        shape = [box[0][0], box[1][0], box[0][1], box[1][1]]
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(shape, fill=colour)
    noise = rng.normal(0, 12, (SIZE, SIZE, 3))
    return Image.fromarray(
        np.clip(np.asarray(image.filter(ImageFilter.GaussianBlur(1.5))) + noise, 0, 255).astype(np.uint8)
    )


def _placed(image: Image.Image, rng: np.random.Generator, scale: tuple[float, float], frame) -> Image.Image:
    """The character of ``image`` (its non-white pixels), scaled to a random share ``scale`` of the side, pasted at a
    random place on ``frame()``."""
    pixels = np.asarray(image)
    mask = Image.fromarray(((pixels < 240).any(axis=2) * 255).astype(np.uint8)).filter(ImageFilter.MaxFilter(3))
    side = int(SIZE * rng.uniform(*scale))
    background = frame()
    offset = tuple(int(v) for v in rng.integers(0, SIZE - side + 1, 2))
    background.paste(image.resize((side, side)), offset, mask.resize((side, side)))
    return background


def make_variant(kind: str, image: Image.Image, rng: np.random.Generator, backgrounds: list[Path]) -> Image.Image:
    """One query kind of a 224 px RGB image on white (as :func:`lookalike.data.load_image` returns)."""
    if kind == "as-is":
        return image
    if kind == "grayscale":
        return ImageOps.grayscale(image).convert("RGB")
    if kind == "recoloured":
        h, s, v = image.convert("HSV").split()
        shift = int(rng.uniform(0.25, 0.75) * 255)
        h = h.point(lambda value: (value + shift) % 256)
        return Image.merge("HSV", (h, s, v)).convert("RGB")
    if kind == "sketch":
        edges = ImageOps.grayscale(image).filter(ImageFilter.FIND_EDGES)
        edges = ImageOps.expand(edges.crop((1, 1, SIZE - 1, SIZE - 1)), 1, fill=0)  # no frame from the border
        lines = ImageOps.invert(ImageOps.autocontrast(edges, cutoff=1)).filter(ImageFilter.MinFilter(3))
        return lines.convert("RGB")
    if kind == "low-res":
        side = int(rng.integers(24, 33))
        return image.resize((side, side), Image.Resampling.BOX)
    if kind == "jpeg":
        return image  # written with JPEG quality 10 by write_variants
    if kind == "background":
        return _placed(image, rng, (0.6, 0.85), lambda: _busy_background(rng, backgrounds))
    if kind == "cropped":
        side = int(SIZE * rng.uniform(0.55, 0.75))
        left, top = (int(v) for v in rng.integers(0, SIZE - side + 1, 2))
        return image.crop((left, top, left + side, top + side))
    if kind == "mirrored":
        return ImageOps.mirror(image)
    if kind == "rotated":
        angle = rng.uniform(20, 40) * rng.choice([-1, 1])
        return image.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=(255, 255, 255))
    if kind == "blur":  # out of focus
        return image.filter(ImageFilter.GaussianBlur(rng.uniform(2.5, 4.0)))
    if kind == "noise":  # a noisy webcam
        noisy = np.asarray(image, np.float32) + rng.normal(0, rng.uniform(25, 40), (SIZE, SIZE, 3))
        return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    if kind == "dark":  # under-exposed, low contrast
        image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.35, 0.55))
        return ImageEnhance.Contrast(image).enhance(rng.uniform(0.6, 0.8))
    if kind == "small-busy":  # the character at 30-50 % of the frame, anywhere in it
        return _placed(image, rng, (0.3, 0.5), lambda: _busy_background(rng, backgrounds))
    if kind == "small-white":
        return _placed(image, rng, (0.3, 0.5), lambda: Image.new("RGB", (SIZE, SIZE), "white"))
    if kind == "perspective":  # a photo of a screen or a print: skewed, grey surround, dimmer, soft
        corners = np.array([[0, 0], [SIZE, 0], [SIZE, SIZE], [0, SIZE]], float)
        moved = corners + rng.uniform(-1, 1, (4, 2)) * SIZE * rng.uniform(0.08, 0.18)
        rows = []
        for (x, y), (u, v) in zip(moved, corners):
            rows += [[x, y, 1, 0, 0, 0, -u * x, -u * y, u], [0, 0, 0, x, y, 1, -v * x, -v * y, v]]
        rows = np.array(rows)
        coefficients = np.linalg.solve(rows[:, :8], rows[:, 8])  # output pixel -> input pixel, as Pillow wants
        image = image.transform(
            (SIZE, SIZE),
            Image.Transform.PERSPECTIVE,
            tuple(coefficients),
            Image.Resampling.BILINEAR,
            fillcolor=(200,) * 3,
        )
        return ImageEnhance.Brightness(image).enhance(rng.uniform(0.7, 0.9)).filter(ImageFilter.GaussianBlur(1.0))
    raise ValueError(f"unknown query kind {kind!r}; allowed: {', '.join(KINDS + HELD_OUT_KINDS)}")


def write_variants(dataset: str, kind: str, files: list[Path], backgrounds: list[Path]) -> list[Path]:
    """The ``kind`` variant of each file, written once under the cache and reused (deterministic per file)."""
    from lookalike.data import load_image

    folder = CACHE / "variants" / f"v{VARIANTS_VERSION}" / dataset / kind
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for path in files:
        target = folder / f"{path.parent.name}__{path.stem}.{'jpg' if kind == 'jpeg' else 'png'}"
        if not target.exists():
            image = Image.fromarray(load_image(path, SIZE))
            variant = make_variant(kind, image, _rng(kind, path.parent.name, path.name), backgrounds)
            partial = target.with_name(f".{target.stem}.{os.getpid()}.partial{target.suffix}")
            variant.save(partial, **({"format": "JPEG", "quality": 10} if kind == "jpeg" else {"format": "PNG"}))
            os.replace(partial, target)
        out.append(target)
    return out


# ---------------------------------------------------------------------------------------------------- features


_FROZEN = None


def frozen_features(paths: list[Path], desc: str) -> np.ndarray:
    """Frozen ImageNet MobileNetV2 (224 px, global average pooling) features, L2-normalised, cached by content.

    Returns
    -------
    float32 ndarray of shape (len(paths), 1280), L2-normalised
    """
    features = frozen_raw_features(paths, desc)
    return features / np.linalg.norm(features, axis=1, keepdims=True)


def files_digest(paths: list[Path], salt: bytes = b"") -> str:
    """SHA-256 (hex) of ``salt`` followed by the bytes of every file, in order: a cache key of their content."""
    digest = hashlib.sha256(salt)
    for path in paths:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()


def frozen_raw_features(paths: list[Path], desc: str) -> np.ndarray:
    """As :func:`frozen_features`, not normalised: float32 ndarray of shape (len(paths), 1280)."""
    global _FROZEN
    cached = CACHE / "frozen" / f"{files_digest(paths, b'mobilenet_v2-224-gap-raw')[:32]}.npy"
    if cached.exists():
        return np.load(cached)
    from lookalike.embedder import Embedder, EmbedderConfig

    if _FROZEN is None:
        # The baseline as issue 11 defines it: the image as it is, padded and resized, no crop to content.
        _FROZEN = Embedder.build(EmbedderConfig(fine_tune_blocks=0, crop_to_content=False), ["a", "b"])
    encoded = _FROZEN.encode_files(paths, progress=tqdm(total=len(paths), desc=f"frozen {desc}", unit="img"))
    if len(encoded.indices) != len(paths):
        raise RuntimeError(
            f"{len(paths) - len(encoded.indices)} benchmark images could not be read: {encoded.failures}"
        )
    features = encoded.features.astype(np.float32)
    cached.parent.mkdir(parents=True, exist_ok=True)
    np.save(cached, features)
    return features


# ---------------------------------------------------------------------------------------------------- scoring


def threshold_of(embeddings: np.ndarray, percentile: float = 5.0) -> float:
    """``percentile`` of the indexed images' leave-one-out best similarity (to any other indexed image)."""
    similarity = embeddings @ embeddings.T
    np.fill_diagonal(similarity, -np.inf)
    return float(np.percentile(similarity.max(axis=1), percentile))


def auroc(known: np.ndarray, negative: np.ndarray) -> float | None:
    """AUROC of a match score with known queries as positives (None without negatives)."""
    if not len(negative):
        return None
    return float(roc_auc_score(np.r_[np.ones(len(known)), np.zeros(len(negative))], np.r_[known, negative]))


def _num(value: float | None, digits: int = 3) -> str:
    """``value`` with ``digits`` decimals, or a dash for None (not measured)."""
    return "-" if value is None else f"{value:.{digits}f}"


def open_set(
    known: np.ndarray, unknown: np.ndarray, foreign: np.ndarray, threshold: float, photo: np.ndarray | None = None
) -> dict:
    """AUROCs of a match score (known = positive) and acceptance rates at ``threshold``."""
    photo = np.empty(0) if photo is None else photo
    return {
        "auroc_unknown": auroc(known, unknown),
        "auroc_foreign": auroc(known, foreign),
        "auroc_photo": auroc(known, photo),
        "threshold": threshold,
        "accepted_known": float(np.mean(known >= threshold)),
        "accepted_unknown": float(np.mean(unknown >= threshold)) if len(unknown) else None,
        "accepted_foreign": float(np.mean(foreign >= threshold)) if len(foreign) else None,
        "accepted_photo": float(np.mean(photo >= threshold)) if len(photo) else None,
    }


def frozen_answers(index: np.ndarray, index_labels: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest character by best image (1-NN label) and its cosine similarity, for each query row."""
    similarity = queries @ index.T
    best = similarity.argmax(axis=1)
    return index_labels[best], similarity[np.arange(len(queries)), best]


def lookalike_answers(bundle, paths: list[Path], desc: str) -> dict[str, np.ndarray]:
    """Character, softmax, k-NN and centroid predictions, best-character similarity and the match score, via
    ``Bundle.query_files``."""
    out = {key: [] for key in ("character", "softmax", "knn", "centroid", "score", "match")}
    chunk = 128
    for start in tqdm(range(0, len(paths), chunk), desc=f"lookalike {desc}", unit="batch", leave=False):
        for result in bundle.query_files(paths[start : start + chunk], n_characters=1, k=1):
            out["character"].append(result.characters[0].label)
            out["score"].append(result.characters[0].score)
            out["match"].append(result.match_score)
            out["softmax"].append(result.predicted)
            out["knn"].append(result.knn_predicted)
            out["centroid"].append(result.centroid_predicted)
    return {key: np.asarray(values) for key, values in out.items()}


def unknown_by_character(labels: list[str], answers: dict[str, np.ndarray], threshold: float) -> dict[str, dict]:
    """Per unknown character: the share of its queries accepted at ``threshold``, its mean match score, and the
    known character its queries are most often matched to (where an unknown is a look-alike of a known one)."""
    labels = np.asarray(labels)
    out = {}
    for label in sorted(set(labels)):
        rows = labels == label
        names, counts = np.unique(answers["character"][rows], return_counts=True)
        out[label] = {
            "accepted": float(np.mean(answers["match"][rows] >= threshold)),
            "match_score": float(np.mean(answers["match"][rows])),
            "nearest": str(names[counts.argmax()]),
        }
    return out


def parse_config(pairs: list[str]):
    from lookalike.embedder import EmbedderConfig

    types = {f.name: f.type for f in dataclasses.fields(EmbedderConfig)}
    values = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in types:
            raise SystemExit(f"unknown EmbedderConfig setting {key!r}; allowed: {', '.join(types)}")
        kind = types[key] if isinstance(types[key], str) else types[key].__name__
        values[key] = {"int": int, "float": float, "bool": lambda v: v.lower() in ("1", "true", "yes"), "str": str}[
            kind.split(" ")[0]
        ](value)
    return EmbedderConfig(**values)


def run_dataset(name: str, roots: dict[str, Path], config, args, backgrounds: list[Path]) -> dict:
    from lookalike.bundle import Bundle
    from lookalike.data import load_folder

    spec = protocol(name, roots[name], args.per_character)
    print(
        f"== {name}: {len(spec.train)} training images of {len(spec.train) // TRAIN_PER_CHARACTER} characters, "
        f"{len(spec.test)} test originals x {len(KINDS)} kinds, {len(spec.unknown_characters)} unknown characters "
        f"({len(spec.unknown)} queries)",
        flush=True,
    )
    test_labels = np.array([label for _, label in spec.test])
    variants = {
        kind: write_variants(name, kind, [p for p, _ in spec.test], backgrounds) for kind in KINDS + HELD_OUT_KINDS
    }
    unknown = write_variants(name, "as-is", [p for p, _ in spec.unknown], backgrounds)
    foreign_paths = foreign_queries(roots, name, args.foreign)
    foreign = write_variants("foreign", "as-is", foreign_paths, backgrounds)
    photos = photo_queries()

    # Frozen backbone: 1-NN (best image per character) over the same indexed (training) images.
    train_labels = np.array([label for _, label in spec.train])
    frozen_index = frozen_features([p for p, _ in spec.train], f"{name} index")
    frozen = {}
    for kind in KINDS + HELD_OUT_KINDS:
        frozen[kind] = frozen_answers(frozen_index, train_labels, frozen_features(variants[kind], f"{name} {kind}"))
    frozen_open = open_set(
        frozen["as-is"][1],
        frozen_answers(frozen_index, train_labels, frozen_features(unknown, f"{name} unknown"))[1],
        frozen_answers(frozen_index, train_labels, frozen_features(foreign, f"{name} foreign"))[1],
        threshold_of(frozen_index),
        frozen_answers(frozen_index, train_labels, frozen_features(photos, "photos"))[1] if photos else None,
    )

    # lookalike, trained as `lookalike train FOLDER` does.
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "characters"
        for path, label in spec.train:
            (folder / label).mkdir(parents=True, exist_ok=True)
            (folder / label / path.name).symlink_to(path)
        dataset = load_folder(folder, val_fraction=0.2, seed=config.seed)
        started = time.perf_counter()
        bundle = Bundle.train(dataset, config=config, progress=True)
        train_seconds = time.perf_counter() - started
        bundle = Bundle.load(bundle.save(Path(scratch) / "bundle"))  # as `lookalike train` does: the LiteRT runtime
        started = time.perf_counter()
        answers = {kind: lookalike_answers(bundle, variants[kind], f"{name} {kind}") for kind in KINDS}
        unknown_answers = lookalike_answers(bundle, unknown, f"{name} unknown")
        foreign_answers = lookalike_answers(bundle, foreign, f"{name} foreign")
        photo_answers = lookalike_answers(bundle, photos, "photos") if photos else None
        query_seconds = time.perf_counter() - started
        answers |= {kind: lookalike_answers(bundle, variants[kind], f"{name} {kind}") for kind in HELD_OUT_KINDS}
        training = bundle.manifest.training
        lookalike_open = open_set(
            answers["as-is"]["match"],
            unknown_answers["match"],
            foreign_answers["match"],
            bundle.open_set.threshold,  # the bundle's own calibration and match score (lookalike.index.open_set)
            photo_answers["match"] if photos else None,
        ) | {"calibration": bundle.open_set.source, "score": bundle.open_set.score}
        lookalike_open["auroc_unknown_best_image"] = auroc(answers["as-is"]["score"], unknown_answers["score"])
        lookalike_open["unknown_by_character"] = unknown_by_character(
            [label for _, label in spec.unknown], unknown_answers, bundle.open_set.threshold
        )
    kinds = {}
    for kind in KINDS + HELD_OUT_KINDS:
        kinds[kind] = {"frozen": float(np.mean(frozen[kind][0] == test_labels))} | {
            key: float(np.mean(answers[kind][key] == test_labels))
            for key in ("character", "softmax", "knn", "centroid")
        }
        # Known characters' queries of this kind accepted as a close match, at each one's threshold.
        kinds[kind]["frozen_accepted"] = float(np.mean(frozen[kind][1] >= frozen_open["threshold"]))
        kinds[kind]["accepted"] = float(np.mean(answers[kind]["match"] >= lookalike_open["threshold"]))
    methods = ("frozen", "character", "softmax", "knn", "centroid", "frozen_accepted", "accepted")
    return {
        "characters": len(spec.train) // TRAIN_PER_CHARACTER,
        "unknown_characters": spec.unknown_characters,
        "train_images": len(spec.train),
        "test_queries_per_kind": len(spec.test),
        "unknown_queries": len(spec.unknown),
        "foreign_queries": len(foreign),
        "kinds": {kind: kinds[kind] for kind in KINDS},
        "mean_over_kinds": {key: float(np.mean([kinds[k][key] for k in KINDS])) for key in methods},
        "held_out_kinds": {kind: kinds[kind] for kind in HELD_OUT_KINDS},
        "mean_over_held_out_kinds": {key: float(np.mean([kinds[k][key] for k in HELD_OUT_KINDS])) for key in methods},
        "open_set": {"frozen": frozen_open, "lookalike": lookalike_open},
        "training": {
            "seconds": train_seconds,
            "phase_epochs": training["phase_epochs"],
            "val_accuracy": training["val_accuracy"],
            "indexed": len(bundle.index),
        },
        "query_seconds": query_seconds,
    }


def table(name: str, result: dict) -> str:
    lines = [
        (
            f"**{name}** ({result['characters']} characters indexed, 6 images each; {result['test_queries_per_kind']} "
            f"queries per kind; {len(result['unknown_characters'])} unknown characters, {result['unknown_queries']} queries; "
            f"{result['foreign_queries']} images of other datasets)"
        ),
        "",
        (
            "| query kind | frozen: nearest character | lookalike: nearest character | softmax | k-NN | centroid | "
            "accepted as a close match: frozen / lookalike |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    rows = dict(result["kinds"]) | {"**mean over kinds**": result["mean_over_kinds"]}
    if "held_out_kinds" in result:
        rows |= {f"{kind} (held out)": row for kind, row in result["held_out_kinds"].items()}
        rows["**mean over held-out kinds**"] = result["mean_over_held_out_kinds"]
    for kind, row in rows.items():
        better = row["character"] - row["frozen"]
        lines.append(
            f"| {kind} | {row['frozen']:.3f} | {row['character']:.3f} ({better:+.3f}) | {row['softmax']:.3f} | "
            f"{row['knn']:.3f} | {row['centroid']:.3f} | {_num(row.get('frozen_accepted'), 2)} / "
            f"{_num(row.get('accepted'), 2)} |"
        )
    f, l = result["open_set"]["frozen"], result["open_set"]["lookalike"]
    lines += [
        "",
        "| open set | frozen | lookalike |",
        "|---|---|---|",
        (
            f"| AUROC, known vs unknown characters (lookalike: match score; best image) | {f['auroc_unknown']:.3f} | "
            f"{l['auroc_unknown']:.3f}; {l['auroc_unknown_best_image']:.3f} |"
        ),
        f"| AUROC, known vs other datasets | {f['auroc_foreign']:.3f} | {l['auroc_foreign']:.3f} |",
        f"| AUROC, known vs photos | {_num(f.get('auroc_photo'))} | {_num(l.get('auroc_photo'))} |",
        (
            f"| accepted at the threshold (frozen: 5 % of leave-one-out; lookalike: the bundle's): known / unknown / "
            f"other / photos | {f['accepted_known']:.2f} / {f['accepted_unknown']:.2f} / {f['accepted_foreign']:.2f}"
            f" / {_num(f.get('accepted_photo'), 2)} | {l['accepted_known']:.2f} / {l['accepted_unknown']:.2f} / "
            f"{l['accepted_foreign']:.2f} / {_num(l.get('accepted_photo'), 2)} |"
        ),
        "",
        "Unknown characters (lookalike): share accepted, mean match score, most often matched to: "
        + "; ".join(
            f"{label} {row['accepted']:.0%} {row['match_score']:.2f} -> {row['nearest']}"
            for label, row in l.get("unknown_by_character", {}).items()
        ),
        "",
        (
            f"Training {result['training']['seconds']:.0f} s ({result['training']['phase_epochs']}, val accuracy "
            f"{result['training']['val_accuracy']}), queries {result['query_seconds']:.0f} s."
        ),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", help="dataset names (default: every available one)")
    parser.add_argument("--config", nargs="*", default=[], metavar="KEY=VALUE", help="EmbedderConfig overrides")
    parser.add_argument("--name", default="defaults", help="key of this run in results.json")
    parser.add_argument("--per-character", type=int, default=5, help="query originals per character (default 5)")
    parser.add_argument("--foreign", type=int, default=150, help="images of other datasets as queries (default 150)")
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    args = parser.parse_args()
    config = parse_config(args.config)
    roots = dataset_roots(args.datasets)
    all_roots = dataset_roots(None)
    photos = BUILT / "backgrounds"
    backgrounds = (
        sorted(p for p in photos.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")) if photos.is_dir() else []
    )
    print(f"config {config}\nbackgrounds: {len(backgrounds) or 'procedural'}", flush=True)
    started = time.perf_counter()
    results = {}
    for name in roots:
        results[name] = run_dataset(name, all_roots, config, args, backgrounds)
        print(table(name, results[name]), flush=True)
    stored = json.loads(args.out.read_text()) if args.out.exists() else {}
    stored[args.name] = {
        "config": config.to_dict(),
        "backgrounds": len(backgrounds) or "procedural",
        "seconds": time.perf_counter() - started,
        "datasets": results,
    }
    args.out.write_text(json.dumps(stored, indent=2))
    print(f"\n{args.name}: {time.perf_counter() - started:.0f} s; results in {args.out}")


if __name__ == "__main__":
    main()
