"""Crop to content: a character small on a flat background is embedded as if it filled the frame; other
images are left as they are; bundles from before the setting keep their preprocessing."""

from __future__ import annotations

import numpy as np
from lookalike.data import DEFAULT_DATASET, load_image
from lookalike.data.images import crop_to_content
from lookalike.embedder import EmbedderConfig
from PIL import Image

SIZE = 224


def _sprite() -> Image.Image:
    """A real sprite of the embedded dataset (tightly cropped, on white), as RGB."""
    path = min((DEFAULT_DATASET / "cook").glob("*.png"))
    return Image.fromarray(load_image(path, SIZE))


def _small_on(sprite: Image.Image, colour: tuple[int, int, int], scale: float, offset: tuple[int, int]) -> Image.Image:
    canvas = Image.new("RGB", (800, 600), colour)
    side = int(600 * scale)
    pixels = np.asarray(sprite)
    mask = Image.fromarray(((pixels < 240).any(axis=2) * 255).astype(np.uint8))
    canvas.paste(sprite.resize((side, side)), offset, mask.resize((side, side)))
    return canvas


def test_small_character_on_white_is_embedded_like_the_sprite(tmp_path):
    sprite = _sprite()
    path = tmp_path / "small.png"
    _small_on(sprite, (255, 255, 255), 0.35, (430, 300)).save(path)
    cropped, uncropped = load_image(path, SIZE, crop=True), load_image(path, SIZE, crop=False)
    reference = np.asarray(sprite, dtype=float)
    error_cropped = np.abs(cropped - reference).mean()
    error_uncropped = np.abs(uncropped - reference).mean()
    assert error_cropped < 12 and error_uncropped > 3 * error_cropped


def test_flat_coloured_background_is_cropped_and_padded_with_its_colour():
    grey = (90, 110, 130)
    image = crop_to_content(_small_on(_sprite(), grey, 0.3, (40, 50)))
    assert image.size[0] == image.size[1] and image.size[0] < 0.5 * 600  # square, about the character
    corners = np.asarray(image)[[0, 0, -1, -1], [0, -1, 0, -1]]
    assert np.abs(corners.astype(int) - grey).max() <= 2


def test_tight_sprites_and_busy_images_are_unchanged(tmp_path):
    sprite = _sprite()
    assert crop_to_content(sprite) is sprite  # the content fills the frame
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8))
    assert crop_to_content(noise) is noise  # no flat border
    blank = Image.new("RGB", (50, 60), "white")
    assert crop_to_content(blank) is blank  # nothing to crop to
    for name in ("123", "autogun", "arthur"):  # the embedded dataset decodes the same with and without
        for path in sorted((DEFAULT_DATASET / name).glob("*.png"))[:3]:
            assert np.array_equal(load_image(path, SIZE, crop=True), load_image(path, SIZE, crop=False))


def test_configs_saved_before_the_setting_do_not_crop():
    saved = EmbedderConfig().to_dict()
    assert saved["crop_to_content"] is True
    del saved["crop_to_content"]
    assert EmbedderConfig.from_dict(saved).crop_to_content is False


def test_bundle_finds_the_character_in_a_query_with_wide_margins(bundle, small_dataset, tmp_path):
    _, queries = small_dataset
    assert bundle.embedder.config.crop_to_content
    path = tmp_path / "framed.png"
    _small_on(Image.fromarray(load_image(queries["autogun"][0], SIZE)), (255, 255, 255), 0.3, (60, 380)).save(path)
    (framed, original) = bundle.embed_files([path, queries["autogun"][0]])[0]
    assert float(framed @ original) > 0.95
    assert bundle.query_files([path])[0].characters[0].label == "autogun"


class _Stop(Exception):
    pass


def test_train_passes_no_crop_to_content_to_the_config(small_dataset, tmp_path, monkeypatch):
    from lookalike.app.cli import main
    from lookalike.bundle import Bundle

    seen = []

    def record(dataset, *, config, **options):
        seen.append(config)
        raise _Stop  # the wiring is what is under test; training is tested elsewhere

    monkeypatch.setattr(Bundle, "train", staticmethod(record))
    root, _ = small_dataset
    for extra in ([], ["--no-crop-to-content"]):
        try:
            main(["train", str(root), "--out", str(tmp_path / "b"), *extra])
        except _Stop:
            pass
    assert [config.crop_to_content for config in seen] == [True, False]
