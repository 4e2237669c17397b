"""A FAISS inner-product index over L2-normalised embeddings, whose ids map to image records."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import faiss
import numpy as np

from lookalike.data import ImageRecord

logger = logging.getLogger(__name__)

INDEX_FILE = "index.faiss"
METADATA_FILE = "metadata.json"


@dataclass(frozen=True)
class Hit:
    """One search result: an indexed image and its similarity to the query.

    Attributes
    ----------
    id : int
        Id of the image in the index.
    label : str
        Its class.
    path : Path
        Its file.
    split : str
        Its split in the dataset it came from (``"train"``, ``"val"`` or ``"test"``).
    score : float
        Cosine similarity to the query, in [-1, 1].
    """

    id: int
    label: str
    path: Path
    split: str
    score: float

    def to_dict(self) -> dict:
        """JSON-serialisable form: ``{id, label, path, split, score}``."""
        return {"id": self.id, "label": self.label, "path": str(self.path), "split": self.split, "score": self.score}


@dataclass(frozen=True)
class SearchResult:
    """The k nearest indexed images of each query, best first (FAISS's search contract).

    Attributes
    ----------
    scores : float32 ndarray of shape (n_queries, k)
        Inner products (cosine similarities for L2-normalised embeddings), descending along each row.
    ids : int64 ndarray of shape (n_queries, k)
        Ids of the matched images; -1 where the index holds fewer than k images.
    labels : int64 ndarray of shape (n_queries, k)
        Class index of each matched image (position in ``class_names``); -1 where ``ids`` is -1.
    hits : list of list of Hit
        The same results as records, one list per query, without the -1 padding.
    """

    scores: np.ndarray
    ids: np.ndarray
    labels: np.ndarray
    hits: list[list[Hit]]


class EmbeddingIndex:
    """Exact cosine-similarity search (``faiss.IndexFlatIP``) over embeddings with per-image metadata.

    Ids are positions in ``records``: image ``i`` of :meth:`build` has id ``i``.

    Parameters
    ----------
    index : faiss.Index
        Inner-product index holding ``len(records)`` vectors with ids ``0 .. len(records) - 1``.
    records : sequence of ImageRecord
        Metadata of each id.
    class_names : sequence of str
        Every label of ``records`` must be one of them.
    """

    def __init__(self, index: faiss.Index, records: Sequence[ImageRecord], class_names: Sequence[str]):
        if index.ntotal != len(records):
            raise ValueError(f"the index holds {index.ntotal} vectors but {len(records)} records were given")
        self.faiss_index = index
        self.records = list(records)
        self.class_names = tuple(class_names)
        position = {name: i for i, name in enumerate(self.class_names)}
        unknown = sorted({r.label for r in self.records} - set(position))
        if unknown:
            raise ValueError(f"records have labels that are not class names: {', '.join(unknown)}")
        self.labels = np.array([position[r.label] for r in self.records], dtype=np.int64)

    @classmethod
    def build(
        cls, embeddings: np.ndarray, records: Sequence[ImageRecord], class_names: Sequence[str]
    ) -> EmbeddingIndex:
        """Index ``embeddings`` exactly.

        Parameters
        ----------
        embeddings : float32 ndarray of shape (n, d), L2-normalised
            Row i is the embedding of ``records[i]``.
        records : sequence of ImageRecord, length n
        class_names : sequence of str

        Raises
        ------
        ValueError
            ``embeddings`` is not 2-D or its row count differs from ``len(records)``.
        """
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or len(embeddings) != len(records):
            raise ValueError(f"expected embeddings of shape ({len(records)}, d); got {embeddings.shape}")
        index = faiss.IndexFlatIP(embeddings.shape[1])
        index.add(embeddings)
        return cls(index, records, class_names)

    @property
    def dim(self) -> int:
        """Embedding size d."""
        return self.faiss_index.d

    def embeddings(self) -> np.ndarray:
        """All stored embeddings, by id: float32 ndarray of shape (len(self), d)."""
        return self.faiss_index.reconstruct_n(0, len(self))

    def __len__(self) -> int:
        return self.faiss_index.ntotal

    def search(self, queries: np.ndarray, k: int) -> SearchResult:
        """The ``k`` most similar indexed images of each query.

        Parameters
        ----------
        queries : float32 ndarray of shape (n_queries, d), L2-normalised
        k : int
            Number of results per query, at least 1; rows are padded with id -1 beyond ``len(self)``.

        Raises
        ------
        ValueError
            ``queries`` does not have shape (n_queries, d), or ``k`` < 1.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries must have shape (n_queries, {self.dim}); got {queries.shape}")
        if k < 1:
            raise ValueError(f"k must be at least 1; got {k}")
        scores, ids = self.faiss_index.search(queries, k)
        labels = np.where(ids >= 0, self.labels[np.maximum(ids, 0)], -1) if len(self) else np.full_like(ids, -1)
        hits = [
            [self.hit(int(i), float(s)) for s, i in zip(row_scores, row_ids) if i >= 0]
            for row_scores, row_ids in zip(scores, ids)
        ]
        return SearchResult(scores=scores, ids=ids, labels=labels, hits=hits)

    def hit(self, id: int, score: float) -> Hit:
        """The :class:`Hit` for image ``id`` at similarity ``score``."""
        record = self.records[id]
        return Hit(id=id, label=record.label, path=record.path, split=record.split, score=score)

    def save(self, directory: str | os.PathLike) -> None:
        """Write ``index.faiss`` and ``metadata.json`` (one entry per id) into ``directory``."""
        directory = Path(directory)
        faiss.write_index(self.faiss_index, str(directory / INDEX_FILE))
        items = [{"id": i, "path": str(r.path), "label": r.label, "split": r.split} for i, r in enumerate(self.records)]
        payload = {"class_names": list(self.class_names), "items": items}
        (directory / METADATA_FILE).write_text(json.dumps(payload, indent=1, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, directory: str | os.PathLike) -> EmbeddingIndex:
        """Read an index written by :meth:`save`.

        Raises
        ------
        FileNotFoundError
            A file is missing.
        ValueError
            A file is damaged (the message names it), or the index and metadata disagree.
        """
        directory = Path(directory)
        index_path, metadata_path = directory / INDEX_FILE, directory / METADATA_FILE
        for path in (index_path, metadata_path):
            if not path.is_file():
                raise FileNotFoundError(f"index file missing: {path}")
        try:
            index = faiss.read_index(str(index_path))
        except RuntimeError as error:
            raise ValueError(f"cannot read FAISS index {index_path}: {error}") from error
        try:
            payload = json.loads(metadata_path.read_text(encoding="utf-8"))
            items = sorted(payload["items"], key=lambda item: item["id"])
            records = [ImageRecord(Path(item["path"]), item["label"], item["split"]) for item in items]
            class_names = payload["class_names"]
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"cannot read index metadata {metadata_path}: {error!r}") from error
        if [item["id"] for item in items] != list(range(len(items))):
            raise ValueError(f"index metadata {metadata_path} does not hold ids 0 .. {len(items) - 1}")
        return cls(index, records, class_names)
