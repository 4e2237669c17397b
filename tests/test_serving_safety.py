"""The web app as an attacker on the same machine sees it: a real server on a free loopback port, probed with
plain HTTP and the real ``gradio_client``. One test per finding of issue 10."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import CLASSES
from PIL import Image

from lookalike.app.cli import EXIT_ERROR, main
from lookalike.app.server import ServedFiles, ServeError, ServeOptions, under
from lookalike.app.ui import serve
from lookalike.data.archive import ArchiveError, ArchiveLimits, extract_dataset_zip
from lookalike.data.thumbnails import PACK_FILE, PACK_INDEX_FILE, ThumbnailPack, decode_thumbnail
from lookalike.bundle import Bundle


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _status(url: str, headers: dict | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.fixture
def start(tmp_path):
    """Start the app on ``bundle`` with ``ServeOptions`` fields; closes every server at the end."""
    apps = []

    def started(bundle, **options) -> str:
        port = _free_port()
        apps.append(serve(bundle, ServeOptions(port=port, **options), block=False))
        return f"http://127.0.0.1:{port}"

    yield started
    for app in apps:
        app.close()


def _rehash(bundle_dir: Path, name: str) -> None:
    """Recompute the manifest checksum of one file, as a tamperer would."""
    manifest_path = bundle_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"][name] = hashlib.sha256((bundle_dir / name).read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest))


def test_files_beside_the_dataset_are_not_downloadable(bundle, start):
    record = bundle.index.records[0]
    secret = record.path.parent / ".env"
    secret.write_text("API_KEY=hunter2\n")
    try:
        url = start(bundle)
        assert _status(f"{url}/gradio_api/file={secret}") == 403
        assert _status(f"{url}/gradio_api/file={record.path}") == 403  # not even the dataset's own images
        assert _status(f"{url}/gradio_api/info") == 200  # the server is up and answering
    finally:
        secret.unlink()


@pytest.fixture
def crafted_bundle(bundle_path, tmp_path) -> tuple[Path, int, Path]:
    """A copy of the test bundle whose first record points at /etc/passwd and second at a red image outside
    the dataset, with the metadata checksum recomputed so that it loads."""
    crafted = tmp_path / "crafted.bundle"
    shutil.copytree(bundle_path, crafted)
    red = tmp_path / "elsewhere" / "red.png"
    red.parent.mkdir()
    Image.new("RGB", (200, 200), (255, 0, 0)).save(red)
    metadata = json.loads((crafted / "metadata.json").read_text())
    metadata["items"][0]["path"] = "/etc/passwd"
    metadata["items"][1]["path"] = str(red)
    (crafted / "metadata.json").write_text(json.dumps(metadata))
    _rehash(crafted, "metadata.json")
    return crafted, int(metadata["items"][1]["id"]), red


def test_a_crafted_bundle_neither_serves_etc_nor_shows_other_images(crafted_bundle, start):
    from gradio_client import Client, handle_file

    crafted, red_id, red = crafted_bundle
    bundle = Bundle.load(crafted)  # the checksums only detect damage: it loads
    assert str(bundle.index.records[0].path) == "/etc/passwd" and bundle.index.records[1].path == red
    assert int(bundle.index.ids[1]) == red_id
    url = start(bundle)
    for path in ("/etc/passwd", "/etc/hostname", str(red)):
        assert _status(f"{url}/gradio_api/file={path}") == 403
    client = Client(url + "/", verbose=False)
    outputs = client.predict(handle_file(str(red)), 20, api_name="/search")
    shown = [item["image"] for gallery in outputs[4:7] for item in gallery]  # characters, centroids, neighbors
    assert len(shown) > 20
    for image in shown:
        pixels = np.asarray(Image.open(image).convert("RGB"), dtype=np.float64)
        red_share = np.mean((pixels[..., 0] > 200) & (pixels[..., 1] < 60) & (pixels[..., 2] < 60))
        assert red_share < 0.5, f"{image} shows the red file the crafted metadata names"


def test_no_train_endpoint_without_the_flag(bundle, start, tmp_path):
    url = start(bundle)
    with urllib.request.urlopen(f"{url}/gradio_api/info", timeout=30) as response:
        endpoints = json.load(response)["named_endpoints"]
    assert "/search" in endpoints and "/train" not in endpoints
    url = start(bundle, enable_training=True, workspace=tmp_path / "ws")
    with urllib.request.urlopen(f"{url}/gradio_api/info", timeout=30) as response:
        assert "/train" in json.load(response)["named_endpoints"]


def _zip(path: Path, entries: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o120777 << 16  # a symbolic link
            archive.writestr(info, target)
    return path


@pytest.mark.parametrize(
    "entries, links",
    [
        ({"cook/a.png": b"x", "../../escaped.png": b"x"}, None),
        ({"cook/a.png": b"x", "/tmp/absolute.png": b"x"}, None),
        ({"cook/a.png": b"x"}, {"cook/link.png": "/etc/passwd"}),
    ],
    ids=["dotdot", "absolute", "symlink"],
)
def test_hostile_zips_are_refused_and_write_nothing(entries, links, tmp_path):
    archive = _zip(tmp_path / "upload.zip", entries, links)
    target = tmp_path / "ws" / "uploads" / "d"
    with pytest.raises(ArchiveError):
        extract_dataset_zip(archive, target)
    assert not target.exists() and not (tmp_path / "escaped.png").exists()


def test_a_zip_bomb_is_refused_before_it_inflates(tmp_path):
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as handle:
        handle.writestr("cook/a.png", b"\0" * (20 << 20))
    with pytest.raises(ArchiveError, match="compressed"):
        extract_dataset_zip(archive, tmp_path / "out")
    with pytest.raises(ArchiveError, match="images"):
        extract_dataset_zip(archive, tmp_path / "out", ArchiveLimits(max_ratio=1e9, max_files=0))
    assert not (tmp_path / "out").exists()


def test_a_hostile_zip_through_the_app_is_refused(bundle, start, tmp_path):
    from gradio_client import Client, handle_file

    workspace = tmp_path / "ws"
    client = Client(start(bundle, enable_training=True, workspace=workspace) + "/", verbose=False)
    archive = _zip(tmp_path / "evil.zip", {"cook/a.png": b"x", "../../../escaped.png": b"x"})
    with pytest.raises(Exception, match="outside the archive"):
        client.predict(handle_file(str(archive)), None, 1, False, api_name="/train")
    assert not (tmp_path / "escaped.png").exists()
    assert not any((workspace / "bundles").iterdir())
    assert not (workspace / "uploads").exists() or not any((workspace / "uploads").iterdir())


def test_a_folder_outside_the_data_root_is_refused_before_training(bundle, small_dataset, start, tmp_path):
    from gradio_client import Client

    root, _ = small_dataset
    with pytest.raises(ServeError, match="outside"):
        under(root / ".." / "..", root)
    (root / "escape").symlink_to(root.parent.parent, target_is_directory=True)
    try:
        with pytest.raises(ServeError, match="outside"):
            under(root / "escape", root)
        workspace = tmp_path / "ws"
        client = Client(start(bundle, enable_training=True, workspace=workspace, data_root=root) + "/", verbose=False)
        for folder in ("escape", "../..", "/etc"):
            with pytest.raises(Exception):
                client.predict(None, folder, 1, False, api_name="/train")
        assert not any((workspace / "bundles").iterdir())  # refused before any training
    finally:
        (root / "escape").unlink()


def test_training_in_the_app_changes_only_the_trainers_bundle(bundle, bundle_path, small_dataset, start, tmp_path):
    from gradio_client import Client, handle_file

    root, queries = small_dataset
    before = (bundle_path / "manifest.json").read_bytes()
    archive = tmp_path / "two.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for name in ("arthur", "cook"):
            for image in sorted((root / name).glob("*.png"))[:6]:
                handle.write(image, f"pair/{name}/{image.name}")
    workspace = tmp_path / "ws"
    url = start(bundle, enable_training=True, workspace=workspace)
    trainer, bystander = Client(url + "/", verbose=False), Client(url + "/", verbose=False)
    status, _, header = trainer.predict(handle_file(str(archive)), None, 1, False, api_name="/train")
    assert status.startswith("Done") and "2 characters" in header
    assert str(workspace) not in status + header  # no server paths in what the browser sees
    (trained,) = list((workspace / "bundles").iterdir())
    assert (trained / "manifest.json").is_file()
    query = handle_file(str(queries["123"][0]))
    trainer_labels, bystander_labels = (
        {item["caption"].split()[0] for item in client.predict(query, 3, api_name="/search")[4]}
        for client in (trainer, bystander)
    )  # the look-alike characters gallery: each served bundle's own classes
    assert trainer_labels and trainer_labels <= {"arthur", "cook"}
    assert bystander_labels <= set(CLASSES) and bystander_labels - {"arthur", "cook"}
    assert (bundle_path / "manifest.json").read_bytes() == before


@pytest.mark.parametrize(
    "argv",
    [
        ["--host", "0.0.0.0"],
        ["--host", "0.0.0.0", "--enable-training", "--allow-anonymous", "--workspace", "ws"],
        ["--enable-training"],  # no --workspace
    ],
    ids=["non-loopback", "training-needs-auth", "training-needs-workspace"],
)
def test_unsafe_serve_options_exit_1(bundle_path, argv, capsys):
    assert main(["serve", str(bundle_path), *argv]) == EXIT_ERROR
    assert "lookalike: error:" in capsys.readouterr().err


def test_auth_refuses_anonymous_requests(bundle, start):
    from gradio_client import Client, handle_file

    url = start(bundle, auth=("ada", "s3cret-pass"))
    assert _status(f"{url}/gradio_api/info") in (401, 403)
    with pytest.raises(Exception):
        Client(url + "/", verbose=False)
    client = Client(url + "/", auth=("ada", "s3cret-pass"), verbose=False)
    image = handle_file(str(bundle.index.records[-1].path))
    characters = client.predict(image, 2, api_name="/search")[4]
    assert characters and all(item["caption"].split()[0] in CLASSES for item in characters)


def test_thumbnails_follow_the_bundle_content_not_its_path(bundle_path, tmp_path):
    live = tmp_path / "live.bundle"
    shutil.copytree(bundle_path, live)
    first = Bundle.load(live)
    files = ServedFiles(tmp_path / "served")
    image_id, other_id = int(first.index.ids[0]), int(first.index.ids[-1])
    old = decode_thumbnail(Path(files.thumbnail(first, image_id)).read_bytes())
    # Replace the bundle at the same path by one whose image `image_id` is another picture.
    pack = ThumbnailPack(live)
    items = [(int(i), pack.get(int(i))) for i in pack.ids]
    items = [(i, pack.get(other_id) if i == image_id else blob) for i, blob in items]
    del pack
    ThumbnailPack.write(live, items)
    for name in (PACK_FILE, PACK_INDEX_FILE):
        _rehash(live, name)
    replaced = Bundle.load(live)
    new = decode_thumbnail(Path(files.thumbnail(replaced, image_id)).read_bytes())
    expected = decode_thumbnail(ThumbnailPack(live).get(other_id))
    assert np.abs(new.astype(int) - expected.astype(int)).mean() < 3
    assert np.abs(new.astype(int) - old.astype(int)).mean() > 3


def _peak_rss_reset() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak resident set size


def _peak_rss_mb() -> float:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM"))
    return int(line.split()[1]) / 1024


def _rss_mb() -> float:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmRSS"))
    return int(line.split()[1]) / 1024


def test_a_huge_png_upload_is_refused_before_it_is_decoded(bundle, start, tmp_path):
    from gradio_client import Client, handle_file

    huge = tmp_path / "huge.png"
    Image.new("L", (13300, 13300)).save(huge, optimize=False)  # 177 Mpx, a few hundred KB on disk
    client = Client(start(bundle) + "/", verbose=False)  # server and client both in this process
    baseline = _rss_mb()
    _peak_rss_reset()
    with pytest.raises(Exception, match="too large") as refusal:
        client.predict(handle_file(str(huge)), 3, api_name="/search")
    assert "/" not in str(refusal.value).split("too large")[-1]  # the message names no server path
    assert _peak_rss_mb() - baseline < 150, "the upload was decoded (an RGB copy alone is 530 MB)"


def test_error_messages_name_no_server_path(bundle, start, tmp_path):
    from gradio_client import Client, handle_file

    fake = tmp_path / "fake.png"
    fake.write_bytes(b"not a png at all")
    client = Client(start(bundle) + "/", verbose=False)
    with pytest.raises(Exception) as refusal:
        client.predict(handle_file(str(fake)), 3, api_name="/search")
    assert "not an image file" in str(refusal.value)
    assert "/tmp" not in str(refusal.value) and "gradio" not in str(refusal.value)


def test_the_app_starts_when_a_proxy_is_configured(bundle, start, monkeypatch):
    """Machines that reach the internet through a proxy (``HTTP_PROXY``, no ``NO_PROXY``) still serve: gradio's
    start-up check asks the server's own loopback address, which must not go to the proxy."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # a port nobody listens on: every request sent to this "proxy" fails
    proxy = f"http://127.0.0.1:{closed.getsockname()[1]}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, proxy)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    try:
        url = start(bundle)
        assert _status(f"{url}/gradio_api/info") == 200
    finally:
        closed.close()
