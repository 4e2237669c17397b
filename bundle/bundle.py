"""A bundle: the trained embedder, the index and its metadata, stored together in one directory.

Layout of a bundle directory::

    manifest.json    format version, backbone, sizes, class names, training summary, package versions,
                     SHA-256 of the files below (verified on load); written last
    model.keras      the classifier (Keras v3 format), loaded with safe_mode
    embedder.json    the embedder's configuration and class names
    softmax.npz      the softmax layer's kernel and bias (evaluation without Keras)
    inference.tflite the embedder exported to LiteRT, checked against Keras (absent where LiteRT is missing)
    inference-int8.tflite  the same, full-integer quantized (see :mod:`lookalike.bundle.precision`)
    index.faiss      the FAISS index (flat, HNSW or IVF; ids are the images' stable ids)
    vectors.npy      the embeddings, by row (float32, n x d)
    metadata.json    id, path, label and split of every indexed image, by row; the index type and parameters
    thumbnails.bin   a 128 px JPEG of every indexed image, and thumbnails.npy their ids and byte ranges: what
                     the web app shows (it never opens the image paths in metadata.json)
    skipped.csv      dataset files that could not be read, with the reason (only when there were any)
    logs/            per-epoch training logs: <phase>.csv and TensorBoard event files
    maps/            UMAP / t-SNE maps of the embeddings, computed on first use (derived, not copied by save)
    report/          the last evaluation (derived, not copied by save)
    audit/           frozen ImageNet features of the indexed images for the audit (derived, not copied by save)

Writing is atomic and checksummed (:mod:`lookalike.bundle.storage`); the manifest is a typed
:class:`~lookalike.bundle.manifest.Manifest`. Loading never runs code from the bundle: no pickle, JSON and NumPy
files without pickles, a FAISS index, and the Keras model loaded with ``safe_mode=True``.

A loaded bundle answers with the runtime its manifest's ``precision`` names (LiteRT or OpenVINO, see
:mod:`lookalike.embedder.runtime`) and never imports TensorFlow; :attr:`Bundle.keras_embedder` loads the Keras
model on first use (training, Grad-CAM), and is the fallback where no runtime can run.
"""

from __future__ import annotations

import csv
import logging
import os
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..data import Dataset, DecodeFailure, load_image
from ..data.thumbnails import PACK_FILES, ThumbnailPack, make_thumbnails
from ..embedder.config import EmbedderConfig
from ..embedder.inference import (
    CONFIG_FILE,
    MODEL_FILE,
    SOFTMAX_FILE,
    RuntimeEmbedder,
    load_embedder,
    write_softmax,
)
from ..embedder.runtime import RUNTIME_FILES, RuntimeUnavailable, export_litert
from ..index.centroids import ClassCentroids
from ..index.neighbors import knn_vote
from ..index.open_set import DEFAULT_QUANTILE, MIN_HELD_OUT, OpenSetCalibration, calibrate, held_out_rows
from ..index.projection import EmbeddingMap, MapConfig, compute_map, load_map, place_queries, save_map
from ..index.search import INDEX_FILE, METADATA_FILE, VECTORS_FILE, EmbeddingIndex, Hit, IndexSpec
from .manifest import Manifest
from .precision import export_runtimes
from .storage import BundleError, link_or_copy, read_manifest, write_bundle

logger = logging.getLogger(__name__)

LOGS_DIR = "logs"
SKIPPED_FILE = "skipped.csv"
#: Files whose SHA-256 the manifest records and loading verifies.
CHECKED_FILES = (MODEL_FILE, CONFIG_FILE, INDEX_FILE, VECTORS_FILE, METADATA_FILE)
#: Files of the embedder, unchanged by adding or removing images (linked, not rewritten, when such a bundle is saved).
EMBEDDER_FILES = (MODEL_FILE, CONFIG_FILE, SOFTMAX_FILE, *dict.fromkeys(RUNTIME_FILES.values()))


@dataclass(frozen=True)
class QueryResult:
    """lookalike's answer for one query image.

    Attributes
    ----------
    predicted : str
        Class with the highest softmax probability.
    probabilities : dict of str to float
        Softmax probability of every class, most probable first.
    characters : list of Hit
        Nearest classes, each represented by its best-matching image, most similar first.
    neighbors : list of Hit
        The top-k most similar images, most similar first.
    knn_predicted : str
        Winner of the similarity-weighted vote of the ``knn_k`` nearest images.
    knn_probabilities : dict of str to float
        Vote shares of the classes that received votes, largest first.
    centroid_characters : list of Hit
        Nearest class centroids, most similar first: ``score`` is the cosine similarity to the class
        centroid, ``path`` the class's most typical image (the one nearest its centroid).
    unknown : bool
        True when no indexed character is close enough: ``match_score`` is below ``unknown_threshold`` ("no close
        match"; the other fields then name the closest, not a match).
    unknown_threshold : float
        The bundle's calibrated threshold (see :mod:`lookalike.index.open_set`), cosine similarity.
    match_score : float
        The open-set match score, cosine similarity: to the nearest class centroid (the first of
        ``centroid_characters``), or to the best image for bundles calibrated before that
        (:attr:`lookalike.index.open_set.OpenSetCalibration.score`).
    """

    predicted: str
    probabilities: dict[str, float]
    characters: list[Hit]
    neighbors: list[Hit]
    knn_predicted: str
    knn_probabilities: dict[str, float]
    centroid_characters: list[Hit]
    unknown: bool = False
    unknown_threshold: float = -1.0
    match_score: float = 1.0

    @property
    def centroid_predicted(self) -> str:
        """Class of the nearest centroid."""
        return self.centroid_characters[0].label

    def to_dict(self) -> dict:
        """JSON-serialisable form with keys predicted, probabilities, unknown, unknown_threshold, match_score,
        characters, neighbors, knn, centroid."""
        return {
            "predicted": self.predicted,
            "probabilities": self.probabilities,
            "unknown": self.unknown,
            "unknown_threshold": self.unknown_threshold,
            "match_score": self.match_score,
            "characters": [hit.to_dict() for hit in self.characters],
            "neighbors": [hit.to_dict() for hit in self.neighbors],
            "knn": {"predicted": self.knn_predicted, "probabilities": self.knn_probabilities},
            "centroid": {
                "predicted": self.centroid_predicted,
                "characters": [hit.to_dict() for hit in self.centroid_characters],
            },
        }


def _ranked(values: np.ndarray, names: Sequence[str], *, drop_zero: bool = False) -> dict[str, float]:
    order = np.argsort(-values, kind="stable")
    return {names[i]: float(values[i]) for i in order if not (drop_zero and values[i] <= 0)}


class Bundle:
    """A trained embedder with the index of the images it embedded; answers look-alike queries.

    Create one with :meth:`train`, or :meth:`load` a saved one.

    Attributes
    ----------
    embedder : RuntimeEmbedder or Embedder
        What answers queries: the exported runtime of a loaded bundle (no TensorFlow), the Keras embedder of a
        bundle just trained or where no runtime can run.
    index : EmbeddingIndex
    manifest : Manifest
        What :meth:`save` writes to ``manifest.json``.
    """

    def __init__(self, embedder, index: EmbeddingIndex, manifest: Manifest, *, log_dir: Path | None = None):
        if embedder.embedding_dim != index.dim:
            raise BundleError(
                f"the embedder produces {embedder.embedding_dim}-d embeddings but the index holds {index.dim}-d vectors"
            )
        if tuple(index.class_names[: len(embedder.class_names)]) != tuple(embedder.class_names):
            raise BundleError("the index's class names do not start with the embedder's classes")
        self.embedder = embedder
        self.index = index
        self.manifest = manifest
        #: Training logs (``<phase>.csv``, ``tensorboard/``), copied into the bundle's ``logs/`` on save.
        self.log_dir = log_dir
        #: The directory this bundle was loaded from or last saved to; None before that.
        self.path: Path | None = None
        self._maps: dict[MapConfig, EmbeddingMap] = {}
        self._centroids: tuple[int, tuple[ClassCentroids, np.ndarray]] | None = None
        self._log_files: tempfile.TemporaryDirectory | None = None  # owns log_dir when training made it
        self._thumbnails: ThumbnailPack | None = None
        self._keras_embedder = None if isinstance(embedder, RuntimeEmbedder) else embedder

    @property
    def keras_embedder(self):
        """The Keras :class:`~lookalike.embedder.Embedder` (imports TensorFlow): :attr:`embedder` when that is the
        Keras one, else loaded from the bundle directory on first use and kept. For what needs the model itself:
        training, fine-tuning, exporting, Grad-CAM (``keras_embedder.classifier``, ``.encoder(layer)``).

        Raises
        ------
        BundleError
            The bundle has not been saved or loaded, or its ``model.keras`` cannot be read.
        """
        if self._keras_embedder is None:
            if self.path is None:
                raise BundleError("this bundle has no Keras model to load: it was never saved")
            from ..embedder.model import Embedder

            try:
                self._keras_embedder = Embedder.load(self.path)
            except (OSError, ValueError, zipfile.BadZipFile) as error:
                raise BundleError(f"cannot load the Keras model of {self.path}: {error}") from error
        return self._keras_embedder

    @property
    def precision(self) -> str:
        """The precision :attr:`embedder` computes in (``fp32``, ``bf16`` or ``int8``; Keras is fp32)."""
        return getattr(self.embedder, "precision", "fp32")

    @property
    def class_names(self) -> tuple[str, ...]:
        """Every class in the index: the embedder's classes, then classes added later without retraining
        (those are answered by the k-NN vote and the centroids, not by the softmax head)."""
        return self.index.class_names

    @property
    def centroids(self) -> tuple[ClassCentroids, np.ndarray]:
        """The class centroids of all indexed images, and each class's most typical image (its row).

        Computed once per state of the index (recomputed after images are added or removed).

        Returns
        -------
        centroids : ClassCentroids
            One centroid per class index (its ``similarities`` rank the nearest centroids).
        typical_rows : int64 ndarray of shape (n_classes,)
            Row of the image most similar to its class centroid; -1 for a class with no image.
        """
        if self._centroids is not None and self._centroids[0] == self.index.version:
            return self._centroids[1]
        embeddings, labels = self.index.vectors, self.index.labels
        classifier = ClassCentroids.fit(embeddings, labels, len(self.class_names))
        similarity = np.einsum("nd,nd->n", embeddings, classifier.centroids[labels])
        typical = np.full(len(self.class_names), -1, dtype=np.int64)
        order = np.lexsort((-similarity, labels))  # by class, most similar first
        first = order[np.r_[True, labels[order][1:] != labels[order][:-1]]] if len(order) else order
        typical[labels[first]] = first
        self._centroids = (self.index.version, (classifier, typical))
        return classifier, typical

    @classmethod
    def train(
        cls,
        dataset: Dataset,
        *,
        config: EmbedderConfig = EmbedderConfig(),
        weights: str | os.PathLike | None = None,
        progress: bool = False,
        callbacks: Sequence = (),
        index_spec: IndexSpec = IndexSpec(),
        open_set_quantile: float = DEFAULT_QUANTILE,
    ) -> Bundle:
        """Train an embedder on ``dataset`` and index every image of it that could be read.

        Parameters
        ----------
        dataset : Dataset
            Its ``"train"`` records train the head, the others are the held-out set for early stopping;
            all of them are indexed.
        config : EmbedderConfig
        weights : str or path-like, optional
            Backbone weights, see :func:`lookalike.embedder.resolve_weights`.
        progress : bool
            Show progress bars.
        callbacks : sequence of keras.callbacks.Callback
            Extra callbacks for every training phase.
        index_spec : IndexSpec
            FAISS index type and parameters (default: exact search for small datasets).
        open_set_quantile : float
            Share of the held-out (else all indexed) images' own leave-one-out match scores that falls below the
            "no close match" threshold (see :mod:`lookalike.index.open_set`).

        Raises
        ------
        TrainingError
            No training image could be read.
        BackboneWeightsError
            The backbone weights cannot be found.
        """
        from ..embedder.training import train

        records = dataset.records
        logs = tempfile.TemporaryDirectory(prefix="lookalike-logs-")  # removed with the bundle object
        log_dir = Path(logs.name)
        started = time.perf_counter()
        result = train(
            records,
            dataset.class_names,
            config=config,
            weights=weights,
            progress=progress,
            log_dir=log_dir,
            callbacks=callbacks,
        )
        seconds = time.perf_counter() - started
        embedder = result.embedder
        indexed = [records[i] for i in result.embedded.indices]
        index = EmbeddingIndex.build(result.embedded.embeddings, indexed, embedder.class_names, spec=index_spec)
        manifest = Manifest(
            backbone=embedder.config.spec.label,
            image_size=embedder.config.image_size,
            embedding_dim=embedder.embedding_dim,
            class_names=list(embedder.class_names),
            dataset={
                "root": str(dataset.root),
                "images": len(indexed),
                "skipped": [{"path": str(f.path), "reason": f.reason} for f in result.embedded.failures],
            },
            training={
                "phase_epochs": result.phase_epochs,
                "seconds": round(seconds, 1),
                "val_accuracy": result.val_accuracy,
                "history": result.history,
                "config": embedder.config.to_dict(),
            },
            open_set=calibrate(index, quantile=open_set_quantile, cross_fit=result.calibration_scores).to_dict(),
        )
        bundle = cls(embedder, index, manifest, log_dir=log_dir)
        bundle._log_files = logs
        return bundle

    @property
    def thumbnails(self) -> ThumbnailPack | None:
        """The saved bundle's thumbnails (see :mod:`lookalike.data.thumbnails`); None before it is saved, or for
        a bundle written before thumbnails were stored."""
        if self._thumbnails is None and self.path is not None and all((self.path / f).is_file() for f in PACK_FILES):
            try:
                self._thumbnails = ThumbnailPack(self.path)
            except (OSError, ValueError) as error:
                logger.warning("bundle %s: thumbnails unreadable (%s)", self.path, error)
        return self._thumbnails

    @property
    def open_set(self) -> OpenSetCalibration:
        """The "no close match" threshold: from the manifest, else (a bundle from before it was stored)
        calibrated now with the default quantile."""
        if self.manifest.open_set is None:
            self.manifest = self.manifest.replace(open_set=calibrate(self.index).to_dict())
        return OpenSetCalibration.from_dict(self.manifest.open_set)

    def _recalibrated(self) -> OpenSetCalibration:
        """The open-set calibration for the index as it is now: a cross-fitted threshold (set at training, see
        :mod:`lookalike.index.open_set`) is kept while there are too few held-out images to replace it."""
        current = self.open_set
        if current.source == "cross-fit" and len(held_out_rows(self.index)) < MIN_HELD_OUT:
            return current
        return calibrate(self.index, quantile=current.quantile)

    def _write_thumbnails(self, directory: Path) -> None:
        """Write the thumbnail pack of every indexed image into ``directory``: those of the saved bundle are
        kept (linked when nothing changed), new images are decoded from their files."""
        ids, previous = self.index.ids, self.thumbnails
        if previous is not None and np.array_equal(previous.ids, ids):
            for name in PACK_FILES:
                link_or_copy(self.path / name, directory / name)
            return
        kept = [(int(i), previous.get(int(i))) for i in ids] if previous is not None else []
        items = [(i, blob) for i, blob in kept if blob is not None]
        have = {i for i, _ in items}
        missing = [row for row, i in enumerate(ids) if int(i) not in have]
        if missing:
            logger.info("making thumbnails of %d images", len(missing))
            items += make_thumbnails(ids[missing], [self.index.records[row].path for row in missing])
        ThumbnailPack.write(directory, items)

    @property
    def failures(self) -> list[DecodeFailure]:
        """Dataset files that could not be read when the bundle was built."""
        return self.manifest.skipped

    def query(
        self,
        embeddings: np.ndarray,
        probabilities: np.ndarray,
        *,
        k: int = 5,
        n_characters: int = 5,
        knn_k: int = 10,
        unknown_threshold: float | None = None,
    ) -> list[QueryResult]:
        """Answer queries given their embeddings and softmax probabilities.

        Parameters
        ----------
        embeddings : float32 ndarray of shape (n, d), L2-normalised
        probabilities : float32 ndarray of shape (n, n_classes)
        k : int
            Number of neighboring images to return (searched with the index's own settings, e.g. efSearch).
        n_characters : int
            Number of nearest classes to return, ranked by each class's best image
            (:meth:`~lookalike.index.EmbeddingIndex.search_with_classes`: exact for an exact index).
        knn_k : int
            Number of neighbors in the k-NN vote.
        unknown_threshold : float, optional
            Match score (cosine similarity) below which a query is "no close match" (default: the bundle's
            calibrated :attr:`open_set` threshold).

        Returns
        -------
        list of QueryResult, one per query
        """
        calibration = self.open_set
        threshold = calibration.threshold if unknown_threshold is None else float(unknown_threshold)
        # One search for the neighbors and the classes among them, searched further only when too few.
        found, nearest = self.index.search_with_classes(embeddings, max(k, knn_k), top=n_characters)
        votes = knn_vote(found.labels[:, :knn_k], found.scores[:, :knn_k], len(self.class_names))
        centroid_classifier, typical = self.centroids
        centroid_similarity = centroid_classifier.similarities(embeddings)
        match = calibration.match_scores(centroid_similarity, found.scores[:, 0])
        trained_classes = self.embedder.class_names
        results = []
        for row in range(len(embeddings)):
            results.append(
                QueryResult(
                    predicted=trained_classes[int(np.argmax(probabilities[row]))],
                    probabilities=_ranked(probabilities[row], trained_classes),
                    characters=self.index.hits(nearest, row),
                    neighbors=self.index.hits(found, row, k),
                    knn_predicted=self.class_names[int(np.argmax(votes[row]))],
                    knn_probabilities=_ranked(votes[row], self.class_names, drop_zero=True),
                    centroid_characters=[
                        self.index.hit(int(typical[c]), float(centroid_similarity[row, c]))
                        for c in np.argsort(-centroid_similarity[row], kind="stable")[:n_characters]
                        if typical[c] >= 0
                    ],
                    unknown=bool(match[row] < threshold),
                    unknown_threshold=threshold,
                    match_score=float(match[row]),
                )
            )
        return results

    def embedding_map(self, config: MapConfig = MapConfig()) -> EmbeddingMap:
        """The map of all indexed embeddings for ``config``.

        Computed once, stored in the bundle directory's ``maps/`` (when the bundle has been saved or was
        loaded) and reused for as long as the indexed embeddings stay the same.
        """
        embeddings, current = self.index.vectors, self.index.fingerprint
        cached = self._maps.get(config) or (load_map(self.path, config) if self.path else None)
        if cached is None or cached.fingerprint != current:
            logger.info("computing the %s map of %d embeddings", config.name, len(embeddings))
            cached = compute_map(embeddings, config)
            if self.path is not None:
                save_map(self.path, cached)
        self._maps[config] = cached
        return cached

    def place_on_map(
        self, embeddings: np.ndarray, embedding_map: EmbeddingMap, *, k: int = 10
    ) -> tuple[np.ndarray, np.ndarray]:
        """Positions of query embeddings on a map, and the rows of the neighbors that placed them.

        Parameters
        ----------
        embeddings : float32 ndarray of shape (n, d), L2-normalised
        embedding_map : EmbeddingMap
            From :meth:`embedding_map`.
        k : int
            Neighbors averaged (see :func:`lookalike.index.projection.place_queries`).

        Returns
        -------
        positions : float32 ndarray of shape (n, dims)
        neighbor_rows : int64 ndarray of shape (n, k)
            Rows (positions in ``index.records``) of those neighbors.
        """
        found = self.index.search(embeddings, min(k, len(self.index)))
        return place_queries(embedding_map.coordinates, found.rows, found.scores), found.rows

    def embed_files(self, paths: Sequence[str | os.PathLike]) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings and softmax probabilities of a few query files, decoded in order.

        Returns
        -------
        embeddings : float32 ndarray of shape (n, d), L2-normalised
        probabilities : float32 ndarray of shape (n, n_classes)

        Raises
        ------
        ImageDecodeError
            A file cannot be read (the message names it); for many files with skipping, use
            ``embedder.embed_files``.
        """
        config = self.embedder.config
        images = np.stack([load_image(p, config.image_size, crop=config.crop_to_content) for p in paths])
        return self.embedder.embed_images(images)

    def query_files(self, paths: Sequence[str | os.PathLike], **options) -> list[QueryResult]:
        """Answer queries given image files; ``options`` as for :meth:`query`.

        Raises
        ------
        ImageDecodeError
            A file cannot be read (the message names it).
        """
        return self.query(*self.embed_files(paths), **options)

    def save(self, directory: str | os.PathLike, *, precision: str | None = None) -> Path:
        """Write the bundle to ``directory`` atomically, replacing a bundle already there.

        A bundle saved for the first time gets its Keras model, its fp32 LiteRT export and the reduced-precision
        runtimes, measured against fp32 on the held-out images (:mod:`lookalike.bundle.precision`). A bundle
        saved again (after ``add``, ``remove``, ``reindex``) links the embedder's files unchanged. The bundle
        object is unchanged apart from ``path`` and ``manifest``: it keeps answering with the embedder it had
        (:meth:`load` the saved bundle to use the chosen runtime after training).

        Parameters
        ----------
        directory : path-like
        precision : str, optional
            One of ``auto``, ``fp32``, ``bf16``, ``int8``: export and measure the runtimes again and use this
            one (``auto``: the fastest that passes). Default: ``auto`` for a new bundle, else keep the choice.

        Returns
        -------
        Path
            The bundle directory.

        Raises
        ------
        BundleError
            ``directory`` exists, is not empty and is not a bundle (it is never replaced then).
        ValueError
            ``precision`` is unknown or cannot run here.
        """

        def fill(staging: Path) -> Manifest:
            changes = {}
            saved = self.path is not None and (self.path / MODEL_FILE).is_file()
            if saved:
                # The embedder is the one saved there (it never changes within a bundle): link its files.
                keep = (
                    EMBEDDER_FILES
                    if precision is None
                    else (MODEL_FILE, CONFIG_FILE, SOFTMAX_FILE, RUNTIME_FILES["fp32"])
                )
                for name in keep:
                    if (self.path / name).is_file():
                        link_or_copy(self.path / name, staging / name)
            else:
                self.keras_embedder.save(staging)
                try:
                    export_litert(self.keras_embedder, staging / RUNTIME_FILES["fp32"])
                except RuntimeUnavailable as error:
                    logger.warning("no fast inference runtime in this bundle (%s); Keras will be used", error)
            if (not saved or precision is not None) and (staging / RUNTIME_FILES["fp32"]).is_file():
                if not (staging / SOFTMAX_FILE).is_file():  # a bundle from before softmax.npz
                    write_softmax(staging, *self.keras_embedder.softmax_weights())
                changes["precision"] = export_runtimes(self.keras_embedder, staging, self.index, precision or "auto")
            self.index.save(staging)
            self._write_thumbnails(staging)
            if self.log_dir is not None and self.log_dir.is_dir():
                shutil.copytree(self.log_dir, staging / LOGS_DIR)
            skipped = self.manifest.dataset.get("skipped", [])
            if skipped:
                with open(staging / SKIPPED_FILE, "w", newline="", encoding="utf-8") as handle:
                    writer = csv.writer(handle)
                    writer.writerow(["path", "reason"])
                    writer.writerows([item["path"], item["reason"]] for item in skipped)
            return self.manifest.replace(
                index=self.index.spec.to_dict() | {"size": len(self.index), "metric": "inner_product"},
                class_names=list(self.class_names),
                open_set=self._recalibrated().to_dict(),
                **changes,
            )

        checked = tuple(dict.fromkeys((*CHECKED_FILES, *EMBEDDER_FILES, *PACK_FILES)))
        target, self.manifest = write_bundle(directory, fill, checked=checked)
        self.path, self._thumbnails = target, None
        return target

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Bundle:
        """Read a bundle written by :meth:`save`.

        Raises
        ------
        BundleError
            Not a bundle, written by another format version, a file missing or damaged, its parts disagree, or
            its "no close match" threshold is for a match score this version does not compute.
        """
        directory = Path(directory).expanduser()
        manifest = read_manifest(directory, required=CHECKED_FILES)
        try:
            if manifest.open_set is not None:
                OpenSetCalibration.from_dict(manifest.open_set)  # a score this version computes
            embedder = load_embedder(directory, precision=(manifest.precision or {}).get("chosen", "fp32"))
            index = EmbeddingIndex.load(directory)
        except (OSError, ValueError, zipfile.BadZipFile) as error:
            raise BundleError(f"cannot load bundle {directory}: {error}") from error
        bundle = cls(embedder, index, manifest, log_dir=directory / LOGS_DIR)
        bundle.path = directory.resolve()
        return bundle
