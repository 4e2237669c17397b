"""Decoding: every image mode becomes RGB on white, bad files become ImageDecodeError, batches skip them."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lookalike.data import ImageDecodeError, iter_image_batches, load_image

SIZE = 32


def test_grayscale_becomes_three_equal_channels(tmp_path):
    path = tmp_path / "gray.png"
    Image.fromarray(np.tile(np.arange(0, 256, 8, dtype=np.uint8), (32, 1)), mode="L").save(path)
    image = load_image(path, SIZE)
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
    assert np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2])
    assert image[:, 0, 0].max() < 16 and image[:, -1, 0].min() > 230  # the gradient survives


def test_transparency_is_composited_on_white(tmp_path):
    pixels = np.zeros((32, 32, 4), dtype=np.uint8)
    pixels[:, :16] = (255, 0, 0, 255)  # opaque red on the left, fully transparent black on the right
    path = tmp_path / "rgba.png"
    Image.fromarray(pixels, mode="RGBA").save(path)
    image = load_image(path, SIZE)
    assert tuple(image[16, 4]) == (255, 0, 0)
    assert tuple(image[16, 28]) == (255, 255, 255)


def test_palette_image_with_transparent_index(tmp_path):
    palette_image = Image.new("P", (32, 32), 0)
    palette_image.putpalette([0, 0, 255, 0, 255, 0] + [0] * 762)  # index 0 blue, index 1 green
    palette_image.paste(1, (0, 0, 16, 32))
    path = tmp_path / "palette.png"
    palette_image.save(path, transparency=0)  # blue is transparent
    image = load_image(path, SIZE)
    assert tuple(image[16, 4]) == (0, 255, 0)
    assert tuple(image[16, 28]) == (255, 255, 255)


def test_exif_orientation_is_applied_and_aspect_kept(tmp_path):
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)  # landscape: red left half, blue right half
    pixels[:, :20] = (255, 0, 0)
    pixels[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    Image.fromarray(pixels).save(path, exif=exif, quality=95)
    image = load_image(path, 40).astype(int)
    # Displayed upright the image is portrait, red on top, and padded with white left and right.
    assert image[5, 20, 0] > 200 and image[5, 20, 2] < 60
    assert image[35, 20, 2] > 200 and image[35, 20, 0] < 60
    assert (image[20, 2] > 240).all() and (image[20, 37] > 240).all()


@pytest.mark.parametrize(
    "name, content",
    [("empty.png", b""), ("noise.jpg", bytes(range(256)) * 4), ("truncated.png", None)],
)
def test_unreadable_files_raise_decode_error_naming_the_file(tmp_path, name, content):
    path = tmp_path / name
    if content is None:  # the first half of a real PNG
        Image.new("RGB", (64, 64), (10, 20, 30)).save(path)
        content = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(content)
    with pytest.raises(ImageDecodeError) as caught:
        load_image(path, SIZE)
    assert caught.value.path == path
    assert str(path) in str(caught.value)


def test_missing_file_raises_decode_error(tmp_path):
    with pytest.raises(ImageDecodeError, match="file not found"):
        load_image(tmp_path / "nope.png", SIZE)


def test_batches_keep_order_and_report_skipped_files(tmp_path):
    paths = []
    for i in range(7):
        path = tmp_path / f"{i}.png"
        if i in (2, 5):
            path.write_bytes(b"broken")
        else:
            Image.new("RGB", (8, 8), (i * 30, 0, 0)).save(path)
        paths.append(path)
    batches = list(iter_image_batches(paths, size=8, batch_size=3))
    assert [len(b.indices) + len(b.failures) for b in batches] == [3, 3, 1]
    indices = np.concatenate([b.indices for b in batches])
    assert indices.tolist() == [0, 1, 3, 4, 6]
    reds = np.concatenate([b.images[:, 0, 0, 0] for b in batches])
    assert reds.tolist() == [i * 30 for i in indices]
    assert [f.path for b in batches for f in b.failures] == [paths[2], paths[5]]
