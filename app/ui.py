"""The Gradio web app: search look-alikes, evaluate the bundle, train a new one."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
import threading
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402

from lookalike.app.maps import map_figure, place_image  # noqa: E402
from lookalike.app.report import CLASSIFIER_TITLES, confusion_figure, curves_figure  # noqa: E402
from lookalike.data import DEFAULT_DATASET, ImageDecodeError, load_folder, load_image  # noqa: E402
from lookalike.embedder.config import EmbedderConfig  # noqa: E402
from lookalike.index import Bundle, Hit, MapConfig, QueryResult, audit, imagenet_features  # noqa: E402
from lookalike.data.files import write_atomic  # noqa: E402
from lookalike.index.evaluation import CLASSIFIERS, evaluate  # noqa: E402

logger = logging.getLogger(__name__)

#: Largest accepted upload.
MAX_UPLOAD_SIZE = "20mb"
#: Number of example queries offered (one held-out image from each of the first classes).
N_EXAMPLES = 12
#: Side in pixels of the result images sent to the browser.
THUMBNAIL = 256


class ServedBundle:
    """The bundle the app answers with; the Train view replaces it when a new bundle is ready."""

    def __init__(self, bundle: Bundle):
        self._bundle = bundle
        self._lock = threading.Lock()

    @property
    def bundle(self) -> Bundle:
        with self._lock:
            return self._bundle

    def replace(self, bundle: Bundle) -> None:
        with self._lock:
            self._bundle = bundle


def example_images(bundle: Bundle, n: int = N_EXAMPLES) -> list[str]:
    """Paths of up to ``n`` indexed images from different classes, held-out images preferred."""
    chosen: dict[str, str] = {}
    for record in sorted(bundle.index.records, key=lambda r: r.split == "train"):
        if record.label not in chosen and record.path.is_file():
            chosen[record.label] = str(record.path)
    return list(chosen.values())[:n]


def summary(bundle: Bundle) -> str:
    """One Markdown line describing ``bundle``."""
    manifest = bundle.manifest
    accuracy = manifest.get("training", {}).get("val_accuracy")
    accuracy_text = f", validation accuracy {accuracy:.3f}" if accuracy is not None else ""
    return (
        f"**{len(bundle.class_names)} characters, {len(bundle.index)} indexed images**, "
        f"{manifest['backbone']} backbone, {manifest['embedding_dim']}-d embeddings{accuracy_text}"
        + (f" · bundle `{bundle.path}`" if bundle.path else "")
    )


class Thumbnails:
    """Small JPEG copies of indexed images, written once per image id into a folder Gradio serves directly.

    Gradio would otherwise encode every result image into its cache on every request, and two requests
    writing the same cache file at once can truncate it while it is being sent. Thumbnails are written
    atomically (a reader never sees a partial file), and only this folder is registered as static: no dataset
    folder is exposed.
    """

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="lookalike-thumbnails-"))
        gr.set_static_paths([self.root])

    def path(self, bundle: Bundle, hit: Hit) -> str | None:
        """Thumbnail file of the image of ``hit`` (by its stable id); None if the image cannot be read any more."""
        key = hashlib.sha1(str(bundle.path or id(bundle)).encode()).hexdigest()[:16]
        target = self.root / key / f"{hit.id}.jpg"
        if not target.is_file():
            try:
                pixels = load_image(hit.path, THUMBNAIL)
            except ImageDecodeError as error:
                logger.warning("cannot show %s: %s", error.path, error.reason)
                return None
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
            target.parent.mkdir(exist_ok=True)
            write_atomic(target, buffer.getvalue())
        return str(target)

    def gallery(self, bundle: Bundle, hits) -> list[tuple[str, str]]:
        """(thumbnail, "label score") for each hit that can still be shown."""
        items = [(self.path(bundle, hit), f"{hit.label}  {hit.score:.3f}") for hit in hits]
        return [(path, caption) for path, caption in items if path is not None]


def _search_outputs(query_path: str, result: QueryResult, bundle: Bundle, thumbnails: Thumbnails) -> tuple:
    best = result.characters[0] if result.characters else None
    best_caption = f"### Best match: **{best.label}** (cosine similarity {best.score:.3f})" if best else ""
    return (
        result.probabilities,
        result.knn_probabilities,
        f"Nearest centroid: **{result.centroid_predicted}** (cosine {result.centroid_characters[0].score:.3f})",
        query_path,
        thumbnails.path(bundle, best) if best else None,
        best_caption,
        thumbnails.gallery(bundle, result.characters),
        thumbnails.gallery(bundle, result.centroid_characters),
        thumbnails.gallery(bundle, result.neighbors),
    )


def _search_view(served: ServedBundle, thumbnails: Thumbnails) -> None:
    def answer(image_path: str | None, k: int):
        if not image_path:
            return None, None, "", None, None, "", [], [], []
        bundle = served.bundle
        try:
            result = bundle.query_files([image_path], k=int(k), n_characters=int(k))[0]
        except ImageDecodeError as error:
            raise gr.Error(f"Could not read that image: {error.reason}") from error
        return _search_outputs(image_path, result, bundle, thumbnails)

    with gr.Row():
        with gr.Column(scale=1):
            query = gr.Image(type="filepath", label="Query image", sources=["upload", "clipboard"], height=320)
            k = gr.Slider(1, 20, value=6, step=1, label="How many look-alikes")
            search = gr.Button("Find look-alikes", variant="primary")
            examples = example_images(served.bundle)
            if examples:
                gr.Examples(examples=examples, inputs=query, label="Examples", examples_per_page=N_EXAMPLES)
        with gr.Column(scale=1):
            predicted = gr.Label(label="Predicted character (softmax head)", num_top_classes=5)
            knn = gr.Label(label="k-NN vote of the 10 nearest images", num_top_classes=3)
            centroid = gr.Markdown()
    best_caption = gr.Markdown()
    with gr.Row():
        query_view = gr.Image(label="Your image", interactive=False, height=280)
        best_view = gr.Image(label="Best-matching character", interactive=False, height=280)
    gallery = dict(columns=6, height=260, object_fit="contain", fit_columns=False)
    characters = gr.Gallery(label="Look-alike characters (each by its best-matching image)", **gallery)
    centroid_characters = gr.Gallery(label="Nearest class centroids (each by its most typical image)", **gallery)
    neighbors = gr.Gallery(label="Nearest images", **gallery)
    outputs = [
        predicted,
        knn,
        centroid,
        query_view,
        best_view,
        best_caption,
        characters,
        centroid_characters,
        neighbors,
    ]
    search.click(answer, inputs=[query, k], outputs=outputs, api_name="search")
    query.change(answer, inputs=[query, k], outputs=outputs, api_name=False)


def _evaluate_view(served: ServedBundle) -> None:
    def run(classifier: str):
        bundle = served.bundle
        try:
            evaluation = evaluate(bundle)
        except Exception as error:  # noqa: BLE001 - shown to the user, e.g. a bundle without held-out images
            raise gr.Error(str(error)) from error
        table = [
            [CLASSIFIER_TITLES[name], round(s.accuracy, 4), round(s.macro_f1, 4)]
            for name, s in evaluation.scores.items()
        ]
        training = bundle.manifest.get("training", {})
        curves = (
            curves_figure(training["history"], training.get("phase_epochs", {})) if training.get("history") else None
        )
        note = f"{len(evaluation.y_true)} held-out images; k-NN and centroids fitted on {evaluation.n_reference} train images."
        return note, table, confusion_figure(evaluation, classifier), curves

    gr.Markdown("Scores of the three classifiers on the bundle's held-out (val/test) images.")
    with gr.Row():
        classifier = gr.Radio(
            list(CLASSIFIERS),
            value="softmax",
            label="Confusion matrix of",
            info="softmax head, k-NN vote, nearest centroid",
        )
        button = gr.Button("Evaluate", variant="primary")
    note = gr.Markdown()
    table = gr.Dataframe(headers=["classifier", "accuracy", "macro-F1"], label="Held-out metrics", interactive=False)
    confusion = gr.Plot(label="Normalised confusion matrix")
    curves = gr.Plot(label="Training curves")
    button.click(run, inputs=classifier, outputs=[note, table, confusion, curves], api_name="evaluate")
    classifier.change(run, inputs=classifier, outputs=[note, table, confusion, curves], api_name=False)


def _train_view(served: ServedBundle, header: gr.Markdown) -> None:
    import keras

    def run(data_dir: str, out_dir: str, epochs: float, fine_tune: bool):
        rows: list[dict] = []
        outcome: dict = {}
        config = EmbedderConfig(
            epochs=int(epochs), fine_tune_blocks=EmbedderConfig().fine_tune_blocks if fine_tune else 0
        )
        follow = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: rows.append(dict(logs or {})))

        def work():
            try:
                dataset = load_folder(data_dir)
                outcome["dataset"] = dataset.summary()
                bundle = Bundle.train(dataset, config=config, callbacks=[follow])
                bundle.save(out_dir)
                outcome["bundle"] = bundle
            except Exception as error:  # noqa: BLE001 - reported in the view
                outcome["error"] = error

        def curves():
            history = {key: [row.get(key, float("nan")) for row in rows] for key in (rows[0] if rows else {})}
            return curves_figure(history, {}) if rows else None

        worker = threading.Thread(target=work, name="lookalike-train", daemon=True)
        worker.start()
        while worker.is_alive():
            worker.join(2.0)
            stage = (
                f"epoch {len(rows)}, accuracy {rows[-1].get('accuracy', 0):.3f}"
                if rows
                else "encoding images with the backbone"
            )
            yield f"Training on {outcome.get('dataset', data_dir)}: {stage} ...", curves(), gr.update()
        if "error" in outcome:
            raise gr.Error(f"Training failed: {outcome['error']}")
        bundle = outcome["bundle"]
        served.replace(bundle)
        accuracy = bundle.manifest["training"]["val_accuracy"]
        done = f"Done: bundle written to `{bundle.path}` and now served" + (
            f"; validation accuracy {accuracy:.3f}." if accuracy is not None else "."
        )
        yield done, curves(), summary(bundle)

    gr.Markdown(
        "Train a new bundle from a folder on this server (`FOLDER/<class>/<image>`); the app serves it when done."
    )
    with gr.Row():
        data_dir = gr.Textbox(value=str(DEFAULT_DATASET), label="Dataset folder")
        out_dir = gr.Textbox(value=str(Path.cwd() / "trained.bundle"), label="Write the bundle to")
    with gr.Row():
        epochs = gr.Number(
            value=EmbedderConfig().epochs, precision=0, minimum=1, label="Head epochs (early stopping on val)"
        )
        fine_tune = gr.Checkbox(
            value=True, label=f"Fine-tune the top {EmbedderConfig().fine_tune_blocks} backbone blocks"
        )
        button = gr.Button("Train", variant="primary")
    status = gr.Markdown()
    live_curves = gr.Plot(label="Training curves (live)")
    button.click(
        run, inputs=[data_dir, out_dir, epochs, fine_tune], outputs=[status, live_curves, header], api_name="train"
    )


def _map_view(served: ServedBundle) -> None:
    def draw(method: str, dims: str, classes: list[str], image_path: str | None):
        bundle = served.bundle
        embedding_map = bundle.embedding_map(MapConfig(method=method, dims=int(dims[0])))
        query = None
        if image_path:
            try:
                query = place_image(bundle, embedding_map, image_path, "query")
            except ImageDecodeError as error:
                raise gr.Error(f"Could not read that image: {error.reason}") from error
        return map_figure(bundle, embedding_map, query=query, classes=classes or None)

    gr.Markdown(
        "Every indexed image on a 2-D or 3-D projection of the embedding space, coloured by class, with class "
        "centroids (x). A query is placed at the similarity-weighted mean of its 10 nearest images (red rings). "
        "The first map of a bundle takes a few seconds to compute; it is then stored in the bundle."
    )
    with gr.Row():
        method = gr.Radio(["umap", "tsne"], value="umap", label="Projection")
        dims = gr.Radio(["2-D", "3-D"], value="2-D", label="Dimensions")
        classes = gr.Dropdown(
            list(served.bundle.class_names), multiselect=True, label="Only these classes (empty: all)"
        )
        query = gr.Image(type="filepath", label="Query (optional)", sources=["upload", "clipboard"], height=140)
    button = gr.Button("Draw map", variant="primary")
    plot = gr.Plot(label="Embedding map")
    button.click(draw, inputs=[method, dims, classes, query], outputs=plot, api_name="map")


def _audit_view(served: ServedBundle, thumbnails: Thumbnails) -> None:
    def examples(code: int, n: int = 6) -> list[tuple]:
        bundle = served.bundle
        rows = np.flatnonzero(bundle.index.labels == code)[:n]
        return thumbnails.gallery(bundle, [bundle.index.hit(int(i), 1.0) for i in rows])

    def run(top: float):
        bundle = served.bundle
        result = audit(imagenet_features(bundle))
        records, names = bundle.index.records, result.class_names
        knn = result.predicted("knn")
        ranked = result.ranking()[: int(top)]
        table = [
            [
                int(bundle.index.ids[i]),
                round(float(result.suspicion[i]), 3),
                round(float(result.margin[i]), 3),
                records[i].label,
                names[knn[i]],
                "yes" if result.outlier[i] else "",
                records[i].path.name,
            ]
            for i in ranked
        ]
        confusion = np.zeros((len(names), len(names)), dtype=np.int64)
        np.add.at(confusion, (result.labels, knn), 1)
        spread = [[name, round(value, 3)] for name, value in list(result.class_spread().items())[:10]]
        note = (
            f"{len(records)} images judged out of fold on frozen ImageNet features; {int(result.outlier.sum())} outliers. "
            "Suspicion is the mean out-of-fold probability (softmax, k-NN, centroid) that the label is wrong. "
            "Select a row to compare."
        )
        state = {"knn": knn.tolist(), "labels": result.labels.tolist(), "ranked": ranked.tolist()}
        confusion_table = pd.DataFrame(confusion, columns=list(names))
        confusion_table.insert(0, "label", list(names))
        return note, table, spread, confusion_table, state

    def show_row(state, event: gr.SelectData):
        if not state:
            return "", None, [], []
        bundle = served.bundle
        row = state["ranked"][event.index[0]]
        hit, names = bundle.index.hit(row, 1.0), bundle.class_names
        predicted = state["knn"][row]
        caption = f"**{hit.path.name}**, labelled **{hit.label}**; its neighbours say **{names[predicted]}**"
        return caption, thumbnails.path(bundle, hit), examples(names.index(hit.label)), examples(predicted)

    def show_cell(state, event: gr.SelectData):
        row, column = event.index
        if column == 0 or not state:
            return "", []
        true, predicted = row, column - 1
        rows = [i for i, (t, p) in enumerate(zip(state["labels"], state["knn"])) if t == true and p == predicted]
        bundle = served.bundle
        names = bundle.class_names
        hits = [bundle.index.hit(i, 1.0) for i in rows[:24]]
        return (
            f"{len(rows)} images labelled **{names[true]}** that the k-NN vote calls **{names[predicted]}**",
            thumbnails.gallery(bundle, hits),
        )

    with gr.Row():
        top = gr.Number(value=30, precision=0, minimum=1, label="Suspects to list")
        button = gr.Button("Audit", variant="primary")
    note = gr.Markdown()
    table = gr.Dataframe(
        headers=["id", "suspicion", "margin", "label", "k-NN says", "outlier", "file"],
        label="Suspected label errors and outliers",
        interactive=False,
    )
    caption = gr.Markdown()
    with gr.Row():
        suspect = gr.Image(label="Selected image", interactive=False, height=220)
        labelled = gr.Gallery(label="Its labelled class", columns=3, height=220, object_fit="contain")
        predicted = gr.Gallery(label="The class its neighbours say", columns=3, height=220, object_fit="contain")
    spread = gr.Dataframe(headers=["class", "mean distance to centroid"], label="Loosest classes", interactive=False)
    confusion = gr.Dataframe(
        label="Out-of-fold k-NN confusion (rows: label, columns: prediction); select a cell", interactive=False
    )
    cell_caption = gr.Markdown()
    cell_images = gr.Gallery(label="Images behind the selected cell", columns=8, height=220, object_fit="contain")
    state = gr.State()
    button.click(run, inputs=top, outputs=[note, table, spread, confusion, state], api_name="audit")
    table.select(show_row, inputs=state, outputs=[caption, suspect, labelled, predicted])
    confusion.select(show_cell, inputs=state, outputs=[cell_caption, cell_images])


def build_app(bundle: Bundle) -> gr.Blocks:
    """The lookalike web app, serving ``bundle``; launch it with :func:`serve`."""
    served = ServedBundle(bundle)
    thumbnails = Thumbnails()
    with gr.Blocks(title="lookalike") as app:
        gr.Markdown("# lookalike: find the look-alike character")
        header = gr.Markdown(summary(bundle))
        with gr.Tab("Search"):
            _search_view(served, thumbnails)
        with gr.Tab("Map"):
            _map_view(served)
        with gr.Tab("Audit"):
            _audit_view(served, thumbnails)
        with gr.Tab("Evaluate"):
            _evaluate_view(served)
        with gr.Tab("Train"):
            _train_view(served, header)
    return app


def serve(bundle: Bundle, *, host: str = "127.0.0.1", port: int = 7860, block: bool = True) -> gr.Blocks:
    """Start the app on ``http://host:port``; returns once it is serving when ``block`` is False."""
    app = build_app(bundle)
    app.queue(default_concurrency_limit=2)
    app.launch(
        server_name=host,
        server_port=port,
        share=False,
        allowed_paths=[str(Path(p).parent) for p in example_images(bundle)],  # the example queries only
        max_file_size=MAX_UPLOAD_SIZE,
        prevent_thread_lock=not block,
        show_error=True,
        footer_links=["api"],
    )
    return app
