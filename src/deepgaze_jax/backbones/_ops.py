"""Layers shared by the backbones: NHWC convolution, kernel layout conversion, input normalisation."""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

Padding = Sequence[tuple[int, int]]


def hwio(kernel: np.ndarray) -> np.ndarray:
    """A torch ``(O, I/groups, kh, kw)`` kernel as a contiguous ``(kh, kw, I/groups, O)`` float32 array."""
    return np.ascontiguousarray(np.asarray(kernel, np.float32).transpose(2, 3, 1, 0))


def conv2d(
    x: jax.Array,
    kernel: jax.Array,
    bias: jax.Array | None = None,
    *,
    stride: int = 1,
    padding: Padding = ((0, 0), (0, 0)),
    groups: int = 1,
) -> jax.Array:
    """2-D convolution of NHWC ``x`` (B, H, W, I) with an HWIO ``kernel`` (kh, kw, I/groups, O).

    ``padding`` is explicit ((top, bottom), (left, right)) zero padding; ``groups == I`` makes
    the convolution depthwise. Returns (B, H', W', O), plus ``bias`` (O,) when given.
    Precision is JAX's default (TF32 for float32 on recent NVIDIA GPUs, about 1e-2 relative
    drift over a deep backbone); wrap calls in ``jax.default_matmul_precision("highest")``
    for true float32.
    """
    y = jax.lax.conv_general_dilated(
        x,
        kernel,
        window_strides=(stride, stride),
        padding=tuple(padding),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=groups,
    )
    return y if bias is None else y + bias


def depthwise_conv2d(
    x: jax.Array,
    kernel: jax.Array,
    bias: jax.Array | None = None,
    *,
    stride: int = 1,
    padding: Padding = ((0, 0), (0, 0)),
) -> jax.Array:
    """Depthwise convolution of NHWC ``x`` (B, H, W, C) with a ``(kh, kw, 1, C)`` kernel.

    The implementation depends on the platform it is compiled for: on CPU
    `shifted_slice_depthwise` (XLA:CPU lowers a grouped convolution to a generic kernel that
    measured 10-28x slower on EfficientNet-Lite0's depthwise layers, see docs/benchmarks.md),
    elsewhere `conv2d` with ``groups = C`` (cuDNN's depthwise kernels: on an H100 the Lite0
    trunk took 1.1 ms instead of 2.3 ms at batch 1, 6.0 instead of 6.7 ms at batch 32).
    Both give the same result to rounding.
    """
    y = jax.lax.platform_dependent(
        x,
        kernel,
        cpu=functools.partial(shifted_slice_depthwise, stride=stride, padding=padding),
        default=functools.partial(conv2d, stride=stride, padding=padding, groups=x.shape[-1]),
    )
    return y if bias is None else y + bias


def shifted_slice_depthwise(
    x: jax.Array, kernel: jax.Array, *, stride: int = 1, padding: Padding = ((0, 0), (0, 0))
) -> jax.Array:
    """Depthwise convolution as the sum of ``kh * kw`` shifted (strided) slices of the padded input.

    Each slice is scaled per channel and the products are summed in float32; XLA fuses the
    whole sum into one elementwise loop. Arguments as `depthwise_conv2d` (no bias).
    """
    kh, kw = kernel.shape[:2]
    xp = jnp.pad(x, ((0, 0), *padding, (0, 0)))
    out_h = (xp.shape[1] - kh) // stride + 1
    out_w = (xp.shape[2] - kw) // stride + 1
    acc = jnp.zeros((x.shape[0], out_h, out_w, x.shape[3]), jnp.float32)
    for i in range(kh):
        for j in range(kw):
            window = jax.lax.slice(
                xp,
                (0, i, j, 0),
                (xp.shape[0], i + stride * (out_h - 1) + 1, j + stride * (out_w - 1) + 1, xp.shape[3]),
                (1, stride, stride, 1),
            )
            acc = acc + (window * kernel[i, j, 0]).astype(jnp.float32)
    return acc.astype(x.dtype)


def normalise(images: jax.Array, mean: Sequence[float], std: Sequence[float], dtype: jnp.dtype) -> jax.Array:
    """``(images - mean) / std`` per RGB channel, in ``dtype``; images (B, H, W, 3) in 0..255."""
    mean_, std_ = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    return ((jnp.asarray(images, jnp.float32) - mean_) / std_).astype(dtype)


def cast(weights: dict[str, jax.Array], dtype: jnp.dtype) -> dict[str, jax.Array]:
    """Every weight array in ``dtype`` (a no-op for float32 weights and float32 compute)."""
    return {key: jnp.asarray(value, dtype) for key, value in weights.items()}


def resolve_taps(taps: Sequence[str] | None, default: tuple[str, ...], available: Sequence[str]) -> tuple[str, ...]:
    """``taps`` as a hashable tuple (``default`` when None); ValueError naming any unknown tap."""
    taps = default if taps is None else (taps,) if isinstance(taps, str) else tuple(taps)
    unknown = [tap for tap in taps if tap not in available]
    if unknown or not taps:
        raise ValueError(f"unknown taps {unknown}; choose from {list(available)}")
    return taps
