"""The Gradio app, served on a free local port and driven through gradio_client."""

from __future__ import annotations

import socket

import pytest
from conftest import CLASSES

from lookalike.app.ui import example_images, serve


@pytest.fixture
def client(bundle):
    from gradio_client import Client

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = serve(bundle, port=port, block=False)
    yield Client(f"http://127.0.0.1:{port}/", verbose=False)
    app.close()


def test_search_returns_prediction_and_galleries(client, small_dataset):
    from gradio_client import handle_file

    _, queries = small_dataset
    predicted, knn, centroid, _, best, caption, characters, centroids, neighbors = client.predict(
        handle_file(str(queries["autogun"][0])), 4, api_name="/search"
    )
    assert predicted["label"] in CLASSES
    assert [c["label"] for c in predicted["confidences"]][0] == predicted["label"]
    assert knn["label"] in CLASSES
    assert centroid.startswith("Nearest centroid: **")
    assert best is not None and caption.startswith("### Best match: **")
    assert len(characters) == len(centroids) == len(neighbors) == 4
    assert all(item["caption"].split()[0] in CLASSES for item in characters + centroids + neighbors)


def test_unreadable_upload_is_a_message_not_a_crash(client, small_dataset, tmp_path):
    from gradio_client import handle_file

    fake = tmp_path / "fake.png"
    fake.write_bytes(b"not a png at all")
    with pytest.raises(Exception, match="cannot identify image file"):
        client.predict(handle_file(str(fake)), 3, api_name="/search")
    predicted = client.predict(handle_file(str(small_dataset[1]["cook"][0])), 3, api_name="/search")[0]
    assert predicted["label"] in CLASSES  # the app is still answering


def test_evaluate_view(client, bundle):
    note, table, confusion, curves = client.predict("knn", api_name="/evaluate")
    held_out = sum(r.split != "train" for r in bundle.index.records)
    assert note.startswith(f"{held_out} held-out images")
    assert [row[0] for row in table["data"]] == ["softmax head", "k-NN vote", "nearest centroid"]
    assert all(0.0 <= row[1] <= 1.0 for row in table["data"])
    assert confusion is not None and curves is not None


def test_train_view_trains_and_serves_the_new_bundle(client, small_dataset, tmp_path):
    from gradio_client import handle_file

    root, queries = small_dataset
    out = tmp_path / "from-ui.bundle"
    status, curves, header = client.predict(str(root), str(out), 1, False, api_name="/train")
    assert status.startswith("Done: bundle written to") and (out / "manifest.json").is_file()
    assert curves is not None and str(out) in header
    result = client.predict(handle_file(str(queries["cook"][0])), 2, api_name="/search")
    assert result[0]["label"] in CLASSES


def test_examples_come_from_different_classes(bundle):
    examples = example_images(bundle)
    labels = [next(r.label for r in bundle.index.records if str(r.path) == p) for p in examples]
    assert len(examples) == len(CLASSES) and sorted(labels) == sorted(CLASSES)
