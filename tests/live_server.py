"""The service (`deepgaze_jax.serve`) with the fake-backbone model, over real HTTP on 127.0.0.1, for tests."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import jax
import numpy as np
from werkzeug.serving import make_server

import fake_backbone  # noqa: F401  (registers ModelConfig(backbone="fake"))
from deepgaze_jax import ModelConfig, init_params
from deepgaze_jax.serve import create_app


def two_blob_centerbias(height: int = 48, width: int = 64) -> np.ndarray:
    """A log density over the unit square with two peaks, so that densities have clear contours."""
    yy, xx = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]

    def blob(cx: float, cy: float, sigma: float) -> np.ndarray:
        return -((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2)

    return np.logaddexp(blob(0.3, 0.4, 0.08), blob(0.7, 0.6, 0.12)).astype(np.float32)


@contextlib.contextmanager
def serve_fake_model(**limits) -> Iterator[str]:
    """Runs ``create_app(fake model, **limits)`` in a threaded server on a free port; yields its base URL."""
    model = init_params(ModelConfig(backbone="fake"), jax.random.PRNGKey(0), centerbias=two_blob_centerbias())
    app = create_app(model, **limits)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
