"""Bad input: every case gives lookalike's own clear error (or a sensible image), and bulk runs go on."""

from __future__ import annotations

import io

import numpy as np
import pytest
from conftest import CORRUPT_NAME, UNUSUAL_NAME
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from lookalike.data import ImageDecodeError, iter_image_batches, load_image
from lookalike.data.images import MAX_PIXELS

SIZE = 32


def _jpeg_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def test_truncated_jpeg(tmp_path):
    data = _jpeg_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)))
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageDecodeError, match="cut.jpg"):
        load_image(path, SIZE)


def test_decompression_bomb_is_refused_from_its_header(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("1", (9000, 9000)).save(path)  # 81 Mpx of zeros: a small file declaring a huge image
    assert path.stat().st_size < 200_000 and 9000 * 9000 > MAX_PIXELS
    with pytest.raises(ImageDecodeError, match="image too large: 9000x9000 pixels"):
        load_image(path, SIZE)


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    ramp = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(ramp).save(path)
    image = load_image(path, 64)
    assert image[0, 0, 0] < 10 and image[-1, -1, 0] > 245 and 100 < image.mean() < 155


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (40, 40), (0, 255, 255, 0)).save(path, quality=95)  # pure red in CMYK
    image = load_image(path, SIZE).astype(int)
    assert image.shape == (SIZE, SIZE, 3)
    assert image[16, 16, 0] > 200 and image[16, 16, 1] < 60 and image[16, 16, 2] < 60


def test_animated_gif_gives_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (20, 20), colour) for colour in ((0, 0, 255), (255, 0, 0), (0, 255, 0))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    image = load_image(path, SIZE).astype(int)
    assert image[16, 16, 2] > 200 and image[16, 16, 0] < 60


def test_one_pixel_image(tmp_path):
    path = tmp_path / "dot.png"
    Image.new("RGB", (1, 1), (10, 200, 30)).save(path)
    image = load_image(path, SIZE)
    assert image.shape == (SIZE, SIZE, 3) and tuple(image[16, 16]) == (10, 200, 30)


def test_unusual_file_names_are_trained_and_searchable(bundle, tmp_path):
    record = next(r for r in bundle.index.records if r.path.name == UNUSUAL_NAME)
    result = bundle.query_files([record.path], k=1)[0]
    assert result.neighbors[0].path == record.path and result.neighbors[0].score == pytest.approx(1.0, abs=1e-4)


def test_bulk_run_lists_skipped_files_in_a_file(bundle_path):
    listing = (bundle_path / "skipped.csv").read_text(encoding="utf-8").splitlines()
    assert listing[0] == "path,reason" and len(listing) == 2 and CORRUPT_NAME in listing[1]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2048), suffix=st.sampled_from([".png", ".jpg", ".gif", ".bmp", ".webp"]))
def test_random_bytes_give_an_image_or_our_error(tmp_path, data, suffix):
    path = tmp_path / f"random{suffix}"
    path.write_bytes(data)
    try:
        image = load_image(path, SIZE)
    except ImageDecodeError as error:
        assert error.path == path and error.reason
    else:
        assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    width=st.integers(1, 48),
    height=st.integers(1, 48),
    mode=st.sampled_from(["RGB", "RGBA", "L", "LA", "P", "1", "I;16", "CMYK"]),
    fmt=st.sampled_from(["PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF"]),
    seed=st.integers(0, 2**16),
)
def test_random_small_images_decode_to_rgb(tmp_path, width, height, mode, fmt, seed):
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(
        mode if mode != "I;16" else "I"
    )
    if mode == "I;16":
        image = Image.fromarray((rng.integers(0, 65536, (height, width))).astype(np.uint16))
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=fmt)
    except (OSError, ValueError, KeyError):
        return  # this format cannot store this mode; nothing to decode
    path = tmp_path / f"image.{fmt.lower()}"
    path.write_bytes(buffer.getvalue())
    decoded = load_image(path, SIZE)
    assert decoded.shape == (SIZE, SIZE, 3) and decoded.dtype == np.uint8
    batches = list(iter_image_batches([path], size=SIZE))
    assert np.array_equal(batches[0].images[0], decoded)
