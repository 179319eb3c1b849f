import base64
import concurrent.futures
import io
import re
import socket
import threading
import time

import numpy as np
import pytest
import requests
import werkzeug.formparser
from PIL import Image

from deepgaze_jax import serve
from deepgaze_jax.plotting import equal_mass_levels
from deepgaze_jax.serve import (
    DISPLAY_SIDE,
    MAX_UPLOAD_BYTES,
    ServiceLimits,
    demo_image,
)
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


def test_an_ensemble_is_served_and_described():
    import jax

    from deepgaze_jax import ModelConfig, init_params, predict_density
    from deepgaze_jax.model import Ensemble

    members = [init_params(ModelConfig(backbone="fake", readout_features=f), jax.random.PRNGKey(k))
               for k, f in enumerate([(1,), (4, 1)])]
    client = serve.create_app(Ensemble(members)).test_client()
    assert client.get("/healthz").get_json() == {"status": "ok", "backbone": "fake+fake", "components": 2}
    image = random_image(48, 64, seed=4)
    reply = client.post("/api/density?format=npy", data={"image": (io.BytesIO(encode(image)), "x.png")})
    assert reply.status_code == 200, reply.data
    np.testing.assert_allclose(np.load(io.BytesIO(reply.data)), predict_density(members, image), atol=1e-6)


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


# The defects of issue 14 item 7 and the production server of issue 13 item 6.


def test_json_has_a_default_max_side(url):
    reply = post_density(url, encode(random_image(1200, 1600, seed=3)))
    body = reply.json()
    assert reply.status_code == 200, body
    assert (body["image_height"], body["image_width"]) == (1200, 1600)
    assert (body["height"], body["width"]) == (384, 512)  # ServiceLimits.json_default_side
    assert abs(logsumexp(body["log_density"])) < 1e-4
    assert len(reply.content) < 4 * 2**20


def test_json_max_side_is_capped(url):
    reply = post_density(url, encode(random_image(32, 32)), "?max_side=5000")
    assert reply.status_code == 400 and "format=npy" in reply.json()["error"]


def test_npy_response(url):
    data = encode(random_image(120, 160, seed=4))
    reply = post_density(url, data, "?format=npy")
    assert reply.status_code == 200 and reply.headers["Content-Type"] == "application/octet-stream"
    assert reply.headers["X-Units"] == "nats/pixel"
    assert (reply.headers["X-Image-Height"], reply.headers["X-Image-Width"]) == ("120", "160")
    full = np.load(io.BytesIO(reply.content), allow_pickle=False)
    assert full.shape == (120, 160) and full.dtype == np.float32
    assert abs(logsumexp(full)) < 1e-4
    small = np.load(io.BytesIO(post_density(url, data, "?format=npy&max_side=40").content), allow_pickle=False)
    assert small.shape == (30, 40)
    np.testing.assert_allclose(np.exp(small), np.exp(full).reshape(30, 4, 40, 4).sum(axis=(1, 3)), rtol=1e-3)


def test_bad_format(url):
    reply = post_density(url, encode(random_image(32, 32)), "?format=xml")
    assert reply.status_code == 400 and "json, npy" in reply.json()["error"]


def slow_decode(monkeypatch, delay_s: float) -> dict:
    """Makes `serve.decode_upload` take ``delay_s`` and count how many run at once."""
    state = {"active": 0, "most": 0}
    lock = threading.Lock()
    real = serve.decode_upload

    def counted(data, max_pixels):
        with lock:
            state["active"] += 1
            state["most"] = max(state["most"], state["active"])
        try:
            time.sleep(delay_s)
            return real(data, max_pixels)
        finally:
            with lock:
                state["active"] -= 1

    monkeypatch.setattr(serve, "decode_upload", counted)
    return state


def test_decoding_and_prediction_are_bounded(monkeypatch):
    state = slow_decode(monkeypatch, 0.3)
    with serve_fake_model(ServiceLimits(max_concurrent=2), threads=8) as base:
        data = encode(random_image(64, 64, seed=5))
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda _: post_density(base, data, "?max_side=16").status_code, range(8)))
    assert statuses == [200] * 8
    assert state["most"] == 2  # reached and never exceeded


def test_busy_service_answers_503(monkeypatch):
    slow_decode(monkeypatch, 1.5)
    with serve_fake_model(ServiceLimits(max_concurrent=1, busy_timeout_s=0.2), threads=4) as base:
        data = encode(random_image(64, 64, seed=6))
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            replies = list(pool.map(lambda _: post_density(base, data), range(2)))
    assert sorted(r.status_code for r in replies) == [200, 503]
    assert "busy" in next(r for r in replies if r.status_code == 503).json()["error"]


def closed_by_server(sock: socket.socket, within_s: float, trickle: bytes = b"") -> bool:
    """Whether the server closes ``sock`` within ``within_s`` while we send ``trickle`` one byte per 0.1 s."""
    deadline = time.monotonic() + within_s
    sock.settimeout(0.1)
    position = 0
    while time.monotonic() < deadline:
        try:
            if sock.recv(1024) == b"":
                return True
        except socket.timeout:
            pass
        except ConnectionError:
            return True
        if position < len(trickle):
            try:
                sock.send(trickle[position : position + 1])
            except (BrokenPipeError, ConnectionError):
                return True
            position += 1
    return False


def test_trickling_client_is_cut_off_and_holds_no_worker():
    with serve_fake_model(threads=1, read_timeout_s=1.0, channel_timeout_s=30, cleanup_interval_s=1) as base:
        port = int(base.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as slow:
            headers = "Host: x\r\nContent-Type: multipart/form-data; boundary=B\r\nContent-Length: 100000\r\n"
            slow.sendall(f"POST /api/density HTTP/1.1\r\n{headers}\r\n--B\r\n".encode())
            started = time.monotonic()
            assert requests.get(f"{base}/healthz", timeout=5).status_code == 200  # the one worker is free
            assert closed_by_server(slow, within_s=6.0, trickle=b"a" * 100)
            assert time.monotonic() - started < 6.0


def test_idle_connections_are_closed():
    with serve_fake_model(threads=2, channel_timeout_s=1, cleanup_interval_s=1) as base:
        port = int(base.rsplit(":", 1)[1])
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
        try:
            assert requests.get(f"{base}/healthz", timeout=5).status_code == 200
            deadline = time.monotonic() + 8.0
            assert all(closed_by_server(s, within_s=max(0.1, deadline - time.monotonic())) for s in idle)
        finally:
            for s in idle:
                s.close()


def test_100_concurrent_requests():
    sizes = [(64, 64), (64, 96), (96, 64), (48, 64)]
    uploads = [encode(random_image(*sizes[i % 4], seed=100 + i)) for i in range(100)]

    def timed(i: int):
        started = time.perf_counter()
        reply = post_density(base, uploads[i], "?max_side=32")
        return i, reply.status_code, reply.json(), time.perf_counter() - started

    with serve_fake_model(threads=4) as base:
        for size in sizes:  # compile each shape once, outside the timing
            assert post_density(base, encode(random_image(*size)), "?max_side=32").status_code == 200
        barrier_start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(100) as pool:
            results = list(pool.map(timed, range(100)))
        wall_s = time.perf_counter() - barrier_start
    assert len(results) == 100
    for i, status, body, _ in results:
        assert status == 200, body
        assert (body["image_height"], body["image_width"]) == sizes[i % 4]
        assert abs(logsumexp(body["log_density"])) < 1e-4
    latencies = np.array([r[3] for r in results])
    print(
        f"\n100 concurrent requests: all answered; latency p50 {np.percentile(latencies, 50):.2f} s, "
        f"p95 {np.percentile(latencies, 95):.2f} s, max {latencies.max():.2f} s; wall {wall_s:.2f} s"
    )


def test_waitress_refuses_bodies_far_over_the_limit():
    with serve_fake_model(ServiceLimits(max_upload_bytes=1000)) as base:
        reply = post_density(base, b"\0" * (2 * 2**20))  # beyond the limit + serve.MULTIPART_OVERHEAD_BYTES
        assert reply.status_code == 413
        small_over = post_density(base, b"\0" * 2000)  # over the app's limit, within waitress's: the app's JSON 413
        assert small_over.status_code == 413 and "1000 bytes" in small_over.json()["error"]
