"""The Gradio web app: upload an image, get the predicted character and its look-alikes."""

from __future__ import annotations

import logging
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from lookalike.data import ImageDecodeError  # noqa: E402
from lookalike.index import Bundle, QueryResult  # noqa: E402

logger = logging.getLogger(__name__)

#: Largest accepted upload.
MAX_UPLOAD_SIZE = "20mb"
#: Number of example queries offered (one held-out image from each of the first classes).
N_EXAMPLES = 12


def example_images(bundle: Bundle, n: int = N_EXAMPLES) -> list[str]:
    """Paths of up to ``n`` indexed images from different classes, held-out images preferred."""
    chosen: dict[str, str] = {}
    for record in sorted(bundle.index.records, key=lambda r: r.split == "train"):
        if record.label not in chosen and record.path.is_file():
            chosen[record.label] = str(record.path)
    return list(chosen.values())[:n]


def _summary(bundle: Bundle) -> str:
    manifest = bundle.manifest
    accuracy = manifest.get("training", {}).get("val_accuracy")
    accuracy_text = f", held-out accuracy {accuracy:.3f}" if accuracy is not None else ""
    return (
        f"{len(bundle.class_names)} characters, {len(bundle.index)} indexed images, "
        f"{manifest['backbone']} backbone, {manifest['embedding_dim']}-d embeddings{accuracy_text}"
    )


def _outputs(query_path: str, result: QueryResult) -> tuple:
    best = result.characters[0] if result.characters else None
    characters = [(str(hit.path), f"{hit.label}  {hit.score:.3f}") for hit in result.characters]
    neighbors = [(str(hit.path), f"{hit.label}  {hit.score:.3f}") for hit in result.neighbors]
    best_caption = f"### Best match: **{best.label}** (cosine similarity {best.score:.3f})" if best else ""
    return (
        result.probabilities,
        result.knn_probabilities,
        query_path,
        str(best.path) if best else None,
        best_caption,
        characters,
        neighbors,
    )


def build_app(bundle: Bundle) -> gr.Blocks:
    """The look-alike search app for ``bundle``; launch it with :func:`serve`."""

    def answer(image_path: str | None, k: int):
        if not image_path:
            return None, None, None, None, "", [], []
        try:
            result = bundle.query_files([image_path], k=int(k), n_characters=int(k))[0]
        except ImageDecodeError as error:
            raise gr.Error(f"Could not read that image: {error.reason}") from error
        return _outputs(image_path, result)

    with gr.Blocks(title="lookalike") as app:
        gr.Markdown(f"# lookalike: find the look-alike character\n{_summary(bundle)}")
        with gr.Row():
            with gr.Column(scale=1):
                query = gr.Image(type="filepath", label="Query image", sources=["upload", "clipboard"], height=320)
                k = gr.Slider(1, 20, value=6, step=1, label="How many look-alikes")
                search = gr.Button("Find look-alikes", variant="primary")
                examples = example_images(bundle)
                if examples:
                    gr.Examples(examples=examples, inputs=query, label="Examples", examples_per_page=N_EXAMPLES)
            with gr.Column(scale=1):
                predicted = gr.Label(label="Predicted character (softmax head)", num_top_classes=5)
                knn = gr.Label(label="k-NN vote of the 10 nearest images", num_top_classes=3)
        best_caption = gr.Markdown()
        with gr.Row():
            query_view = gr.Image(label="Your image", interactive=False, height=280)
            best_view = gr.Image(label="Best-matching character", interactive=False, height=280)
        characters = gr.Gallery(label="Look-alike characters (best image of each)", columns=6, height=260, object_fit="contain")
        neighbors = gr.Gallery(label="Nearest images", columns=6, height=260, object_fit="contain")
        outputs = [predicted, knn, query_view, best_view, best_caption, characters, neighbors]
        search.click(answer, inputs=[query, k], outputs=outputs, api_name="search")
        query.change(answer, inputs=[query, k], outputs=outputs, api_name=False)
    return app


def image_roots(bundle: Bundle) -> list[str]:
    """Folders holding the bundle's images: Gradio may serve files from these only."""
    parents = {str(record.path.parent) for record in bundle.index.records}
    return [os.path.commonpath(sorted(parents))] if parents else []


def serve(bundle: Bundle, *, host: str = "127.0.0.1", port: int = 7860, block: bool = True) -> gr.Blocks:
    """Start the app on ``http://host:port``; returns once it is serving when ``block`` is False."""
    app = build_app(bundle)
    app.queue(default_concurrency_limit=2)
    app.launch(
        server_name=host,
        server_port=port,
        share=False,
        allowed_paths=image_roots(bundle),
        max_file_size=MAX_UPLOAD_SIZE,
        prevent_thread_lock=not block,
        footer_links=["api"],
    )
    return app
