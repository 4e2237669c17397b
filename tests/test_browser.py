"""The web app in a real browser: Playwright driving Debian's Chromium against the app on a local port.

Needs ``apt-get install chromium`` (``/usr/bin/chromium``); skipped without it unless
``LOOKALIKE_BROWSER_TESTS=required`` (as in CI), when a missing browser fails the run.
Screenshots are saved to ``tests/artifacts/``.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).parent / "artifacts"

if not Path(CHROMIUM).is_file():
    if os.environ.get("LOOKALIKE_BROWSER_TESTS") == "required":
        raise RuntimeError(f"browser tests are required but {CHROMIUM} is missing: apt-get install chromium")
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)
sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright


@pytest.fixture(scope="module")
def page(bundle, tmp_path_factory):
    from lookalike.app.server import ServeOptions
    from lookalike.app.ui import serve

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    workspace = tmp_path_factory.mktemp("workspace")
    app = serve(bundle, ServeOptions(port=port, enable_training=True, workspace=workspace), block=False)
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(120_000)
        page.goto(f"http://127.0.0.1:{port}/", wait_until="load")
        page.wait_for_selector("text=Find look-alikes")
        yield page
        browser.close()
    app.close()


def test_upload_shows_prediction_and_galleries(page, small_dataset):
    from conftest import CLASSES

    _, queries = small_dataset
    page.locator("input[type=file]").first.set_input_files(str(queries["arthur"][0]))
    page.wait_for_selector("text=Best match:")
    caption = page.locator("h3", has_text="Best match:").inner_text()
    assert any(name in caption for name in CLASSES)
    assert page.locator("text=Predicted character (softmax head)").is_visible()
    assert page.locator(".gallery img, [data-testid='gallery'] img, button img").count() >= 4
    page.screenshot(path=str(ARTIFACTS / "search.png"), full_page=True)


@pytest.mark.parametrize(
    "tab, button, ready",
    [
        ("Map", "Draw map", "iframe.lookalike-map"),
        ("Audit", "Audit", "text=judged out of fold"),
        ("Evaluate", "Evaluate", "text=held-out images"),
        ("Train", None, "text=Dataset zip"),
    ],
)
def test_every_view_renders(page, tab, button, ready):
    page.get_by_role("tab", name=tab).click()
    if button:
        page.get_by_role("button", name=button, exact=True).click()
    page.wait_for_selector(ready)
    assert page.locator(ready).first.is_visible()
    assert not page.locator(".toast-body.error, .error-message").count()
    page.screenshot(path=str(ARTIFACTS / f"{tab.lower()}.png"), full_page=True)
