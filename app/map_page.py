"""The interactive map page: one self-contained HTML file that shows a bundle's embedding map.

The page (template ``map_page.html``) inlines Plotly's JavaScript (``plotly.offline.get_plotlyjs()``), the map
and the bundle's thumbnails, so it works offline and needs no server: hover shows an image's thumbnail, a box
or lasso selection lists the selected images beside the plot, clicking a point shows it beside its nearest
neighbors, a searchable class legend highlights classes, and points are coloured by label, predicted label,
split or audit suspicion. ``lookalike map --out map.html`` writes it; the app's Map tab shows it in a
sandboxed ``<iframe>``.

Everything the page shows is computed here by the library, once, when the page is built:

- positions: :meth:`lookalike.bundle.Bundle.embedding_map` (UMAP or t-SNE);
- each image's nearest neighbors: :func:`lookalike.index.neighbors.indexed_neighbors` (leave-one-out);
- its predicted label: the similarity-weighted k-NN vote of those neighbors,
  :func:`lookalike.index.neighbors.knn_vote`;
- its audit suspicion: :func:`lookalike.bundle.audit_bundle`, only when asked for or when the bundle's frozen
  audit features are already cached (computing them runs the backbone over every image);
- thumbnails: the bundle's thumbnail pack (:mod:`lookalike.data.thumbnails`), checked, shrunk to
  :data:`TILE_SIZE` pixels and packed into WebP sprite sheets of :data:`SHEET_COLUMNS` x :data:`SHEET_COLUMNS`
  tiles (one image per sheet instead of one per thumbnail: no per-file headers).

The page only ever names an image by its file name, never its folder. Text from the bundle (class names, file
names) reaches the page as escaped JSON and is inserted with ``textContent``, so a crafted label cannot run
script in the page.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from ..data import ImageDecodeError
from ..data.files import write_atomic
from ..data.thumbnails import decode_thumbnail
from ..index.neighbors import indexed_neighbors, knn_vote
from .maps import PlacedQuery, class_colours

if TYPE_CHECKING:
    from ..bundle import Bundle
    from ..index.projection import EmbeddingMap, MapConfig

logger = logging.getLogger(__name__)

TEMPLATE = Path(__file__).with_name("map_page.html")
#: Side in pixels of a thumbnail on the page.
TILE_SIZE = 64
#: Tiles per row and per column of one sprite sheet (256 tiles, 1024 x 1024 pixels at 64 px).
SHEET_COLUMNS = 16
#: WebP quality of the sprite sheets.
SHEET_QUALITY = 70
#: Nearest neighbors listed per image (and voting for its predicted label).
NEIGHBORS = 10
SPLIT_COLOURS = {"train": "#4c78a8", "val": "#f58518", "test": "#54a24b"}
OTHER_SPLIT_COLOUR = "#b279a2"


@dataclass(frozen=True)
class SpriteSheets:
    """Thumbnails packed into square sprite sheets.

    Attributes
    ----------
    sheets : list of bytes
        Encoded images (``mime``), each ``columns`` x ``columns`` tiles of ``size`` pixels, filled row by row.
    slots : int64 ndarray of shape (n,)
        Tile of each image across the sheets (sheet ``slot // columns**2``), -1 for an image without thumbnail.
    size, columns : int
    mime : str
    """

    sheets: list[bytes]
    slots: np.ndarray
    size: int
    columns: int
    mime: str = "image/webp"

    def to_dict(self) -> dict:
        """JSON form for the page: base64 sheets, tile size, columns and MIME type (slots are stored apart)."""
        return {
            "sheets": [base64.b64encode(sheet).decode("ascii") for sheet in self.sheets],
            "size": self.size,
            "columns": self.columns,
            "mime": self.mime,
        }


def sprite_sheets(
    bundle: Bundle,
    rows: np.ndarray,
    *,
    size: int = TILE_SIZE,
    columns: int = SHEET_COLUMNS,
    quality: int = SHEET_QUALITY,
) -> SpriteSheets:
    """Pack the thumbnails of index rows ``rows`` into WebP sprite sheets.

    Each thumbnail is read from the bundle's pack and checked (:func:`lookalike.data.thumbnails.decode_thumbnail`:
    a JPEG of at most thumbnail size), resized to ``size`` pixels (Lanczos) and pasted on a white sheet.

    Parameters
    ----------
    bundle : Bundle
    rows : int64 ndarray of shape (n,)
        Rows of ``bundle.index``, in page order.
    size : int
        Tile side in pixels.
    columns : int
        Tiles per sheet row and column.
    quality : int
        WebP quality, 0-100.

    Returns
    -------
    SpriteSheets
        No sheets and all slots -1 when the bundle has no thumbnails.
    """
    pack, slots = bundle.thumbnails, np.full(len(rows), -1, dtype=np.int64)
    if pack is None:
        return SpriteSheets([], slots, size, columns)
    per_sheet = columns * columns
    sheets: list[bytes] = []
    sheet, filled = None, 0

    def flush():
        buffer = io.BytesIO()
        sheet.save(buffer, format="WEBP", quality=quality, method=4)
        sheets.append(buffer.getvalue())

    for position, row in enumerate(rows):
        image_id = int(bundle.index.ids[row])
        blob = pack.get(image_id)
        if blob is None:
            continue
        try:
            pixels = decode_thumbnail(blob, name=f"thumbnail {image_id}")
        except ImageDecodeError as error:
            logger.warning("bundle %s: %s", bundle.path, error)
            continue
        if sheet is None:
            sheet = Image.new("RGB", (columns * size, columns * size), "white")
        tile = Image.fromarray(pixels).resize((size, size), Image.Resampling.LANCZOS)
        within = filled % per_sheet
        sheet.paste(tile, ((within % columns) * size, (within // columns) * size))
        slots[position] = filled
        filled += 1
        if filled % per_sheet == 0:
            flush()
            sheet = None
    if sheet is not None:
        flush()
    return SpriteSheets(sheets, slots, size, columns)


def audit_suspicion(bundle: Bundle, *, compute: bool = False, progress: bool = False) -> np.ndarray | None:
    """The label audit's suspicion score of every indexed image, when it is cheap to have.

    Parameters
    ----------
    bundle : Bundle
    compute : bool
        Compute the frozen audit features if the bundle has none cached (runs the backbone over every image).
    progress : bool
        Show a progress bar while encoding.

    Returns
    -------
    float32 ndarray of shape (len(bundle.index),), in [0, 1], or None
        None when ``compute`` is False and the bundle has no cached audit features (``audit/features.json``).
    """
    from ..bundle import audit_bundle
    from ..bundle.audit import AUDIT_DIR

    if not compute and (bundle.path is None or not (bundle.path / AUDIT_DIR / "features.json").is_file()):
        return None
    result, _ = audit_bundle(bundle, progress=progress)
    return np.asarray(result.suspicion, dtype=np.float32)


def _rounded(values: np.ndarray, decimals: int) -> list[float]:
    return np.round(np.asarray(values, dtype=np.float64), decimals).tolist()


def page_data(
    bundle: Bundle,
    embedding_map: EmbeddingMap,
    *,
    query: PlacedQuery | None = None,
    classes: list[str] | None = None,
    suspicion: np.ndarray | None = None,
    k: int = NEIGHBORS,
) -> dict:
    """Everything the map page shows, as JSON-serialisable data (see ``map_page.html``).

    Parameters
    ----------
    bundle : Bundle
    embedding_map : EmbeddingMap
        From ``bundle.embedding_map(...)``; row i is index row i.
    query : PlacedQuery, optional
        Drawn as a star with rings on its nearest images.
    classes : list of str, optional
        Put only the images of these classes on the page (default all).
    suspicion : float32 ndarray of shape (len(bundle.index),), optional
        Offered as a colouring (see :func:`audit_suspicion`).
    k : int
        Nearest neighbors per image.

    Returns
    -------
    dict
        Arrays by page point: ``x, y[, z]`` (map position), ``label, predicted, split`` (codes), ``file, id``,
        ``neighbors, scores`` (flattened (n, k), page points, -1 for none or not on the page), ``thumb`` (sprite
        slot), plus ``classes, colors, splits, splitColors, centroids, thumbs, query, title, dims, k``.

    Raises
    ------
    ValueError
        A name in ``classes`` is not a class of the bundle.
    """
    index, names = bundle.index, list(bundle.class_names)
    unknown = sorted(set(classes or ()) - set(names))
    if unknown:
        raise ValueError(f"no class {', '.join(map(repr, unknown))} in this bundle; its classes are {', '.join(names)}")
    shown = np.arange(len(index))
    if classes:
        shown = np.flatnonzero(np.isin(index.labels, [names.index(c) for c in classes]))
    page_row = np.full(len(index), -1, dtype=np.int64)
    page_row[shown] = np.arange(len(shown))
    found = indexed_neighbors(index, k=k)
    predicted = np.argmax(knn_vote(found.labels, found.scores, len(names)), axis=1)
    neighbor_rows = np.where(found.rows[shown] >= 0, page_row[np.maximum(found.rows[shown], 0)], -1)
    scores = np.where(neighbor_rows >= 0, found.scores[shown], 0.0)
    order = list(SPLIT_COLOURS)
    splits = sorted({index.records[r].split for r in shown}, key=lambda s: (order.index(s) if s in order else 9, s))
    split_code = {s: i for i, s in enumerate(splits)}
    _, typical = bundle.centroids
    coordinates, dims = embedding_map.coordinates, embedding_map.coordinates.shape[1]
    sheets = sprite_sheets(bundle, shown)
    method = embedding_map.config.method.upper().replace("TSNE", "t-SNE")
    data = {
        "title": f"{method} map of {len(shown)} images, {len(set(index.labels[shown].tolist()))} classes"
        + (f" · {bundle.path.name}" if bundle.path else ""),
        "dims": dims,
        "k": k,
        "classes": names,
        "colors": class_colours(len(names)),
        "splits": splits,
        "splitColors": [SPLIT_COLOURS.get(s, OTHER_SPLIT_COLOUR) for s in splits],
        "x": _rounded(coordinates[shown, 0], 4),
        "y": _rounded(coordinates[shown, 1], 4),
        "label": index.labels[shown].tolist(),
        "predicted": predicted[shown].tolist(),
        "split": [split_code[index.records[r].split] for r in shown],
        "file": [index.records[r].path.name for r in shown],
        "id": index.ids[shown].tolist(),
        "neighbors": neighbor_rows.ravel().tolist(),
        "scores": _rounded(scores.ravel(), 3),
        "centroids": [int(page_row[r]) if r >= 0 else -1 for r in typical],
        "thumb": sheets.slots.tolist(),
        "thumbs": sheets.to_dict(),
        "suspicion": _rounded(suspicion[shown], 3) if suspicion is not None else None,
        "query": None,
    }
    if dims == 3:
        data["z"] = _rounded(coordinates[shown, 2], 4)
    if query is not None:
        rows = query.neighbor_rows[query.neighbor_rows >= 0]
        data["query"] = {
            "position": _rounded(query.position, 4),
            "rows": [int(page_row[r]) for r in rows if page_row[r] >= 0],
            "caption": query.caption,
        }
    return data


def _script_json(data: dict) -> str:
    """JSON safe inside a ``<script>`` element: no ``<``, ``>`` or ``&`` that could end it or open a comment."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_page(data: dict) -> str:
    """The HTML page for :func:`page_data`'s ``data``, with Plotly's JavaScript inlined."""
    from plotly.offline import get_plotlyjs

    template = TEMPLATE.read_text(encoding="utf-8")
    plotly_js = get_plotlyjs().replace("</script", "<\\/script")
    # Replaced last-to-first so that neither inserted text is searched for the other marker.
    head, _, tail = template.partition("/*MAP_DATA*/")
    head = head.replace("/*PLOTLY_JS*/", plotly_js, 1)
    return head + _script_json(data) + tail


def map_page(bundle: Bundle, embedding_map: EmbeddingMap, **options) -> str:
    """The self-contained HTML map page; ``options`` as for :func:`page_data`."""
    return render_page(page_data(bundle, embedding_map, **options))


def write_map_page(path: str | Path, bundle: Bundle, embedding_map: EmbeddingMap, **options) -> Path:
    """Write :func:`map_page` to ``path`` atomically; ``options`` as for :func:`page_data`. Returns ``path``."""
    path = Path(path)
    return write_atomic(path, map_page(bundle, embedding_map, **options))


def query_fragment(bundle: Bundle, query: PlacedQuery) -> str:
    """URL fragment that places ``query`` on an already written page: ``#query=x,y[,z]&ids=i1,i2,...``.

    The neighbors are named by their stable image ids; the page reads numbers only from the fragment, so one
    page per bundle serves every query.
    """
    ids = bundle.index.ids[query.neighbor_rows[query.neighbor_rows >= 0]]
    position = ",".join(f"{v:.4f}" for v in np.asarray(query.position, dtype=np.float64))
    return f"#query={position}&ids={','.join(str(int(i)) for i in ids)}"


def cached_page(
    folder: Path, bundle: Bundle, config: MapConfig, *, classes: list[str] | None = None, k: int = NEIGHBORS
) -> Path:
    """The map page of ``bundle`` for ``config`` in ``folder``, written on first use and reused afterwards.

    The file name is a digest of everything the page shows: the indexed embeddings, the thumbnail pack, the map
    settings, the classes, ``k`` and whether the audit's suspicion is available (:func:`audit_suspicion`), so a
    changed or replaced bundle gets a new page and an unchanged one is never rebuilt.

    Parameters
    ----------
    folder : Path
        Where pages are written (created if missing), e.g. under the app's served folder.
    bundle : Bundle
    config : MapConfig
    classes : list of str, optional
        Only these classes (default all).
    k : int
        Nearest neighbors per image.

    Returns
    -------
    Path
        The page, complete (written atomically).
    """
    from ..bundle.audit import AUDIT_DIR
    from ..data.thumbnails import PACK_FILE

    audited = bundle.path is not None and (bundle.path / AUDIT_DIR / "features.json").is_file()
    parts = [bundle.index.fingerprint, bundle.manifest.files.get(PACK_FILE), config.name, sorted(classes or []), k]
    digest = hashlib.sha256(json.dumps([*parts, audited]).encode()).hexdigest()[:24]
    path = folder / f"map-{config.name}-{digest}.html"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        embedding_map = bundle.embedding_map(config)
        suspicion = audit_suspicion(bundle) if audited else None
        write_map_page(path, bundle, embedding_map, classes=classes, suspicion=suspicion, k=k)
    return path
