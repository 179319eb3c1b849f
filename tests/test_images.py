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


# --- issue 14: EXIF orientation (item 5), 16-bit depth (item 8), header size limit (item 11) ---


def _stored_image() -> np.ndarray:
    """A 3x4 RGB picture with no symmetry, so every orientation is told apart."""
    return np.arange(36, dtype=np.uint8).reshape(3, 4, 3) * 7


def _with_orientation(path, orientation: int):
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(_stored_image()).save(path, exif=exif)
    return path


@pytest.mark.parametrize(
    "orientation, shown",
    [(1, lambda a: a), (3, lambda a: np.rot90(a, 2)), (6, lambda a: np.rot90(a, -1)), (8, lambda a: np.rot90(a, 1))],
    ids=["1", "3-rotate-180", "6-rotate-cw", "8-rotate-ccw"],
)
def test_exif_orientation_is_applied(tmp_path, orientation, shown):
    from deepgaze_jax.data.datasets import read_image_size

    path = _with_orientation(tmp_path / "photo.png", orientation)
    expected = shown(_stored_image())
    for source in (path, path.read_bytes(), Image.open(path)):
        np.testing.assert_array_equal(to_rgb_uint8(source), expected)
    assert read_image_size(path) == expected.shape[:2]


def test_dark_16bit_files_are_scaled_by_bit_depth_not_values(tmp_path):
    dark = np.full((4, 5), 200, np.uint16)  # 200 / 65535 of white: nearly black
    Image.fromarray(dark).save(tmp_path / "dark.png")
    (tmp_path / "dark.pgm").write_bytes(b"P5\n5 4\n65535\n" + dark.astype(">u2").tobytes())
    for name in ("dark.png", "dark.pgm"):
        out = to_rgb_uint8(tmp_path / name)
        assert out.max() == round(200 / 65535 * 255), name


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height`` 8-bit gray pixels, with no usable pixel data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_pixel_limit_is_checked_from_the_header_before_decoding():
    """120 megapixels claimed by a 100-byte file: refused for its size, without decoding a pixel."""
    with pytest.raises(ImageError, match="exceeds the limit"):
        to_rgb_uint8(_png_header_only(20_000, 6_000))
