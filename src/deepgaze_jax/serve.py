"""``deepgaze-jax serve``: a small web service around `predict_density`.

Routes (`create_app`):

* ``GET /``: a page with an upload form (plain HTML, no scripts, no external resources).
* ``POST /view`` (multipart field ``image``): the page with the density drawn over the
  image as a heat map and the three equal-mass contours (`plotting.draw_density`),
  rendered server-side to an inline PNG. ``GET /view?demo=1`` does the same for a
  generated demo image.
* ``POST /api/density`` (multipart field ``image``; optional ``?max_side=N``): JSON
  ``{"height", "width", "image_height", "image_width", "log_density": [[...]],
  "units": "nats/pixel", "masses": [0.25, 0.5, 0.75], "levels": [...]}``. The log
  density has logsumexp 0 over the returned grid; with ``max_side`` the grid's longer
  side is at most N pixels and each cell holds the probability mass of the image area it
  covers. ``levels`` are `plotting.equal_mass_levels` of the returned grid.
* ``GET /healthz``: ``{"status": "ok", ...}``.

Limits: uploads over ``max_upload_bytes`` (default 20 MiB) get 413, images over
``max_pixels`` (default 40 megapixels, checked from the header before decoding) get 413,
anything that does not decode as an image gets 400; API errors are JSON ``{"error": ...}``.
Uploads are decoded from memory: the service writes no files at all.

``deepgaze-jax serve`` (`serve_cli`) runs it in Werkzeug's threaded WSGI server (Flask's
development server without the reloader or debugger), bound to 127.0.0.1 by default;
model calls and Matplotlib rendering are serialised with locks, everything else runs
concurrently. For a public
deployment put it behind a reverse proxy or serve ``create_app(model)`` with a
production WSGI server.
"""

from __future__ import annotations

import base64
import io
import threading
from typing import Any

import numpy as np
from flask import Flask, Request, jsonify, redirect, render_template_string, request
from PIL import Image, UnidentifiedImageError
from werkzeug.exceptions import HTTPException

from deepgaze_jax import images, plotting
from deepgaze_jax.densities import resize_log_density
from deepgaze_jax.model import DeepGazeParams
from deepgaze_jax.predict import predict_density

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_IMAGE_PIXELS = 40_000_000
DISPLAY_SIDE = 768  # longer side of the overlay picture on the page
UPLOAD_FIELD = "image"
JSON_DECIMALS = 5  # log densities are rounded to 1e-5 nats in JSON


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


def _uploaded_bytes() -> bytes:
    upload = request.files.get(UPLOAD_FIELD)
    if upload is None:
        raise ServiceError(400, f"send the image as multipart/form-data in the field {UPLOAD_FIELD!r}")
    return upload.read()


def create_app(
    model: DeepGazeParams, max_upload_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_IMAGE_PIXELS
) -> Flask:
    """The Flask app serving ``model`` (see the module docstring for routes and limits)."""
    app = Flask(__name__)
    app.request_class = InMemoryRequest
    app.config["MAX_CONTENT_LENGTH"] = max_upload_bytes
    model_lock, plot_lock = threading.Lock(), threading.Lock()

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
        return result_page(demo_image(), "demo image")

    @app.post("/view")
    def view_upload():
        image = decode_upload(_uploaded_bytes(), max_pixels)
        return result_page(image, request.files[UPLOAD_FIELD].filename or "upload")

    @app.post("/api/density")
    def api_density():
        max_side = _max_side_argument()
        image = decode_upload(_uploaded_bytes(), max_pixels)
        log_density = density(image)
        if max_side is not None:
            log_density = resize_log_density(log_density, fit_size(log_density.shape, max_side))
        body: dict[str, Any] = {
            "height": int(log_density.shape[0]),
            "width": int(log_density.shape[1]),
            "image_height": int(image.shape[0]),
            "image_width": int(image.shape[1]),
            "units": "nats/pixel",
            "masses": list(plotting.QUARTILES),
            "levels": [float(v) for v in plotting.equal_mass_levels(log_density)],
            "log_density": np.round(log_density.astype(np.float64), JSON_DECIMALS).tolist(),
        }
        return jsonify(body)

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok", backbone=model.config.backbone, components=model.num_components)

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

