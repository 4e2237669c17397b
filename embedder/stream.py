"""Streaming batch embedding of image collections of any size: bounded memory, chunked output, resumable.

Embeddings go to an :class:`EmbeddingStore`, a folder of parts written one chunk at a time::

    part-000000.npz   paths, labels, embeddings (float32, m x d), probabilities (float32, m x c),
    part-000001.npz   failed_paths, failed_reasons (the chunk's files that could not be decoded)
    ...

Each part is written to a temporary file and renamed into place, so a run killed at any moment leaves
only complete parts. A new run over the same store skips every file a part already holds (embedded or
failed) and continues where the killed run stopped. Memory stays bounded by one chunk of embeddings
plus the decoder's prefetched batches, whatever the number of files.
"""

from __future__ import annotations

import io
import logging
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..data import DecodeFailure, ImageRecord
from ..data.files import write_atomic

logger = logging.getLogger(__name__)

#: Embeddings per part file (and at most this many held in memory before they are written).
CHUNK_SIZE = 2048
_PART = re.compile(r"^part-(\d{6})\.npz$")


@dataclass(frozen=True)
class EmbeddedPart:
    """One chunk of embedded images.

    Attributes
    ----------
    records : list of ImageRecord
        The embedded images, one per row below.
    embeddings : float32 ndarray of shape (m, d), L2-normalised
    probabilities : float32 ndarray of shape (m, n_classes)
        Softmax probabilities of the embedder's classes.
    failures : list of DecodeFailure
        Files of this chunk that could not be decoded.
    """

    records: list[ImageRecord]
    embeddings: np.ndarray
    probabilities: np.ndarray
    failures: list[DecodeFailure]


@dataclass(frozen=True)
class StreamSummary:
    """What a streaming run did: ``embedded`` and ``failures`` in this run, ``resumed`` files already done, ``seconds``."""

    embedded: int
    failures: list[DecodeFailure]
    resumed: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return (self.embedded + len(self.failures)) / self.seconds if self.seconds > 0 else 0.0


class EmbeddingStore:
    """A folder of :class:`EmbeddedPart` files (see the module docstring).

    Parameters
    ----------
    directory : path-like
        Created when missing.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def part_files(self) -> list[Path]:
        """The complete part files, in order."""
        return sorted(p for p in self.directory.iterdir() if _PART.match(p.name))

    def done(self) -> set[str]:
        """Paths (as str) that some part already holds, embedded or failed."""
        done: set[str] = set()
        for path in self.part_files():
            with np.load(path, allow_pickle=False) as part:
                done.update(part["paths"].tolist())
                done.update(part["failed_paths"].tolist())
        return done

    def write(self, part: EmbeddedPart) -> Path:
        """Write ``part`` as the next part file, atomically."""
        files = self.part_files()
        number = int(_PART.match(files[-1].name).group(1)) + 1 if files else 0
        buffer = io.BytesIO()
        np.savez(
            buffer,
            paths=np.array([str(r.path) for r in part.records], dtype=np.str_),
            labels=np.array([r.label for r in part.records], dtype=np.str_),
            splits=np.array([r.split for r in part.records], dtype=np.str_),
            embeddings=np.asarray(part.embeddings, dtype=np.float32),
            probabilities=np.asarray(part.probabilities, dtype=np.float32),
            failed_paths=np.array([str(f.path) for f in part.failures], dtype=np.str_),
            failed_reasons=np.array([f.reason for f in part.failures], dtype=np.str_),
        )
        return write_atomic(self.directory / f"part-{number:06d}.npz", buffer.getvalue())

    def __iter__(self) -> Iterator[EmbeddedPart]:
        """The parts, in order, read one at a time."""
        for path in self.part_files():
            with np.load(path, allow_pickle=False) as part:
                records = [
                    ImageRecord(Path(p), label, split)
                    for p, label, split in zip(part["paths"].tolist(), part["labels"].tolist(), part["splits"].tolist())
                ]
                failures = [
                    DecodeFailure(Path(p), reason)
                    for p, reason in zip(part["failed_paths"].tolist(), part["failed_reasons"].tolist())
                ]
                yield EmbeddedPart(records, part["embeddings"], part["probabilities"], failures)

    def read(self) -> EmbeddedPart:
        """Every part, concatenated (holds all embeddings in memory)."""
        parts = list(self)
        if not parts:
            raise FileNotFoundError(f"no embeddings in {self.directory}")
        return _concatenate(parts)


def _concatenate(parts: Sequence[EmbeddedPart]) -> EmbeddedPart:
    return EmbeddedPart(
        [r for p in parts for r in p.records],
        np.concatenate([p.embeddings for p in parts]),
        np.concatenate([p.probabilities for p in parts]),
        [f for p in parts for f in p.failures],
    )


def pending(records: Sequence[ImageRecord], store: EmbeddingStore) -> tuple[list[ImageRecord], int]:
    """The records ``store`` does not hold yet, and how many it already holds."""
    done = store.done()
    todo = [r for r in records if str(r.path) not in done]
    if len(todo) < len(records):
        logger.info(
            "resuming: %d of %d files are already in %s", len(records) - len(todo), len(records), store.directory
        )
    return todo, len(records) - len(todo)


def embed_to_store(
    embedder,
    records: Sequence[ImageRecord],
    store: EmbeddingStore,
    *,
    chunk_size: int = CHUNK_SIZE,
    progress: bool = False,
) -> StreamSummary:
    """Embed image files into ``store``, one chunk at a time, skipping files it already holds.

    Decoding runs in parallel threads ahead of inference (:func:`lookalike.data.iter_image_batches`);
    inference uses the embedder's fast runtime when it has one.

    Parameters
    ----------
    embedder : Embedder
    records : sequence of ImageRecord
        Files to embed, with the label and split to store for each.
    store : EmbeddingStore
    chunk_size : int
        Images per part file.
    progress : bool
        Show a progress bar (images per second).

    Returns
    -------
    StreamSummary
    """
    started = time.perf_counter()
    todo, resumed = pending(records, store)
    embedded, failures = 0, []
    chunk: list[EmbeddedPart] = []  # the batches since the last part file
    held = 0  # files in ``chunk``, embedded or failed

    with tqdm(total=len(records), initial=resumed, unit="img", desc="embedding", disable=not progress) as bar:
        batch_size = min(embedder.config.batch_size, chunk_size)
        batches = embedder.embed_batches([r.path for r in todo], progress=bar, batch_size=batch_size)
        for batch, embeddings, probabilities in batches:
            chunk.append(
                EmbeddedPart([todo[i] for i in batch.indices], embeddings, probabilities, list(batch.failures))
            )
            embedded += len(batch.indices)
            failures += batch.failures
            held += len(batch.indices) + len(batch.failures)
            if held >= chunk_size:
                store.write(_concatenate(chunk))
                chunk, held = [], 0
        if chunk:
            store.write(_concatenate(chunk))
    return StreamSummary(embedded, failures, resumed, time.perf_counter() - started)
