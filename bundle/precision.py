"""Which precision a bundle runs in, judged by retrieval agreement with float32 on its held-out images.

When a bundle's embedder is exported, every runtime of :mod:`lookalike.embedder.runtime` that is available
(fp32 LiteRT, int8 LiteRT, bf16 OpenVINO) embeds the bundle's held-out (``val``/``test``) images, and each
reduced-precision runtime is compared with fp32 where it matters for a search engine, the answers:

- **nearest-character top-1 agreement**: the share of held-out queries whose best-matching character (the class
  of the nearest ``train`` image) is the same as with fp32; at least 99 %;
- **recall@10 of fp32's neighbors**: the share of fp32's 10 nearest ``train`` images that the runtime also
  returns in its top 10 (``faiss.contrib.evaluation.knn_intersection_measure``); at least 0.95;
- **few-shot accuracy**: top-1 accuracy of the softmax head (the runtime's own probabilities), the k-NN vote and
  the nearest centroid (fitted on the ``train`` embeddings), each within 0.5 points of fp32's.

The held-out images are not in the ``train`` set the queries search, so no query finds itself. ``auto`` uses
the fastest runtime that passes (by images per second measured in the same run); the measurement is stored in
the manifest as ``precision``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..data import iter_image_batches
from ..embedder.runtime import PRECISIONS, RuntimeUnavailable, open_runner
from ..index.search import EmbeddingIndex
from .storage import BundleError

logger = logging.getLogger(__name__)

#: ``--precision`` values: a precision, or ``auto`` (the fastest that passes the criteria).
PRECISION_CHOICES = ("auto", *PRECISIONS)
#: Acceptance criteria of a reduced precision (see the module docstring).
MIN_TOP1_AGREEMENT = 0.99
MIN_RECALL_AT_10 = 0.95
MAX_ACCURACY_CHANGE = 0.005
#: How much faster than fp32 (images per second) a reduced precision must be for ``auto`` to choose it.
MIN_SPEED_UP = 1.2
#: Images timed per runtime (the held-out images, cycled), and how many times (the fastest counts).
TIMED_IMAGES = 64
TIMED_REPEATS = 3


@dataclass(frozen=True)
class RuntimeTrial:
    """How one runtime did on the held-out images.

    Attributes
    ----------
    precision : str
    images_per_second : float
        Inference alone (decoded images in memory): the fastest of :data:`TIMED_REPEATS` calls of
        :data:`TIMED_IMAGES` images.
    top1_agreement : float or None
        Nearest-character top-1 agreement with fp32, in [0, 1]; None without held-out images.
    recall_at_10 : float or None
        Recall@10 of fp32's 10 nearest ``train`` images, in [0, 1].
    accuracy : dict of str to float
        Top-1 accuracy of ``softmax``, ``knn`` and ``centroid`` on the held-out images.
    accuracy_change : float or None
        Largest absolute difference of those accuracies from fp32's (0.005 is half a point).
    passes : bool
        Meets all three criteria (fp32 always does).
    """

    precision: str
    images_per_second: float
    top1_agreement: float | None
    recall_at_10: float | None
    accuracy: dict
    accuracy_change: float | None
    passes: bool

    def to_dict(self) -> dict:
        return asdict(self)


def _held_out(index: EmbeddingIndex) -> tuple[np.ndarray, np.ndarray]:
    splits = np.array([r.split for r in index.records])
    return np.flatnonzero(splits == "train"), np.flatnonzero(np.isin(splits, ("val", "test")))


def decode_rows(
    index: EmbeddingIndex, rows: np.ndarray, size: int, *, crop: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Decoded images of the indexed images at ``rows`` (uint8, (m, size, size, 3)) and the rows that decoded;
    ``crop``: cropped to their content first, as the embedder's ``crop_to_content`` says."""
    paths = [index.records[r].path for r in rows]
    images, decoded = [], []
    for batch in iter_image_batches(paths, size=size, crop=crop):
        images.append(batch.images)
        decoded.append(rows[batch.indices])
    if not images:
        return np.empty((0, size, size, 3), np.uint8), np.empty(0, np.int64)
    return np.concatenate(images), np.concatenate(decoded)


def _speed(runner, images: np.ndarray) -> float:
    """Images per second of ``runner``: the best of :data:`TIMED_REPEATS` timed calls after a warm-up call (as
    ``timeit`` advises: slower repeats measure other processes, not the runner)."""
    timed = images[np.arange(TIMED_IMAGES) % len(images)].astype(np.float32)
    runner(timed)  # warm-up: compilation, first inferences
    seconds = []
    for _ in range(TIMED_REPEATS):
        started = time.perf_counter()
        runner(timed)
        seconds.append(time.perf_counter() - started)
    return TIMED_IMAGES / min(seconds)


def _answers(outputs, reference: np.ndarray, reference_labels: np.ndarray, y_true, class_names):
    import faiss  # scikit-learn (via score_classifiers) only when measuring, not on the query path

    from ..index.evaluation import score_classifiers

    embeddings, probabilities = outputs
    exact = faiss.IndexFlatIP(reference.shape[1])
    exact.add(reference)
    neighbors = exact.search(embeddings, min(10, len(reference)))[1]
    scored = score_classifiers(reference, reference_labels, embeddings, y_true, class_names)
    accuracy = {"softmax": float(np.mean(probabilities.argmax(axis=1) == y_true))}
    accuracy |= {name: scores.accuracy for name, scores in scored.scores.items()}
    return neighbors, accuracy


def measure(
    directory: str | Path, index: EmbeddingIndex, *, image_size: int, precisions=PRECISIONS, crop: bool = False
) -> dict:
    """Run every available runtime of ``precisions`` exported in ``directory`` on the bundle's held-out images.

    Parameters
    ----------
    directory : path-like
        Holds the exported runtimes (at least fp32's ``inference.tflite``).
    index : EmbeddingIndex
        The bundle's index: ``train`` rows are searched, ``val``/``test`` rows are the queries.
    image_size : int
    precisions : sequence of str
    crop : bool
        Whether the embedder crops images to their content (``EmbedderConfig.crop_to_content``).

    Returns
    -------
    dict of str to RuntimeTrial or str
        A trial per precision, or the reason it is unavailable.

    Raises
    ------
    RuntimeUnavailable
        The fp32 runtime cannot run.
    """
    train_rows, held_out_rows = _held_out(index)
    images, held_out_rows = decode_rows(index, held_out_rows, image_size, crop=crop)
    if not len(images):  # nothing to judge by: time the runtimes on training images
        images, _ = decode_rows(index, train_rows[:TIMED_IMAGES], image_size, crop=crop)
    fp32 = open_runner(directory, "fp32")
    reference_outputs = fp32(images)
    judged = len(held_out_rows) > 0 and len(train_rows) > 0
    if judged:
        reference, labels = index.vectors[train_rows], index.labels[train_rows]
        y_true = index.labels[held_out_rows]
        truth, truth_accuracy = _answers(reference_outputs, reference, labels, y_true, index.class_names)
    trials: dict = {}
    for precision in precisions:
        try:
            runner = fp32 if precision == "fp32" else open_runner(directory, precision)
        except RuntimeUnavailable as error:
            trials[precision] = str(error)
            continue
        speed = _speed(runner, images)
        if not judged:
            trials[precision] = RuntimeTrial(precision, speed, None, None, {}, None, precision == "fp32")
            continue
        found, accuracy = _answers(runner(images), reference, labels, y_true, index.class_names)
        from faiss.contrib.evaluation import knn_intersection_measure

        top1 = float(np.mean(labels[found[:, 0]] == labels[truth[:, 0]]))
        recall = float(knn_intersection_measure(found, truth))
        change = max(abs(accuracy[name] - truth_accuracy[name]) for name in accuracy)
        passes = top1 >= MIN_TOP1_AGREEMENT and recall >= MIN_RECALL_AT_10 and change <= MAX_ACCURACY_CHANGE + 1e-12
        trials[precision] = RuntimeTrial(precision, speed, top1, recall, accuracy, change, passes)
    return trials


def choose(trials: dict, asked: str) -> str:
    """The precision to use: ``asked`` when it is available, or for ``auto`` the fastest runtime that passes,
    where a reduced precision must beat fp32 by :data:`MIN_SPEED_UP` (a smaller gain is within the noise of one
    measurement, and not worth the agreement it gives up).

    Raises
    ------
    ValueError
        ``asked`` is not one of :data:`PRECISION_CHOICES`.
    BundleError
        ``asked`` is not available here (the message says why).
    """
    if asked not in PRECISION_CHOICES:
        raise ValueError(f"precision must be one of {', '.join(PRECISION_CHOICES)}; got {asked!r}")
    if asked != "auto":
        trial = trials.get(asked)
        if not isinstance(trial, RuntimeTrial):
            raise BundleError(f"precision {asked} is not available here: {trial}")
        if not trial.passes:
            logger.warning("precision %s does not meet the retrieval-agreement criteria; used as asked", asked)
        return asked
    passing = [t for t in trials.values() if isinstance(t, RuntimeTrial) and t.passes]
    fastest = max(passing, key=lambda t: t.images_per_second)
    fp32 = trials.get("fp32")
    if isinstance(fp32, RuntimeTrial) and fastest.images_per_second < MIN_SPEED_UP * fp32.images_per_second:
        return "fp32"
    return fastest.precision


def summary(trials: dict, asked: str, chosen: str, *, held_out: int) -> dict:
    """The manifest's ``precision`` entry: what was asked, what is used, and every trial."""
    return {
        "asked": asked,
        "chosen": chosen,
        "held_out_images": held_out,
        "criteria": {
            "min_top1_agreement": MIN_TOP1_AGREEMENT,
            "min_recall_at_10": MIN_RECALL_AT_10,
            "max_accuracy_change": MAX_ACCURACY_CHANGE,
        },
        "runtimes": {p: t.to_dict() if isinstance(t, RuntimeTrial) else {"unavailable": t} for p, t in trials.items()},
    }


def export_runtimes(embedder, directory: Path, index: EmbeddingIndex, asked: str = "auto") -> dict:
    """Export the reduced-precision runtimes ``asked`` needs into ``directory``, measure them, choose one.

    ``directory`` already holds the fp32 export. int8 is calibrated on up to
    :data:`~lookalike.embedder.precision.CALIBRATION_IMAGES` of the bundle's ``train`` images (seeded sample).

    Parameters
    ----------
    embedder : Embedder
        The Keras embedder (imports TensorFlow).
    directory : Path
    index : EmbeddingIndex
    asked : str
        One of :data:`PRECISION_CHOICES`.

    Returns
    -------
    dict
        The manifest's ``precision`` entry (see :func:`summary`).

    Raises
    ------
    ValueError
        ``asked`` is unknown.
    BundleError
        ``asked`` cannot run here.
    """
    if asked not in PRECISION_CHOICES:
        raise ValueError(f"precision must be one of {', '.join(PRECISION_CHOICES)}; got {asked!r}")
    from ..embedder.precision import CALIBRATION_IMAGES, export_int8

    size = embedder.config.image_size
    wanted = PRECISIONS if asked == "auto" else tuple(dict.fromkeys(("fp32", asked)))
    if "int8" in wanted:
        train_rows, _ = _held_out(index)
        rows = train_rows if len(train_rows) else np.arange(len(index))
        sample = np.random.default_rng(0).choice(rows, min(CALIBRATION_IMAGES, len(rows)), replace=False)
        images, _ = decode_rows(index, np.sort(sample), size, crop=embedder.config.crop_to_content)
        try:
            export_int8(embedder, images, directory)
        except (RuntimeUnavailable, ValueError) as error:
            logger.warning("no int8 runtime: %s", error)
    trials = measure(directory, index, image_size=size, precisions=wanted, crop=embedder.config.crop_to_content)
    chosen = choose(trials, asked)
    held_out = int(np.isin([r.split for r in index.records], ("val", "test")).sum())
    return summary(trials, asked, chosen, held_out=held_out)


def describe(entry: dict | None) -> list[str]:
    """Lines that describe a manifest ``precision`` entry (what the CLI prints)."""
    if not entry:
        return ["precision: fp32 (chosen before precisions were measured)"]
    lines = [f"precision: {entry['chosen']} (asked: {entry['asked']}; {entry['held_out_images']} held-out images)"]
    for precision, trial in entry["runtimes"].items():
        if "unavailable" in trial:
            lines.append(f"  {precision}: unavailable ({trial['unavailable']})")
        elif trial["top1_agreement"] is None or precision == "fp32":
            lines.append(f"  {precision}: {trial['images_per_second']:.0f} img/s")
        else:
            lines.append(
                f"  {precision}: {trial['images_per_second']:.0f} img/s, top-1 agreement {trial['top1_agreement']:.3f}, "
                f"recall@10 {trial['recall_at_10']:.3f}, accuracy change {100 * trial['accuracy_change']:.1f} points: "
                + ("passes" if trial["passes"] else "fails")
            )
    return lines
