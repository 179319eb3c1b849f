import base64
import concurrent.futures
import io
import re

import numpy as np
import pytest
import requests
import werkzeug.formparser
from PIL import Image

from deepgaze_jax.plotting import equal_mass_levels
from deepgaze_jax.serve import DISPLAY_SIDE, MAX_UPLOAD_BYTES, demo_image
from live_server import serve_fake_model


@pytest.fixture(scope="module")
def url():
    with serve_fake_model() as base:
        yield base


def encode(image: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, fmt)
    return buffer.getvalue()


def random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def post_density(url: str, data: bytes, query: str = "") -> requests.Response:
    return requests.post(f"{url}/api/density{query}", files={"image": ("upload.png", data)}, timeout=120)


def logsumexp(values) -> float:
    values = np.asarray(values, np.float64)
    return float(values.max() + np.log(np.exp(values - values.max()).sum()))


def test_healthz(url):
    reply = requests.get(f"{url}/healthz", timeout=10)
    assert reply.status_code == 200 and reply.json()["status"] == "ok"


def test_density_of_upload(url):
    reply = post_density(url, encode(random_image(96, 128)))
    assert reply.status_code == 200, reply.text
    body = reply.json()
    log_density = np.array(body["log_density"])
    assert (body["height"], body["width"], body["image_height"], body["image_width"]) == (96, 128, 96, 128)
    assert log_density.shape == (96, 128) and body["units"] == "nats/pixel"
    assert abs(logsumexp(log_density)) < 1e-4
    np.testing.assert_allclose(body["levels"], equal_mass_levels(log_density), atol=1e-5)
    assert body["masses"] == [0.25, 0.5, 0.75]


def test_downsampled_density_keeps_mass(url):
    data = encode(random_image(96, 128, seed=1))
    full = np.array(post_density(url, data).json()["log_density"])
    body = post_density(url, data, "?max_side=32").json()
    small = np.array(body["log_density"])
    assert (body["height"], body["width"]) == (24, 32)
    assert abs(logsumexp(small)) < 1e-4
    blocks = np.exp(full).reshape(24, 4, 32, 4).sum(axis=(1, 3))  # 4x4 pixels per cell
    np.testing.assert_allclose(np.exp(small), blocks, rtol=1e-3)


@pytest.mark.parametrize("query", ["?max_side=0", "?max_side=abc", "?max_side=-3", "?max_side=%C2%B2"])
def test_bad_max_side(url, query):
    reply = post_density(url, encode(random_image(32, 32)), query)
    assert reply.status_code == 400 and "max_side" in reply.json()["error"]


@pytest.mark.parametrize(
    "data, message",
    [
        (b"this is not an image", "not an image"),
        (encode(random_image(64, 64))[:200], "truncated"),  # truncated PNG
        (b"", "empty"),
    ],
)
def test_non_images_get_400_json(url, data, message):
    reply = post_density(url, data)
    assert reply.status_code == 400 and reply.headers["Content-Type"] == "application/json"
    assert message in reply.json()["error"]


def test_missing_field_gets_400(url):
    reply = requests.post(f"{url}/api/density", files={"photo": ("x.png", b"...")}, timeout=10)
    assert reply.status_code == 400 and "'image'" in reply.json()["error"]


def test_too_large_upload_gets_413_json(url):
    reply = post_density(url, b"\0" * (MAX_UPLOAD_BYTES + 1))
    assert reply.status_code == 413 and "limit" in reply.json()["error"]


def test_too_many_pixels_gets_413_json(url):
    huge = io.BytesIO()
    Image.new("1", (8000, 6000)).save(huge, "PNG")  # 48 megapixels in a few kB
    reply = post_density(url, huge.getvalue())
    assert reply.status_code == 413 and "8000x6000" in reply.json()["error"]


def test_uploads_are_kept_in_memory(url, monkeypatch):
    def no_temporary_files(*args, **kwargs):
        raise AssertionError("the upload was spooled to a temporary file")

    monkeypatch.setattr(werkzeug.formparser, "SpooledTemporaryFile", no_temporary_files)
    data = encode(random_image(600, 800, seed=2))
    assert len(data) > 1024 * 1024  # above Werkzeug's 500 kB spooling threshold
    assert post_density(url, data, "?max_side=16").status_code == 200


def test_concurrent_requests(url):
    sizes = [(96, 128), (128, 96), (192, 256), (64, 64), (96, 128), (150, 200)]

    def request_density(i: int):
        h, w = sizes[i]
        reply = post_density(url, encode(random_image(h, w, seed=10 + i)), "?max_side=64")
        return i, reply.status_code, reply.json()

    with concurrent.futures.ThreadPoolExecutor(len(sizes)) as pool:
        results = list(pool.map(request_density, range(len(sizes))))
    for i, status, body in results:
        assert status == 200, body
        assert (body["image_height"], body["image_width"]) == sizes[i]
        assert abs(logsumexp(body["log_density"])) < 1e-4


def overlay_of(page: str) -> Image.Image:
    match = re.search(r'src="data:image/png;base64,([^"]+)"', page)
    assert match, "no inline overlay picture on the page"
    return Image.open(io.BytesIO(base64.b64decode(match.group(1))))


def test_pages(url):
    index = requests.get(f"{url}/", timeout=10)
    assert index.status_code == 200 and 'type="file"' in index.text and "http" not in index.text.replace(url, "")
    demo = requests.get(f"{url}/view?demo=1", timeout=60)
    assert demo.status_code == 200 and overlay_of(demo.text).size == (512, 384)
    big = encode(demo_image(900, 1200), "JPEG")
    upload = requests.post(f"{url}/view", files={"image": ("big.jpg", big)}, timeout=60)
    assert upload.status_code == 200 and "big.jpg (1200&times;900 pixels)" in upload.text
    overlay = overlay_of(upload.text)
    assert overlay.size == (DISPLAY_SIDE, DISPLAY_SIDE * 3 // 4)
    assert np.asarray(overlay.convert("L")).std() > 20


def test_page_errors_are_shown(url):
    reply = requests.post(f"{url}/view", files={"image": ("notes.txt", b"hello")}, timeout=10)
    assert reply.status_code == 400 and 'class="error"' in reply.text and "not an image" in reply.text
