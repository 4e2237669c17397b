"""Batch embedding on Ray: the same job as :func:`lookalike.embedder.stream.embed_to_store`, scaled out.

A Ray Data pipeline (``map_batches`` over an actor pool) reads the file list, and each actor loads the
embedder once (its LiteRT export when present) and decodes and embeds whole batches. Only paths go to
the actors and only embeddings (about 1 KB per image) come back: the driver writes them to the same
:class:`~lookalike.embedder.stream.EmbeddingStore`, chunk by chunk, so runs on Ray are resumable like
local ones.

On a cluster, every node must be able to read the embedder directory and the image files at the same
paths (a shared file system), and have lookalike installed; see the README's "Scale-out on Ray".
Ray is an optional dependency: ``pip install "lookalike[ray]"``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..data import DecodeFailure, ImageRecord

from .stream import CHUNK_SIZE, EmbeddedPart, EmbeddingStore, StreamSummary, pending

logger = logging.getLogger(__name__)


class RayUnavailable(RuntimeError):
    """Ray (with Ray Data) is not installed."""


class EmbedActor:
    """Ray Data actor: one embedder per actor, loaded once; embeds a batch of paths.

    Parameters
    ----------
    embedder_dir : str
        Directory the embedder was saved in (a bundle directory).
    threads : int
        Inference threads of this actor.
    precision : str
        Runtime to use (the bundle's choice, see :func:`lookalike.embedder.load_embedder`); without TensorFlow
        whenever that runtime (or the fp32 one) can run.
    """

    def __init__(self, embedder_dir: str, threads: int = 1, precision: str = "fp32"):
        from .inference import load_embedder

        self.embedder = load_embedder(embedder_dir, precision=precision, threads=threads)
        self.size = self.embedder.config.image_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``{"path", "label", "split"}`` -> the same plus ``embedding`` (n, d), ``probabilities``, ``error``.

        A file that cannot be decoded gets a zero embedding and its reason in ``error`` ("" otherwise).
        """
        paths = batch["path"].tolist()
        embeddings = np.zeros((len(paths), self.embedder.embedding_dim), np.float32)
        probabilities = np.zeros((len(paths), len(self.embedder.class_names)), np.float32)
        errors = np.full(len(paths), "", dtype=object)
        for decoded, batch_embeddings, batch_probabilities in self.embedder.embed_batches(paths, batch_size=len(paths)):
            embeddings[decoded.indices], probabilities[decoded.indices] = batch_embeddings, batch_probabilities
            failed = np.setdiff1d(np.arange(len(paths)), decoded.indices)  # failures come in path order
            errors[failed] = [f.reason for f in decoded.failures]
        return batch | {
            "embedding": embeddings,
            "probabilities": probabilities,
            "error": errors.astype(np.str_),
        }


def embed_to_store_on_ray(
    embedder_dir: str | os.PathLike,
    records: Sequence[ImageRecord],
    store: EmbeddingStore,
    *,
    address: str | None = None,
    actors: int | None = None,
    batch_size: int = 64,
    chunk_size: int = CHUNK_SIZE,
    progress: bool = False,
    precision: str = "fp32",
) -> StreamSummary:
    """Embed image files into ``store`` with a Ray Data pipeline, skipping files it already holds.

    Parameters
    ----------
    embedder_dir : path-like
        Directory of the saved embedder (a bundle), readable by every Ray node at this path.
    records : sequence of ImageRecord
        Files to embed (readable by every node at these paths), with their label and split.
    store : EmbeddingStore
        Where the driver writes the embeddings.
    address : str, optional
        Ray cluster to join (e.g. ``ray://head:10001`` or ``auto``); default ``$RAY_ADDRESS``, else a local
        Ray with this machine's cores.
    actors : int, optional
        Embedding actors (one model each, one CPU each); default: the cluster's CPUs.
    batch_size : int
        Images per actor call.
    chunk_size : int
        Images per part file.
    progress : bool
        Show a progress bar.
    precision : str
        Runtime the actors use (a bundle's ``Bundle.precision``).

    Returns
    -------
    StreamSummary

    Raises
    ------
    RayUnavailable
        Ray Data is not installed.
    """
    try:
        import ray
        import ray.data
    except ImportError as error:
        raise RayUnavailable('Ray is not installed; pip install "lookalike[ray]"') from error
    started = time.perf_counter()
    todo, resumed = pending(records, store)
    embedded, failures = 0, []
    if todo:
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
        actors = actors or max(1, int(ray.cluster_resources().get("CPU", 1)))
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False
        items = [{"path": str(r.path), "label": r.label, "split": r.split} for r in todo]
        dataset = ray.data.from_items(items, override_num_blocks=max(actors, len(items) // batch_size)).map_batches(
            EmbedActor,
            fn_constructor_kwargs={"embedder_dir": str(Path(embedder_dir).resolve()), "precision": precision},
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=1,
        )
        with tqdm(total=len(records), initial=resumed, unit="img", desc="embedding (ray)", disable=not progress) as bar:
            for batch in dataset.iter_batches(batch_size=chunk_size, batch_format="numpy"):
                ok = batch["error"] == ""
                chunk_records = [
                    ImageRecord(Path(p), label, split)
                    for p, label, split in zip(batch["path"][ok], batch["label"][ok], batch["split"][ok])
                ]
                chunk_failures = [DecodeFailure(Path(p), e) for p, e in zip(batch["path"][~ok], batch["error"][~ok])]
                for failure in chunk_failures:
                    logger.warning("skipped %s: %s", failure.path, failure.reason)
                store.write(
                    EmbeddedPart(chunk_records, batch["embedding"][ok], batch["probabilities"][ok], chunk_failures)
                )
                embedded += len(chunk_records)
                failures += chunk_failures
                bar.update(len(ok))
    return StreamSummary(embedded, failures, resumed, time.perf_counter() - started)
