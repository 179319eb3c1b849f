"""A tiny deterministic backbone (average pooling + fixed random mixing) for fast model tests.

Importing this module registers it as ``ModelConfig(backbone="fake")``.
"""

import jax.numpy as jnp
import numpy as np

from deepgaze_jax.backbones import Backbone, register


def _pool(x, stride):
    b, h, w, c = x.shape
    return x.reshape(b, h // stride, stride, w // stride, stride, c).mean(axis=(2, 4))


def _features(weights, images, taps=("fine", "coarse")):
    x = images / 255.0
    out = {
        "fine": jnp.tanh(_pool(x, 16) @ weights["fine"]),
        "coarse": jnp.tanh(_pool(x, 32) @ weights["coarse"]),
    }
    return {t: out[t] for t in taps}


def _load_weights(path=None):
    rng = np.random.default_rng(0)
    return {"fine": rng.normal(size=(3, 5)).astype(np.float32), "coarse": rng.normal(size=(3, 4)).astype(np.float32)}


FAKE = register(Backbone(
    name="fake",
    taps=("fine", "coarse"),
    strides={"fine": 16, "coarse": 32},
    channels={"fine": 5, "coarse": 4},
    load_weights=_load_weights,
    features=_features,
    module=__name__,
))

