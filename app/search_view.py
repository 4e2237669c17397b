"""The app's Search view: a query from an upload, the webcam or the clipboard; the answer; why the best match.

A search is two events. The first answers (the verdict, the class probabilities, the galleries): lookalike's
own work is one embedding and one search, so the round trip is mostly the browser's. The second, chained on
the first's success, draws the explanation (:mod:`lookalike.bundle.explain`) of the best match from the
bundle's thumbnail of it, and fills its image when it is ready, without holding back the answer. Searching runs
on the bundle's runtime without TensorFlow; the first explanation a server draws loads the Keras model (seconds).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import gradio as gr
from PIL import Image

from ..bundle import Bundle, BundleError, QueryResult, search_image
from ..bundle.explain import explain_result
from ..data import ImageDecodeError
from .server import BundleRegistry, ServedFiles

logger = logging.getLogger(__name__)

#: Side in pixels of each image of the explanation (the embedder's own input is 224 px).
EXPLANATION_PANEL = 224
#: Number of example queries offered (one held-out image from each of the first classes).
N_EXAMPLES = 12
#: Where a query may come from.
QUERY_SOURCES = ["upload", "webcam", "clipboard"]


def _upload_path(payload) -> str | None:
    """The uploaded file's path, undecoded (Gradio has already checked that it is an upload)."""
    if payload is None:
        return None
    if payload.path is None or (payload.url or "").startswith("data:"):
        raise gr.Error("Send the image as a file upload.")
    return str(payload.path)


def query_image(**options) -> gr.Image:
    """An image input that hands lookalike the uploaded file's path without decoding it.

    ``gr.Image`` decodes every upload to RGB before the event handler runs, so a small PNG declaring
    13,300 x 13,300 pixels costs half a gigabyte before lookalike's header check could refuse it. This input
    returns the upload's path untouched, and :func:`lookalike.data.load_image` checks the header before
    decoding. A webcam snapshot or a pasted image reaches the server as an uploaded file too. (An instance
    attribute, not a subclass: Gradio writes a ``.pyi`` file beside the source of every component subclass.)
    """
    image = gr.Image(type="filepath", image_mode=None, **options)
    image.preprocess = _upload_path
    return image


@dataclass(frozen=True)
class Answered:
    """What the explanation step needs of the answer it follows (kept server-side in a ``gr.State``)."""

    image_path: str
    result: QueryResult
    key: str | None


def verdict(result: QueryResult) -> str:
    """The answer in one Markdown heading: the best match, or plainly "no close match" and the closest."""
    if not result.characters:
        return "### The index is empty: nothing to compare with."
    best = result.characters[0]
    if result.unknown:
        return (
            f"### No close match — the closest is **{best.label}** (match score {result.match_score:.3f}, "
            f"threshold {result.unknown_threshold:.3f})"
        )
    return (
        f"### Best match: **{best.label}** (cosine similarity {best.score:.3f}; match score "
        f"{result.match_score:.3f}, threshold {result.unknown_threshold:.3f})"
    )


def answer_outputs(result: QueryResult, bundle: Bundle, files: ServedFiles) -> tuple:
    """Values of the answer's components, in the order of :func:`search_view`'s outputs.

    On a query with no close match the softmax probabilities and the k-NN vote are hidden: they always sum
    to 100 % over the known classes, and would read as certainty about a query that is none of them.
    """
    known = not result.unknown
    centroid = result.centroid_characters[0] if result.centroid_characters else None
    centroid_text = (
        f"Nearest centroid: **{centroid.label}** (cosine {centroid.score:.3f})"
        + ("" if known else ". The softmax head and the k-NN vote are not shown: neither can say 'none of these'.")
        if centroid
        else ""
    )
    return (
        verdict(result),
        gr.update(value=result.probabilities if known else None, visible=known),
        gr.update(value=result.knn_probabilities if known else None, visible=known),
        centroid_text,
        files.gallery(bundle, result.characters),
        files.gallery(bundle, result.centroid_characters),
        files.gallery(bundle, result.neighbors),
    )


def explanation(bundle: Bundle, answered: Answered) -> Image.Image | None:
    """The explanation picture of an answer (query | best match with heatmaps), or None when the bundle
    stores no thumbnail of the match (the app never opens the image files a bundle names)."""
    try:
        return explain_result(bundle, answered.image_path, answered.result, match_from="thumbnail").to_image(
            panel=EXPLANATION_PANEL
        )
    except (BundleError, ImageDecodeError) as error:
        logger.warning("no explanation: %s", error)
        return None


def search_view(registry: BundleRegistry, files: ServedFiles, session: gr.State) -> None:
    """Lay out the Search view and wire its two events (see the module docstring); ``/search`` is the API."""
    empty_answer = ("", gr.update(value=None), gr.update(value=None), "", [], [], [])

    def answer(image_path: str | None, k: int, key: str | None):
        if not image_path:
            return (*empty_answer, None, None)
        bundle = registry.get(key)
        try:
            result = search_image(bundle, image_path, k=int(k))
        except ImageDecodeError as error:
            raise gr.Error(f"Could not read that image: {error.reason}") from error
        return (*answer_outputs(result, bundle, files), None, Answered(image_path, result, key))

    def explain(answered: Answered | None):
        return explanation(registry.get(answered.key), answered) if answered else None

    with gr.Row():
        with gr.Column(scale=1):
            query = query_image(label="Query image (upload, webcam or paste)", sources=QUERY_SOURCES, height=320)
            k = gr.Slider(1, 20, value=6, step=1, label="How many look-alikes")
            search = gr.Button("Find look-alikes", variant="primary")
            examples = files.examples(registry.default, N_EXAMPLES)
            if examples:
                gr.Examples(examples=examples, inputs=query, label="Examples", examples_per_page=N_EXAMPLES)
        with gr.Column(scale=2):
            best = gr.Markdown(elem_id="lookalike-verdict")
            gr.Markdown("**Why this match**: the regions that make up the cosine similarity (Stylianou et al. 2019)")
            why = gr.Image(  # no label drawn over it: it would cover the picture's own titles
                elem_id="lookalike-why",
                label="Why this match",
                show_label=False,
                interactive=False,
                height=320,
                format="jpeg",
            )
            centroid = gr.Markdown()
    with gr.Row():
        predicted = gr.Label(label="Predicted character (softmax head)", num_top_classes=5)
        knn = gr.Label(label="k-NN vote of the 10 nearest images", num_top_classes=3)
    gallery = {"columns": 6, "height": 260, "object_fit": "contain", "fit_columns": False}
    characters = gr.Gallery(label="Look-alike characters (each by its best-matching image)", **gallery)
    centroid_characters = gr.Gallery(label="Nearest class centroids (each by its most typical image)", **gallery)
    neighbors = gr.Gallery(label="Nearest images", **gallery)
    answered = gr.State()
    outputs = [best, predicted, knn, centroid, characters, centroid_characters, neighbors, why, answered]
    for event, options in ((search.click, {"api_name": "search"}), (query.change, {"api_name": False})):
        event(answer, inputs=[query, k, session], outputs=outputs, **options).success(
            explain, inputs=answered, outputs=why, api_name=False, show_progress="minimal"
        )
