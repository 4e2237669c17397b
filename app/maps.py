"""Drawing an embedding map: interactive (Plotly) for the app and HTML, static (matplotlib) for PNG."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from matplotlib.figure import Figure

from ..bundle import Bundle
from ..index.projection import EmbeddingMap

#: Above this many classes the legend is hidden (colours repeat; hover names the class).
MAX_LEGEND_CLASSES = 30
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#aec7e8",
    "#ffbb78",
    "#98df8a",
    "#ff9896",
    "#c5b0d5",
    "#c49c94",
    "#f7b6d2",
    "#c7c7c7",
    "#dbdb8d",
    "#9edae5",
)


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


def _scatter(dims: int, points: np.ndarray, **options):
    if dims == 3:
        return go.Scatter3d(x=points[:, 0], y=points[:, 1], z=points[:, 2], **options)
    return go.Scatter(x=points[:, 0], y=points[:, 1], **options)


def map_figure(
    bundle: Bundle, embedding_map: EmbeddingMap, *, query: PlacedQuery | None = None, classes: list[str] | None = None
) -> go.Figure:
    """Interactive scatter of the map: one trace per class, centroids marked, the query and its neighbors highlighted.

    Parameters
    ----------
    bundle : Bundle
    embedding_map : EmbeddingMap
        From ``bundle.embedding_map(...)``.
    query : PlacedQuery, optional
    classes : list of str, optional
        Show only these classes (default all).
    """
    coordinates, dims = embedding_map.coordinates, embedding_map.coordinates.shape[1]
    labels, names = bundle.index.labels, bundle.class_names
    shown = [names.index(c) for c in classes] if classes else range(len(names))
    centroids = class_markers(bundle, embedding_map)
    marker_size = 4 if dims == 3 else 6
    fig = go.Figure()
    for code in shown:
        members = np.flatnonzero(labels == code)
        if len(members) == 0:
            continue
        records = [bundle.index.records[i] for i in members]
        fig.add_trace(
            _scatter(
                dims,
                coordinates[members],
                mode="markers",
                name=names[code],
                legendgroup=names[code],
                marker=dict(size=marker_size, color=PALETTE[code % len(PALETTE)], opacity=0.75),
                customdata=np.stack(
                    [[names[code]] * len(members), [r.path.name for r in records], [r.split for r in records]], axis=1
                ),
                hovertemplate="<b>%{customdata[0]}</b><br>%{customdata[1]} (%{customdata[2]})<extra></extra>",
            )
        )
    shown_centroids = np.array([c for c in shown if np.isfinite(centroids[c]).all()], dtype=np.int64)
    if len(shown_centroids):
        fig.add_trace(
            _scatter(
                dims,
                centroids[shown_centroids],
                mode="markers+text" if len(shown_centroids) <= MAX_LEGEND_CLASSES else "markers",
                name="class centroids",
                text=[names[c] for c in shown_centroids],
                textposition="top center",
                marker=dict(symbol="x", size=marker_size + 3, color="black"),
                hovertemplate="centroid of <b>%{text}</b> (its most typical image)<extra></extra>",
            )
        )
    if query is not None:
        neighbors = coordinates[query.neighbor_rows[query.neighbor_rows >= 0]]
        fig.add_trace(
            _scatter(
                dims,
                neighbors,
                mode="markers",
                name="query's nearest images",
                marker=dict(size=marker_size + 8, color="rgba(0,0,0,0)", line=dict(color="crimson", width=2)),
                hoverinfo="skip",
            )
        )
        fig.add_trace(
            _scatter(
                dims,
                query.position[None, :],
                mode="markers+text",
                name="query",
                text=[query.caption],
                textposition="bottom center",
                marker=dict(symbol="diamond" if dims == 3 else "star", size=marker_size + 12, color="crimson"),
            )
        )
    method = embedding_map.config.method.upper().replace("TSNE", "t-SNE")
    fig.update_layout(
        title=f"{method} map of {len(coordinates)} embeddings ({len(names)} classes)",
        showlegend=len(shown) <= MAX_LEGEND_CLASSES,
        height=640,
        margin=dict(l=10, r=10, t=50, b=10),
        template="plotly_white",
    )
    return fig


def map_png(bundle: Bundle, embedding_map: EmbeddingMap, path: Path, *, query: PlacedQuery | None = None) -> None:
    """Static version of :func:`map_figure` written as a PNG image."""
    coordinates, dims = embedding_map.coordinates, embedding_map.coordinates.shape[1]
    labels, names = bundle.index.labels, bundle.class_names
    centroids = class_markers(bundle, embedding_map)
    fig = Figure(figsize=(9, 8))
    ax = fig.add_subplot(projection="3d" if dims == 3 else None)
    colours = np.array(PALETTE)[labels % len(PALETTE)]
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
