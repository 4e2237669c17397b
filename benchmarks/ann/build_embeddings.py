"""Real embeddings for the ANN benchmark: every image of four art sets under many query-like augmentations.

Every image of ``../shared/datasets/{freedroidrpg,wesnoth_units}`` and ``~/.cache/lookalike/datasets/{freedink,
widelands}`` (about 7,100 images, 350 characters; build the last two with
``benchmarks/generalisation/build_datasets.py``) is embedded ``--views`` times through a trained bundle (its
LiteRT runtime, the path ``lookalike add`` takes): view 0 as it is, every other view with one random appearance
change and busy background (:func:`lookalike.embedder.augment.augment_appearance`, what training uses to imitate
queries) followed by the model's own random flip, rotation and zoom. 30 views give about 213,000 embeddings.

Each view is written as it is finished (``OUT/view-000.npy``, ...; float32 of shape (n_images, d)), so a killed
run continues where it stopped, and ``OUT/images.json`` names the images (path, character, art set) by row.

    python benchmarks/ann/build_embeddings.py --bundle BUNDLE [--views 30] [--out ~/.cache/lookalike/ann]
    # on 2 cores: two processes, --shard 0/2 and --shard 1/2, each with --threads 1

``BUNDLE``: e.g. ``lookalike train ../shared/datasets/wesnoth_units --out /tmp/ann/wesnoth.bundle``.

Cost, measured on 2026-11-22 (2 cores, one thread each): for 256 images of 224 px the appearance changes took
1.33 s and the Keras flip, rotation and zoom 1.41 s; the LiteRT embedding took 0.88 s for 128 images (0.74 s
with 2 threads): about 18 ms of one core per augmented image, none of the three dominant. Two ``--shard``
processes beside another job's training made the 28 missing views (198,408 embeddings) in 58 minutes, 57
images/s in all.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import numpy as np
import tensorflow as tf
from lookalike.bundle import Bundle
from lookalike.data import find_images, iter_image_batches
from lookalike.data.files import write_array, write_atomic
from lookalike.embedder import RuntimeEmbedder, load_embedder
from lookalike.embedder._keras import keras
from lookalike.embedder.augment import augment_appearance
from tqdm import tqdm

#: The shared datasets beside the checkout, or where ``LOOKALIKE_SHARED_DATASETS`` says (e.g. from a worktree).
SHARED = Path(
    os.environ.get("LOOKALIKE_SHARED_DATASETS", Path(__file__).resolve().parents[2].parent / "shared" / "datasets")
)
BUILT = Path.home() / ".cache" / "lookalike" / "datasets"
SOURCES = {
    "freedroidrpg": SHARED / "freedroidrpg",
    "wesnoth_units": SHARED / "wesnoth_units",
    "freedink": BUILT / "freedink",
    "widelands": BUILT / "widelands",
}
DEFAULT_OUT = Path.home() / ".cache" / "lookalike" / "ann"
CHUNK = 256


def view_path(out: Path, view: int) -> Path:
    """File of view number ``view``."""
    return out / f"view-{view:03d}.npy"


def decode_all(paths: list[Path], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Decoded pixels (uint8, (n, size, size, 3)) of the readable ``paths`` and their indices into ``paths``."""
    pixels, kept = [], []
    for batch in tqdm(iter_image_batches(paths, size=size, batch_size=256), desc="decoding", unit="batch"):
        pixels.append(batch.images)
        kept.append(batch.indices)
    return np.concatenate(pixels), np.concatenate(kept)


def embed_view(bundle: Bundle, pixels: np.ndarray, view: int, bar: tqdm) -> np.ndarray:
    """Embeddings (float32, (n, d)) of view ``view`` of every image; view 0 is the image as it is.

    ``bundle.embedder`` (the runtime) embeds; the Keras model's ``augment`` layers (flip, rotation, zoom) are
    loaded only for the augmented views.
    """
    embedder = bundle.embedder
    out = np.empty((len(pixels), embedder.embedding_dim), np.float32)
    for start in range(0, len(pixels), CHUNK):
        images = pixels[start : start + CHUNK]
        if view:
            rng = np.random.default_rng([embedder.config.seed, view, start])
            images = augment_appearance(images, rng, embedder.config)
            images = keras.ops.convert_to_numpy(bundle.keras_embedder.augment(images, training=True))
        out[start : start + len(images)] = embedder.embed_images(images)[0]
        bar.update(len(images))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True, help="trained bundle whose embedder to use")
    parser.add_argument("--views", type=int, default=30, help="views per image, the first one unaugmented")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--threads", type=int, default=1, help="inference threads (default 1: on a busy machine more are slower)"
    )
    parser.add_argument("--shard", default="0/1", help="K/N: embed only the views v with v %% N == K (N processes)")
    args = parser.parse_args()
    shard, shards = map(int, args.shard.split("/"))
    logging.basicConfig(level=logging.WARNING)
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    missing = [str(root) for root in SOURCES.values() if not root.is_dir()]
    if missing:
        parser.error(f"missing datasets {missing}; run benchmarks/generalisation/build_datasets.py first")
    args.out.mkdir(parents=True, exist_ok=True)
    bundle = Bundle.load(args.bundle)
    if isinstance(bundle.embedder, RuntimeEmbedder):  # the bundle's runtime, with this run's thread count
        bundle.embedder = load_embedder(args.bundle, precision=bundle.precision, threads=args.threads)
    else:
        print("the bundle has no runtime that runs here: embedding with Keras (slower)")
    paths, sets = [], []
    for name, root in SOURCES.items():
        found = find_images([root])
        paths += found
        sets += [name] * len(found)
    pixels, kept = decode_all(paths, bundle.embedder.config.image_size)
    images = [{"path": str(paths[i]), "label": f"{sets[i]}/{paths[i].parent.name}", "set": sets[i]} for i in kept]
    meta = {"bundle": str(args.bundle.resolve()), "views": args.views, "images": images}
    if shard == 0:
        write_atomic(args.out / "images.json", json.dumps(meta))
    todo = [v for v in range(shard, args.views, shards) if not view_path(args.out, v).is_file()]
    with tqdm(total=len(todo) * len(pixels), desc="embedding views", unit="img", mininterval=10) as bar:
        for view in todo:
            if not view_path(args.out, view).is_file():  # unless another process made it meanwhile
                write_array(view_path(args.out, view), embed_view(bundle, pixels, view, bar))
    print(f"{args.views} views of {len(pixels):,} images in {args.out}")


if __name__ == "__main__":
    main()
