"""DeepGaze IIE's readout spelled out with flax layers, as the reference of the tests."""

import flax.linen as nn
import jax.numpy as jnp

from deepgaze_jax.readout import CONSTANT_STD, LAYER_NORM_EPS


def iie_reference(variables, x):
    """Per-image LayerNorm (flax, no gain or shift) of the fixed-standardised (B, h, w, C) grid (0 for a
    channel of std below `CONSTANT_STD`), then
    the Dense layers of ``variables["params"]`` with softplus between them and a LayerNorm before each."""
    stats, params = variables["stats"], variables["params"]
    std = stats["std"]
    h = jnp.where(std >= CONSTANT_STD, (x - stats["mean"]) / std, 0.0)
    for i in range(len(params)):
        if i > 0:
            h = nn.softplus(h)
        norm = nn.LayerNorm(epsilon=LAYER_NORM_EPS, use_bias=False, use_scale=False, reduction_axes=(1, 2, 3),
                            use_fast_variance=False)
        h = nn.Dense(params[f"layer{i}"]["kernel"].shape[1]).apply({"params": params[f"layer{i}"]}, norm.apply({}, h))
    return h[..., 0]
