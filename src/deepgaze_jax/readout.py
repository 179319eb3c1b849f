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
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

PAPER_FEATURES = (16, 32, 2, 1)
LINEAR_FEATURES = (1,)
READOUTS = {"paper": PAPER_FEATURES, "linear": LINEAR_FEATURES}
"""Readouts by command-line name: the paper's 16-32-2-1, and DeepGaze I's linear one."""


class StandardizedDense(nn.Module):
    """``nn.Dense`` (same parameters and initialisation) over inputs standardised by ``mean``, ``std``."""

    features: int

    @nn.compact
    def __call__(self, x: jnp.ndarray, mean: jnp.ndarray, std: jnp.ndarray) -> jnp.ndarray:
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (x.shape[-1], self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
        compute = jnp.bfloat16 if x.dtype == jnp.bfloat16 else jnp.float32
        scaled = (kernel / std[:, None]).astype(compute)
        return jnp.dot(x.astype(compute), scaled, preferred_element_type=jnp.float32) + (bias - (mean / std) @ kernel)


class Readout(nn.Module):
    """(B, h, w, C) feature grid -> (B, h, w) saliency (unnormalised, nats)."""

    features: Sequence[int] = PAPER_FEATURES

    @nn.compact
    def __call__(self, grid: jnp.ndarray) -> jnp.ndarray:
        channels = grid.shape[-1]
        mean = self.variable("stats", "mean", jnp.zeros, (channels,), jnp.float32)
        std = self.variable("stats", "std", jnp.ones, (channels,), jnp.float32)
        x = StandardizedDense(self.features[0], name="layer0")(grid, mean.value, std.value)
        for i, width in enumerate(self.features):
            if i > 0:
                x = nn.Dense(width, name=f"layer{i}")(x)
            if i < len(self.features) - 1:
                x = nn.relu(x)
        if x.shape[-1] != 1:
            raise ValueError(f"the readout must end in 1 channel, got features={tuple(self.features)}")
        return x[..., 0]
