"""A bundle: the trained embedder, the index and its metadata, stored together in one directory.

Layout of a bundle directory::

    manifest.json    format version, backbone, sizes, class names, training summary, package versions,
                     SHA-256 of the four files below (verified on load); written last
    model.keras      the classifier (Keras v3 format), loaded with safe_mode
    embedder.json    the embedder's configuration and class names
    inference.tflite the embedder exported to LiteRT, checked against Keras (absent where LiteRT is missing)
    index.faiss      the FAISS index
    metadata.json    path, label and split of every indexed image, by id
    skipped.csv      dataset files that could not be read, with the reason (only when there were any)
    logs/            per-epoch training logs: <phase>.csv and TensorBoard event files
    maps/            UMAP / t-SNE maps of the embeddings, computed on first use (derived, not copied by save)
    report/          the last evaluation (derived, not copied by save)
    audit/           frozen ImageNet features of the indexed images for the audit (derived, not copied by save)

A bundle is written into a temporary directory beside its target and renamed into place, so an
interrupted write never replaces a good bundle with a half-written one; if a replace is killed between its
two renames, loading puts the previous bundle back. Loading never runs code from the bundle: no pickle,
JSON and NumPy files without pickles, a FAISS index, and the Keras model loaded with ``safe_mode=True``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass
from functools import cached_property
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Sequence

import numpy as np

from lookalike.data import Dataset, DecodeFailure, load_image
from lookalike.embedder import Embedder, EmbedderConfig, train
from lookalike.embedder.model import CONFIG_FILE, MODEL_FILE
from lookalike.embedder.runtime import LiteRTRunner, RuntimeUnavailable, export_litert

from .classifiers import NearestCentroidClassifier
from .neighbors import knn_vote, nearest_classes
from .projection import EmbeddingMap, MapConfig, compute_map, fingerprint, load_map, place_queries, save_map
from .files import write_atomic
from .search import INDEX_FILE, METADATA_FILE, EmbeddingIndex, Hit

logger = logging.getLogger(__name__)

#: Version of the bundle layout written by this lookalike; bundles of a newer version are refused.
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
LOGS_DIR = "logs"
SKIPPED_FILE = "skipped.csv"
#: The embedder exported for the fast CPU runtime (optional: Keras is the fallback).
RUNTIME_FILE = "inference.tflite"
#: Files whose SHA-256 the manifest records and loading verifies.
CHECKED_FILES = (MODEL_FILE, CONFIG_FILE, INDEX_FILE, METADATA_FILE)
#: Neighbours examined to rank the nearest classes ("characters").
CHARACTER_POOL = 1024
_VERSIONED_PACKAGES = ("lookalike", "tensorflow", "keras", "faiss-cpu", "numpy", "pillow")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _finish_interrupted_replace(directory: Path) -> None:
    """Put back the previous bundle if a replace-in-place was killed between its two renames."""
    for retired in sorted(directory.parent.glob(f".{directory.name}.old-*/{directory.name}")):
        if (retired / MANIFEST_FILE).is_file():
            logger.warning("restoring %s from an interrupted replace (%s)", directory, retired.parent)
            os.replace(retired, directory)
            shutil.rmtree(retired.parent, ignore_errors=True)
            return


def _attach_runtime(embedder: Embedder, directory: Path) -> None:
    """Use the bundle's LiteRT export for inference when it has one and LiteRT is installed; else Keras."""
    if (directory / RUNTIME_FILE).is_file():
        try:
            embedder.runtime = LiteRTRunner(directory / RUNTIME_FILE, embedding_dim=embedder.embedding_dim)
        except RuntimeUnavailable as error:
            logger.info("using Keras for inference: %s", error)


class BundleError(RuntimeError):
    """A bundle cannot be read or written; the message names the directory or file and the problem."""


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
    """

    predicted: str
    probabilities: dict[str, float]
    characters: list[Hit]
    neighbors: list[Hit]
    knn_predicted: str
    knn_probabilities: dict[str, float]
    centroid_characters: list[Hit]

    @property
    def centroid_predicted(self) -> str:
        """Class of the nearest centroid."""
        return self.centroid_characters[0].label

    def to_dict(self) -> dict:
        """JSON-serialisable form with keys predicted, probabilities, characters, neighbors, knn."""
        return {
            "predicted": self.predicted,
            "probabilities": self.probabilities,
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


def _package_versions() -> dict[str, str]:
    versions = {}
    for name in _VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


class Bundle:
    """A trained embedder with the index of the images it embedded; answers look-alike queries.

    Create one with :meth:`train`, or :meth:`load` a saved one.

    Attributes
    ----------
    embedder : Embedder
    index : EmbeddingIndex
    manifest : dict
        What :meth:`save` writes to ``manifest.json``.
    """

    def __init__(self, embedder: Embedder, index: EmbeddingIndex, manifest: dict, *, log_dir: Path | None = None):
        if embedder.embedding_dim != index.dim:
            raise BundleError(
                f"the embedder produces {embedder.embedding_dim}-d embeddings but the index holds {index.dim}-d vectors"
            )
        if tuple(embedder.class_names) != tuple(index.class_names):
            raise BundleError("the embedder and the index have different class names")
        self.embedder = embedder
        self.index = index
        self.manifest = manifest
        #: Training logs (``<phase>.csv``, ``tensorboard/``), copied into the bundle's ``logs/`` on save.
        self.log_dir = log_dir
        #: The directory this bundle was loaded from or last saved to; None before that.
        self.path: Path | None = None
        self._maps: dict[MapConfig, EmbeddingMap] = {}
        self._log_files: tempfile.TemporaryDirectory | None = None  # owns log_dir when training made it

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.embedder.class_names

    @cached_property
    def centroids(self) -> tuple[NearestCentroidClassifier, np.ndarray]:
        """Nearest-centroid classifier over all indexed images, and each class's most typical image id.

        Returns
        -------
        classifier : NearestCentroidClassifier
            ``classes_`` are class indices.
        typical_ids : int64 ndarray of shape (n_classes,)
            Id of the image most similar to its class centroid; -1 for a class with no image.
        """
        embeddings, labels = self.index.embeddings(), self.index.labels
        classifier = NearestCentroidClassifier(classes=np.arange(len(self.class_names))).fit(embeddings, labels)
        similarity = np.einsum("nd,nd->n", embeddings, classifier.centroids_[labels])
        typical = np.full(len(self.class_names), -1, dtype=np.int64)
        order = np.lexsort((-similarity, labels))  # by class, most similar first
        first = order[np.r_[True, labels[order][1:] != labels[order][:-1]]] if len(order) else order
        typical[labels[first]] = first
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

        Raises
        ------
        TrainingError
            No training image could be read.
        BackboneWeightsError
            The backbone weights cannot be found.
        """
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
        index = EmbeddingIndex.build(result.embedded.embeddings, indexed, embedder.class_names)
        manifest = {
            "format_version": FORMAT_VERSION,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "backbone": "MobileNetV2 (alpha 1.0, ImageNet)",
            "image_size": embedder.config.image_size,
            "embedding_dim": embedder.embedding_dim,
            "class_names": list(embedder.class_names),
            "index": {"type": type(index.faiss_index).__name__, "metric": "inner_product", "size": len(index)},
            "dataset": {
                "root": str(dataset.root),
                "images": len(indexed),
                "skipped": [{"path": str(f.path), "reason": f.reason} for f in result.embedded.failures],
            },
            "training": {
                "phase_epochs": result.phase_epochs,
                "seconds": round(seconds, 1),
                "val_accuracy": result.val_accuracy,
                "history": result.history,
                "config": embedder.config.to_dict(),
            },
            "versions": _package_versions(),
        }
        bundle = cls(embedder, index, manifest, log_dir=log_dir)
        bundle._log_files = logs
        return bundle

    @property
    def failures(self) -> list[DecodeFailure]:
        """Dataset files that could not be read when the bundle was built."""
        return [DecodeFailure(Path(f["path"]), f["reason"]) for f in self.manifest["dataset"]["skipped"]]

    def query(
        self, embeddings: np.ndarray, probabilities: np.ndarray, *, k: int = 5, n_characters: int = 5, knn_k: int = 10
    ) -> list[QueryResult]:
        """Answer queries given their embeddings and softmax probabilities.

        Parameters
        ----------
        embeddings : float32 ndarray of shape (n, d), L2-normalised
        probabilities : float32 ndarray of shape (n, n_classes)
        k : int
            Number of neighbouring images to return.
        n_characters : int
            Number of nearest classes to return.
        knn_k : int
            Number of neighbours in the k-NN vote.

        Returns
        -------
        list of QueryResult, one per query
        """
        pool = min(len(self.index), max(k, knn_k, CHARACTER_POOL))
        found = self.index.search(embeddings, pool)
        votes = knn_vote(found.labels[:, :knn_k], found.scores[:, :knn_k], len(self.class_names))
        ranked = nearest_classes(found.labels, top=n_characters)
        centroid_classifier, typical = self.centroids
        centroid_similarity = centroid_classifier.similarities(embeddings)
        results = []
        for row, (positions, _) in enumerate(ranked):
            characters = [self.index.hit(int(found.ids[row, p]), float(found.scores[row, p])) for p in positions]
            results.append(
                QueryResult(
                    predicted=self.class_names[int(np.argmax(probabilities[row]))],
                    probabilities=_ranked(probabilities[row], self.class_names),
                    characters=characters,
                    neighbors=found.hits[row][:k],
                    knn_predicted=self.class_names[int(np.argmax(votes[row]))],
                    knn_probabilities=_ranked(votes[row], self.class_names, drop_zero=True),
                    centroid_characters=[
                        self.index.hit(int(typical[c]), float(centroid_similarity[row, c]))
                        for c in np.argsort(-centroid_similarity[row], kind="stable")[:n_characters]
                        if typical[c] >= 0
                    ],
                )
            )
        return results

    def embedding_map(self, config: MapConfig = MapConfig()) -> EmbeddingMap:
        """The map of all indexed embeddings for ``config``.

        Computed once, stored in the bundle directory's ``maps/`` (when the bundle has been saved or was
        loaded) and reused for as long as the indexed embeddings stay the same.
        """
        embeddings = self.index.embeddings()
        current = fingerprint(embeddings)
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
        """Positions of query embeddings on a map, and the ids of the neighbours that placed them.

        Parameters
        ----------
        embeddings : float32 ndarray of shape (n, d), L2-normalised
        embedding_map : EmbeddingMap
            From :meth:`embedding_map`.
        k : int
            Neighbours averaged (see :func:`lookalike.index.projection.place_queries`).

        Returns
        -------
        positions : float32 ndarray of shape (n, dims)
        neighbor_ids : int64 ndarray of shape (n, k)
        """
        found = self.index.search(embeddings, min(k, len(self.index)))
        return place_queries(embedding_map.coordinates, found.ids, found.scores), found.ids

    def query_files(self, paths: Sequence[str | os.PathLike], **options) -> list[QueryResult]:
        """Answer queries given image files; ``options`` as for :meth:`query`.

        Raises
        ------
        ImageDecodeError
            A file cannot be read (the message names it).
        """
        images = np.stack([load_image(p, self.embedder.config.image_size) for p in paths])
        return self.query(*self.embedder.embed_images(images), **options)

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the bundle to ``directory`` atomically, replacing a bundle already there.

        Returns
        -------
        Path
            The bundle directory.

        Raises
        ------
        BundleError
            ``directory`` exists, is not empty and is not a bundle (it is never replaced then).
        """
        target = Path(directory).expanduser().resolve()
        if target.exists() and any(target.iterdir()) and not (target / MANIFEST_FILE).is_file():
            raise BundleError(f"refusing to replace {target}: it is not empty and not a lookalike bundle")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.writing-", dir=target.parent))
        try:
            staging.chmod(0o755)  # mkdtemp makes it private; a bundle is an ordinary directory
            self.embedder.save(staging)
            try:
                export_litert(self.embedder, staging / RUNTIME_FILE)
            except RuntimeUnavailable as error:
                logger.warning("no fast inference runtime in this bundle (%s); Keras will be used", error)
            self.index.save(staging)
            if self.log_dir is not None and self.log_dir.is_dir():
                shutil.copytree(self.log_dir, staging / LOGS_DIR)
            skipped = self.manifest.get("dataset", {}).get("skipped", [])
            if skipped:
                with open(staging / SKIPPED_FILE, "w", newline="", encoding="utf-8") as handle:
                    writer = csv.writer(handle)
                    writer.writerow(["path", "reason"])
                    writer.writerows([item["path"], item["reason"]] for item in skipped)
            checked = [name for name in (*CHECKED_FILES, RUNTIME_FILE) if (staging / name).is_file()]
            manifest = self.manifest | {"files": {name: _sha256(staging / name) for name in checked}}
            write_atomic(staging / MANIFEST_FILE, json.dumps(manifest, indent=2, ensure_ascii=False))
            if target.exists():
                retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
                os.replace(target, retired / target.name)
                os.replace(staging, target)
                shutil.rmtree(retired)
            else:
                os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        logger.info("wrote bundle %s", target)
        self.manifest, self.path = manifest, target
        _attach_runtime(self.embedder, target)
        return target

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Bundle:
        """Read a bundle written by :meth:`save`.

        Raises
        ------
        BundleError
            Not a bundle, written by a newer lookalike, a file missing or damaged, or its parts disagree.
        """
        directory = Path(directory).expanduser()
        if not directory.exists():
            _finish_interrupted_replace(directory)
        manifest_path = directory / MANIFEST_FILE
        if not manifest_path.is_file():
            raise BundleError(f"not a lookalike bundle: {manifest_path} not found")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            version = int(manifest["format_version"])
        except (ValueError, KeyError, TypeError) as error:
            raise BundleError(f"cannot read bundle manifest {manifest_path}: {error!r}") from error
        if version > FORMAT_VERSION:
            raise BundleError(
                f"bundle {directory} has format version {version}, newer than this lookalike reads "
                f"(up to {FORMAT_VERSION}); upgrade lookalike"
            )
        for name in sorted(set(CHECKED_FILES) | set(manifest.get("files", {}))):
            path = directory / name
            if not path.is_file():
                raise BundleError(f"bundle file missing: {path}")
            expected = manifest.get("files", {}).get(name)
            if expected is None:
                raise BundleError(
                    f"{manifest_path} has no checksum for {name}: not written by this lookalike; train again"
                )
            if _sha256(path) != expected:
                raise BundleError(f"damaged bundle file {path}: its SHA-256 does not match the manifest")
        try:
            embedder = Embedder.load(directory)
            index = EmbeddingIndex.load(directory)
        except (OSError, ValueError, zipfile.BadZipFile) as error:
            raise BundleError(f"cannot load bundle {directory}: {error}") from error
        _attach_runtime(embedder, directory)
        bundle = cls(embedder, index, manifest, log_dir=directory / LOGS_DIR)
        bundle.path = directory.resolve()
        return bundle
