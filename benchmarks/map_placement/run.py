"""Placing a query on an existing UMAP map: time per query, and agreement with UMAP's own ``transform``.

On a bundle (default: the demo bundle), in one run:

1. time to compute the 2-D UMAP map of all embeddings (stored in the bundle afterwards);
2. time to place one query embedding (nearest-neighbor search + similarity-weighted mean), p50 and p99 over
   200 queries, separately from embedding the image;
3. fidelity: fit UMAP on 90 % of the embeddings, place the other 10 % both with ``umap.transform`` and with
   lookalike's neighbor mean, and report how often each lands nearest to its own class (class positions are
   the medians of the fitted points) and how far apart the two placements are, relative to the map's extent.

    python benchmarks/map_placement/run.py [--bundle PATH]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import umap

from lookalike.app.cli import default_demo_bundle
from lookalike.bundle import Bundle
from lookalike.index import MapConfig
from lookalike.index.projection import compute_map, place_queries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=default_demo_bundle())
    args = parser.parse_args()
    bundle = Bundle.load(args.bundle)
    embeddings, labels = bundle.index.vectors, bundle.index.labels
    config = MapConfig()

    started = time.perf_counter()
    embedding_map = compute_map(embeddings, config)
    print(
        f"UMAP 2-D map of {len(embeddings)} embeddings: {time.perf_counter() - started:.1f} s (first run includes numba compilation)"
    )

    rng = np.random.default_rng(0)
    queries = embeddings[rng.choice(len(embeddings), 200)] + 0.05 * rng.standard_normal(
        (200, embeddings.shape[1])
    ).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    times = []
    for query in queries:
        started = time.perf_counter()
        bundle.place_on_map(query[None], embedding_map)
        times.append(time.perf_counter() - started)
    times = np.array(times) * 1000
    print(
        f"placing one query: p50 {np.percentile(times, 50):.2f} ms, p99 {np.percentile(times, 99):.2f} ms (target < 100 ms)"
    )

    held = rng.random(len(embeddings)) < 0.1
    reducer = umap.UMAP(
        n_components=2, n_neighbors=config.n_neighbors, min_dist=config.min_dist, metric="cosine", random_state=0
    )
    fitted = reducer.fit_transform(embeddings[~held])
    started = time.perf_counter()
    by_umap = reducer.transform(embeddings[held])
    umap_ms = (time.perf_counter() - started) / held.sum() * 1000
    similarities = embeddings[held] @ embeddings[~held].T
    ids = np.argsort(-similarities, axis=1)[:, :10]
    by_neighbors = place_queries(fitted, ids, np.take_along_axis(similarities, ids, axis=1))
    centres = np.stack([np.median(fitted[labels[~held] == c], axis=0) for c in range(len(bundle.class_names))])

    def own_class_rate(points: np.ndarray) -> float:
        nearest = np.argmin(np.linalg.norm(points[:, None] - centres[None], axis=2), axis=1)
        return float(np.mean(nearest == labels[held]))

    extent = np.linalg.norm(fitted.max(axis=0) - fitted.min(axis=0))
    gap = np.median(np.linalg.norm(by_umap - by_neighbors, axis=1)) / extent
    print(
        f"{held.sum()} held-out embeddings: nearest own class {own_class_rate(by_neighbors):.3f} (neighbor mean) "
        f"vs {own_class_rate(by_umap):.3f} (umap.transform, {umap_ms:.1f} ms per point in a batch); "
        f"median gap between the two {gap:.1%} of the map's extent"
    )


if __name__ == "__main__":
    main()
