"""Frozen ImageNet backbones as pure functions over constant weights.

Each backbone is a `Backbone`: ``load_weights(path=None)`` returns a flat dict of
NumPy arrays (torch key layout), and ``features(weights, images)`` maps a batch of
(B, H, W, 3) float32 RGB images with values in 0..255 (H, W multiples of 32) to
``{tap name: (B, H / stride, W / stride, C) float32}`` for every tap in ``taps``.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

import numpy as np

Weights = Mapping[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Backbone:
    """A frozen feature extractor.

    Attributes:
      name: registry name, e.g. ``"vgg19"``.
      taps: default tap names, in the order their channels are concatenated.
      strides: {tap: stride in input pixels} for every tap ``features`` can return.
      channels: {tap: number of channels}.
      load_weights: ``(path: str | None) -> Weights``; downloads/caches or reads ``path``.
      features: ``(weights, images (B, H, W, 3) float32 0..255, taps) -> {tap: (B, h, w, C)}``.
      module: the name of the module whose source computes ``features`` (its code is hashed
        into the feature-cache keys, `feature_cache.code_fingerprint`).
    """

    name: str
    taps: tuple[str, ...]
    strides: Mapping[str, int]
    channels: Mapping[str, int]
    load_weights: Callable[..., Weights]
    features: Callable[..., dict]
    module: str


def get_backbone(name: str) -> Backbone:
    """The backbone registered as ``name`` (one of `BACKBONES`)."""
    if name == "vgg19":
        from deepgaze_jax.backbones.vgg import VGG19

        return VGG19
    if name in ("efficientnet_lite0", "efficientnet_lite2"):
        from deepgaze_jax.backbones.efficientnet_lite import LITE0, LITE2

        return LITE0 if name == "efficientnet_lite0" else LITE2
    raise ValueError(f"unknown backbone {name!r}; choose one of {BACKBONES}")


BACKBONES = ("vgg19", "efficientnet_lite0", "efficientnet_lite2")
