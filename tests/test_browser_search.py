"""The Search view in a real browser: query sources, the answer with its explanation, and "no close match".

Uses the app and the Chromium page of :mod:`test_browser` (skipped, or required, the same way).
Screenshots are saved to ``tests/artifacts/``.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from test_browser import ARTIFACTS, page  # noqa: F401 - the page fixture: the app in Chromium


def test_webcam_and_clipboard_are_offered_beside_upload(page):  # noqa: F811
    page.get_by_role("tab", name="Search").click()
    sources = page.locator("[data-testid='source-select']").first
    assert sources.locator("button[aria-label='Capture from camera']").is_visible()
    assert sources.locator("button[aria-label='Paste from clipboard']").is_visible()
    page.screenshot(path=str(ARTIFACTS / "search-sources.png"))


def test_search_shows_the_best_match_and_why(page, small_dataset):  # noqa: F811
    _, queries = small_dataset
    page.get_by_role("tab", name="Search").click()
    page.locator("input[type=file]").first.set_input_files(str(queries["cook"][1]))
    page.wait_for_selector("#lookalike-verdict h3:has-text('match')")
    picture = page.locator("#lookalike-why img")
    picture.wait_for(state="visible")
    page.wait_for_function(
        "() => { const i = document.querySelector('#lookalike-why img'); return i && i.naturalWidth > 0; }"
    )
    assert picture.evaluate("(image) => image.naturalWidth") == 2 * 224 + 36  # query | match, side by side
    assert "cosine similarity" in page.locator("#lookalike-verdict").inner_text()
    page.screenshot(path=str(ARTIFACTS / "search-explain.png"), full_page=True)


def test_an_unknown_query_says_no_close_match_plainly(page, tmp_path):  # noqa: F811
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (224, 224, 3), dtype=np.uint8)).save(noise)
    page.get_by_role("tab", name="Search").click()
    page.locator("input[type=file]").first.set_input_files(str(noise))
    verdict = page.locator("#lookalike-verdict h3:has-text('No close match')")
    verdict.wait_for()
    assert "the closest is" in verdict.inner_text() and "threshold" in verdict.inner_text()
    assert not page.locator("text=Predicted character (softmax head)").is_visible()  # no 100 % shown as certainty
    page.screenshot(path=str(ARTIFACTS / "search-unknown.png"), full_page=True)
