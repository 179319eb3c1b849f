"""Image input: decoding anything a user may hand us to uint8 RGB, and the working size.

DeepGaze II (paper, section 2.3) sees MIT1003 images resized to 1024x768 and then
downsampled by 2: the model lives in a *working space* whose longer side is 512
pixels. `working_size` maps any image size to that space; both sides are rounded
to a multiple of `SIZE_MULTIPLE` (32, the coarsest backbone stride) so that a
small set of shapes covers every image (no recompilation per image size) and the
backbone grids align exactly.
"""

from __future__ import annotations

import io
import os
from typing import Union

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

SIZE_MULTIPLE = 32
MAX_PIXELS = 100_000_000  # refuse decompression bombs beyond ~100 megapixels

ImageLike = Union[np.ndarray, Image.Image, str, os.PathLike, bytes]


class ImageError(ValueError):
    """An input that is not a usable image (corrupt, empty, wrong shape or dtype)."""


def _check_pixels(height: int, width: int) -> None:
    if height * width > MAX_PIXELS:
        raise ImageError(f"image of {width}x{height} pixels exceeds the limit of {MAX_PIXELS} pixels")


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation (1: as stored; 5 to 8 swap width and height), from the header."""
    return img.getexif().get(ExifTags.Base.Orientation, 1)


def oriented_size(img: Image.Image) -> tuple[int, int]:
    """(height, width) of ``img`` as displayed, i.e. after its EXIF orientation; from the header alone."""
    return (img.width, img.height) if _orientation(img) in (5, 6, 7, 8) else (img.height, img.width)


def _from_sixteen_bit(img: Image.Image) -> np.ndarray:
    """Modes I;16* and I (16-bit PNG/TIFF/PGM) span 0..65535, whatever the values in the file."""
    arr = np.asarray(img, dtype=np.float64)
    if arr.size and (arr.min() < 0 or arr.max() > 65535):
        raise ImageError(f"integer image of mode {img.mode} has values outside 0..65535 (not a 16-bit image)")
    return to_rgb_uint8(arr / 65535.0)


def _from_pil(img: Image.Image) -> np.ndarray:
    _check_pixels(img.height, img.width)
    if _orientation(img) != 1:
        img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        return _from_sixteen_bit(img)
    if img.mode == "F":
        return to_rgb_uint8(np.asarray(img, dtype=np.float64))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img.convert("RGBA"))
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def to_rgb_uint8(image: ImageLike) -> np.ndarray:
    """Any image to an (H, W, 3) uint8 RGB array.

    Accepts a file path, encoded bytes, a PIL image, or an array that is
    (H, W) grayscale, (H, W, 1), (H, W, 3) RGB or (H, W, 4) RGBA (alpha is
    composited on white), of dtype uint8, uint16 (scaled by 1/257), bool, or
    float in [0, 1]. Files and PIL images are turned as their EXIF orientation says
    (as a phone photo is shown), and 16-bit files are scaled by their bit depth
    (65535 is white), not by their values. Raises `ImageError` with the reason for
    anything else, and for over `MAX_PIXELS` pixels (checked from a file's header).
    """
    if isinstance(image, (str, os.PathLike, bytes)):
        source = io.BytesIO(image) if isinstance(image, bytes) else image
        try:
            with Image.open(source) as img:
                _check_pixels(img.height, img.width)  # from the header, before decoding
                img.load()
                return _from_pil(img)
        except FileNotFoundError:
            raise
        except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
            name = "<bytes>" if isinstance(image, bytes) else os.fspath(image)
            raise ImageError(f"cannot decode image {name}: {exc}") from exc
    if isinstance(image, Image.Image):
        return _from_pil(image)
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ImageError(f"expected an (H, W), (H, W, 3) or (H, W, 4) image, got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageError(f"empty image of shape {arr.shape}")
    _check_pixels(arr.shape[0], arr.shape[1])
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype == np.uint16:
        arr = (arr.astype(np.uint32) * 255 + 32767) // 65535
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise ImageError("image contains NaN or inf values")
        if arr.min() < 0 or arr.max() > 1:
            raise ImageError(
                f"float images must lie in [0, 1], got range [{arr.min():.3g}, {arr.max():.3g}]; "
                "pass uint8 for 0-255 data"
            )
        arr = np.round(arr * 255)
    elif arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.integer) and arr.min() >= 0 and arr.max() <= 255:
            arr = arr.astype(np.uint8)
        else:
            raise ImageError(f"unsupported image dtype {arr.dtype} (use uint8, uint16, bool or float in [0, 1])")
    arr = arr.astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    elif arr.shape[-1] == 4:
        alpha = arr[..., 3:].astype(np.float32) / 255.0
        arr = np.round(arr[..., :3] * alpha + 255.0 * (1 - alpha)).astype(np.uint8)
    return np.ascontiguousarray(arr)


def working_size(height: int, width: int, long_side: int = 512) -> tuple[int, int]:
    """(height, width) of the working space for an image of the given size.

    The longer side becomes ``long_side``; the shorter keeps the aspect ratio and is
    rounded to the nearest multiple of `SIZE_MULTIPLE` (at least one multiple).
    1024x768 and 768x1024 images map exactly to 512x384 and 384x512.
    """
    if height <= 0 or width <= 0:
        raise ImageError(f"image size must be positive, got {height}x{width}")
    if long_side % SIZE_MULTIPLE:
        raise ValueError(f"long_side must be a multiple of {SIZE_MULTIPLE}, got {long_side}")
    scale = long_side / max(height, width)

    def side(s: int) -> int:
        return max(SIZE_MULTIPLE, int(round(s * scale / SIZE_MULTIPLE)) * SIZE_MULTIPLE)

    return (long_side, side(width)) if height >= width else (side(height), long_side)


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 image resized to ``size`` (height, width) with antialiased bicubic filtering."""
    if image.shape[:2] == tuple(size):
        return image
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.Resampling.BICUBIC))


def load_working_image(image: ImageLike, long_side: int = 512) -> tuple[np.ndarray, tuple[int, int]]:
    """Decodes ``image`` and resizes it to its working size.

    Returns the (h, w, 3) uint8 working image and the original (H, W).
    """
    rgb = to_rgb_uint8(image)
    original = rgb.shape[:2]
    return resize(rgb, working_size(*original, long_side=long_side)), original
