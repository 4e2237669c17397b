"""Fast CPU runtimes for inference, without TensorFlow: the embedder exported to LiteRT and run by LiteRT (XNNPACK
kernels) or OpenVINO, in float32 or reduced precision.

=========  ==============================  =========================================================
precision  file                            runtime
=========  ==============================  =========================================================
fp32       ``inference.tflite``            LiteRT, float32; checked against Keras to 1e-4 at export
int8       ``inference-int8.tflite``       LiteRT, full-integer post-training quantization (weights
                                           and activations int8, calibrated on training images)
bf16       ``inference.tflite``            OpenVINO's CPU plugin with ``INFERENCE_PRECISION_HINT``
                                           bf16 (AMX / AVX-512 BF16), one stream per core
=========  ==============================  =========================================================

Reduced precision is not judged by how close the numbers are but by whether the answers change: see
:mod:`lookalike.bundle.precision`, which measures each runtime against fp32 when a bundle is exported and
records which one the bundle uses. Measured on 2 cores with a trained bundle (``benchmarks/speed``): fp32 LiteRT
gives embeddings within 2e-6 of Keras; XNNPACK is fastest on one image per call here, so the LiteRT runner feeds
images one at a time; OpenVINO is fastest with one image per inference request and one stream per core (see
:class:`OpenVINORunner`). This module imports neither TensorFlow nor Keras (exporting does, see
:func:`export_litert`).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from pathlib import Path

import numpy as np

from .quiet import quietly

logger = logging.getLogger(__name__)

#: Largest allowed difference between LiteRT and Keras embeddings when an export is checked.
MAX_EXPORT_ERROR = 1e-4
#: The precisions a bundle can run in, most exact first.
PRECISIONS = ("fp32", "bf16", "int8")
#: The exported model file each precision runs.
RUNTIME_FILES = {"fp32": "inference.tflite", "bf16": "inference.tflite", "int8": "inference-int8.tflite"}


class RuntimeUnavailable(RuntimeError):
    """A runtime's package or file is missing, or an exported model does not reproduce Keras."""


def _interpreter_class():
    try:
        with quietly():
            from ai_edge_litert.interpreter import Interpreter
    except ImportError as error:
        raise RuntimeUnavailable("the ai-edge-litert package is not installed") from error
    return Interpreter


def _outputs(names: list[str]) -> tuple[int, int]:
    """Positions of the embedding and of the probabilities among an exported model's output tensor names.

    The exporter names the outputs of the Keras model ``[embedding, probabilities]`` ``...:0`` and ``...:1``.
    """
    order = sorted(range(len(names)), key=lambda i: names[i])
    if len(order) != 2:
        raise RuntimeUnavailable(f"an exported embedder has 2 outputs (embedding, probabilities); got {names}")
    return order[0], order[1]


class LiteRTRunner:
    """Runs an exported embedder with LiteRT: float32 images of shape (n, s, s, 3) in [0, 255] -> (embeddings,
    probabilities).

    One interpreter with a batch of one image, run once per image; calls are serialised by a lock (an
    interpreter is not thread-safe).

    Parameters
    ----------
    path : path-like
        ``.tflite`` file written by :func:`export_litert` (float32) or
        :func:`lookalike.embedder.precision.export_int8` (int8).
    threads : int, optional
        Interpreter threads; default ``os.cpu_count()``.
    precision : str
        What the file computes in (``"fp32"`` or ``"int8"``), reported as :attr:`precision`.

    Attributes
    ----------
    embedding_dim : int
        Size d of the embeddings.
    precision : str

    Raises
    ------
    RuntimeUnavailable
        ``ai-edge-litert`` is not installed.
    """

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None, precision: str = "fp32"):
        interpreter_class = _interpreter_class()
        self.path, self.precision = Path(path), precision
        with quietly():  # "Created TensorFlow Lite XNNPACK delegate for CPU."
            self._interpreter = interpreter_class(str(self.path), num_threads=threads or os.cpu_count() or 1)
            self._input = self._interpreter.get_input_details()[0]
            self._interpreter.resize_tensor_input(self._input["index"], [1, *self._input["shape"][1:]])
            self._interpreter.allocate_tensors()
        outputs = self._interpreter.get_output_details()
        embedding, probabilities = _outputs([o["name"] for o in outputs])
        self._embedding, self._probabilities = outputs[embedding], outputs[probabilities]
        self.embedding_dim = int(self._embedding["shape"][-1])
        self._lock = threading.Lock()

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings (float32, (n, d), L2-normalised) and probabilities (float32, (n, n_classes))."""
        images = np.asarray(images, dtype=np.float32)
        embeddings = np.empty((len(images), self.embedding_dim), np.float32)
        probabilities = np.empty((len(images), self._probabilities["shape"][-1]), np.float32)
        interpreter = self._interpreter
        with self._lock:
            for i, image in enumerate(images):
                interpreter.set_tensor(self._input["index"], image[None])
                interpreter.invoke()
                embeddings[i] = interpreter.get_tensor(self._embedding["index"])[0]
                probabilities[i] = interpreter.get_tensor(self._probabilities["index"])[0]
        return embeddings, probabilities


class OpenVINORunner:
    """Runs an exported embedder with OpenVINO's CPU plugin, in bf16 (or fp32): same contract as
    :class:`LiteRTRunner`.

    OpenVINO reads the LiteRT file directly. The model is compiled for throughput (``PERFORMANCE_HINT``
    ``THROUGHPUT``: one stream per core, each running one image at a time) with uint8 input (converted to float
    inside OpenVINO), and images are fed one per inference request through an ``AsyncInferQueue`` of two requests
    per stream, so every core works on its own image. Measured on 2 cores with AVX-512 BF16 (demo bundle): model
    only, bf16 2.4 ms of CPU per image this way against 3.4-3.7 ms with the ``LATENCY`` hint (one request of 1 or
    16 images over both cores), and LiteRT fp32's 5.7 ms; decoding included, on an idle machine, 447 img/s with
    float input and one request per stream, 527 img/s with uint8 input and two.

    Importing OpenVINO and compiling take about 0.8 s, so both wait for the first call (see
    :attr:`starts_slowly`): a process that embeds one query never pays them when it has a quicker runner for
    few images (:class:`lookalike.embedder.RuntimeEmbedder`).

    Parameters
    ----------
    path : path-like
        ``.tflite`` file written by :func:`export_litert`.
    threads : int, optional
        Inference threads, shared out over the streams; default ``os.cpu_count()``.
    precision : str
        ``"bf16"`` or ``"fp32"`` (OpenVINO's ``INFERENCE_PRECISION_HINT``).

    Raises
    ------
    RuntimeUnavailable
        ``openvino`` is not installed; on the first call, the CPU plugin cannot compile the model.
    """

    #: Start-up (import and compilation) costs more than embedding a few images with LiteRT.
    starts_slowly = True

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None, precision: str = "bf16"):
        if importlib.util.find_spec("openvino") is None:
            raise RuntimeUnavailable("the openvino package is not installed")
        self.path, self.precision = Path(path), precision
        self._threads = threads or os.cpu_count() or 1
        self._lock = threading.Lock()
        self._queue = None

    @property
    def started(self) -> bool:
        """Whether OpenVINO has compiled the model (on the first call, or the first use of ``embedding_dim``)."""
        return self._queue is not None

    @property
    def embedding_dim(self) -> int:
        """Size d of the embeddings (compiles the model on first use)."""
        self._compile()
        return self._shapes[0]

    def _compile(self):
        """The inference queue, compiled on first use."""
        if self._queue is None:
            try:
                with quietly():
                    import openvino
                    from openvino.preprocess import PrePostProcessor

                    core = openvino.Core()
                    model = core.read_model(str(self.path))
                    model.reshape([1, *(side.get_length() for side in model.inputs[0].get_partial_shape()[1:])])
                    # uint8 pixels in, converted to float inside OpenVINO (a quarter of the bytes to hand over)
                    steps = PrePostProcessor(model)
                    steps.input().tensor().set_element_type(openvino.Type.u8)
                    model = steps.build()
                    compiled = core.compile_model(
                        model,
                        "CPU",
                        {
                            "INFERENCE_PRECISION_HINT": {"bf16": "bf16", "fp32": "f32"}[self.precision],
                            "PERFORMANCE_HINT": "THROUGHPUT",
                            "INFERENCE_NUM_THREADS": self._threads,
                        },
                    )
            except RuntimeError as error:
                raise RuntimeUnavailable(f"OpenVINO cannot run {self.path} in {self.precision}: {error}") from error
            outputs = compiled.outputs
            self._order = _outputs([o.get_any_name() for o in outputs])
            self._shapes = tuple(int(outputs[i].get_partial_shape()[-1].get_length()) for i in self._order)
            # two requests per stream: one waits with its next image while the other runs
            streams = compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")
            self._queue = openvino.AsyncInferQueue(compiled, 2 * int(streams))
        return self._queue

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings (float32, (n, d), L2-normalised) and probabilities (float32, (n, n_classes)).

        ``images``: uint8, or float pixels in [0, 255], rounded to uint8 (what decoding gives anyway).
        """
        images = np.asarray(images)
        if images.dtype != np.uint8:
            images = np.clip(np.rint(images), 0, 255).astype(np.uint8)
        with self._lock:
            queue = self._compile()
            embedding, probability = self._order
            embeddings = np.empty((len(images), self._shapes[0]), np.float32)
            probabilities = np.empty((len(images), self._shapes[1]), np.float32)

            def done(request, row):
                embeddings[row] = request.get_output_tensor(embedding).data[0]
                probabilities[row] = request.get_output_tensor(probability).data[0]

            queue.set_callback(done)
            for row, image in enumerate(images):
                queue.start_async({0: image[None]}, row)
            queue.wait_all()
        return embeddings, probabilities


def open_runner(directory: str | os.PathLike, precision: str, *, threads: int | None = None):
    """The runner of ``precision`` for the embedder exported into ``directory``.

    Parameters
    ----------
    directory : path-like
        A bundle directory.
    precision : str
        One of :data:`PRECISIONS`.
    threads : int, optional
        Inference threads (default: all cores).

    Returns
    -------
    LiteRTRunner or OpenVINORunner

    Raises
    ------
    RuntimeUnavailable
        The runtime's file is not in ``directory`` or its package is not installed.
    ValueError
        ``precision`` is not one of :data:`PRECISIONS`.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    path = Path(directory) / RUNTIME_FILES[precision]
    if not path.is_file():
        raise RuntimeUnavailable(f"{path} not found")
    if precision == "bf16":
        return OpenVINORunner(path, threads=threads, precision=precision)
    return LiteRTRunner(path, threads=threads, precision=precision)


def export_litert(embedder, path: str | os.PathLike) -> Path:
    """Export ``embedder`` (image -> embedding, probabilities) to a float32 LiteRT file and check it against Keras.

    The check runs both on 8 seeded random images: embeddings must agree within :data:`MAX_EXPORT_ERROR`
    and the top-1 class must be the same. Imports Keras (TensorFlow).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    RuntimeUnavailable
        ``ai-edge-litert`` is missing, or the exported model does not reproduce Keras (the file is removed).
    """
    _interpreter_class()
    path = Path(path)
    with quietly():
        embedder.inference_model().export(str(path), format="litert", verbose=False)
    size = embedder.config.image_size
    sample = np.random.default_rng(0).integers(0, 256, (8, size, size, 3)).astype(np.float32)
    fast = LiteRTRunner(path)(sample)
    reference = embedder.head_outputs(embedder.encode(sample))
    error = float(np.abs(fast[0] - reference[0]).max())
    if error > MAX_EXPORT_ERROR or not np.array_equal(fast[1].argmax(1), reference[1].argmax(1)):
        path.unlink(missing_ok=True)
        raise RuntimeUnavailable(f"the LiteRT export differs from Keras (max embedding difference {error:.2e})")
    logger.info("exported %s (max embedding difference from Keras %.1e)", path, error)
    return path
