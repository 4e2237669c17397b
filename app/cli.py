"""The ``lookalike`` command line: train, search, serve and demo."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

logger = logging.getLogger("lookalike")

#: Default input size of the small-cnn baseline (a scratch CNN gains little from 224 px and costs 5x more).
SMALL_CNN_IMAGE_SIZE = 96

EPILOG = """\
examples:
  lookalike demo                                  train on the embedded characters and open the app
  lookalike train photos/ --out my.bundle         one sub-folder per class under photos/
  lookalike search my.bundle query.png -k 5
  lookalike serve my.bundle --port 7860

Offline? Point lookalike at the MobileNetV2 ImageNet weights file with --weights PATH or
LOOKALIKE_BACKBONE_WEIGHTS=PATH, or copy it into $KERAS_HOME/models/.
"""


def default_demo_bundle() -> Path:
    """Where ``lookalike demo`` keeps its bundle: ``$XDG_CACHE_HOME/lookalike/demo`` (``~/.cache`` by default)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "lookalike" / "demo"


def _add_training_options(parser: argparse.ArgumentParser) -> None:
    from lookalike.embedder.config import BACKBONES, EmbedderConfig

    defaults = EmbedderConfig()
    group = parser.add_argument_group("training")
    group.add_argument("--backbone", choices=BACKBONES, default=defaults.backbone, help="mobilenet_v2 (ImageNet, transfer learning) or small-cnn (from scratch, a baseline); default %(default)s")
    group.add_argument("--epochs", type=int, default=defaults.epochs, help="head epochs, fewer if early stopping on val/ ends them (default %(default)s)")
    group.add_argument("--fine-tune-blocks", type=int, default=defaults.fine_tune_blocks, help="top MobileNetV2 blocks fine-tuned after the head; 0 keeps the backbone frozen (default %(default)s)")
    group.add_argument("--fine-tune-epochs", type=int, default=defaults.fine_tune_epochs, help="fine-tuning epochs (default %(default)s)")
    group.add_argument("--patience", type=int, default=defaults.patience, help="epochs without a better val accuracy before stopping (default %(default)s)")
    group.add_argument("--val-fraction", type=float, default=0.2, help="val share per class when DATA_DIR has no train/ + val/ folders (default %(default)s)")
    group.add_argument("--augment-views", type=int, default=defaults.augment_views, help="augmented views cached per training image (default %(default)s)")
    group.add_argument("--embedding-dim", type=int, default=defaults.embedding_dim, help="embedding size (default %(default)s)")
    group.add_argument("--image-size", type=int, default=None, help=f"input side in pixels (default {defaults.image_size}; {SMALL_CNN_IMAGE_SIZE} for small-cnn)")
    group.add_argument("--seed", type=int, default=defaults.seed, help="random seed (default %(default)s)")
    group.add_argument("--weights", help="backbone weights .h5 file (default: $LOOKALIKE_BACKBONE_WEIGHTS, else Keras' ImageNet download/cache)")


def _add_serve_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lookalike",
        description="Image embedding similarity search: train a MobileNetV2 embedder on a folder of labelled "
        "images (one sub-folder per class), index every image with FAISS, and find look-alikes.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train an embedder, embed every image and write a bundle")
    train.add_argument("data_dir", metavar="DATA_DIR", type=Path, help="DATA_DIR/<class>/<image>, or with train/ and val/ sub-folders")
    train.add_argument("--out", required=True, type=Path, metavar="BUNDLE", help="bundle directory to write (replaced atomically)")
    _add_training_options(train)

    search = commands.add_parser("search", help="find the look-alikes of an image")
    search.add_argument("bundle", metavar="BUNDLE", type=Path)
    search.add_argument("image", metavar="IMAGE", type=Path)
    search.add_argument("-k", type=int, default=5, help="number of nearest images and characters (default %(default)s)")
    search.add_argument("--json", action="store_true", help="print one JSON object")

    serve = commands.add_parser("serve", help="start the web app for a bundle")
    serve.add_argument("bundle", metavar="BUNDLE", type=Path)
    _add_serve_options(serve)

    demo = commands.add_parser("demo", help="train on the embedded characters (or reuse that bundle) and start the web app")
    demo.add_argument("--bundle", type=Path, default=None, help=f"demo bundle directory (default {default_demo_bundle()})")
    demo.add_argument("--retrain", action="store_true", help="train again even if the demo bundle exists")
    _add_serve_options(demo)
    _add_training_options(demo)
    return parser


def _train(data_dir: Path, out: Path, args: argparse.Namespace):
    from lookalike.data import load_folder
    from lookalike.embedder.config import EmbedderConfig
    from lookalike.index import Bundle

    dataset = load_folder(data_dir, val_fraction=args.val_fraction, seed=args.seed)
    print(f"dataset {dataset.root}: {dataset.summary()}")
    config = EmbedderConfig(
        backbone=args.backbone,
        image_size=args.image_size or (SMALL_CNN_IMAGE_SIZE if args.backbone == "small-cnn" else EmbedderConfig().image_size),
        fine_tune_blocks=args.fine_tune_blocks,
        fine_tune_epochs=args.fine_tune_epochs,
        embedding_dim=args.embedding_dim,
        augment_views=args.augment_views,
        epochs=args.epochs,
        patience=args.patience,
        seed=args.seed,
    )
    bundle = Bundle.train(dataset, config=config, weights=args.weights, progress=True)
    path = bundle.save(out)
    training = bundle.manifest["training"]
    accuracy = training["val_accuracy"]
    phases = ", ".join(f"{phase.replace('_', ' ')} {n} epochs" for phase, n in training["phase_epochs"].items())
    print(f"trained: {phases}; " + (f"validation accuracy {accuracy:.3f}" if accuracy is not None else "no val split"))
    for failure in bundle.failures:
        print(f"skipped {failure.path}: {failure.reason}", file=sys.stderr)
    print(f"bundle with {len(bundle.index)} images written to {path}")
    return bundle


def _format_result(result) -> str:
    lines = [f"predicted: {result.predicted} (p={result.probabilities[result.predicted]:.3f})"]
    lines.append(f"k-NN vote: {result.knn_predicted} ({result.knn_probabilities.get(result.knn_predicted, 0.0):.2f} of the vote)")
    lines.append("nearest characters:")
    lines += [f"  {i}. {hit.label:<24} {hit.score:.3f}  {hit.path}" for i, hit in enumerate(result.characters, 1)]
    lines.append("nearest images:")
    lines += [f"  {i}. {hit.label:<24} {hit.score:.3f}  {hit.path}" for i, hit in enumerate(result.neighbors, 1)]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from lookalike.index import Bundle

    if args.command == "train":
        _train(args.data_dir, args.out, args)
    elif args.command == "search":
        result = Bundle.load(args.bundle).query_files([args.image], k=args.k, n_characters=args.k)[0]
        print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False) if args.json else _format_result(result))
    elif args.command == "serve":
        from lookalike.app.ui import serve

        serve(Bundle.load(args.bundle), host=args.host, port=args.port)
    elif args.command == "demo":
        from lookalike.app.ui import serve
        from lookalike.data import DEFAULT_DATASET

        path = args.bundle or default_demo_bundle()
        if path.is_dir() and not args.retrain:
            print(f"reusing the demo bundle {path} (--retrain to train again)")
            bundle = Bundle.load(path)
        else:
            bundle = _train(DEFAULT_DATASET, path, args)
        print(f"open http://{args.host}:{args.port} (Ctrl+C stops)")
        serve(bundle, host=args.host, port=args.port)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lookalike`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from lookalike.data import DatasetError, ImageDecodeError
    from lookalike.embedder import BackboneWeightsError, TrainingError
    from lookalike.index import BundleError

    try:
        return run(args)
    except (BackboneWeightsError, BundleError, DatasetError, ImageDecodeError, TrainingError, FileNotFoundError) as error:
        print(f"lookalike: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
