"""The Gradio web app: search look-alikes, map, audit and evaluate a bundle, and (opt-in) train a new one.

What the app may expose and to whom is decided in :mod:`lookalike.app.server`; this module only lays out the
views and calls the library.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from html import escape
from pathlib import Path
from urllib.parse import quote

import faiss
import gradio as gr
import numpy as np

from ..bundle import Bundle, BundleError, evaluate
from ..data import DatasetError, ImageDecodeError, load_folder
from ..data.archive import ArchiveError, extract_dataset_zip
from ..embedder.config import EmbedderConfig
from ..index.evaluation import CLASSIFIERS
from ..index.projection import MapConfig
from . import audit_view
from .api import api_routes
from .map_page import cached_page, query_fragment
from .maps import place_image
from .report import CLASSIFIER_TITLES, confusion_figure, curves_figure
from .search_view import query_image, search_view
from .server import BundleRegistry, ServedFiles, ServeError, ServeOptions, bypass_proxy_for_loopback, new_name, under

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
        note += "".join(f"\n\n**Warning**: {warning}" for warning in evaluation.warnings)
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


def map_frame(path: Path, fragment: str = "") -> str:
    """HTML of a sandboxed ``<iframe>`` showing the served map page at ``path`` (plus a link to open it alone).

    The page runs in an opaque origin (``sandbox="allow-scripts"``): its script cannot reach the app's page,
    cookies or API, whatever a bundle's labels contain.
    """
    url = "gradio_api/file=" + quote(str(path)) + fragment
    return (
        f'<iframe class="lookalike-map" title="Embedding map" src="{escape(url)}" sandbox="allow-scripts" '
        'style="width:100%;height:820px;border:1px solid #e5e7eb;border-radius:8px"></iframe>'
        f'<p style="margin:4px 0"><a href="{escape(url)}" target="_blank" rel="noopener">Open the map in its own tab</a>'
        " (one self-contained page; save it to keep it)</p>"
    )


def _map_view(registry: BundleRegistry, files: ServedFiles, session: gr.State, tab: gr.Tab) -> gr.Dropdown:
    def draw(method: str, dims: str, classes: list[str], image_path: str | None, key: str | None):
        bundle = registry.get(key)
        config = MapConfig(method=method, dims=int(dims[0]))
        page = cached_page(files.root / "maps", bundle, config, classes=classes or None)
        fragment = ""
        if image_path:
            try:
                query = place_image(bundle, bundle.embedding_map(config), image_path, "query")
            except ImageDecodeError as error:
                raise gr.Error(f"Could not read that image: {error.reason}") from error
            fragment = query_fragment(bundle, query)
        return map_frame(page, fragment)

    gr.Markdown(
        "Every indexed image on a 2-D or 3-D projection of the embedding space. Hover a point for its image, drag "
        "a box or lasso to list the images inside it, click a point to see it beside its nearest neighbors; search "
        "the class legend to highlight classes; colour by label, predicted label, split or (once the bundle was "
        "audited) audit suspicion. A query is placed at the similarity-weighted mean of its 10 nearest images "
        "(red star and rings). The first map of a bundle takes a while to compute; it is then stored."
    )
    with gr.Row():
        method = gr.Radio(["umap", "tsne"], value="umap", label="Projection")
        dims = gr.Radio(["2-D", "3-D"], value="2-D", label="Dimensions")
        classes = gr.Dropdown(
            list(registry.default.class_names), multiselect=True, label="Only these classes (empty: all)"
        )
        query = query_image(label="Query (optional)", sources=["upload", "clipboard"], height=140)
    button = gr.Button("Draw map", variant="primary")
    view = gr.HTML(label="Embedding map", min_height=820)
    inputs = [method, dims, classes, query, session]
    button.click(draw, inputs=inputs, outputs=view, api_name="map")
    tab.select(draw, inputs=inputs, outputs=view, api_name=False)
    for control in (method, dims, query):
        control.change(draw, inputs=inputs, outputs=view, api_name=False)
    return classes


def _audit_view(registry: BundleRegistry, files: ServedFiles, session: gr.State) -> None:
    reports = audit_view.ReportCache()

    def examples(bundle: Bundle, label: str, n: int = 6) -> list[tuple]:
        rows = np.flatnonzero(bundle.index.labels == bundle.class_names.index(label))[:n]
        return files.gallery(bundle, [bundle.index.hit(int(i), 1.0) for i in rows])

    def show(issue: str, label: str | None, min_score: float, state: dict | None):
        bundle = registry.get(state["key"])
        items = audit_view.filter_items(reports.get(bundle), issue, label=label, min_score=float(min_score))
        entries, shown = audit_view.gallery(files, bundle, items)
        note = f"{len(shown)} images shown" + (
            " (the first ones; the CSV of `lookalike audit` has all)" if len(shown) == audit_view.MAX_GALLERY else ""
        )
        return entries, note, state | {"shown": shown, "selected": None}, "", [], []

    def run(issue: str, label: str | None, min_score: float, key: str | None, state: dict | None):
        bundle = registry.get(key)
        report = reports.get(bundle)
        state = {"key": key, "decisions": (state or {}).get("decisions")}
        note = (
            f"{len(report.ids)} images judged out of fold on frozen ImageNet features, checked for duplicates, "
            "outliers, image quality and class balance. Pick an issue type and filter; select an image to accept "
            "or dismiss its suggestion."
        )
        summary_table = report.summary()
        return (note, summary_table, audit_view.confusion_frame(report), audit_view.balance_figure(report),
                gr.update(choices=[audit_view.ALL_CLASSES, *bundle.class_names]), *show(issue, label, min_score, state))  # fmt: skip

    def select(state: dict | None, event: gr.SelectData):
        if not state or not state.get("shown"):
            return state, "", [], []
        item = state["shown"][event.index]
        bundle = registry.get(state["key"])
        compare = item["issue"] == "label"
        return (
            state | {"selected": item},
            audit_view.describe(item),
            examples(bundle, item["label"]) if compare else [],
            examples(bundle, item["suggestion"]) if compare else [],
        )

    def decide(decision: str):
        def record(state: dict | None):
            if not state or not state.get("selected"):
                raise gr.Error("Select an image of the gallery first.")
            decisions = audit_view.decide(state.get("decisions"), state["selected"], decision)
            path = audit_view.write_decisions(files, decisions)
            return (
                state | {"decisions": decisions},
                audit_view.decisions_table(decisions),
                gr.update(value=str(path), interactive=True),
            )

        return record

    def show_cell(state: dict | None, event: gr.SelectData):
        row, column = event.index
        if column == 0 or not state:
            return "", []
        bundle = registry.get(state["key"])
        report = reports.get(bundle)
        names, audit = bundle.class_names, report.label
        rows = np.flatnonzero((audit.labels == row) & (audit.predicted("knn") == column - 1))
        hits = [bundle.index.hit(int(i), 1.0) for i in rows[:24]]
        return (
            f"{len(rows)} images labelled **{names[row]}** that the k-NN vote calls **{names[column - 1]}**",
            files.gallery(bundle, hits),
        )

    with gr.Row():
        button = gr.Button("Audit", variant="primary", scale=0, min_width=120)
        issue = gr.Radio(audit_view.ISSUE_CHOICES, value="label", label="Issue type", scale=3)
        label = gr.Dropdown(
            [audit_view.ALL_CLASSES, *registry.default.class_names],
            value=audit_view.ALL_CLASSES,
            label="Class",
            scale=2,
        )
        min_score = gr.Slider(
            0, 1, value=audit_view.DEFAULT_MIN_SCORE["label"], step=0.05, label="Minimum score", scale=2
        )
    note = gr.Markdown()
    summary_table = gr.Dataframe(headers=["issue", "flagged", "detail"], label="Summary", interactive=False, wrap=True)
    shown_note = gr.Markdown()
    items = gr.Gallery(
        label="Images", columns=8, height=460, object_fit="contain", allow_preview=False, fit_columns=False
    )
    caption = gr.Markdown()
    with gr.Row():
        accept = gr.Button("Accept suggestion", variant="primary", size="sm")
        dismiss = gr.Button("Dismiss", size="sm")
        download = gr.DownloadButton("Download decisions (CSV)", interactive=False, size="sm")
    with gr.Row():
        labelled = gr.Gallery(
            label="Its labelled class", columns=3, height=200, object_fit="contain", fit_columns=False
        )
        suggested = gr.Gallery(
            label="The suggested class", columns=3, height=200, object_fit="contain", fit_columns=False
        )
    decisions = gr.Dataframe(
        headers=list(audit_view.DECISION_COLUMNS), label="Your decisions (this session only)", interactive=False
    )
    with gr.Accordion("Out-of-fold confusion and class balance", open=False):
        confusion = gr.Dataframe(
            label="Out-of-fold k-NN confusion (rows: label, columns: prediction; colour: share of the row); select a cell",
            interactive=False,
        )
        cell_caption = gr.Markdown()
        cell_images = gr.Gallery(
            label="Images behind the selected cell", columns=8, height=220, object_fit="contain", fit_columns=False
        )
        balance = gr.Plot(label="Class balance")
    state = gr.State()
    filters = [issue, label, min_score]
    gallery_outputs = [items, shown_note, state, caption, labelled, suggested]
    button.click(
        run,
        inputs=[*filters, session, state],
        outputs=[note, summary_table, confusion, balance, label, *gallery_outputs],
        api_name="audit",
    )
    issue.change(lambda value: audit_view.DEFAULT_MIN_SCORE[value], inputs=issue, outputs=min_score, api_name=False)
    for control in filters:
        control.change(
            lambda *args: show(*args) if args[-1] else ([], "", args[-1], "", [], []),
            inputs=[*filters, state],
            outputs=gallery_outputs,
            api_name=False,
        )
    items.select(select, inputs=state, outputs=[state, caption, labelled, suggested], api_name=False)
    accept.click(decide("accepted"), inputs=state, outputs=[state, decisions, download], api_name="audit_accept")
    dismiss.click(decide("dismissed"), inputs=state, outputs=[state, decisions, download], api_name="audit_dismiss")
    confusion.select(show_cell, inputs=state, outputs=[cell_caption, cell_images], api_name=False)


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
        with gr.Tab("Map") as map_tab:
            classes = _map_view(registry, files, session, map_tab)
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
    # One OpenMP thread per FAISS search: concurrent requests are the parallelism. Two threads on one query cost
    # about 8x the CPU time here (a search of the demo bundle: 12 ms of CPU instead of 1.5; OpenMP's barriers).
    faiss.omp_set_num_threads(1)
    served_root = None
    if options.workspace is not None:
        (options.workspace / "bundles").mkdir(parents=True, exist_ok=True)
        served_root = options.workspace / "served"
    app = build_app(bundle, options, served_root=served_root)
    app.queue(default_concurrency_limit=2)
    bypass_proxy_for_loopback()  # gradio's start-up check asks the loopback address
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
        app_kwargs={"routes": api_routes(bundle, auth=options.auth)},  # the JSON API, see lookalike.app.api
    )
    return app
