"""Changing what a bundle indexes without retraining: add image files (resumable), remove images, reindex.

Each function writes the updated bundle atomically (:meth:`Bundle.save`); one that fails writes nothing.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..data import DecodeFailure, ImageRecord, find_images
from ..embedder.stream import CHUNK_SIZE, EmbeddingStore, StreamSummary
from ..index.search import IndexSpec
from .bundle import Bundle

logger = logging.getLogger(__name__)

#: Split recorded for images added to a bundle after training (neither train nor held out).
ADDED_SPLIT = "added"
ENGINES = ("local", "ray")


@dataclass(frozen=True, kw_only=True)
class EmbeddingJob:
    """How image files are embedded: in this process, or on a Ray cluster.

    Attributes
    ----------
    engine : str
        ``"local"`` (decoding in threads) or ``"ray"`` (a Ray Data actor pool; ``pip install 'lookalike[ray]'``).
    ray_address : str, optional
        Ray cluster to join (default ``$RAY_ADDRESS``, else a local Ray).
    actors : int, optional
        Ray actors, one model each (default: the cluster's CPUs).
    chunk_size : int
        Embeddings per part file written.
    progress : bool
        Show a progress bar.
    """

    engine: str = "local"
    ray_address: str | None = None
    actors: int | None = None
    chunk_size: int = CHUNK_SIZE
    progress: bool = False

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}; got {self.engine!r}")


def records_of(paths: Sequence[str | os.PathLike], *, label: str | None = None) -> list[ImageRecord]:
    """Image files named by ``paths`` (files or folders, searched recursively) as records of split ``"added"``,
    labelled ``label`` or by their folder's name."""
    return [ImageRecord(path, label or path.parent.name, ADDED_SPLIT) for path in find_images(paths)]


def embed_into_store(
    bundle: Bundle, records: Sequence[ImageRecord], store: EmbeddingStore, job: EmbeddingJob
) -> StreamSummary:
    """Embed ``records`` into the part files of ``store`` with the bundle's embedder, resuming a killed run.

    Returns
    -------
    StreamSummary
        Counts, speed and the files that could not be read.
    """
    if job.engine == "ray":
        from ..embedder.ray_engine import embed_to_store_on_ray

        return embed_to_store_on_ray(
            bundle.path,
            records,
            store,
            address=job.ray_address,
            actors=job.actors,
            chunk_size=job.chunk_size,
            progress=job.progress,
            precision=bundle.precision,
        )
    from ..embedder.stream import embed_to_store

    return embed_to_store(bundle.embedder, records, store, chunk_size=job.chunk_size, progress=job.progress)


@dataclass(frozen=True)
class AddResult:
    """What :func:`add_files` did.

    Attributes
    ----------
    ids : int64 ndarray of shape (m,)
        Ids of the added images.
    files : int
        Image files found under the given paths.
    already_indexed : int
        Files skipped because the bundle already indexed them.
    new_classes : list of str
        Labels that became classes (answered by the k-NN vote and the centroids, not the softmax head).
    embedding : StreamSummary
        The embedding run: counts, speed, files that could not be read.
    """

    ids: np.ndarray
    files: int
    already_indexed: int
    new_classes: list[str]
    embedding: StreamSummary

    @property
    def failures(self) -> tuple[DecodeFailure, ...]:
        """Files that could not be read (skipped)."""
        return tuple(self.embedding.failures)


def add_files(
    bundle: Bundle, paths: Sequence[str | os.PathLike], *, label: str | None = None, job: EmbeddingJob = EmbeddingJob()
) -> AddResult:
    """Embed image files and add them to a saved bundle's index, then save it.

    Files the bundle already indexes are skipped. Embeddings wait in ``.BUNDLE.adding/`` beside the bundle
    until the bundle is saved, so a killed run resumes where it stopped.

    Parameters
    ----------
    bundle : Bundle
        A saved bundle (its ``path`` is set).
    paths : sequence of path-like
        Files or folders.
    label : str, optional
        Label of every file (default: its folder's name).
    job : EmbeddingJob

    Raises
    ------
    ValueError
        The bundle has not been saved.
    """
    if bundle.path is None:
        raise ValueError("add_files needs a saved bundle (Bundle.save or Bundle.load first)")
    indexed = {str(r.path) for r in bundle.index.records}
    records = records_of(paths, label=label)
    new = [r for r in records if str(r.path) not in indexed]
    work = bundle.path.parent / f".{bundle.path.name}.adding"
    store = EmbeddingStore(work)
    summary = embed_into_store(bundle, new, store, job)
    ids, new_classes = np.empty(0, dtype=np.int64), []
    if store.part_files():
        embedded = store.read()
        keep = np.array([i for i, r in enumerate(embedded.records) if str(r.path) not in indexed], dtype=np.int64)
        classes = set(bundle.class_names)
        ids = bundle.index.add(embedded.embeddings[keep], [embedded.records[i] for i in keep])
        if len(ids):
            bundle.save(bundle.path)
            new_classes = [c for c in bundle.class_names if c not in classes]
    shutil.rmtree(work, ignore_errors=True)
    return AddResult(ids, len(records), len(records) - len(new), new_classes, summary)


def remove_paths(bundle: Bundle, items: Sequence[str | int]) -> int:
    """Remove images by id or by file or folder path from a saved bundle, then save it.

    Parameters
    ----------
    bundle : Bundle
    items : sequence of int or str
        Ids (ints or digit strings), files, or folders (every indexed image under them).

    Returns
    -------
    int
        Number of images removed.

    Raises
    ------
    KeyError
        An id or path matches no indexed image; nothing is removed or written then.
    """
    ids, unmatched = set(), []
    for item in items:
        if isinstance(item, int) or str(item).isdigit():
            ids.add(int(item))
            continue
        path = Path(item).expanduser().resolve()
        matched = {
            int(i) for i, r in zip(bundle.index.ids, bundle.index.records) if r.path == path or path in r.path.parents
        }
        ids |= matched
        if not matched:
            unmatched.append(str(item))
    if unmatched:
        raise KeyError(f"no indexed image is or is under: {', '.join(unmatched)}")
    bundle.index.remove(sorted(ids))  # KeyError for an unknown id, before anything changes
    bundle.save(bundle.path)
    return len(ids)


def reindex(bundle: Bundle, spec: IndexSpec) -> None:
    """Rebuild a saved bundle's FAISS index as type ``spec`` from its stored embeddings, then save it."""
    bundle.index.reindex(spec)
    bundle.save(bundle.path)
