"""Frozen ImageNet backbones as pure functions over constant weights.

Each backbone is a `Backbone`: ``load_weights(path=None)`` returns a flat dict of
NumPy arrays (torch key layout), and ``features(weights, images)`` maps a batch of
(B, H, W, 3) float32 RGB images with values in 0..255 (H, W multiples of 32) to
``{tap name: (B, H / stride, W / stride, C) float32}`` for every tap in ``taps``.

Backbones are looked up by name (`get_backbone`) in a registry: the built-in ones
(`BUILTIN`) register themselves when their module is first imported; any other
`Backbone` becomes usable as ``ModelConfig(backbone=name)`` after `register`.
"""

from __future__ import annotations

import dataclasses
import importlib
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


BUILTIN = {
    "vgg19": "deepgaze_jax.backbones.vgg",
    "efficientnet_lite0": "deepgaze_jax.backbones.efficientnet_lite",
    "efficientnet_lite1": "deepgaze_jax.backbones.efficientnet_lite",
    "efficientnet_lite2": "deepgaze_jax.backbones.efficientnet_lite",
}
"""{name: module that registers it} of the backbones that ship with the package (imported on first use)."""

BACKBONES = tuple(BUILTIN)

_REGISTRY: dict[str, Backbone] = {}


def register(backbone: Backbone) -> Backbone:
    """Makes ``backbone`` available as ``ModelConfig(backbone=backbone.name)``; returns it.

    Registering the same object twice is harmless; another backbone under a taken name is an error.
    """
    existing = _REGISTRY.get(backbone.name)
    if existing is not None and existing is not backbone:
        raise ValueError(f"a different backbone is already registered as {backbone.name!r}; give yours another name")
    _REGISTRY[backbone.name] = backbone
    return backbone


def registered() -> tuple[str, ...]:
    """The names `get_backbone` accepts: the built-in backbones, then those passed to `register`."""
    return tuple(dict.fromkeys([*BUILTIN, *_REGISTRY]))


def get_backbone(name: str) -> Backbone:
    """The backbone registered as ``name`` (built-in ones are imported on first use)."""
    if name not in _REGISTRY and name in BUILTIN:
        importlib.import_module(BUILTIN[name])
    if name not in _REGISTRY:
        raise ValueError(f"unknown backbone {name!r}; choose one of {registered()} or `register` your own")
    return _REGISTRY[name]
