"""Exporting a bundle to the formats of the tools people already use.

``lookalike export BUNDLE --format FORMAT --out PATH`` calls :func:`export_bundle`; one function per format:

- ``projector`` (:func:`export_projector`): a folder for TensorBoard's Embedding Projector (Smilkov et al. 2016,
  "Embedding Projector: Interactive Visualization and Interpretation of Embeddings", arXiv:1611.05469), in the
  layout its plugin reads (``tensorboard/plugins/projector``)::

      projector_config.pbtxt   a ProjectorConfig message (text format), written with tensorboard's own proto
      tensors.tsv              the embeddings, one row per image, tab-separated, no header
      metadata.tsv             label, split, file, id of each row; a header row (more than one column)
      sprite.jpg               the thumbnails in a square grid, row-major, at most 8192 x 8192 pixels (JPEG: the
                               thumbnails are JPEGs; a PNG of 1,006 thumbnails is 13 MB, this JPEG 3 MB)

  Open it with ``tensorboard --logdir PATH`` (PROJECTOR tab), or load the TSV files into
  https://projector.tensorflow.org.
- ``parquet`` (:func:`export_parquet`): one Apache Parquet table, one row per indexed image, with columns
  ``id`` (int64), ``path``, ``label``, ``split`` (string) and ``embedding`` (fixed-size list of float32, the
  L2-normalised embedding); pandas, pyarrow, DuckDB and LanceDB read it as it is.
- ``onnx`` (:func:`export_onnx`): the embedder as an ONNX model (converted by tf2onnx from the Keras model), checked
  against Keras on the bundle's own images like the LiteRT export. Input ``image``: float32 of shape
  (batch, s, s, 3), RGB pixels in [0, 255] (s = the bundle's image size, padded to a square as
  :func:`lookalike.data.load_image` does; the model scales them itself). Outputs ``embedding``: float32
  (batch, d), L2-normalised; ``probabilities``: float32 (batch, n_classes), softmax over the embedder's classes
  in ``class_names`` order (both also listed in the model's metadata).

Every export is written beside its target under a temporary name and renamed into place when complete, so a
killed export never leaves a half-written file or folder at ``--out``. Nothing in the bundle changes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..data.files import replace_path
from ..data.images import ImageDecodeError
from ..data.thumbnails import JPEG_QUALITY, THUMBNAIL_SIZE, decode_thumbnail

if TYPE_CHECKING:  # the bundle imports TensorFlow; the command line reads FORMATS without it
    from .bundle import Bundle

logger = logging.getLogger(__name__)

#: The export formats, as ``lookalike export --format`` names them.
FORMATS = ("projector", "parquet", "onnx")
#: Largest side of a sprite image the Embedding Projector accepts, in pixels.
SPRITE_LIMIT = 8192
TENSORS_FILE = "tensors.tsv"
METADATA_FILE = "metadata.tsv"
SPRITE_FILE = "sprite.jpg"
#: Columns of the projector's ``metadata.tsv``, in order.
METADATA_COLUMNS = ("label", "split", "file", "id")
#: Images of the bundle the ONNX export is checked on against Keras (evenly spread over the index).
CHECK_IMAGES = 16
#: ONNX operator set of the export (onnxruntime >= 1.14 runs it).
ONNX_OPSET = 17
INSTALL_HINT = 'pip install "lookalike[export]"'


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_bundle` wrote.

    Attributes
    ----------
    path : Path
        The export (a folder for ``projector``, a file otherwise).
    format : str
    images : int
        Indexed images exported (rows of the table or the projector's tensor).
    max_difference : float or None
        ``onnx``: the largest absolute difference of the ONNX embeddings from Keras on the check images.
    """

    path: Path
    format: str
    images: int
    max_difference: float | None = None


class ExportError(RuntimeError):
    """An export cannot be made: unknown format, a missing optional package (the message gives the install
    command), or a converted model that does not reproduce Keras. Nothing is written then."""


def _require(module: str, package: str):
    """Import an optional dependency of an export, or raise :class:`ExportError` with the install command."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ExportError(f"this export needs the {package} package, which is not installed: {INSTALL_HINT}") from error


def _clean(value: object) -> str:
    """A TSV field: tabs and line breaks would split rows or columns, so they become spaces."""
    return " ".join(str(value).replace("\t", " ").splitlines())


def sprite_layout(n: int) -> tuple[int, int]:
    """Grid and cell size of a sprite of ``n`` thumbnails within the projector's limit.

    Returns
    -------
    (columns, cell) : tuple of int
        ``columns`` x ``columns`` cells (the smallest square grid holding ``n``), each ``cell`` pixels square:
        :data:`~lookalike.data.thumbnails.THUMBNAIL_SIZE`, or less so that ``columns * cell <= SPRITE_LIMIT``.

    Raises
    ------
    ExportError
        ``n`` thumbnails do not fit in a sprite at one pixel each.
    """
    columns = max(1, math.ceil(math.sqrt(n)))
    cell = min(THUMBNAIL_SIZE, SPRITE_LIMIT // columns)
    if cell < 1:
        raise ExportError(f"{n} images do not fit in a {SPRITE_LIMIT} x {SPRITE_LIMIT} px sprite")
    return columns, cell


def sprite_image(bundle: Bundle, *, progress: bool = False) -> tuple[np.ndarray, int] | None:
    """The bundle's thumbnails tiled into one sprite, in index row order.

    Returns
    -------
    (pixels, cell) or None
        uint8 ndarray of shape (columns * cell, columns * cell, 3), white where an image has no thumbnail, and
        the cell size in pixels (see :func:`sprite_layout`); None when the bundle stores no thumbnails.
    """
    from PIL import Image
    from tqdm.auto import tqdm

    pack = bundle.thumbnails
    if pack is None:
        return None
    ids = bundle.index.ids
    columns, cell = sprite_layout(len(ids))
    sprite = np.full((columns * cell, columns * cell, 3), 255, dtype=np.uint8)
    missing = 0
    for row, image_id in enumerate(tqdm(ids, desc="sprite", unit="img", disable=not progress, leave=False)):
        blob = pack.get(int(image_id))
        try:
            pixels = decode_thumbnail(blob, name=f"thumbnail {image_id}") if blob is not None else None
        except ImageDecodeError as error:
            logger.warning("%s", error)
            pixels = None
        if pixels is None:
            missing += 1
            continue
        thumbnail = Image.fromarray(pixels)
        if thumbnail.size != (cell, cell):
            thumbnail = thumbnail.resize((cell, cell), Image.Resampling.LANCZOS)
        top, left = (row // columns) * cell, (row % columns) * cell
        sprite[top : top + cell, left : left + cell] = np.asarray(thumbnail)
    if missing:
        logger.warning("%d of %d images have no thumbnail; their sprite cells are blank", missing, len(ids))
    return sprite, cell


def export_projector(bundle: Bundle, directory: str | os.PathLike, *, progress: bool = False) -> Path:
    """Write the Embedding Projector files of ``bundle`` into ``directory`` (an existing, empty folder).

    See the module docstring for the layout. The config is a
    ``tensorboard.plugins.projector.ProjectorConfig`` written by ``visualize_embeddings``; its paths are
    relative to ``directory``.

    Parameters
    ----------
    bundle : Bundle
    directory : path-like
    progress : bool
        Show a progress bar while the sprite is drawn.

    Returns
    -------
    Path
        ``directory``.
    """
    from PIL import Image
    from tensorboard.plugins import projector

    directory = Path(directory)
    vectors, records = bundle.index.vectors, bundle.index.records
    # %.9g keeps every float32 exactly; the projector's reader parses each field with float().
    np.savetxt(directory / TENSORS_FILE, vectors, fmt="%.9g", delimiter="\t")
    rows = ["\t".join(METADATA_COLUMNS)] + [
        "\t".join(_clean(v) for v in (r.label, r.split, r.path, int(i))) for r, i in zip(records, bundle.index.ids)
    ]
    (directory / METADATA_FILE).write_text("\n".join(rows) + "\n", encoding="utf-8")
    config = projector.ProjectorConfig()
    embedding = config.embeddings.add()
    embedding.tensor_name = "lookalike_embedding"
    embedding.tensor_path = TENSORS_FILE
    embedding.tensor_shape.extend(vectors.shape)
    embedding.metadata_path = METADATA_FILE
    sprite = sprite_image(bundle, progress=progress)
    if sprite is None:
        logger.warning("the bundle stores no thumbnails: the projector export has no sprite image")
    else:
        pixels, cell = sprite
        Image.fromarray(pixels).save(directory / SPRITE_FILE, quality=JPEG_QUALITY)
        embedding.sprite.image_path = SPRITE_FILE
        embedding.sprite.single_image_dim.extend([cell, cell])
    projector.visualize_embeddings(str(directory), config)
    return directory


def embedding_table(bundle: Bundle):
    """The bundle's embeddings and metadata as one Arrow table.

    Returns
    -------
    pyarrow.Table
        Columns ``id`` (int64), ``path``, ``label``, ``split`` (string) and ``embedding`` (fixed-size list of
        float32 of length d, L2-normalised), one row per indexed image in index row order. The schema metadata
        key ``lookalike`` holds a JSON object with the embedding size, the backbone and the class names.
    """
    import pyarrow as pa

    vectors, records = np.ascontiguousarray(bundle.index.vectors, dtype=np.float32), bundle.index.records
    d = vectors.shape[1]
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), type=pa.float32()), d)
    description = {
        "embedding_dim": d,
        "metric": "cosine (inner product of L2-normalised embeddings)",
        "backbone": bundle.manifest.backbone,
        "class_names": list(bundle.class_names),
    }
    return pa.table(
        {
            "id": pa.array(bundle.index.ids, type=pa.int64()),
            "path": pa.array([str(r.path) for r in records], type=pa.string()),
            "label": pa.array([r.label for r in records], type=pa.string()),
            "split": pa.array([r.split for r in records], type=pa.string()),
            "embedding": embedding,
        },
        metadata={"lookalike": json.dumps(description)},
    )


def export_parquet(bundle: Bundle, path: str | os.PathLike) -> Path:
    """Write :func:`embedding_table` of ``bundle`` to the Parquet file ``path`` (zstd-compressed).

    Returns
    -------
    Path
        ``path``.
    """
    import pyarrow.parquet as pq

    pq.write_table(embedding_table(bundle), path, compression="zstd")
    return Path(path)


def _keras_embedder(bundle: Bundle):
    """The bundle's Keras embedder (the query path runs on its LiteRT runtime, without Keras)."""
    return bundle.keras_embedder


def _check_images(bundle: Bundle, size: int) -> np.ndarray:
    """Up to :data:`CHECK_IMAGES` of the bundle's images, decoded as for the model; seeded noise if none can be read.

    Returns
    -------
    float32 ndarray of shape (n, size, size, 3)
        RGB pixels in [0, 255].
    """
    from ..data import iter_image_batches

    records = bundle.index.records
    rows = np.unique(np.linspace(0, len(records) - 1, min(CHECK_IMAGES, len(records))).astype(int))
    paths, crop = [records[r].path for r in rows], bundle.embedder.config.crop_to_content
    images = [b.images for b in iter_image_batches(paths, size=size, batch_size=64, crop=crop)]
    images = np.concatenate(images) if images else np.empty((0, size, size, 3), np.uint8)
    if len(images) == 0:
        logger.warning("none of the bundle's images can be read; the ONNX export is checked on random images")
        images = np.random.default_rng(0).integers(0, 256, (8, size, size, 3))
    return images.astype(np.float32)


def export_onnx(bundle: Bundle, path: str | os.PathLike) -> tuple[Path, float]:
    """Convert the bundle's embedder to ONNX with tf2onnx and check it against Keras with onnxruntime.

    The Keras model (raw pixels -> embedding, probabilities) is traced as a ``tf.function`` and converted by
    ``tf2onnx.convert.from_function`` (tf2onnx reads TensorFlow graphs, not Keras 3 models). The check runs
    both on :data:`CHECK_IMAGES` of the bundle's own images: embeddings must agree within the LiteRT export's
    tolerance (:data:`lookalike.embedder.runtime.MAX_EXPORT_ERROR`) and the top-1 class must be the same.
    Inputs and outputs: see the module docstring.

    Returns
    -------
    (Path, float)
        ``path``, and the largest absolute difference of the embeddings from Keras.

    Raises
    ------
    ExportError
        tf2onnx, onnx or onnxruntime is missing, or the ONNX model does not reproduce Keras.
    """
    tf2onnx = _require("tf2onnx", "tf2onnx")
    onnx = _require("onnx", "onnx")
    ort = _require("onnxruntime", "onnxruntime")
    import tensorflow as tf

    from ..embedder._keras import keras, quietly
    from ..embedder.runtime import MAX_EXPORT_ERROR

    embedder = _keras_embedder(bundle)
    size = embedder.config.image_size
    image = keras.Input((size, size, 3), name="image")
    model = keras.Model(image, list(embedder._head_outputs(embedder.encoder(None)(image))))
    signature = (tf.TensorSpec((None, size, size, 3), tf.float32, name="image"),)

    @tf.function(input_signature=signature)
    def inference(image):
        embedding, probabilities = model(image, training=False)
        return {"embedding": embedding, "probabilities": probabilities}

    with quietly():  # tf2onnx logs every optimizer pass
        logging.getLogger("tf2onnx").setLevel(logging.ERROR)
        proto, _ = tf2onnx.convert.from_function(inference, input_signature=signature, opset=ONNX_OPSET)
    for value in [*proto.graph.input, *proto.graph.output]:
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    metadata = {
        "producer": "lookalike",
        "input": f"image: float32 (batch, {size}, {size}, 3), RGB pixels in [0, 255], padded to a square",
        "outputs": "embedding: float32 (batch, d), L2-normalised; probabilities: float32 (batch, n_classes)",
        "class_names": json.dumps(list(embedder.class_names)),
    }
    onnx.helper.set_model_props(proto, metadata)
    onnx.checker.check_model(proto)
    path = Path(path)
    onnx.save_model(proto, str(path))
    images = _check_images(bundle, size)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    fast = session.run(["embedding", "probabilities"], {"image": images})
    reference = embedder.head_outputs(embedder.encode(images))
    error = float(np.abs(fast[0] - reference[0]).max())
    if error > MAX_EXPORT_ERROR or not np.array_equal(fast[1].argmax(1), reference[1].argmax(1)):
        raise ExportError(f"the ONNX export differs from Keras (max embedding difference {error:.2e}); not written")
    logger.info("exported %s (max embedding difference from Keras %.1e)", path, error)
    return path, error


def _check_target(out: Path, format: str, *, force: bool) -> None:
    if format != "projector" and out.is_dir():
        example = out / ("embedder.onnx" if format == "onnx" else "embeddings.parquet")
        raise FileExistsError(f"{out} is a folder; a {format} export is one file: give its name, e.g. {example}")
    if out.exists() and not force and (out.is_file() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not empty; choose another --out or pass --force to replace it")


def export_bundle(
    bundle: Bundle, out: str | os.PathLike, format: str, *, force: bool = False, progress: bool = False
) -> ExportResult:
    """Export ``bundle`` as ``format`` to ``out``, atomically.

    Parameters
    ----------
    bundle : Bundle
    out : path-like
        A folder for ``projector``, a file for ``parquet`` (e.g. ``embeddings.parquet``) and ``onnx``
        (e.g. ``embedder.onnx``). Its parent folders are created.
    format : {"projector", "parquet", "onnx"}
    force : bool
        Replace an existing ``out`` (by default only a missing path or an empty folder is written to).
    progress : bool
        Show progress bars.

    Returns
    -------
    ExportResult

    Raises
    ------
    ExportError
        ``format`` is unknown, a package it needs is missing, or the ONNX model does not reproduce Keras.
    FileExistsError
        ``out`` exists and is not empty, and ``force`` is false.
    """
    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    out = Path(out).expanduser().absolute()
    _check_target(out, format, force=force)
    if format == "parquet":
        _require("pyarrow", "pyarrow")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.exporting-", dir=out.parent))
    try:
        staged, difference = (staging if format == "projector" else staging / out.name), None
        if format == "projector":
            export_projector(bundle, staged, progress=progress)
        elif format == "parquet":
            export_parquet(bundle, staged)
        else:
            difference = export_onnx(bundle, staged)[1]
        if format == "projector":
            staging.chmod(0o755)  # mkdtemp makes it private; the export is an ordinary folder
        else:
            staged.chmod(0o644)
        replace_path(staged, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("exported %s as %s to %s", bundle.path, format, out)
    return ExportResult(out, format, len(bundle.index), difference)
