"""The readout network (paper, section 2.2): 1x1 convolutions over the frozen features.

DeepGaze II reads the saliency out of the concatenated backbone taps with four
1x1 convolutions of 16, 32, 2 and 1 channels, each but the last followed by a
ReLU. A 1x1 convolution is a `nn.Dense` over the channel axis (the same maths;
``nn.Conv((1, 1))`` measured 17x slower per L-BFGS step on CPU). ``features=(1,)``
gives the linear readout of DeepGaze I (Kümmerer et al. 2015).

Every channel is standardised with fixed statistics of the training features
(collection ``"stats"``), so that the readout sees inputs of unit scale whatever
the backbone. The standardisation is folded into the first layer
(`StandardizedDense`: (x - m) / s @ W + b = x @ (W / s) + (b - (m / s) @ W)), so the
grid enters the matmul as stored: a bfloat16 grid is multiplied in bfloat16 with
float32 accumulation (no standardised float32 copy of it), any other grid in float32.
A channel whose training std is below `CONSTANT_STD` (constant on the training images, e.g. the
dead channels of EfficientNet-Lite0's ``block10_depthwise``) is standardised to 0: it carries
nothing to learn from, and dividing by its floored std would multiply its rounding noise (and any
value it takes on an unseen image) by up to 1e6, in the folded weights too.

Kind ``"iie"``: the saliency network of DeepGaze IIE (Linardos et al. 2021; ``deepgaze2e.py``
of the DeepGaze repository), 1x1 convolutions of 8, 16 and 1 channels with softplus between
them and a LayerNorm before each. Its LayerNorm (``deepgaze_pytorch.layers.LayerNorm``) takes
one mean and one variance per image over all channels *and positions* (torch ``layer_norm``
over (C, H, W)), with eps 1e-12. Differences, each documented where it is made:

* eps is `LAYER_NORM_EPS` = 1e-6 (IIE: 1e-12), which keeps a constant (e.g. all-zero) image finite
  in float32 and is negligible next to the unit variance of standardised features;

* the first LayerNorm normalises the fixed-standardised features (IIE: the raw ones), so that
  every channel counts equally in the image's statistics whatever its scale; the other two
  normalise the hidden layers as IIE does;
* the LayerNorms have no gain and shift of their own: each feeds a 1x1 convolution, which
  absorbs a per-channel gain and shift exactly (the same functions), and the weight decay on
  the kernels would not reach them;
* the last layer is linear (IIE ends in a softplus that feeds its fixation-selection network, a
  further 1-128-16-1 network of the saliency value alone, not built here).

The first layer still takes one matmul over the grid as stored (`LayerNormedDense`): with
z = (x - m) / s and u = (z - mu) / sigma (mu, sigma per image),
u @ W = (x @ (W / s) - m @ (W / s) - mu 1^T W) / sigma, where mu and sigma come from each
channel's per-image mean and squared deviation (two float32 reductions over the grid that do
not depend on the parameters, so vmapped models share them; no cancellation: `image_moments`).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

PAPER_FEATURES = (16, 32, 2, 1)
LINEAR_FEATURES = (1,)
IIE_FEATURES = (8, 16, 1)
KINDS = ("deepgaze2", "iie")
"""Readout kinds: DeepGaze II's (fixed standardisation, ReLU) and DeepGaze IIE's (LayerNorm, softplus)."""
LAYER_NORM_EPS = 1e-6
"""Added to the per-image variance of every LayerNorm of the ``"iie"`` kind."""
CONSTANT_STD = 1e-4
"""Channels of a smaller training std are standardised to 0 (module docstring); below the float16
feature cache's resolution for activations of unit scale."""


@dataclasses.dataclass(frozen=True)
class ReadoutSpec:
    """A readout by its `ModelConfig` fields: ``kind`` (one of `KINDS`) and the layer widths."""

    kind: str
    features: tuple[int, ...]


READOUTS = {
    "paper": ReadoutSpec("deepgaze2", PAPER_FEATURES),
    "linear": ReadoutSpec("deepgaze2", LINEAR_FEATURES),
    "iie": ReadoutSpec("iie", IIE_FEATURES),
}
"""Readouts by command-line name: the paper's 16-32-2-1, DeepGaze I's linear one, DeepGaze IIE's 8-16-1."""


def _first_layer_params(module: nn.Module, channels: int) -> tuple[jnp.ndarray, jnp.ndarray]:
    """``nn.Dense``'s kernel and bias (same names and initialisation) of a first layer."""
    kernel = module.param("kernel", nn.initializers.lecun_normal(), (channels, module.features), jnp.float32)
    bias = module.param("bias", nn.initializers.zeros_init(), (module.features,), jnp.float32)
    return kernel, bias


def grid_matmul(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
    """``x @ kernel`` with float32 accumulation, in bfloat16 for a bfloat16 grid (else float32)."""
    compute = jnp.bfloat16 if x.dtype == jnp.bfloat16 else jnp.float32
    return jnp.dot(x.astype(compute), kernel.astype(compute), preferred_element_type=jnp.float32)


def inverse_std(std: jnp.ndarray) -> jnp.ndarray:
    """1 / ``std`` per channel, 0 for a channel of std below `CONSTANT_STD` (standardised to 0)."""
    return jnp.where(std >= CONSTANT_STD, 1.0 / jnp.maximum(std, CONSTANT_STD), 0.0)


def check_kind(kind: str) -> None:
    """Raises a ValueError naming the choices unless ``kind`` is one of `KINDS`."""
    if kind not in KINDS:
        raise ValueError(f"unknown readout kind {kind!r}; choose one of {', '.join(KINDS)}")


def fold_first_layer(kernel: jnp.ndarray, bias: jnp.ndarray, mean: jnp.ndarray, std: jnp.ndarray) -> dict:
    """The first layer's values that depend on its parameters and statistics only, not on the grid:
    ``kernel`` (C, F) scaled by `inverse_std` (the standardisation folded in), ``offset`` = mean @ kernel,
    the unscaled kernel's ``column_sums`` (F,), and ``bias``, ``mean``, ``std`` as given. `first_layer`
    takes them with ``grid_matmul(x, folded["kernel"])``; computed once, they serve any number of grids
    (`prepared_head`)."""
    scaled = kernel * inverse_std(std)[:, None]
    return {"kernel": scaled, "offset": mean @ scaled, "column_sums": jnp.sum(kernel, axis=0), "bias": bias,
            "mean": mean, "std": std}


def first_layer(kind: str, folded: dict, x: jnp.ndarray, product: jnp.ndarray) -> jnp.ndarray:
    """(B, h, w, F) output of the first layer of a readout of ``kind`` over the (B, h, w, C) grid ``x``, from
    `fold_first_layer`'s values and ``product`` = ``grid_matmul(x, folded["kernel"])``: ``"deepgaze2"``
    standardises by fixed statistics, ``"iie"`` then normalises per image (module docstring)."""
    check_kind(kind)
    if kind != "iie":
        return product + (folded["bias"] - folded["offset"])
    mu, sigma = standardized_image_stats(x, folded["mean"], folded["std"])
    offset = folded["offset"] + mu[:, None] * folded["column_sums"]
    return (product - offset[:, None, None, :]) / sigma[:, None, None, None] + folded["bias"]


def first_layer_module(module: nn.Module, kind: str, x: jnp.ndarray, mean: jnp.ndarray, std: jnp.ndarray) -> jnp.ndarray:
    """The first layer ``module`` (its parameters: `_first_layer_params`) of a readout of ``kind`` over ``x``."""
    folded = fold_first_layer(*_first_layer_params(module, x.shape[-1]), mean, std)
    return first_layer(kind, folded, x, grid_matmul(x, folded["kernel"]))


class StandardizedDense(nn.Module):
    """``nn.Dense`` (same parameters and initialisation) over inputs standardised by ``mean``, ``std``."""

    features: int

    @nn.compact
    def __call__(self, x: jnp.ndarray, mean: jnp.ndarray, std: jnp.ndarray) -> jnp.ndarray:
        return first_layer_module(self, "deepgaze2", x, mean, std)


def image_moments(x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """(B, h, w, C) -> per image and channel, (B, C) float32 each: a reference value r (the channel at
    the first position), the mean over positions of x - r, and the mean squared deviation from the mean.

    Sums of deviations, not of values: neither the cancellation of E[x^2] - E[x]^2 nor the rounding of
    a float32 sum of large values (about 1e-3 for a channel of mean 1e4) reaches the result.
    """
    x = x.astype(jnp.float32)
    reference = x[:, 0, 0, :]
    deviation = jnp.mean(x - reference[:, None, None, :], axis=(1, 2))
    mean = reference + deviation
    return reference, deviation, jnp.mean(jnp.square(x - mean[:, None, None, :]), axis=(1, 2))


def standardized_image_stats(x: jnp.ndarray, mean: jnp.ndarray, std: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Mean and std (``LAYER_NORM_EPS`` added to the variance) over positions and channels of
    z = (x - mean) / std (`inverse_std`), per image: (B,), (B,). From `image_moments` by the law of
    total variance: var z = mean_c (v_c / s_c^2 + (d_c - mu)^2), d_c = (a_c - m_c) / s_c, mu = mean_c d_c."""
    reference, deviation, channel_var = image_moments(x)
    inverse = inverse_std(std)
    centred = ((reference - mean) + deviation) * inverse
    mu = jnp.mean(centred, axis=-1)
    var = jnp.mean(channel_var * jnp.square(inverse) + jnp.square(centred - mu[:, None]), axis=-1)
    return mu, jnp.sqrt(var + LAYER_NORM_EPS)


class LayerNormedDense(nn.Module):
    """``nn.Dense`` (same parameters and initialisation) over the per-image LayerNorm (no gain or shift)
    of the inputs standardised by ``mean``, ``std`` (module docstring), from one matmul over ``x``."""

    features: int

    @nn.compact
    def __call__(self, x: jnp.ndarray, mean: jnp.ndarray, std: jnp.ndarray) -> jnp.ndarray:
        return first_layer_module(self, "iie", x, mean, std)


def image_layer_norm(x: jnp.ndarray) -> jnp.ndarray:
    """(B, h, w, C) normalised per image over positions and channels (IIE's LayerNorm, no gain or shift)."""
    mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=(1, 2, 3), keepdims=True)
    return (x - mean) / jnp.sqrt(var + LAYER_NORM_EPS)


def readout_tail(kind: str, x: jnp.ndarray, layers: Sequence[Callable[[jnp.ndarray], jnp.ndarray]]) -> jnp.ndarray:
    """(B, h, w) saliency from the (B, h, w, F) first-layer output ``x`` through the later 1x1 ``layers``
    (each ``x @ kernel + bias``), with the activations (and, for ``"iie"``, the LayerNorms) of ``kind``."""
    check_kind(kind)
    iie = kind == "iie"
    for layer in layers:
        x = nn.softplus(x) if iie else nn.relu(x)
        x = layer(image_layer_norm(x) if iie else x)
    return x[..., 0]


class Readout(nn.Module):
    """(B, h, w, C) feature grid -> (B, h, w) saliency (unnormalised, nats).

    ``kind`` ``"deepgaze2"``: ReLU between the layers; ``"iie"``: a per-image LayerNorm before
    every layer and softplus between them (module docstring).
    """

    features: Sequence[int] = PAPER_FEATURES
    kind: str = "deepgaze2"

    @nn.compact
    def __call__(self, grid: jnp.ndarray) -> jnp.ndarray:
        check_kind(self.kind)
        if not self.features or self.features[-1] != 1:
            raise ValueError(f"the readout must end in 1 channel, got features={tuple(self.features)}")
        channels = grid.shape[-1]
        mean = self.variable("stats", "mean", jnp.zeros, (channels,), jnp.float32)
        std = self.variable("stats", "std", jnp.ones, (channels,), jnp.float32)
        first = LayerNormedDense if self.kind == "iie" else StandardizedDense
        x = first(self.features[0], name="layer0")(grid, mean.value, std.value)
        return readout_tail(self.kind, x, [nn.Dense(w, name=f"layer{i}") for i, w in enumerate(self.features[1:], 1)])
