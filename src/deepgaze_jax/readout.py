"""The readout network (paper, section 2.2): 1x1 convolutions over the frozen features.

DeepGaze II reads the saliency out of the concatenated backbone taps with four
1x1 convolutions of 16, 32, 2 and 1 channels, each but the last followed by a
ReLU. A 1x1 convolution is a `nn.Dense` over the channel axis (the same maths;
``nn.Conv((1, 1))`` measured 17x slower per L-BFGS step on CPU). ``features=(1,)``
gives the linear readout of DeepGaze I (Kümmerer et al. 2015).

Before the first layer every channel is standardised with fixed statistics of
the training features (`FeatureStats`, collection ``"stats"``), so that the
readout sees inputs of unit scale whatever the backbone.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

PAPER_FEATURES = (16, 32, 2, 1)
LINEAR_FEATURES = (1,)
READOUTS = {"paper": PAPER_FEATURES, "linear": LINEAR_FEATURES}
"""Readouts by command-line name: the paper's 16-32-2-1, and DeepGaze I's linear one."""


class Readout(nn.Module):
    """(B, h, w, C) feature grid -> (B, h, w) saliency (unnormalised, nats)."""

    features: Sequence[int] = PAPER_FEATURES

    @nn.compact
    def __call__(self, grid: jnp.ndarray) -> jnp.ndarray:
        channels = grid.shape[-1]
        mean = self.variable("stats", "mean", jnp.zeros, (channels,), jnp.float32)
        std = self.variable("stats", "std", jnp.ones, (channels,), jnp.float32)
        x = (grid.astype(jnp.float32) - mean.value) / std.value
        for i, width in enumerate(self.features):
            x = nn.Dense(width, name=f"layer{i}")(x)
            if i < len(self.features) - 1:
                x = nn.relu(x)
        if x.shape[-1] != 1:
            raise ValueError(f"the readout must end in 1 channel, got features={tuple(self.features)}")
        return x[..., 0]
