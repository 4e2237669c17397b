"""What caching backbone features saves: head training on cached features vs end to end on pixels, in one run.

On the embedded default (812 training images, 39 classes), with the backbone frozen:

- end to end: ``classifier.fit`` on decoded images, augmentation drawn fresh every epoch, so every epoch
  runs the backbone over every image;
- cached (lookalike): the backbone runs once per image and per cached augmented view (4), then each head
  epoch runs on the stored 1280-d features.

Both train the same head for the same number of epochs; the end-to-end cost is measured over 2 epochs and
scaled (every epoch costs the same).

    python benchmarks/training_cost/run.py [--epochs 40]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from lookalike.data import DEFAULT_DATASET, load_folder
from lookalike.embedder import Embedder, EmbedderConfig
from lookalike.embedder.training import _decode_all, _fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=EmbedderConfig().epochs, help="head epochs compared")
    args = parser.parse_args()
    dataset = load_folder(DEFAULT_DATASET)
    train = dataset.subset("train")
    labels = dataset.labels(train)
    config = EmbedderConfig(fine_tune_blocks=0, balance_classes=False)
    options = dict(config=config, phase="head", progress=False, log_dir=None, callbacks=())

    embedder = Embedder.build(config, dataset.class_names)
    images = _decode_all(embedder, [r.path for r in train])
    started = time.perf_counter()
    _fit(
        embedder.classifier,
        images.images.astype(np.float32),
        labels[images.indices],
        None,
        epochs=2,
        learning_rate=1e-3,
        **options,
    )
    end_to_end_epoch = (time.perf_counter() - started) / 2

    embedder = Embedder.build(config, dataset.class_names)
    started = time.perf_counter()
    encoded = embedder.encode_files([r.path for r in train], augment_views=config.augment_views)
    encode_seconds = time.perf_counter() - started
    x = np.concatenate([encoded.features, *encoded.views])
    y = np.tile(labels[encoded.indices], 1 + config.augment_views)
    started = time.perf_counter()
    _fit(embedder.head, x, y, None, epochs=args.epochs, learning_rate=1e-3, **options)
    cached_epoch = (time.perf_counter() - started) / args.epochs

    end_to_end = end_to_end_epoch * args.epochs
    cached = encode_seconds + cached_epoch * args.epochs
    print(f"{len(train)} training images, {args.epochs} head epochs")
    print(f"end to end : {end_to_end_epoch:8.2f} s/epoch -> {end_to_end:8.1f} s")
    print(
        f"cached     : {cached_epoch:8.3f} s/epoch + {encode_seconds:.1f} s encoding once (1 clean + {config.augment_views} augmented views) -> {cached:8.1f} s"
    )
    print(
        f"speed-up   : {end_to_end_epoch / cached_epoch:.0f}x per epoch, {end_to_end / cached:.1f}x for the whole run"
    )


if __name__ == "__main__":
    main()
