"""Query images for the Search view's benchmarks: held-out images of a bundle, mirrored so none is indexed."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps


def mirrored_queries(bundle, n: int, *, seed: int = 0) -> list[Path]:
    """``n`` of the bundle's val/test images (drawn with ``seed``), mirrored left-right, as PNG files in a new
    temporary folder."""
    held_out = [r.path for r in bundle.index.records if r.split != "train"]
    picked = [held_out[i] for i in np.random.default_rng(seed).permutation(len(held_out))[:n]]
    folder = Path(tempfile.mkdtemp(prefix="lookalike-search-bench-"))
    queries = []
    for number, path in enumerate(picked):
        with Image.open(path) as image:
            ImageOps.mirror(image.convert("RGBA")).save(folder / f"query-{number}.png")
        queries.append(folder / f"query-{number}.png")
    return queries
