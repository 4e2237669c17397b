"""The Gradio app, served on a free local port and queried through gradio_client."""

from __future__ import annotations

import socket

import pytest
from conftest import CLASSES

from lookalike.app.ui import example_images, serve


@pytest.fixture
def running_app(bundle):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = serve(bundle, port=port, block=False)
    yield f"http://127.0.0.1:{port}/"
    app.close()


def test_search_endpoint_returns_prediction_and_galleries(running_app, small_dataset):
    from gradio_client import Client, handle_file

    _, queries = small_dataset
    client = Client(running_app, verbose=False)
    predicted, knn, _, best, caption, characters, neighbors = client.predict(
        handle_file(str(queries["autogun"][0])), 4, api_name="/search"
    )
    assert predicted["label"] in CLASSES
    assert [c["label"] for c in predicted["confidences"]][0] == predicted["label"]
    assert knn["label"] in CLASSES
    assert best is not None and caption.startswith("### Best match: **")
    assert len(characters) == 4 and len(neighbors) == 4
    assert all(item["caption"].split()[0] in CLASSES for item in characters)


def test_examples_come_from_different_classes(bundle):
    examples = example_images(bundle)
    labels = [next(r.label for r in bundle.index.records if str(r.path) == p) for p in examples]
    assert len(examples) == len(CLASSES) and sorted(labels) == sorted(CLASSES)
