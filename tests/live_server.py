"""The service (`deepgaze_jax.serve`) with the fake-backbone model, over real HTTP on 127.0.0.1, for tests.

It runs on the production server of ``deepgaze-jax serve`` (`serve.make_server`, waitress).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import jax
import numpy as np

import fake_backbone  # noqa: F401  (registers ModelConfig(backbone="fake"))
from deepgaze_jax import ModelConfig, init_params
from deepgaze_jax.serve import ServerConfig, ServiceLimits, create_app, make_server


def two_blob_centerbias(height: int = 48, width: int = 64) -> np.ndarray:
    """A log density over the unit square with two peaks, so that densities have clear contours."""
    yy, xx = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]

    def blob(cx: float, cy: float, sigma: float) -> np.ndarray:
        return -((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2)

    return np.logaddexp(blob(0.3, 0.4, 0.08), blob(0.7, 0.6, 0.12)).astype(np.float32)


@contextlib.contextmanager
def serve_fake_model(limits: ServiceLimits = ServiceLimits(), **server) -> Iterator[str]:
    """Serves ``create_app(fake model, limits)`` with `make_server` on a free port; yields its base URL.

    ``server`` overrides `ServerConfig` fields (threads, timeouts).
    """
    model = init_params(ModelConfig(backbone="fake"), jax.random.PRNGKey(0), centerbias=two_blob_centerbias())
    httpd = make_server(create_app(model, limits), ServerConfig(port=0, **server), limits)
    thread = threading.Thread(target=httpd.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.effective_port}"
    finally:
        httpd.stop()
        thread.join(timeout=10)
