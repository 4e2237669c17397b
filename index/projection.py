"""2-D and 3-D maps of the embedding space (UMAP or t-SNE), stored in the bundle, with queries placed on them.

A query is placed on an existing map without recomputing it, as the similarity-weighted mean of the map
positions of its k nearest indexed images. UMAP's own ``transform`` would need the fitted reducer, which can
only be stored by pickling it, and a bundle never holds pickles (loading one may run code from it).

UMAP: McInnes, Healy and Melville, 2018, arXiv:1802.03426 (the ``umap-learn`` package);
t-SNE: van der Maaten and Hinton, 2008 (scikit-learn's ``TSNE``).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..data.files import write_array, write_atomic
from .search import fingerprint

logger = logging.getLogger(__name__)

MAPS_DIR = "maps"
METHODS = ("umap", "tsne")


@dataclass(frozen=True, kw_only=True)
class MapConfig:
    """How a map is computed.

    Attributes
    ----------
    method : str
        ``"umap"`` or ``"tsne"``.
    dims : int
        2 or 3.
    n_neighbors : int
        UMAP's neighborhood size (t-SNE uses ``perplexity = n_neighbors`` too).
    min_dist : float
        UMAP's minimum distance between embedded points (0.5: trained classes are tight, and smaller values
        shrink each class to a dot).
    seed : int
    """

    method: str = "umap"
    dims: int = 2
    n_neighbors: int = 15
    min_dist: float = 0.5
    seed: int = 0

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}; got {self.method!r}")
        if self.dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3; got {self.dims}")

    @property
    def name(self) -> str:
        """File stem, e.g. ``umap_2d``."""
        return f"{self.method}_{self.dims}d"


@dataclass(frozen=True)
class EmbeddingMap:
    """Positions of every indexed image on a map.

    Attributes
    ----------
    config : MapConfig
    coordinates : float32 ndarray of shape (n, dims)
        Row i is the position of the image in index row i.
    fingerprint : str
        SHA-256 of the embeddings the map was computed from; a map whose fingerprint differs from the
        current embeddings is stale and recomputed.
    """

    config: MapConfig
    coordinates: np.ndarray
    fingerprint: str


def compute_map(embeddings: np.ndarray, config: MapConfig = MapConfig()) -> EmbeddingMap:
    """Project embeddings to 2 or 3 dimensions.

    Parameters
    ----------
    embeddings : float32 ndarray of shape (n, d), L2-normalised
        n >= 3.
    config : MapConfig

    Returns
    -------
    EmbeddingMap

    Raises
    ------
    ValueError
        Fewer than 3 embeddings.
    """
    n = len(embeddings)
    if n < 3:
        raise ValueError(f"a map needs at least 3 embeddings; got {n}")
    neighbors = max(2, min(config.n_neighbors, n - 1))
    if config.method == "umap":
        import umap

        reducer = umap.UMAP(
            n_components=config.dims,
            n_neighbors=neighbors,
            min_dist=config.min_dist,
            metric="cosine",
            random_state=config.seed,
        )
    else:
        from sklearn.manifold import TSNE

        reducer = TSNE(
            n_components=config.dims,
            perplexity=min(float(neighbors), (n - 1) / 3),
            metric="cosine",
            init="pca",
            random_state=config.seed,
        )
    coordinates = np.asarray(reducer.fit_transform(np.asarray(embeddings, dtype=np.float32)), dtype=np.float32)
    return EmbeddingMap(config, coordinates, fingerprint(embeddings))


def place_queries(coordinates: np.ndarray, neighbor_rows: np.ndarray, neighbor_scores: np.ndarray) -> np.ndarray:
    """Place queries on a map: the similarity-weighted mean of their neighbors' positions.

    Parameters
    ----------
    coordinates : float32 ndarray of shape (n, dims)
        The map.
    neighbor_rows : int64 ndarray of shape (n_queries, k)
        Rows (positions in the map) of each query's nearest indexed images, -1 for none (ignored).
    neighbor_scores : float32 ndarray of shape (n_queries, k)
        Their cosine similarities; weights are ``max(score, 0)``, equal weights when all are 0.

    Returns
    -------
    float32 ndarray of shape (n_queries, dims)
    """
    valid = neighbor_rows >= 0
    weights = np.where(valid, np.maximum(neighbor_scores, 0.0), 0.0)
    empty = weights.sum(axis=1) == 0
    weights[empty] = valid[empty]
    weights = weights / np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)
    positions = coordinates[np.maximum(neighbor_rows, 0)]
    return np.einsum("qk,qkd->qd", weights, positions).astype(np.float32)


def save_map(directory: str | os.PathLike, embedding_map: EmbeddingMap) -> None:
    """Write ``maps/<method>_<dims>d.npy`` and its ``.json`` (config, fingerprint) into a bundle directory."""
    folder = Path(directory) / MAPS_DIR
    folder.mkdir(exist_ok=True)
    stem = embedding_map.config.name
    write_array(folder / f"{stem}.npy", embedding_map.coordinates)
    meta = {"config": asdict(embedding_map.config), "fingerprint": embedding_map.fingerprint}
    write_atomic(folder / f"{stem}.json", json.dumps(meta))


def load_map(directory: str | os.PathLike, config: MapConfig) -> EmbeddingMap | None:
    """The stored map for ``config``, or None when there is none or it was computed with other settings."""
    folder = Path(directory) / MAPS_DIR
    meta_path, coordinates_path = folder / f"{config.name}.json", folder / f"{config.name}.npy"
    if not (meta_path.is_file() and coordinates_path.is_file()):
        return None
    meta = json.loads(meta_path.read_text())
    if MapConfig(**meta["config"]) != config:
        return None
    return EmbeddingMap(config, np.load(coordinates_path, allow_pickle=False), meta["fingerprint"])
