"""The ``lookalike`` command line: train, search, serve and demo."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

logger = logging.getLogger("lookalike")

#: Exit codes: 0 done, 1 error (nothing written), 3 done but some input files were skipped (listed on stderr).
EXIT_ERROR, EXIT_SKIPPED = 1, 3

EPILOG = """\
examples:
  lookalike demo                                  train on the embedded characters and open the app
  lookalike train photos/ --out my.bundle         one sub-folder per class under photos/
  lookalike search my.bundle query.png -k 5
  lookalike evaluate my.bundle                    accuracy, macro-F1, confusion matrices -> my.bundle/report/
  lookalike split photos/ fewshot/ --per-class 6  few-shot train/ + test/ split
  lookalike compare a.bundle b.bundle             table and bar chart of evaluated bundles
  lookalike map my.bundle --out map.html --query query.png
  lookalike audit my.bundle --csv out/audit.csv    every check: CSV, JSON, fix lists, out/audit.html
  lookalike serve my.bundle --port 7860
  lookalike add my.bundle new_photos/             embed more images into the index, no retraining
  lookalike remove my.bundle 17 42 old_photos/    by id or path
  lookalike embed my.bundle big_folder/ --out vectors/ [--engine ray]
  lookalike reindex my.bundle --index hnsw        rebuild the index as HNSW, report recall@10
  lookalike export my.bundle --format parquet --out embeddings.parquet   (or projector, onnx)

Exit codes: 0 done; 1 error, nothing written; 3 done, but unreadable input files were skipped
(each is listed with its reason on stderr, and by `train` in BUNDLE/skipped.csv).

Offline? Point lookalike at the MobileNetV2 ImageNet weights file with --weights PATH or
LOOKALIKE_BACKBONE_WEIGHTS=PATH, or copy it into $KERAS_HOME/models/.
"""


def default_demo_bundle() -> Path:
    """Where ``lookalike demo`` keeps its bundle: ``$XDG_CACHE_HOME/lookalike/demo`` (``~/.cache`` by default)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "lookalike" / "demo"


def _add_precision_option(parser: argparse.ArgumentParser, default: str | None = "auto") -> None:
    from lookalike.bundle.precision import PRECISION_CHOICES

    parser.add_argument(
        "--precision",
        choices=PRECISION_CHOICES,
        default=default,
        help="inference runtime: fp32 (LiteRT), bf16 (OpenVINO), int8 (LiteRT, quantized), or auto: the fastest "
        "whose answers agree with fp32's on the held-out images (top-1 >= 99%%, recall@10 >= 0.95, accuracy "
        "within 0.5 points)" + (" (default %(default)s)" if default else ""),
    )


def _add_training_options(parser: argparse.ArgumentParser) -> None:
    from lookalike.embedder.config import BACKBONE_SPECS, BACKBONES, EmbedderConfig
    from lookalike.index.open_set import DEFAULT_QUANTILE

    defaults = EmbedderConfig()
    group = parser.add_argument_group("training")
    group.add_argument(
        "--backbone",
        choices=BACKBONES,
        default=defaults.backbone,
        help="mobilenet_v2 (ImageNet, transfer learning) or small-cnn (from scratch, a baseline); default %(default)s",
    )
    group.add_argument(
        "--epochs",
        type=int,
        default=defaults.epochs,
        help="head epochs, fewer if early stopping on val/ ends them (default %(default)s)",
    )
    group.add_argument(
        "--fine-tune-blocks",
        type=int,
        default=defaults.fine_tune_blocks,
        help="top MobileNetV2 blocks fine-tuned after the head; 0 keeps the backbone frozen (default %(default)s)",
    )
    group.add_argument(
        "--fine-tune-epochs",
        type=int,
        default=defaults.fine_tune_epochs,
        help="fine-tuning epochs (default %(default)s)",
    )
    group.add_argument(
        "--patience",
        type=int,
        default=defaults.patience,
        help="epochs without a lower val loss before stopping (default %(default)s)",
    )
    group.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        help="val share per class when DATA_DIR has no train/ + val/ folders (default %(default)s)",
    )
    group.add_argument(
        "--augment-views",
        type=int,
        default=defaults.augment_views,
        help="augmented views cached per training image (default %(default)s)",
    )
    group.add_argument(
        "--embedding-dim", type=int, default=defaults.embedding_dim, help="embedding size (default %(default)s)"
    )
    group.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="input side in pixels (default: the backbone's, "
        + ", ".join(f"{s.default_image_size} for {name}" for name, s in BACKBONE_SPECS.items())
        + ")",
    )
    group.add_argument("--seed", type=int, default=defaults.seed, help="random seed (default %(default)s)")
    group.add_argument(
        "--no-crop-to-content",
        dest="crop_to_content",
        action="store_false",
        help="keep wide flat margins around a character (default: crop an image whose character sits small on a "
        "flat background to its content, for training, indexed and query images alike)",
    )
    group.add_argument(
        "--open-set-quantile",
        type=float,
        default=DEFAULT_QUANTILE,
        help="share of known-looking queries to flag 'no close match': the quantile of held-out (or cross-fitted) "
        "match scores the threshold is set at (default %(default)s)",
    )
    group.add_argument(
        "--weights",
        help="backbone weights .h5 file (default: $LOOKALIKE_BACKBONE_WEIGHTS, else Keras' ImageNet download/cache)",
    )


def _add_index_options(parser: argparse.ArgumentParser) -> None:
    from lookalike.index.search import EXACT_SEARCH_LIMIT, INDEX_TYPES, IndexSpec

    defaults = IndexSpec()
    group = parser.add_argument_group("index")
    group.add_argument(
        "--index",
        choices=INDEX_TYPES,
        default=defaults.type,
        help=f"FAISS index type; auto: exact (flat) below {EXACT_SEARCH_LIMIT:,} images, else hnsw (default %(default)s)",
    )
    group.add_argument("--hnsw-m", type=int, default=defaults.hnsw_m, help="HNSW graph degree (default %(default)s)")
    group.add_argument(
        "--ef-construction", type=int, default=defaults.ef_construction, help="HNSW build effort (default %(default)s)"
    )
    group.add_argument(
        "--ef-search", type=int, default=defaults.ef_search, help="HNSW search effort (default %(default)s)"
    )
    group.add_argument("--nlist", type=int, default=None, help="IVF cells (default: about 4 sqrt(n))")
    group.add_argument("--nprobe", type=int, default=defaults.nprobe, help="IVF cells searched (default %(default)s)")
    group.add_argument(
        "--pq-m", type=int, default=None, help="IVF-PQ sub-quantizers, 4 bits each (default: one per 4 dimensions)"
    )
    group.add_argument(
        "--k-factor",
        type=int,
        default=defaults.k_factor,
        help="IVF-PQ candidates re-ranked exactly per result (default %(default)s)",
    )


def _index_spec(args: argparse.Namespace):
    from lookalike.index.search import IndexSpec

    return IndexSpec(
        type=args.index,
        hnsw_m=args.hnsw_m,
        ef_construction=args.ef_construction,
        ef_search=args.ef_search,
        nlist=args.nlist,
        nprobe=args.nprobe,
        pq_m=args.pq_m,
        k_factor=args.k_factor,
    )


def _add_engine_options(parser: argparse.ArgumentParser) -> None:
    from lookalike.embedder.stream import CHUNK_SIZE

    group = parser.add_argument_group("embedding")
    group.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: this process, decoding in threads; ray: a Ray Data actor pool (pip install 'lookalike[ray]')",
    )
    group.add_argument(
        "--ray-address", help="Ray cluster to join, e.g. ray://head:10001 (default $RAY_ADDRESS, else a local Ray)"
    )
    group.add_argument("--actors", type=int, help="Ray actors, one model each (default: the cluster's CPUs)")
    group.add_argument(
        "--chunk-size", type=int, default=CHUNK_SIZE, help="embeddings per part file written (default %(default)s)"
    )


def _add_serve_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("serving")
    group.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s: this machine only)")
    group.add_argument("--port", type=int, default=7860, help="port (default %(default)s)")
    group.add_argument(
        "--auth",
        metavar="USER:PASSWORD",
        default=os.environ.get("LOOKALIKE_AUTH"),
        help="require this login: the app's login page, HTTP Basic for /api (default $LOOKALIKE_AUTH); needed on any "
        "--host other than loopback",
    )
    group.add_argument(
        "--allow-anonymous",
        action="store_true",
        help="serve a non-loopback --host without a login (not allowed with --enable-training)",
    )
    group.add_argument(
        "--enable-training",
        action="store_true",
        help="add the Train view: users train bundles from uploaded zips (or --data-root folders) into --workspace",
    )
    group.add_argument(
        "--data-root", type=Path, help="with --enable-training: server folders under it may be trained on"
    )
    group.add_argument(
        "--workspace",
        type=Path,
        help="with --enable-training: where uploads are unpacked and trained bundles written (required then)",
    )


def _serve_options(args: argparse.Namespace):
    """The checked :class:`~lookalike.app.server.ServeOptions` of ``serve`` and ``demo`` (before any work)."""
    from lookalike.app.server import ServeOptions, parse_auth

    return ServeOptions(
        host=args.host,
        port=args.port,
        auth=parse_auth(args.auth),
        allow_anonymous=args.allow_anonymous,
        enable_training=args.enable_training,
        data_root=args.data_root,
        workspace=args.workspace,
    ).check()


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
    train.set_defaults(handler=_train)
    train.add_argument(
        "data_dir", metavar="DATA_DIR", type=Path, help="DATA_DIR/<class>/<image>, or with train/ and val/ sub-folders"
    )
    train.add_argument(
        "--out", required=True, type=Path, metavar="BUNDLE", help="bundle directory to write (replaced atomically)"
    )
    _add_training_options(train)
    _add_index_options(train)
    _add_precision_option(train)

    search = commands.add_parser("search", help="find the look-alikes of an image")
    search.set_defaults(handler=_search)
    search.add_argument("bundle", metavar="BUNDLE", type=Path)
    search.add_argument("image", metavar="IMAGE", type=Path)
    search.add_argument("-k", type=int, default=5, help="number of nearest images and characters (default %(default)s)")
    search.add_argument("--json", action="store_true", help="print one JSON object")
    search.add_argument(
        "--unknown-threshold",
        type=float,
        help="match score (cosine similarity to the nearest class centroid) below which the answer is 'no close "
        "match' (default: the bundle's calibrated one)",
    )
    search.add_argument(
        "--explain",
        type=_png_path,
        metavar="OUT.png",
        help="also write the query and its best match side by side, with heatmaps of the regions that make up "
        "their cosine similarity (Stylianou et al. 2019), to this PNG file",
    )

    evaluate = commands.add_parser(
        "evaluate", help="score the softmax head, k-NN and nearest centroid; write BUNDLE/report/"
    )
    evaluate.set_defaults(handler=_evaluate)
    evaluate.add_argument("bundle", metavar="BUNDLE", type=Path)
    evaluate.add_argument(
        "data_dir",
        metavar="DATA_DIR",
        type=Path,
        nargs="?",
        help="evaluate on this folder instead of the bundle's held-out images",
    )
    evaluate.add_argument("--knn-k", type=int, default=10, help="neighbors in the k-NN vote (default %(default)s)")
    evaluate.add_argument(
        "--no-leak-check",
        action="store_true",
        help="skip the check for duplicates across the bundle's splits (leaky splits inflate the scores)",
    )

    split = commands.add_parser("split", help="write a few-shot train/ + test/ split of a dataset")
    split.set_defaults(handler=_split)
    split.add_argument("data_dir", metavar="DATA_DIR", type=Path)
    split.add_argument("out_dir", metavar="OUT_DIR", type=Path)
    split.add_argument(
        "--per-class", type=int, required=True, help="training images per class (the few-shot protocol uses 6)"
    )
    split.add_argument("--seed", type=int, default=0, help="seed of the per-class permutation (default %(default)s)")
    split.add_argument("--copy", action="store_true", help="copy files instead of symlinking them")

    compare = commands.add_parser("compare", help="one table and bar chart of several evaluated bundles")
    compare.set_defaults(handler=_compare)
    compare.add_argument("bundles", metavar="BUNDLE", type=Path, nargs="+")
    compare.add_argument("--out", type=Path, default=Path("compare.png"), help="bar chart file (default %(default)s)")

    map_ = commands.add_parser(
        "map",
        help="draw a UMAP or t-SNE map of a bundle's embeddings, optionally with a query on it",
        description="Write an embedding map. map.html is one self-contained page that works offline: hover shows "
        "an image's thumbnail, a box or lasso selection lists the selected images, clicking a point shows its "
        "nearest neighbors, a searchable class legend highlights classes, and points are coloured by label, "
        "predicted label (k-NN vote of its neighbors), split or (with --audit, or once the bundle was audited) "
        "the label audit's suspicion. map.png is a static picture.",
    )
    map_.set_defaults(handler=_map)
    map_.add_argument("bundle", metavar="BUNDLE", type=Path)
    map_.add_argument(
        "--out", type=Path, default=Path("map.html"), help="map.html (interactive) or map.png (default %(default)s)"
    )
    map_.add_argument("--method", choices=("umap", "tsne"), default="umap", help="projection (default %(default)s)")
    map_.add_argument("--dims", type=int, choices=(2, 3), default=2, help="2 or 3 dimensions (default %(default)s)")
    map_.add_argument("--query", type=Path, metavar="IMAGE", help="place this image on the map with its nearest images")
    map_.add_argument(
        "--neighbors", type=int, default=10, metavar="K", help="neighbors listed per image (default %(default)s)"
    )
    map_.add_argument(
        "--audit",
        action="store_true",
        help="offer colouring by audit suspicion, computing the audit's frozen features if the bundle has none "
        "cached (runs the backbone over every image); without it, offered only when they are cached",
    )

    audit = commands.add_parser(
        "audit",
        help="data health: label errors, outliers, duplicates, image quality, class balance",
        description="Check a bundle's images: suspected label errors (out of fold), outliers, exact and near "
        "duplicates (and leaky splits), image-quality issues and class balance. Prints a table per check and a "
        "summary; --csv writes every table as CSV and JSON, the fix lists (files to drop, suggested labels) and "
        "an HTML report with thumbnails. Nothing ever changes, moves or deletes your files.",
    )
    audit.set_defaults(handler=_audit)
    audit.add_argument("bundle", metavar="BUNDLE", type=Path)
    audit.add_argument(
        "--issues",
        default="all",
        help="comma-separated checks among label,outlier,duplicate,quality,balance, or all (default %(default)s)",
    )
    audit.add_argument("--top", type=int, default=20, help="how many rows of each table to print (default %(default)s)")
    audit.add_argument(
        "--csv",
        type=Path,
        metavar="FILE",
        help="write the label audit to FILE (e.g. audit.csv) and beside it, sharing its stem: audit-<issue>.csv "
        "and audit-<issue>.json per check, audit-drop.csv (duplicates that are not their cluster's keeper, "
        "unreadable files), audit-relabel.csv (label suspects and suggested labels) and audit.html",
    )
    audit.add_argument(
        "--html",
        type=Path,
        metavar="FILE",
        help="write the self-contained HTML report (thumbnails embedded, works offline) to FILE "
        "(default with --csv: beside it, as <stem>.html)",
    )

    duplicates = commands.add_parser(
        "duplicates", help="exact and near-duplicate images, and duplicates across splits (leaky splits)"
    )
    duplicates.set_defaults(handler=_duplicates)
    duplicates.add_argument("bundle", metavar="BUNDLE", type=Path)
    duplicates.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="cosine similarity of frozen ImageNet features from which two images are near-duplicate candidates, "
        "each then verified on its pixels (default 0.8; with --no-verify use about 0.92)",
    )
    duplicates.add_argument(
        "--no-verify",
        action="store_true",
        help="report every candidate above the threshold without comparing the images' pixel thumbnails",
    )
    duplicates.add_argument("--csv", type=Path, metavar="FILE", help="write one row per pair to this CSV file")
    duplicates.add_argument(
        "--query",
        nargs="+",
        type=Path,
        metavar="PATH",
        help="check these new files or folders against the bundle instead",
    )
    duplicates.add_argument("--top", type=int, default=20, help="how many pairs to print (default %(default)s)")

    embed = commands.add_parser(
        "embed", help="embed image files or folders of any size into a folder of embedding parts (resumable)"
    )
    embed.set_defaults(handler=_embed)
    embed.add_argument("bundle", metavar="BUNDLE", type=Path, help="bundle whose embedder to use")
    embed.add_argument(
        "paths", metavar="PATH", type=Path, nargs="+", help="image files or folders (searched recursively)"
    )
    embed.add_argument(
        "--out", required=True, type=Path, metavar="DIR", help="output folder of part-NNNNNN.npz files; rerun to resume"
    )
    _add_engine_options(embed)

    add = commands.add_parser("add", help="embed more images and add them to a bundle's index (no retraining)")
    add.set_defaults(handler=_add)
    add.add_argument("bundle", metavar="BUNDLE", type=Path)
    add.add_argument(
        "paths", metavar="PATH", type=Path, nargs="+", help="image files or folders (searched recursively)"
    )
    add.add_argument(
        "--label", help="class of every added image (default: each file's folder name); new classes are allowed"
    )
    _add_engine_options(add)

    remove = commands.add_parser("remove", help="remove images from a bundle's index by id or by path")
    remove.set_defaults(handler=_remove)
    remove.add_argument("bundle", metavar="BUNDLE", type=Path)
    remove.add_argument(
        "items", metavar="ID|PATH", nargs="+", help="image ids (as `search --json` shows them), files or folders"
    )

    reindex = commands.add_parser(
        "reindex", help="rebuild a bundle's index as another type (flat, hnsw, ivf, ivfpq) and report its recall@10"
    )
    reindex.set_defaults(handler=_reindex)
    reindex.add_argument("bundle", metavar="BUNDLE", type=Path)
    _add_index_options(reindex)

    recall = commands.add_parser(
        "recall", help="recall@k of a bundle's index against exact search, and milliseconds per query"
    )
    recall.set_defaults(handler=_recall)
    recall.add_argument("bundle", metavar="BUNDLE", type=Path)
    recall.add_argument("-k", type=int, default=10, help="neighbors compared (default %(default)s)")
    recall.add_argument(
        "--queries", type=int, default=1000, help="stored embeddings used as queries (default %(default)s)"
    )

    from lookalike.bundle.export import FORMATS

    export = commands.add_parser(
        "export",
        help="export a bundle: TensorBoard Embedding Projector folder, Parquet table or ONNX embedder",
        description="Export a bundle for other tools: projector (a folder for TensorBoard's Embedding Projector: "
        "tensors.tsv, metadata.tsv, sprite.jpg, projector_config.pbtxt), parquet (a table of id, path, label, split "
        "and embedding for pandas, DuckDB, LanceDB) or onnx (the embedder, checked against Keras; needs "
        "pip install 'lookalike[export]'). Written atomically; the bundle is not changed.",
    )
    export.set_defaults(handler=_export)
    export.add_argument("bundle", metavar="BUNDLE", type=Path)
    export.add_argument("--format", required=True, choices=FORMATS, help="what to write")
    export.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="PATH",
        help="a new or empty folder for projector; a file for parquet (e.g. embeddings.parquet) and onnx (embedder.onnx)",
    )
    export.add_argument("--force", action="store_true", help="replace PATH if it exists")

    serve = commands.add_parser("serve", help="start the web app for a bundle, with its JSON API at /api")
    serve.set_defaults(handler=_serve)
    serve.add_argument("bundle", metavar="BUNDLE", type=Path)
    _add_serve_options(serve)

    demo = commands.add_parser(
        "demo", help="train on the embedded characters (or reuse that bundle) and start the web app"
    )
    demo.set_defaults(handler=_demo)
    demo.add_argument(
        "--bundle", type=Path, default=None, help=f"demo bundle directory (default {default_demo_bundle()})"
    )
    demo.add_argument("--retrain", action="store_true", help="train again even if the demo bundle exists")
    _add_serve_options(demo)
    _add_training_options(demo)
    _add_index_options(demo)
    _add_precision_option(demo)

    precision = commands.add_parser(
        "precision", help="measure a bundle's fp32, bf16 and int8 runtimes on its held-out images and choose one"
    )
    precision.set_defaults(handler=_precision)
    precision.add_argument("bundle", metavar="BUNDLE", type=Path)
    _add_precision_option(precision)
    return parser


def _train_bundle(data_dir: Path, out: Path, args: argparse.Namespace):
    """Train and save a bundle as the arguments say; print what was done. Returns the saved bundle, loaded."""
    from lookalike.bundle import Bundle
    from lookalike.data import load_folder
    from lookalike.embedder.config import EmbedderConfig

    dataset = load_folder(data_dir, val_fraction=args.val_fraction, seed=args.seed)
    print(f"dataset {dataset.root}: {dataset.summary()}")
    config = EmbedderConfig.for_backbone(
        args.backbone,
        image_size=args.image_size,
        fine_tune_blocks=args.fine_tune_blocks,
        fine_tune_epochs=args.fine_tune_epochs,
        embedding_dim=args.embedding_dim,
        augment_views=args.augment_views,
        epochs=args.epochs,
        patience=args.patience,
        seed=args.seed,
        crop_to_content=args.crop_to_content,
    )
    trained = Bundle.train(
        dataset,
        config=config,
        weights=args.weights,
        progress=True,
        index_spec=_index_spec(args),
        open_set_quantile=args.open_set_quantile,
    )
    path = trained.save(out, precision=args.precision)
    bundle = Bundle.load(path)  # answers with the exported runtime, like every later use of the bundle
    training = bundle.manifest.training
    accuracy = bundle.manifest.val_accuracy
    phases = ", ".join(f"{phase.replace('_', ' ')} {n} epochs" for phase, n in training["phase_epochs"].items())
    print(f"trained: {phases}; " + (f"validation accuracy {accuracy:.3f}" if accuracy is not None else "no val split"))
    print(f"bundle with {len(bundle.index)} images written to {path}")
    open_set = bundle.open_set
    nearest = "character centroid" if open_set.score == "centroid" else "image"
    print(
        f"no-close-match threshold: cosine {open_set.threshold:.3f} to the nearest {nearest} (the "
        f"{open_set.quantile:.0%} quantile of the match scores of {open_set.images} {open_set.source} images)"
    )
    _print_precision(bundle)
    _report_skipped(bundle.failures, path / "skipped.csv")
    return bundle


def _print_precision(bundle) -> None:
    from lookalike.bundle.precision import describe

    print("\n".join(describe(bundle.manifest.precision)))


def _precision(args: argparse.Namespace) -> int:
    from lookalike.bundle import Bundle

    path = Bundle.load(args.bundle).save(args.bundle, precision=args.precision)
    _print_precision(Bundle.load(path))
    return 0


def _train(args: argparse.Namespace) -> int:
    return EXIT_SKIPPED if _train_bundle(args.data_dir, args.out, args).failures else 0


def _report_skipped(failures, listing: Path | None = None) -> int:
    """Print every skipped file with its reason on stderr, after the run's own output; returns the exit code."""
    if failures:
        print(
            f"\n{len(failures)} unreadable files were skipped" + (f" (listed in {listing})" if listing else "") + ":",
            file=sys.stderr,
        )
        for failure in failures:
            print(f"  {failure.path}: {failure.reason}", file=sys.stderr)
    return EXIT_SKIPPED if failures else 0


def _png_path(value: str) -> Path:
    """An output path ending in .png in an existing folder (checked before any work is done)."""
    path = Path(value).expanduser()
    if path.suffix.lower() != ".png":
        raise argparse.ArgumentTypeError(f"must be a .png file; got {value!r}")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"folder {str(path.parent)!r} does not exist")
    return path


def _search(args: argparse.Namespace) -> int:
    from lookalike.bundle import Bundle, search_image

    bundle = Bundle.load(args.bundle)
    result = search_image(bundle, args.image, k=args.k, unknown_threshold=args.unknown_threshold)
    print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False) if args.json else _format_result(result))
    if args.explain:
        from lookalike.bundle import explain_result
        from lookalike.data.files import write_atomic

        write_atomic(args.explain, explain_result(bundle, args.image, result).to_png())
        print(f"explanation written to {args.explain}", file=sys.stderr if args.json else sys.stdout)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from lookalike.app.report import CLASSIFIER_TITLES, write_report
    from lookalike.bundle import Bundle, evaluate
    from lookalike.data import load_folder

    bundle = Bundle.load(args.bundle)
    dataset = load_folder(args.data_dir, val_fraction=0.0) if args.data_dir else None
    evaluation = evaluate(bundle, dataset, knn_k=args.knn_k, progress=True, check_leaks=not args.no_leak_check)
    print(
        f"{len(evaluation.y_true)} queries from the {evaluation.source}; k-NN and centroids fitted on "
        f"{evaluation.n_reference} train images"
    )
    table = evaluation.to_frame()
    table["classifier"] = table["classifier"].map(CLASSIFIER_TITLES)
    print(table.to_string(index=False, float_format="{:.3f}".format))
    folder = write_report(args.bundle, evaluation, bundle.manifest)
    print(f"report, confusion matrices and training curves written to {folder}")
    for warning in evaluation.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return _report_skipped(evaluation.failures)


def _split(args: argparse.Namespace) -> int:
    from lookalike.data.split import few_shot_split

    counts = few_shot_split(args.data_dir, args.out_dir, per_class=args.per_class, seed=args.seed, copy=args.copy)
    print(f"wrote {counts['train']} train and {counts['test']} test images to {args.out_dir}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from lookalike.app.report import comparison_figure, comparison_table

    table, runs = comparison_table(args.bundles)
    print(table.to_string(index=False, float_format="{:.3f}".format))
    comparison_figure(runs).savefig(args.out, dpi=110)
    print(f"bar chart written to {args.out}")
    return 0


def _map(args: argparse.Namespace) -> int:
    from lookalike.app.map_page import audit_suspicion, write_map_page
    from lookalike.app.maps import map_png, place_image
    from lookalike.bundle import Bundle
    from lookalike.index import MapConfig

    if args.neighbors < 1:
        print(f"lookalike: error: --neighbors must be at least 1; got {args.neighbors}", file=sys.stderr)
        return EXIT_ERROR
    bundle = Bundle.load(args.bundle)
    embedding_map = bundle.embedding_map(MapConfig(method=args.method, dims=args.dims))
    query = place_image(bundle, embedding_map, args.query, args.query.name) if args.query else None
    if args.out.suffix.lower() == ".png":
        map_png(bundle, embedding_map, args.out, query=query)
    else:
        suspicion = audit_suspicion(bundle, compute=args.audit, progress=True)
        write_map_page(args.out, bundle, embedding_map, query=query, suspicion=suspicion, k=args.neighbors)
    print(f"{embedding_map.config.name} map of {len(embedding_map.coordinates)} images written to {args.out}")
    return 0


def _audit(args: argparse.Namespace) -> int:
    from lookalike.app.audit_report import write_report
    from lookalike.bundle import Bundle
    from lookalike.bundle.health_report import health_report, parse_issues

    try:
        issues = parse_issues(args.issues)
    except ValueError as error:
        print(f"lookalike: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    bundle = Bundle.load(args.bundle)
    print(f"audit of {len(bundle.index)} images of {args.bundle}: {', '.join(issues)}")
    report = health_report(bundle, issues, progress=True)
    tables, floats = report.tables(), "{:.3f}".format
    if report.label is not None:
        shown = (
            tables["label"]
            .head(args.top)[
                ["suspicion", "margin", "label", "suggested", "knn_predicted", "softmax_predicted", "outlier", "path"]
            ]
            .rename(columns={"knn_predicted": "k-NN says", "softmax_predicted": "softmax says"})
        )
        shown.insert(0, "rank", range(1, len(shown) + 1))
        print("\n== suspected label errors (out of fold, frozen ImageNet features)")
        print(shown.to_string(index=False, float_format=floats))
        print("loosest classes (mean cosine distance to their centroid):")
        for name, spread in list(report.label.class_spread().items())[:5]:
            print(f"  {name:<24} {spread:.3f}")
    if report.outlier is not None:
        outlier = report.outlier
        print(
            f"\n== outliers: {int(outlier.class_outlier.sum())} far from their class, "
            f"{int(outlier.far_from_all.sum())} far from every class; the least typical image of each class:"
        )
        print(outlier.least_typical(1).head(args.top).to_string(index=False, float_format=floats))
    if report.duplicate is not None:
        _print_duplicates(report.duplicate, args.top)
    if report.quality is not None:
        flagged = report.quality.issues_frame()
        print("\n== image quality: " + ", ".join(f"{issue} {n}" for issue, n in report.quality.summary().items()))
        if len(flagged):
            print(flagged.head(args.top).to_string(index=False))
    if report.balance is not None:
        small = report.balance.too_small()
        print(
            f"\n== class balance: imbalance {report.balance.imbalance():.1f}; "
            + (
                f"too small for the few-shot protocol: {', '.join(small)}"
                if small
                else "every class has enough train images"
            )
        )
        print(tables["balance"].head(args.top).to_string(index=False, float_format=floats))
    print("\n== summary")
    print(report.summary().to_string(index=False))
    print("time: " + ", ".join(f"{issue} {seconds:.1f} s" for issue, seconds in report.seconds.items()))
    written = report.write(args.csv) if args.csv else []
    html = args.html or (args.csv.with_suffix(".html") if args.csv else None)
    if html:
        written.append(write_report(report, bundle, html))
    for path in written:
        print(f"wrote {path}")
    return 0


def _print_duplicates(report, top: int):
    """Print the summary and the first ``top`` pairs of a duplicate report; returns its table."""
    table = report.to_frame()
    verified = "" if report.max_pixel_difference is None else ", verified on pixels"
    print(
        f"\n== duplicates (cosine >= {report.threshold:.2f}{verified}): {len(report)} pairs, "
        f"{int(report.exact.sum())} exact, "
        f"{int(report.cross_split.sum())} across splits (leaky), {report.n_clusters} clusters"
    )
    if len(table):
        print(
            table.head(top)[["similarity", "exact", "cross_split", "path_a", "path_b"]].to_string(
                index=False, float_format="{:.3f}".format
            )
        )
    return table


def _duplicates(args: argparse.Namespace) -> int:
    from lookalike.bundle import Bundle
    from lookalike.bundle import health
    from lookalike.index.duplicates import CANDIDATE_THRESHOLD, DEFAULT_THRESHOLD

    bundle = Bundle.load(args.bundle)
    default = DEFAULT_THRESHOLD if args.no_verify else CANDIDATE_THRESHOLD
    threshold = default if args.threshold is None else args.threshold
    options = {"threshold": threshold, "verify": not args.no_verify, "progress": True}
    if args.query:
        report = health.new_file_duplicates(bundle, args.query, **options)
    else:
        report = health.bundle_duplicates(bundle, **options)
    _print_duplicates(report, args.top)
    if args.csv:
        report.to_csv(args.csv)
        print(f"{len(report)} pairs written to {args.csv}")
    return 0


def _job(args: argparse.Namespace):
    from lookalike.bundle import EmbeddingJob

    return EmbeddingJob(
        engine=args.engine, ray_address=args.ray_address, actors=args.actors, chunk_size=args.chunk_size, progress=True
    )


def _print_embedding(summary) -> None:
    resumed = f"; {summary.resumed} were already done (resumed)" if summary.resumed else ""
    print(f"embedded {summary.embedded} images at {summary.images_per_second:.0f} images/s{resumed}")


def _embed(args: argparse.Namespace) -> int:
    from lookalike.bundle import Bundle
    from lookalike.bundle.updates import embed_into_store, records_of
    from lookalike.embedder.stream import EmbeddingStore

    store = EmbeddingStore(args.out)
    summary = embed_into_store(Bundle.load(args.bundle), records_of(args.paths), store, _job(args))
    _print_embedding(summary)
    print(f"{len(store.part_files())} part files in {args.out}")
    return _report_skipped(summary.failures)


def _add(args: argparse.Namespace) -> int:
    from lookalike.bundle import Bundle, add_files

    bundle = Bundle.load(args.bundle)
    result = add_files(bundle, args.paths, label=args.label, job=_job(args))
    if result.already_indexed:
        print(f"{result.already_indexed} of {result.files} files are already in the bundle; skipped")
    _print_embedding(result.embedding)
    if len(result.ids):
        print(
            f"added {len(result.ids)} images (ids {result.ids[0]}-{result.ids[-1]}); the index holds "
            f"{len(bundle.index)} images"
            + (
                f"; new classes (k-NN and centroids only): {', '.join(result.new_classes)}"
                if result.new_classes
                else ""
            )
        )
    return _report_skipped(result.failures)


def _remove(args: argparse.Namespace) -> int:
    from lookalike.bundle import Bundle, remove_paths

    bundle = Bundle.load(args.bundle)
    try:
        removed = remove_paths(bundle, args.items)
    except KeyError as error:
        print(f"lookalike: error: {error.args[0]}; nothing removed", file=sys.stderr)
        return EXIT_ERROR
    print(f"removed {removed} images; the index holds {len(bundle.index)} images")
    return 0


def _reindex(args: argparse.Namespace) -> int:
    from lookalike.bundle import Bundle, reindex

    bundle = Bundle.load(args.bundle)
    reindex(bundle, _index_spec(args))
    _print_recall(bundle.index, 10, 1000)
    return 0


def _recall(args: argparse.Namespace) -> int:
    from lookalike.bundle import Bundle

    _print_recall(Bundle.load(args.bundle).index, args.k, args.queries)
    return 0


def _print_recall(index, k: int, queries: int) -> None:
    recall, index_ms, exact_ms = index.recall_at_k(k, queries=queries)
    spec = index.spec
    params = {
        "hnsw": f"M={spec.hnsw_m}, efSearch={spec.ef_search}",
        "ivf": f"nlist={spec.nlist}, nprobe={spec.nprobe}",
        "ivfpq": f"nlist={spec.nlist}, nprobe={spec.nprobe}, m={spec.pq_m}, k_factor={spec.k_factor}",
    }
    print(
        f"{spec.type} index of {len(index)} images"
        + (f" ({params[spec.type]})" if spec.type in params else "")
        + f": recall@{k} {recall:.3f} against exact search over {min(queries, len(index))} stored embeddings as queries; "
        f"{index_ms:.3f} ms per query (exact: {exact_ms:.3f} ms)"
    )


def _export(args: argparse.Namespace) -> int:
    from lookalike.bundle import Bundle
    from lookalike.bundle.export import ExportError, export_bundle

    bundle = Bundle.load(args.bundle)
    try:
        result = export_bundle(bundle, args.out, args.format, force=args.force, progress=True)
    except ExportError as error:
        print(f"lookalike: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    if result.max_difference is None:
        print(f"{result.format} export of {result.images} images written to {result.path}")
    else:
        print(
            f"the embedder as ONNX written to {result.path}; checked against Keras on the bundle's images: "
            f"largest embedding difference {result.max_difference:.1e}"
        )
    return 0


def _serve(args: argparse.Namespace) -> int:
    options = _serve_options(args)
    from lookalike.app.ui import serve
    from lookalike.bundle import Bundle

    bundle = Bundle.load(args.bundle)
    if bundle.thumbnails is None:
        print(
            f"{args.bundle} stores no thumbnails (written by an older lookalike): results will show no images; "
            f"`lookalike reindex {args.bundle}` adds them",
            file=sys.stderr,
        )
    print(f"serving {args.bundle} on http://{options.host}:{options.port} (Ctrl+C stops)")
    serve(bundle, options)
    return 0


def reusable_demo_bundle(path: Path):
    """The demo bundle at ``path`` if it can serve the demo as trained, else None (the reason printed).

    Not reused: a directory that does not load as a bundle, and a bundle whose indexed images are no longer on
    disk (trained from a checkout that has since moved or gone; the Audit and Evaluate tabs read them).
    """
    from lookalike.bundle import Bundle, BundleError

    if not path.is_dir():
        return None
    try:
        bundle = Bundle.load(path)
    except BundleError as error:
        print(f"cannot reuse the demo bundle ({error}); training it again")
        return None
    missing = sum(not record.path.is_file() for record in bundle.index.records)
    if missing:
        print(f"the demo bundle indexes {missing} images that are no longer on disk; training it again")
        return None
    print(f"reusing the demo bundle {path} (--retrain to train again)")
    if bundle.thumbnails is None:  # written before bundles carried thumbnails
        bundle.save(path)
    return bundle


def _demo(args: argparse.Namespace) -> int:
    options = _serve_options(args)
    from lookalike.app.ui import serve
    from lookalike.data import DEFAULT_DATASET

    path = args.bundle or default_demo_bundle()
    bundle = None if args.retrain else reusable_demo_bundle(path)
    if bundle is None:
        bundle = _train_bundle(DEFAULT_DATASET, path, args)
    print(f"open http://{args.host}:{args.port} (Ctrl+C stops)")
    serve(bundle, options)
    return 0


def _format_result(result) -> str:
    best = result.characters[0]
    if result.unknown:
        first = (
            f"no close match: the closest is {best.label} (cosine {best.score:.3f}); match score "
            f"{result.match_score:.3f} is below this bundle's threshold {result.unknown_threshold:.3f}; the "
            "answers below name the nearest, not a match"
        )
    else:
        first = (
            f"match: {best.label} (cosine {best.score:.3f}; match score {result.match_score:.3f}, threshold "
            f"{result.unknown_threshold:.3f})"
        )
    lines = [first]
    lines.append(f"predicted: {result.predicted} (p={result.probabilities[result.predicted]:.3f})")
    lines.append(
        f"k-NN vote: {result.knn_predicted} ({result.knn_probabilities.get(result.knn_predicted, 0.0):.2f} of the vote)"
    )
    lines.append(f"nearest centroid: {result.centroid_predicted} (cosine {result.centroid_characters[0].score:.3f})")
    lines.append("nearest characters (best-matching image):")
    lines += [f"  {i}. {hit.label:<24} {hit.score:.3f}  {hit.path}" for i, hit in enumerate(result.characters, 1)]
    lines.append("nearest images:")
    lines += [f"  {i}. {hit.label:<24} {hit.score:.3f}  {hit.path}" for i, hit in enumerate(result.neighbors, 1)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lookalike`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    logger.setLevel(logging.INFO if args.verbose else logging.WARNING)
    from lookalike.app.server import ServeError
    from lookalike.bundle import BundleError
    from lookalike.data import DatasetError, ImageDecodeError
    from lookalike.embedder import BackboneWeightsError, RayUnavailable, TrainingError

    try:
        return args.handler(args)
    except (
        BackboneWeightsError,
        BundleError,
        DatasetError,
        ImageDecodeError,
        TrainingError,
        RayUnavailable,
        ServeError,
        FileNotFoundError,
        FileExistsError,
    ) as error:
        print(f"lookalike: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
