"""VGG-19 (torchvision's ``vgg19().features``) as a pure JAX function.

Layers are named like the paper (``conv5_1``, ``relu5_1``, ``pool4``...) and map one-to-one
onto torchvision's ``features.{i}`` modules: conv5_1 = 28, relu5_1 = 29, relu5_2 = 31,
conv5_3 = 32, relu5_4 = 35 (DeepGaze II's five taps, all at stride 16, 512 channels).

Weights are torchvision's ImageNet ``vgg19-dcbb9e9d.pth``. `load_weights` keeps only the
``features.*`` entries (80 MB of the 548 MB file; the classifier is never read), with the
torch key names but the kernels converted once to HWIO ``(3, 3, I, O)`` float32.

Inputs are RGB in 0..255, scaled to 0..1 and normalised with the ImageNet mean/std that
torchvision's models were trained with.
"""

from __future__ import annotations

import functools
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from deepgaze_jax import settings
from deepgaze_jax.backbones import Backbone, Weights, register
from deepgaze_jax.backbones._ops import cast, conv2d, hwio, normalise, resolve_taps
from deepgaze_jax.weights import WeightsError, fetch, read_pth

URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
SHA256_PREFIX = "dcbb9e9d"
ENV_VAR = settings.weights_variable("vgg19")
MEAN = tuple(255.0 * m for m in (0.485, 0.456, 0.406))
STD = tuple(255.0 * s for s in (0.229, 0.224, 0.225))

_BLOCK_WIDTHS = ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4)


def _layer_table() -> tuple[tuple[str, int, int, int], ...]:
    """(name, torchvision index, stride, channels) for every layer of ``vgg19().features``."""
    layers, index = [], 0
    for block, widths in enumerate(_BLOCK_WIDTHS, 1):
        stride = 2 ** (block - 1)
        for conv, width in enumerate(widths, 1):
            layers += [(f"conv{block}_{conv}", index, stride, width), (f"relu{block}_{conv}", index + 1, stride, width)]
            index += 2
        layers.append((f"pool{block}", index, 2 * stride, widths[-1]))
        index += 1
    return tuple(layers)


LAYERS = _layer_table()
DEFAULT_TAPS = ("conv5_1", "relu5_1", "relu5_2", "conv5_3", "relu5_4")
STRIDES = {name: stride for name, _, stride, _ in LAYERS}
CHANNELS = {name: channels for name, _, _, channels in LAYERS}
_CONV_INDICES = tuple(index for name, index, _, _ in LAYERS if name.startswith("conv"))
_POSITION = {name: position for position, (name, _, _, _) in enumerate(LAYERS)}


def load_weights(path: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """torchvision's VGG-19 ``features`` weights: ``features.{i}.weight`` (3, 3, I, O), ``.bias`` (O,).

    ``path`` (or ``$DEEPGAZE_JAX_VGG19_WEIGHTS``) overrides the cached download of `URL`.
    """
    file = fetch(URL, SHA256_PREFIX, URL.rsplit("/", 1)[1], path=path, env_var=ENV_VAR)
    raw = read_pth(file, keys=lambda key: key.startswith("features."))
    expected = [f"features.{i}.{p}" for i in _CONV_INDICES for p in ("weight", "bias")]
    missing = [key for key in expected if key not in raw]
    if missing:
        raise WeightsError(f"{file}: not torchvision VGG-19 weights (missing {missing[:4]}...)")
    return {key: hwio(raw[key]) if key.endswith("weight") else np.asarray(raw[key], np.float32) for key in expected}


@functools.partial(jax.jit, static_argnames=("taps", "dtype"))
def _features(weights: Weights, images: jax.Array, taps: tuple[str, ...], dtype: jnp.dtype) -> dict[str, jax.Array]:
    weights = cast(weights, dtype)
    x = normalise(images, MEAN, STD, dtype)
    outputs = {}
    for name, index, _, _ in LAYERS[: max(_POSITION[tap] for tap in taps) + 1]:
        if name.startswith("conv"):
            w, b = weights[f"features.{index}.weight"], weights[f"features.{index}.bias"]
            x = conv2d(x, w, b, padding=((1, 1), (1, 1)))
        elif name.startswith("relu"):
            x = jax.nn.relu(x)
        else:
            x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        if name in taps:
            outputs[name] = x.astype(jnp.float32)
    return outputs


def features(
    weights: Weights, images: jax.Array, taps: Sequence[str] | None = None, dtype: jnp.dtype = jnp.float32
) -> dict[str, jax.Array]:
    """VGG-19 activations at ``taps`` (default `DEFAULT_TAPS`).

    Args:
      weights: from `load_weights` (NumPy or device arrays; passed as a pytree, not baked in).
      images: (B, H, W, 3) RGB, 0..255.
      taps: layer names from `LAYERS`; computation stops after the deepest one.
      dtype: compute dtype (e.g. ``jnp.bfloat16``); outputs are float32 either way.

    Returns:
      ``{tap: (B, H / s, W / s, C) float32}`` with s = ``STRIDES[tap]``, C = ``CHANNELS[tap]``.
    """
    taps = resolve_taps(taps, DEFAULT_TAPS, STRIDES)
    outputs = _features(weights, images, taps, jnp.dtype(dtype))
    return {tap: outputs[tap] for tap in taps}  # jit returns dicts in sorted key order


VGG19 = register(Backbone(
    name="vgg19",
    taps=DEFAULT_TAPS,
    strides=STRIDES,
    channels=CHANNELS,
    load_weights=load_weights,
    features=features,
    module=__name__,
))
