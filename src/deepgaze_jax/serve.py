"""``deepgaze-jax serve``: a small web service around `predict_density`.

Routes (`create_app`):

* ``GET /``: a page with an upload form (plain HTML, no scripts, no external resources).
* ``POST /view`` (multipart field ``image``): the page with the density drawn over the
  image as a heat map and the three equal-mass contours (`plotting.draw_density`),
  rendered server-side to an inline PNG. ``GET /view?demo=1`` does the same for a
  generated demo image.
* ``POST /api/density`` (multipart field ``image``; optional ``?max_side=N`` and
  ``?format=json|npy``): by default JSON ``{"height", "width", "image_height",
  "image_width", "log_density": [[...]], "units": "nats/pixel", "masses": [0.25, 0.5,
  0.75], "levels": [...]}`` on a grid whose longer side is at most ``max_side``
  (default `ServiceLimits.json_default_side`, 512: the model's working resolution, so
  nothing the model resolves is lost; at most `ServiceLimits.json_max_side`). Each cell
  holds the probability mass of the image area it covers and the log density has
  logsumexp 0 over the returned grid; ``levels`` are `plotting.equal_mass_levels` of it.
  ``format=npy`` returns the float32 log density as a ``.npy`` file instead (full image
  resolution unless ``max_side`` is given; sizes and units in ``X-*`` headers).
* ``GET /healthz``: ``{"status": "ok", ...}``.

Limits (`ServiceLimits`): uploads over ``max_upload_bytes`` (default 20 MiB) get 413,
images over ``max_pixels`` (default 40 megapixels, checked from the header before
decoding) get 413, anything that does not decode as an image gets 400; at most
``max_concurrent`` requests (default 2) read, decode, predict and encode at once, the
others wait up to ``busy_timeout_s`` and then get 503. API errors are JSON ``{"error": ...}``.
Uploads are decoded from memory: the app writes no files.

`make_server` runs the app on waitress, a production WSGI server (`ServerConfig`):
a fixed pool of worker threads, connections that send nothing for ``channel_timeout_s``
are closed, and so is any connection whose request has not arrived completely within
``read_timeout_s`` (a client trickling bytes holds no worker thread, and not its
connection for long). Waitress buffers request bodies before the app sees them (over
512 KiB in an anonymous temporary file) and refuses bodies beyond the upload limit.
Model calls and Matplotlib rendering are serialised with locks. ``deepgaze-jax serve``
(`serve_cli`) binds 127.0.0.1 by default; for a public deployment put it behind a
reverse proxy.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import io
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
from flask import Flask, Request, Response, jsonify, redirect, render_template_string, request
from PIL import Image, UnidentifiedImageError
from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import TcpWSGIServer
from werkzeug.exceptions import HTTPException

from deepgaze_jax import images, plotting
from deepgaze_jax.densities import resize_log_density
from deepgaze_jax.model import ENSEMBLE_SEPARATOR, Model, ensemble_members
from deepgaze_jax.predict import predict_density

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_IMAGE_PIXELS = 40_000_000
MULTIPART_OVERHEAD_BYTES = 1024 * 1024  # room for form fields beyond the file before waitress refuses a body
DISPLAY_SIDE = 768  # longer side of the overlay picture on the page
UPLOAD_FIELD = "image"
JSON_DECIMALS = 5  # log densities are rounded to 1e-5 nats in JSON
FORMATS = ("json", "npy")


@dataclasses.dataclass(frozen=True)
class ServiceLimits:
    """What one request may cost the app (see the module docstring)."""

    max_upload_bytes: int = MAX_UPLOAD_BYTES
    max_pixels: int = MAX_IMAGE_PIXELS
    max_concurrent: int = 2  # requests reading, decoding, predicting and encoding at once
    busy_timeout_s: float = 60.0  # how long a request waits for one of those slots before a 503
    json_default_side: int = 512  # longer side of the JSON grid when the request gives no max_side
    json_max_side: int = 1024  # largest max_side for JSON; format=npy has no such cap

    def __post_init__(self) -> None:
        for name in ("max_upload_bytes", "max_pixels", "max_concurrent", "json_default_side", "json_max_side"):
            if getattr(self, name) < 1:
                raise ValueError(f"ServiceLimits.{name} must be a positive integer, got {getattr(self, name)}")
        if self.json_default_side > self.json_max_side:
            raise ValueError("ServiceLimits.json_default_side must not exceed json_max_side")


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """The waitress server of `make_server`: address, worker threads and time limits."""

    host: str = "127.0.0.1"
    port: int = 8000  # 0 picks a free port
    threads: int = 4  # WSGI worker threads
    connection_limit: int = 100  # open connections; more wait in the listen backlog
    backlog: int = 1024  # connections queued by the kernel before they are accepted
    channel_timeout_s: int = 30  # a connection that sends nothing for this long is closed
    read_timeout_s: float = 60.0  # a request must arrive completely (headers and body) within this
    cleanup_interval_s: int = 5  # how often those two timeouts are checked


class ServiceError(Exception):
    """A request the service refuses, with its HTTP status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class InMemoryRequest(Request):
    """Keeps uploaded files in memory (bounded by ``MAX_CONTENT_LENGTH``) instead of temporary files."""

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        return io.BytesIO()


def fit_size(shape: tuple[int, int], max_side: int) -> tuple[int, int]:
    """(height, width) scaled down, keeping the aspect ratio, so that the longer side is at most ``max_side``."""
    h, w = shape
    scale = min(1.0, max_side / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def decode_upload(data: bytes, max_pixels: int) -> np.ndarray:
    """Encoded image bytes -> (H, W, 3) uint8, refusing non-images (400) and oversized images (413)."""
    if not data:
        raise ServiceError(400, "the uploaded file is empty")
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
    except Image.DecompressionBombError as exc:
        raise ServiceError(413, f"image too large: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ServiceError(400, "not an image in a format Pillow reads (PNG, JPEG, GIF, BMP, TIFF, WebP, ...)") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ServiceError(400, f"corrupt image: {exc}") from exc
    if width * height > max_pixels:
        raise ServiceError(413, f"image of {width}x{height} pixels exceeds the limit of {max_pixels} pixels")
    try:
        return images.to_rgb_uint8(data)
    except images.ImageError as exc:
        raise ServiceError(400, str(exc)) from exc


class _TimedRequestParser(HTTPRequestParser):
    """Waitress's request parser, remembering when the request's first bytes arrived."""

    def __init__(self, adj):
        super().__init__(adj)
        self.started_s = time.monotonic()


class _TimedChannel(HTTPChannel):
    parser_class = _TimedRequestParser


class DeadlineServer(TcpWSGIServer):
    """Waitress's TCP server that also closes connections whose request takes over ``read_timeout_s`` to arrive.

    Waitress's own ``channel_timeout`` counts only idle time, so a client sending a byte
    every 0.1 s would keep its connection forever.
    """

    channel_class = _TimedChannel

    def __init__(self, application, read_timeout_s: float, **adjustments):
        self.read_timeout_s = read_timeout_s
        super().__init__(application, **adjustments)

    def stop(self) -> None:
        """Ends `run` (from another thread): stops the workers, closes every connection and the socket."""
        self.task_dispatcher.shutdown()
        wasyncore.close_all(self._map)

    def maintenance(self, now):
        super().maintenance(now)
        deadline = time.monotonic() - self.read_timeout_s
        for channel in list(self.active_channels.values()):
            partial = channel.request
            if partial is not None and not channel.requests and partial.started_s < deadline:
                channel.will_close = True


def make_server(app, config: ServerConfig = ServerConfig(), limits: ServiceLimits = ServiceLimits()) -> DeadlineServer:
    """A waitress server for ``app`` bound to ``config.host:config.port``; ``.run()`` serves, ``.stop()`` ends it.

    Bodies beyond ``limits.max_upload_bytes`` plus `MULTIPART_OVERHEAD_BYTES` are refused
    by waitress before they are buffered; smaller oversized uploads get the app's JSON 413.
    """
    return DeadlineServer(
        app,
        read_timeout_s=config.read_timeout_s,
        host=config.host,
        port=config.port,
        threads=config.threads,
        connection_limit=config.connection_limit,
        backlog=config.backlog,
        channel_timeout=config.channel_timeout_s,
        cleanup_interval=config.cleanup_interval_s,
        max_request_body_size=limits.max_upload_bytes + MULTIPART_OVERHEAD_BYTES,
        ident="deepgaze-jax",
    )


def demo_image(height: int = 384, width: int = 512) -> np.ndarray:
    """A generated picture (sky, ground, three objects) for ``/view?demo=1``."""
    yy, xx = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
    sky = np.stack([0.55 + 0.3 * yy, 0.7 + 0.2 * yy, np.full_like(yy, 0.95)], axis=-1)
    ground = np.stack([0.35 + 0.1 * xx, 0.5 - 0.1 * yy, np.full_like(xx, 0.25)], axis=-1)
    picture = np.where((yy > 0.62)[..., None], ground, sky)
    discs = (  # centre (x, y), radius (fractions of the width), colour
        ((0.25, 0.55), 0.08, (0.85, 0.15, 0.1)),
        ((0.7, 0.45), 0.12, (0.1, 0.2, 0.7)),
        ((0.5, 0.2), 0.05, (1, 0.9, 0.2)),
    )
    for (cx, cy), radius, colour in discs:
        inside = ((xx - cx) * width) ** 2 + ((yy - cy) * height) ** 2 < (radius * width) ** 2
        picture[inside] = colour
    return np.round(255 * np.clip(picture, 0, 1)).astype(np.uint8)


def _max_side_argument() -> int | None:
    raw = request.args.get("max_side")
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ServiceError(400, f"max_side must be a positive integer, got {raw!r}")
    return value


def _format_argument() -> str:
    value = request.args.get("format", "json")
    if value not in FORMATS:
        raise ServiceError(400, f"format must be one of {', '.join(FORMATS)}, got {value!r}")
    return value


def _grid_side(fmt: str, limits: ServiceLimits) -> int | None:
    """The longer side of the returned grid: ``max_side`` (capped for JSON), the JSON default, or None (full size)."""
    max_side = _max_side_argument()
    if fmt == "npy":
        return max_side
    if max_side is not None and max_side > limits.json_max_side:
        raise ServiceError(
            400, f"max_side {max_side} exceeds {limits.json_max_side} for JSON; use format=npy for larger grids"
        )
    return max_side or limits.json_default_side


def _json_body(log_density: np.ndarray, image_shape: tuple[int, ...]) -> dict[str, Any]:
    return {
        "height": int(log_density.shape[0]),
        "width": int(log_density.shape[1]),
        "image_height": int(image_shape[0]),
        "image_width": int(image_shape[1]),
        "units": "nats/pixel",
        "masses": list(plotting.QUARTILES),
        "levels": [float(v) for v in plotting.equal_mass_levels(log_density)],
        "log_density": np.round(log_density.astype(np.float64), JSON_DECIMALS).tolist(),
    }


def _npy_response(log_density: np.ndarray, image_shape: tuple[int, ...]) -> Response:
    buffer = io.BytesIO()
    np.save(buffer, log_density.astype(np.float32), allow_pickle=False)
    headers = {
        "Content-Disposition": 'attachment; filename="log_density.npy"',
        "X-Units": "nats/pixel",
        "X-Image-Height": str(image_shape[0]),
        "X-Image-Width": str(image_shape[1]),
    }
    return Response(buffer.getvalue(), mimetype="application/octet-stream", headers=headers)


class WorkSlots:
    """At most ``count`` requests at once in the expensive part; the others wait up to ``timeout_s``, then 503."""

    def __init__(self, count: int, timeout_s: float):
        self._semaphore = threading.BoundedSemaphore(count)
        self._timeout_s = timeout_s

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        if not self._semaphore.acquire(timeout=self._timeout_s):
            raise ServiceError(503, f"the service is busy (no slot free within {self._timeout_s:g} s); retry later")
        try:
            yield
        finally:
            self._semaphore.release()


def _uploaded_bytes() -> bytes:
    upload = request.files.get(UPLOAD_FIELD)
    if upload is None:
        raise ServiceError(400, f"send the image as multipart/form-data in the field {UPLOAD_FIELD!r}")
    return upload.read()


def create_app(model: Model, limits: ServiceLimits = ServiceLimits()) -> Flask:
    """The Flask app serving ``model``, one model or an `Ensemble` (see the module docstring for routes and limits)."""
    app = Flask(__name__)
    app.request_class = InMemoryRequest
    app.config["MAX_CONTENT_LENGTH"] = limits.max_upload_bytes
    model_lock, plot_lock = threading.Lock(), threading.Lock()
    slots = WorkSlots(limits.max_concurrent, limits.busy_timeout_s)
    max_upload_bytes, max_pixels = limits.max_upload_bytes, limits.max_pixels

    def density(image: np.ndarray) -> np.ndarray:
        with model_lock:
            return predict_density(model, image)

    def page(**fields) -> str:
        return render_template_string(PAGE, max_mb=max_upload_bytes / 2**20, max_mp=max_pixels / 1e6, **fields)

    def result_page(image: np.ndarray, name: str) -> str:
        log_density = density(image)
        size = fit_size(image.shape[:2], DISPLAY_SIDE)
        with plot_lock:
            png = plotting.render_png(
                plotting.overlay_figure(images.resize(image, size), resize_log_density(log_density, size))
            )
        return page(
            name=name,
            height=image.shape[0],
            width=image.shape[1],
            overlay=base64.b64encode(png).decode("ascii"),
            colors=plotting.CONTOUR_COLORS,
        )

    @app.errorhandler(ServiceError)
    def service_error(exc: ServiceError):
        return error_response(exc.status, exc.message)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        message = exc.description
        if exc.code == 413:
            message = f"upload larger than the limit of {max_upload_bytes} bytes"
        return error_response(exc.code or 500, message)

    def error_response(status: int, message: str):
        if request.path.startswith("/api/") or request.path == "/healthz":
            return jsonify(error=message, status=status), status
        return page(error=message), status

    @app.get("/")
    def index():
        return page()

    @app.get("/view")
    def view_demo():
        if request.args.get("demo") != "1":
            return redirect("/")
        with slots.hold():
            return result_page(demo_image(), "demo image")

    @app.post("/view")
    def view_upload():
        with slots.hold():
            image = decode_upload(_uploaded_bytes(), max_pixels)
            return result_page(image, request.files[UPLOAD_FIELD].filename or "upload")

    @app.post("/api/density")
    def api_density():
        fmt = _format_argument()
        side = _grid_side(fmt, limits)
        with slots.hold():
            image = decode_upload(_uploaded_bytes(), max_pixels)
            log_density = density(image)
            if side is not None:
                log_density = resize_log_density(log_density, fit_size(log_density.shape, side))
            if fmt == "npy":
                return _npy_response(log_density, image.shape)
            return jsonify(_json_body(log_density, image.shape))

    @app.get("/healthz")
    def healthz():
        members = ensemble_members(model)
        return jsonify(status="ok", backbone=ENSEMBLE_SEPARATOR.join(m.config.backbone for m in members),
                       components=sum(m.num_components for m in members))

    return app


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>DeepGaze II (JAX): where will people look?</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 60em; padding: 0 1em; color: #222; }
  form { margin: 1em 0; padding: 1em; background: #f3f3f3; border-radius: 6px; }
  .error { color: #b00020; font-weight: bold; }
  .legend span { display: inline-block; width: 2em; height: 0.5em; margin: 0 0.3em 0 1em; border: 1px solid #444; }
  img.overlay { display: block; margin: 1em 0; }
  small { color: #666; }
</style>
</head>
<body>
<h1>Where will people look?</h1>
<p>DeepGaze II predicts a probability density of fixations over an image.
Upload a picture to see it, or <a href="/view?demo=1">try a generated demo image</a>.</p>
<form method="post" action="/view" enctype="multipart/form-data">
  <input type="file" name="image" accept="image/*" required>
  <button type="submit">Predict</button>
  <br><small>Up to {{ "%.0f" % max_mb }} MiB and {{ "%.0f" % max_mp }} megapixels; any format Pillow reads.
  JSON API: <code>POST /api/density</code> with the same form field.</small>
</form>
{% if error %}<p class="error">{{ error }}</p>{% endif %}
{% if overlay %}
<h2>{{ name }} ({{ width }}&times;{{ height }} pixels)</h2>
<p class="legend">Contours enclose
  <span style="background: {{ colors[2] }}"></span>25%
  <span style="background: {{ colors[1] }}"></span>50%
  <span style="background: {{ colors[0] }}"></span>75%
  of the predicted fixations.</p>
<img class="overlay" alt="fixation density over {{ name }}" src="data:image/png;base64,{{ overlay }}">
{% endif %}
</body>
</html>
"""

