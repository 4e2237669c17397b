"""Drawing an embedding map: static (matplotlib) for PNG; the interactive HTML page is :mod:`.map_page`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..bundle import Bundle
from ..index.projection import EmbeddingMap

#: Above this many classes class names are not written beside their centroids.
MAX_LEGEND_CLASSES = 30


def class_colours(n: int) -> list[str]:
    """``n`` hex colours for classes: matplotlib's tab20, tab20b and tab20c (60 distinct), then repeated."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    palette = [to_hex(colour) for name in ("tab20", "tab20b", "tab20c") for colour in colormaps[name].colors]
    return [palette[i % len(palette)] for i in range(n)]


@dataclass(frozen=True)
class PlacedQuery:
    """A query on the map: its position (dims,), the index rows of its top-k neighbors, and a caption."""

    position: np.ndarray
    neighbor_rows: np.ndarray
    caption: str


def place_image(bundle: Bundle, embedding_map: EmbeddingMap, path: str | Path, caption: str) -> PlacedQuery:
    """Embed one image file and place it on ``embedding_map`` with its 10 nearest images.

    Raises
    ------
    ImageDecodeError
        The file cannot be read.
    """
    embeddings, _ = bundle.embed_files([path])
    positions, neighbor_rows = bundle.place_on_map(embeddings, embedding_map)
    return PlacedQuery(positions[0], neighbor_rows[0], caption)


def class_markers(bundle: Bundle, embedding_map: EmbeddingMap) -> np.ndarray:
    """Map position of each class's centroid, drawn at its most typical image (the one nearest the centroid in
    embedding space): float32 array of shape (n_classes, dims), NaN for a class without images.

    The mean of a class's map positions would fall between clusters when the projection splits a class.
    """
    _, typical = bundle.centroids
    positions = np.full((len(typical), embedding_map.coordinates.shape[1]), np.nan, dtype=np.float32)
    positions[typical >= 0] = embedding_map.coordinates[typical[typical >= 0]]
    return positions


def map_png(bundle: Bundle, embedding_map: EmbeddingMap, path: Path, *, query: PlacedQuery | None = None) -> None:
    """The map as a PNG image: every image coloured by class, centroids (x), the query (star) and its neighbors."""
    coordinates, dims = embedding_map.coordinates, embedding_map.coordinates.shape[1]
    labels, names = bundle.index.labels, bundle.class_names
    centroids = class_markers(bundle, embedding_map)
    fig = Figure(figsize=(9, 8))
    ax = fig.add_subplot(projection="3d" if dims == 3 else None)
    colours = np.array(class_colours(len(names)))[labels]
    ax.scatter(*coordinates.T, c=colours, s=8, alpha=0.7, linewidths=0)
    finite = np.isfinite(centroids).all(axis=1)
    ax.scatter(*centroids[finite].T, marker="x", c="black", s=30)
    if len(names) <= MAX_LEGEND_CLASSES:
        for code in np.flatnonzero(finite):
            ax.text(*centroids[code], names[code], fontsize=7)
    if query is not None:
        ax.scatter(
            *coordinates[query.neighbor_rows[query.neighbor_rows >= 0]].T, s=90, facecolors="none", edgecolors="crimson"
        )
        ax.scatter(*query.position, marker="*", s=300, c="crimson")
    ax.set_title(f"{embedding_map.config.method} map of {len(coordinates)} embeddings, {len(names)} classes")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
