"""The Audit tab in a real browser (Playwright + Debian's Chromium, as ``test_browser.py``): the gallery shows
thumbnails, a suggestion is accepted and the decisions download as CSV. Screenshots go to ``tests/artifacts/``."""

from __future__ import annotations

import csv
import socket

import pytest
from audit_fixtures import injected_bundle
from test_browser import ARTIFACTS, CHROMIUM, FLAGS, sync_playwright  # skips this module as well without Chromium


@pytest.fixture(scope="module")
def page(bundle_path, small_dataset, tmp_path_factory):
    from lookalike.app.server import ServeOptions
    from lookalike.app.ui import serve
    from lookalike.bundle import Bundle

    injected = injected_bundle(tmp_path_factory.getbasetemp() / "audit-injected", bundle_path, small_dataset)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = serve(Bundle.load(injected.bundle), ServeOptions(port=port), block=False)
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1100}, accept_downloads=True)
        page.set_default_timeout(180_000)
        page.goto(f"http://127.0.0.1:{port}/", wait_until="load")
        page.get_by_role("tab", name="Audit").click()
        yield page
        browser.close()
    app.close()


def test_audit_gallery_shows_thumbnails_and_accepted_decisions_download(page, tmp_path):
    page.get_by_role("button", name="Audit", exact=True).click()
    page.wait_for_selector("text=judged out of fold")
    thumbnails = page.locator("img[src*='/gradio_api/file='] >> visible=true")  # the Audit tab's gallery
    thumbnails.first.wait_for()
    flipped = page.get_by_text("arthur → cook").first  # the flipped label's caption, with its suggestion
    flipped.wait_for()
    assert page.evaluate("(img) => img.complete && img.naturalWidth > 0", thumbnails.first.element_handle())
    page.screenshot(path=str(ARTIFACTS / "audit_gallery.png"), full_page=True)

    flipped.click()
    page.wait_for_selector("text=Accept: relabel arthur → cook")
    page.get_by_role("button", name="Accept suggestion").click()
    page.locator("text=accepted >> visible=true").first.wait_for()  # Gradio also keeps a hidden copy of each cell
    download_button = page.get_by_role("button", name="Download decisions (CSV)")
    page.wait_for_function("(b) => !b.disabled", arg=download_button.element_handle())
    with page.expect_download() as info:
        download_button.click()
    target = tmp_path / "decisions.csv"
    info.value.save_as(target)
    with open(target, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1 and rows[0]["issue"] == "label" and rows[0]["decision"] == "accepted"
    assert rows[0]["suggestion"] == "cook" and not rows[0]["file"].startswith("/")
    page.screenshot(path=str(ARTIFACTS / "audit_decision.png"), full_page=True)

    page.get_by_role("radio", name="Duplicates").check()
    page.get_by_text("drop · autogun").first.wait_for()
    assert page.get_by_text("keep · autogun").first.is_visible()
    page.screenshot(path=str(ARTIFACTS / "audit_duplicates.png"), full_page=True)
