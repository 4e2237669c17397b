"""The JSON HTTP API (``/api/search``, ``/api/health``) on a real server on a free loopback port, probed with
``httpx`` and raw ``http.client`` as a program using it would."""

from __future__ import annotations

import contextlib
import http.client
import io
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from conftest import CLASSES
from PIL import Image
from test_serving_safety import start  # noqa: F401 - the fixture that starts and closes real servers

from lookalike.app.api import MAX_UPLOAD_BYTES, SearchResponse
from lookalike.app.cli import main

LOGIN = ("ada", "s3cret-pass")


def _search(url: str, image: Path, auth=None, **fields) -> httpx.Response:
    with open(image, "rb") as handle:
        return httpx.post(
            f"{url}/api/search",
            files={"image": (image.name, handle, "image/png")},
            data={name: str(value) for name, value in fields.items()},
            auth=auth,
            timeout=60,
        )


def _raw_post(url: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, dict]:
    """POST /api/search with exactly these headers, sending ``body`` only (maybe less than announced)."""
    address = urlsplit(url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=60)
    try:
        connection.putrequest("POST", "/api/search")
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def _assert_serving(url: str, image: Path, auth=None) -> None:
    assert httpx.get(f"{url}/api/health", auth=auth, timeout=30).json()["status"] == "ok"
    assert _search(url, image, auth=auth).status_code == 200


def _cli_json(*argv: str) -> dict:
    """``lookalike search ... --json``, run in this process (capsys breaks pytest's capture beside a server)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["search", *argv, "--json"]) == 0
    return json.loads(out.getvalue())


def test_search_returns_the_cli_json_object(bundle, bundle_path, small_dataset, start):  # noqa: F811
    _, queries = small_dataset
    url = start(bundle)
    for image, k in ((queries["cook"][0], 3), (queries["autogun"][1], 7)):
        response = _search(url, image, k=k)
        assert response.status_code == 200, response.text
        assert response.json() == _cli_json(str(bundle_path), str(image), "-k", str(k))
        answer = SearchResponse.model_validate(response.json())
        assert len(answer.neighbors) == k and answer.predicted in CLASSES
    threshold = _search(url, queries["cook"][0], k=2, unknown_threshold=0.999).json()
    assert threshold["unknown_threshold"] == 0.999 and threshold["unknown"] is True
    assert httpx.get(url, timeout=30).status_code == 200  # the web app is still served beside the API


def test_health_names_the_served_bundle(bundle, bundle_path, start):  # noqa: F811
    health = httpx.get(f"{start(bundle)}/api/health", timeout=30)
    assert health.status_code == 200
    assert health.json() == {
        "status": "ok",
        "bundle": bundle_path.name,
        "fingerprint": bundle.index.fingerprint,
        "vectors": len(bundle.index),
        "embedding_dim": bundle.index.dim,
        "index": bundle.index.spec.type,
        "classes": list(bundle.class_names),
    }


def test_a_login_is_required_when_the_app_has_one(bundle, small_dataset, start):  # noqa: F811
    _, queries = small_dataset
    image = queries["arthur"][0]
    url = start(bundle, auth=LOGIN)
    for route in ("health", "openapi.json", "docs"):
        refused = httpx.get(f"{url}/api/{route}", timeout=30)
        assert refused.status_code == 401 and refused.json() == {
            "error": "this server requires a login: HTTP Basic USER:PASSWORD"
        }
        assert refused.headers["www-authenticate"].startswith("Basic")
    assert _search(url, image).status_code == 401
    assert _search(url, image, auth=("ada", "wrong")).status_code == 401
    assert _search(url, image, auth=("eve", LOGIN[1])).status_code == 401
    # Refused before the body is read: a huge announced upload without a login is not waited for.
    assert _raw_post(url, {"Content-Length": str(10 * MAX_UPLOAD_BYTES)})[0] == 401
    answer = _search(url, image, auth=LOGIN)
    assert answer.status_code == 200 and answer.json()["predicted"] in CLASSES
    assert httpx.get(f"{url}/api/openapi.json", auth=LOGIN, timeout=30).status_code == 200


def test_bad_uploads_get_json_errors_and_the_server_keeps_answering(bundle, small_dataset, start, tmp_path):  # noqa: F811
    _, queries = small_dataset
    good = queries["123"][0]
    url = start(bundle)
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"not a png at all")
    huge = tmp_path / "huge.png"
    Image.new("L", (13300, 13300)).save(huge)  # 177 Mpx in a few hundred KB: refused from its header
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    for image, reason in ((fake, "not an image file"), (huge, "too large"), (empty, "empty file")):
        response = _search(url, image)
        assert response.status_code == 400, response.text
        (message,) = response.json().values()
        assert reason in message and "/" not in message.split(":", 1)[1]  # no server path in the message
    for fields, field in (({"k": 0}, "k"), ({"k": "many"}, "k"), ({"unknown_threshold": 2}, "unknown_threshold")):
        response = _search(url, good, **fields)
        assert response.status_code == 422 and response.json()["error"].startswith(f"{field}: ")
    missing = httpx.post(f"{url}/api/search", data={"k": "3"}, timeout=30)
    assert missing.status_code == 422 and missing.json() == {"error": "image: Field required"}
    status, body = _raw_post(url, {"Content-Length": str(MAX_UPLOAD_BYTES + 1)})  # the body is never sent
    assert status == 413 and str(MAX_UPLOAD_BYTES) in body["error"]
    status, body = _raw_post(url, {"Transfer-Encoding": "chunked"}, b"0\r\n\r\n")
    assert status == 411 and "Content-Length" in body["error"]
    _assert_serving(url, good)


def test_openapi_describes_both_routes(bundle, start):  # noqa: F811
    schema = httpx.get(f"{start(bundle)}/api/openapi.json", timeout=30).json()
    assert set(schema["paths"]) == {"/api/search", "/api/health"}
    search = schema["paths"]["/api/search"]["post"]
    form = search["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert set(schema["components"]["schemas"][form]["properties"]) == {"image", "k", "unknown_threshold"}
    assert search["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/SearchResponse")
    assert {"400", "401", "411", "413", "422"} <= set(search["responses"])
    assert set(schema["components"]["schemas"]["SearchResponse"]["properties"]) == set(SearchResponse.model_fields)
    health = schema["paths"]["/api/health"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert health["$ref"].endswith("/HealthResponse")


def test_concurrent_searches_all_get_the_same_answer(bundle, small_dataset, start):  # noqa: F811
    _, queries = small_dataset
    url = start(bundle)
    images = [queries[name][0] for name in CLASSES]
    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(lambda i: _search(url, images[i % len(images)], k=4), range(40)))
    assert [r.status_code for r in responses] == [200] * 40
    answers = [r.json() for r in responses]
    for i, answer in enumerate(answers):
        assert answer == answers[i % len(images)]  # every answer for the same image is identical
    assert len({json.dumps(a, sort_keys=True) for a in answers}) == len(images)
