import io

import numpy as np
import pytest
from PIL import Image

from deepgaze_jax.images import ImageError, load_working_image, to_rgb_uint8, working_size


def test_working_size_paper_sizes_are_exact():
    assert working_size(768, 1024) == (384, 512)
    assert working_size(1024, 768) == (512, 384)
    assert working_size(384, 512) == (384, 512)


@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (2160, 3840), (1, 4000), (999, 1001)])
def test_working_size_is_multiple_of_32_with_long_side_512(shape):
    h, w = working_size(*shape)
    assert h % 32 == 0 and w % 32 == 0
    assert max(h, w) == 512 and min(h, w) >= 32


def test_grayscale_rgba_16bit_float_and_bool_become_rgb_uint8():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert np.array_equal(to_rgb_uint8(gray), np.repeat(gray[..., None], 3, -1))
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[0, 0, 3] = 255  # opaque red pixel, the rest transparent -> white
    out = to_rgb_uint8(rgba)
    assert out[0, 0].tolist() == [200, 0, 0] and out[1, 1].tolist() == [255, 255, 255]
    sixteen = np.full((2, 2), 65535, np.uint16)
    assert to_rgb_uint8(sixteen).max() == 255 and to_rgb_uint8(sixteen).dtype == np.uint8
    assert to_rgb_uint8(np.full((2, 2, 3), 0.5)).max() == 128
    assert to_rgb_uint8(np.ones((2, 2), bool)).min() == 255


def test_16bit_png_file_is_scaled_not_clipped(tmp_path):
    ramp = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    path = tmp_path / "ramp16.png"
    Image.fromarray(ramp).save(path)
    out = to_rgb_uint8(path)
    assert out.shape == (8, 8, 3)
    assert out[..., 0].max() == round(63000 / 65535 * 255)
    assert np.all(np.diff(out[..., 0].reshape(-1).astype(int)) >= 0)


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((0, 5, 3), np.uint8), "empty"),
        (np.zeros((4, 4, 2), np.uint8), "shape"),
        (np.full((2, 2), np.nan), "NaN"),
        (np.full((2, 2), 3.0), r"\[0, 1\]"),
        (np.full((2, 2), -5, np.int32), "dtype"),
    ],
)
def test_bad_arrays_raise_clear_errors(bad, message):
    with pytest.raises(ImageError, match=message):
        to_rgb_uint8(bad)


def test_corrupt_and_truncated_files_raise_image_error(tmp_path):
    (tmp_path / "junk.jpg").write_bytes(b"not an image at all")
    with pytest.raises(ImageError, match="cannot decode"):
        to_rgb_uint8(tmp_path / "junk.jpg")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(buf, "PNG")
    with pytest.raises(ImageError):
        to_rgb_uint8(buf.getvalue()[: len(buf.getvalue()) // 2])


def test_load_working_image_keeps_original_size():
    img = np.zeros((300, 400, 3), np.uint8)
    work, original = load_working_image(img)
    assert original == (300, 400) and work.shape == (384, 512, 3)
