"""The Gradio web app: search look-alikes, map, audit and evaluate a bundle, and (opt-in) train a new one.

What the app may expose and to whom is decided in :mod:`lookalike.app.server`; this module only lays out the
views and calls the library.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd

from ..bundle import Bundle, BundleError, audit_bundle, evaluate
from ..data import DatasetError, ImageDecodeError, load_folder
from ..data.archive import ArchiveError, extract_dataset_zip
from ..embedder.config import EmbedderConfig
from ..index.evaluation import CLASSIFIERS
from ..index.projection import MapConfig
from .maps import map_figure, place_image
from .report import CLASSIFIER_TITLES, confusion_figure, curves_figure
from .search_view import query_image, search_view
from .server import BundleRegistry, ServedFiles, ServeError, ServeOptions, new_name, under

logger = logging.getLogger(__name__)

#: Largest accepted upload (query images; dataset zips when training is enabled: :data:`MAX_DATASET_UPLOAD`).
MAX_UPLOAD_SIZE = "20mb"
MAX_DATASET_UPLOAD = "200mb"
#: Backbone blocks the Train view fine-tunes when asked to (the default is a frozen backbone).
FINE_TUNE_BLOCKS = 3
def summary(bundle: Bundle) -> str:
    """One Markdown line describing ``bundle`` (no server paths)."""
    manifest = bundle.manifest
    accuracy = manifest.val_accuracy
    accuracy_text = f", validation accuracy {accuracy:.3f}" if accuracy is not None else ""
    return (
        f"**{len(bundle.class_names)} characters, {len(bundle.index)} indexed images**, "
        f"{manifest.backbone} backbone, {manifest.embedding_dim}-d embeddings{accuracy_text}"
        + (f" · bundle `{bundle.path.name}`" if bundle.path else "")
        + ("" if bundle.thumbnails is not None else " · *this bundle stores no thumbnails: results show no images*")
    )


def _search_view(registry: BundleRegistry, files: ServedFiles, session: gr.State) -> None:
    search_view(registry, files, session)


def _evaluate_view(registry: BundleRegistry, session: gr.State) -> None:
    def run(classifier: str, key: str | None):
        bundle = registry.get(key)
        try:
            evaluation = evaluate(bundle)
        except BundleError as error:  # e.g. a bundle without held-out images; the message may name its folder
            logger.warning("cannot evaluate %s: %s", bundle.path, error)
            raise gr.Error("This bundle cannot be evaluated: it needs train and held-out (val/test) images.") from error
        table = [
            [CLASSIFIER_TITLES[name], round(s.accuracy, 4), round(s.macro_f1, 4)]
            for name, s in evaluation.scores.items()
        ]
        training = bundle.manifest.training
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
    button.click(run, inputs=[classifier, session], outputs=[note, table, confusion, curves], api_name="evaluate")
    classifier.change(run, inputs=[classifier, session], outputs=[note, table, confusion, curves], api_name=False)


def _train_view(registry: BundleRegistry, options: ServeOptions, session: gr.State, header: gr.Markdown) -> None:
    """Train a bundle from an uploaded zip or a folder under ``--data-root``; only this session is served it."""
    import keras

    workspace, data_root = options.workspace, options.data_root
    folders = (
        sorted(p.name for p in data_root.iterdir() if p.is_dir() and not p.name.startswith(".")) if data_root else []
    )

    def dataset_folder(archive: str | None, folder: str | None) -> tuple[Path, str]:
        """The folder to train on and how to name it to the user; checked before any training starts."""
        if archive:
            target = workspace / "uploads" / new_name("dataset")
            return extract_dataset_zip(archive, target), "the uploaded archive"
        if folder and data_root is not None:
            return under(data_root / folder, data_root), f"folder {folder!r}"
        raise ServeError("Upload a zip of <class>/<image> folders" + (" or pick a folder." if data_root else "."))

    def run(archive: str | None, folder: str | None, epochs: float, fine_tune: bool, key: str | None):
        try:
            root, name = dataset_folder(archive, folder)
            dataset = load_folder(root)
        except (ServeError, ArchiveError) as error:
            raise gr.Error(str(error)) from error
        except DatasetError as error:
            raise gr.Error(str(error).replace(str(root), name)) from error
        out = workspace / "bundles" / f"{new_name('bundle')}.bundle"  # a name lookalike chooses, inside the workspace
        rows: list[dict] = []
        outcome: dict = {}
        config = EmbedderConfig(epochs=int(epochs), fine_tune_blocks=FINE_TUNE_BLOCKS if fine_tune else 0)
        follow = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: rows.append(dict(logs or {})))

        def work():
            try:
                bundle = Bundle.train(dataset, config=config, callbacks=[follow])
                bundle.save(out)
                outcome["bundle"] = bundle
            except Exception as error:  # noqa: BLE001 - reported in the view
                logger.exception("training on %s failed", root)
                outcome["error"] = error

        def curves():
            history = {k: [row.get(k, float("nan")) for row in rows] for k in (rows[0] if rows else {})}
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
            yield f"Training on {name} ({dataset.summary()}): {stage} ...", curves(), gr.update(), key
        if "error" in outcome:
            raise gr.Error(f"Training failed ({type(outcome['error']).__name__}); the server log has the details.")
        bundle = outcome["bundle"]
        accuracy = bundle.manifest.val_accuracy
        done = f"Done: bundle `{out.name}` is now what this browser session searches (other users keep theirs)" + (
            f"; validation accuracy {accuracy:.3f}." if accuracy is not None else "."
        )
        # Served as loaded from disk, like every other bundle: with its exported runtime, not the training objects.
        yield done, curves(), summary(bundle), registry.add(Bundle.load(out))

    gr.Markdown(
        "Train a new bundle from a zip of `<class>/<image>` folders"
        + (" or from a folder on this server" if data_root else "")
        + ". When it is done, this browser session searches the new bundle; other users are not affected."
    )
    with gr.Row():
        archive = gr.File(label="Dataset zip (<class>/<image>)", file_types=[".zip"], type="filepath")
        folder = gr.Dropdown(folders, label="or a folder of the data root", visible=bool(folders), value=None)
    with gr.Row():
        epochs = gr.Number(
            value=EmbedderConfig().epochs,
            precision=0,
            minimum=1,
            maximum=200,
            label="Head epochs (early stopping on val)",
        )
        fine_tune = gr.Checkbox(
            value=False, label=f"Fine-tune the top {FINE_TUNE_BLOCKS} backbone blocks (default: frozen backbone)"
        )
        button = gr.Button("Train", variant="primary")
    status = gr.Markdown()
    live_curves = gr.Plot(label="Training curves (live)")
    button.click(
        run,
        inputs=[archive, folder, epochs, fine_tune, session],
        outputs=[status, live_curves, header, session],
        api_name="train",
        concurrency_limit=1,
    )


def _map_view(registry: BundleRegistry, session: gr.State) -> gr.Dropdown:
    def draw(method: str, dims: str, classes: list[str], image_path: str | None, key: str | None):
        bundle = registry.get(key)
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
            list(registry.default.class_names), multiselect=True, label="Only these classes (empty: all)"
        )
        query = query_image(label="Query (optional)", sources=["upload", "clipboard"], height=140)
    button = gr.Button("Draw map", variant="primary")
    plot = gr.Plot(label="Embedding map")
    button.click(draw, inputs=[method, dims, classes, query, session], outputs=plot, api_name="map")
    return classes


def _audit_view(registry: BundleRegistry, files: ServedFiles, session: gr.State) -> None:
    def examples(bundle: Bundle, code: int, n: int = 6) -> list[tuple]:
        rows = np.flatnonzero(bundle.index.labels == code)[:n]
        return files.gallery(bundle, [bundle.index.hit(int(i), 1.0) for i in rows])

    def run(top: float, key: str | None):
        bundle = registry.get(key)
        result, features = audit_bundle(bundle)
        records, names = bundle.index.records, result.class_names
        knn = result.predicted("knn")
        ranked = result.ranking()[: int(top)]
        frame = result.to_frame(features).head(int(top))
        table = pd.DataFrame(
            {
                "id": frame["id"],
                "suspicion": frame["suspicion"].round(3),
                "margin": frame["margin"].round(3),
                "label": frame["label"],
                "k-NN says": frame["knn_predicted"],
                "outlier": frame["outlier"].map({True: "yes", False: ""}),
                "file": [Path(p).name for p in frame["path"]],
            }
        )
        confusion = result.confusion("knn")
        spread = [[name, round(value, 3)] for name, value in list(result.class_spread().items())[:10]]
        note = (
            f"{len(records)} images judged out of fold on frozen ImageNet features; {int(result.outlier.sum())} outliers. "
            "Suspicion is the mean out-of-fold probability (softmax, k-NN, centroid) that the label is wrong. "
            "Select a row to compare."
        )
        state = {"key": key, "knn": knn.tolist(), "labels": result.labels.tolist(), "ranked": ranked.tolist()}
        confusion_table = pd.DataFrame(confusion, columns=list(names))
        confusion_table.insert(0, "label", list(names))
        return note, table, spread, confusion_table, state

    def show_row(state, event: gr.SelectData):
        if not state:
            return "", None, [], []
        bundle = registry.get(state["key"])
        row = state["ranked"][event.index[0]]
        hit, names = bundle.index.hit(row, 1.0), bundle.class_names
        predicted = state["knn"][row]
        caption = f"**{hit.path.name}**, labelled **{hit.label}**; its neighbors say **{names[predicted]}**"
        return (
            caption,
            files.thumbnail(bundle, hit.id),
            examples(bundle, names.index(hit.label)),
            examples(bundle, predicted),
        )

    def show_cell(state, event: gr.SelectData):
        row, column = event.index
        if column == 0 or not state:
            return "", []
        true, predicted = row, column - 1
        rows = [i for i, (t, p) in enumerate(zip(state["labels"], state["knn"])) if t == true and p == predicted]
        bundle = registry.get(state["key"])
        names = bundle.class_names
        hits = [bundle.index.hit(i, 1.0) for i in rows[:24]]
        return (
            f"{len(rows)} images labelled **{names[true]}** that the k-NN vote calls **{names[predicted]}**",
            files.gallery(bundle, hits),
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
        predicted = gr.Gallery(label="The class its neighbors say", columns=3, height=220, object_fit="contain")
    spread = gr.Dataframe(headers=["class", "mean distance to centroid"], label="Loosest classes", interactive=False)
    confusion = gr.Dataframe(
        label="Out-of-fold k-NN confusion (rows: label, columns: prediction); select a cell", interactive=False
    )
    cell_caption = gr.Markdown()
    cell_images = gr.Gallery(label="Images behind the selected cell", columns=8, height=220, object_fit="contain")
    state = gr.State()
    button.click(run, inputs=[top, session], outputs=[note, table, spread, confusion, state], api_name="audit")
    table.select(show_row, inputs=state, outputs=[caption, suspect, labelled, predicted])
    confusion.select(show_cell, inputs=state, outputs=[cell_caption, cell_images])


def build_app(bundle: Bundle, options: ServeOptions = ServeOptions(), *, served_root: Path | None = None) -> gr.Blocks:
    """The lookalike web app answering with ``bundle``; launch it with :func:`serve`.

    Parameters
    ----------
    bundle : Bundle
        A saved bundle, served to every session that has not trained its own.
    options : ServeOptions
        Already checked (:meth:`ServeOptions.check`); ``enable_training`` adds the Train view.
    served_root : Path, optional
        The folder of files handed to the browser (default: a new temporary folder).
    """
    registry = BundleRegistry(bundle)
    files = ServedFiles(served_root or Path(tempfile.mkdtemp(prefix="lookalike-served-")))
    with gr.Blocks(title="lookalike", analytics_enabled=False) as app:
        session = gr.State()  # the key of this browser session's bundle, server-side; None: the default one
        gr.Markdown("# lookalike: find the look-alike character")
        header = gr.Markdown(summary(bundle))
        with gr.Tab("Search"):
            _search_view(registry, files, session)
        with gr.Tab("Map"):
            classes = _map_view(registry, session)
        with gr.Tab("Audit"):
            _audit_view(registry, files, session)
        with gr.Tab("Evaluate"):
            _evaluate_view(registry, session)
        if options.enable_training:
            with gr.Tab("Train"):
                _train_view(registry, options, session, header)
        session.change(
            lambda key: (summary(registry.get(key)), gr.update(choices=list(registry.get(key).class_names), value=[])),
            inputs=session,
            outputs=[header, classes],
            api_name=False,
        )
    return app


def serve(bundle: Bundle, options: ServeOptions = ServeOptions(), *, block: bool = True) -> gr.Blocks:
    """Start the app on ``http://host:port``; returns once it is serving when ``block`` is False.

    Raises
    ------
    ServeError
        ``options`` break a start-up rule (see :meth:`ServeOptions.check`), e.g. a non-loopback host without
        a login.
    """
    options = options.check()
    served_root = None
    if options.workspace is not None:
        (options.workspace / "bundles").mkdir(parents=True, exist_ok=True)
        served_root = options.workspace / "served"
    app = build_app(bundle, options, served_root=served_root)
    app.queue(default_concurrency_limit=2)
    app.launch(
        server_name=options.host,
        server_port=options.port,
        share=False,
        auth=options.auth,
        max_file_size=MAX_DATASET_UPLOAD if options.enable_training else MAX_UPLOAD_SIZE,
        prevent_thread_lock=not block,
        show_error=False,  # unexpected errors are logged on the server, not shown with their paths
        quiet=True,  # no "set share=True" hint: lookalike never shares, and the CLI prints the address
        footer_links=["api"],
    )
    return app
