"""VGG-19 against an independent torch nn.Sequential built like torchvision's vgg19().features."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from deepgaze_jax.backbones import get_backbone  # noqa: E402
from deepgaze_jax.backbones import vgg  # noqa: E402

CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]
TORCHVISION_TAPS = {"conv5_1": 28, "relu5_1": 29, "relu5_2": 31, "conv5_3": 32, "relu5_4": 35}


def _torch_features() -> torch.nn.Sequential:
    layers, channels = [], 3
    for v in CFG:
        if v == "M":
            layers.append(torch.nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [torch.nn.Conv2d(channels, v, kernel_size=3, padding=1), torch.nn.ReLU(inplace=False)]
            channels = v
    return torch.nn.Sequential(*layers)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A He-initialised torch model, its state dict saved torchvision-style, and the loaded weights."""
    torch.manual_seed(0)
    model = _torch_features().eval()
    for module in model:
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            torch.nn.init.uniform_(module.bias, -0.1, 0.1)
    state = {f"features.{k}": v for k, v in model.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(4, 4)  # ignored by load_weights
    path = tmp_path_factory.mktemp("vgg") / "vgg19-random.pth"
    torch.save(state, path)
    return model, path, vgg.load_weights(path)


def _torch_taps(model, images: np.ndarray) -> dict[str, np.ndarray]:
    x = torch.from_numpy(images).permute(0, 3, 1, 2) / 255.0
    x = (x - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    outputs = {}
    with torch.no_grad():
        for index, module in enumerate(model):
            x = module(x)
            outputs.update({tap: x.permute(0, 2, 3, 1).numpy() for tap, i in TORCHVISION_TAPS.items() if i == index})
    return outputs


def test_backbone_registry_and_tables():
    backbone = get_backbone("vgg19")
    assert backbone is vgg.VGG19 and backbone.taps == tuple(TORCHVISION_TAPS)
    assert {name: index for name, index, _, _ in vgg.LAYERS if name in TORCHVISION_TAPS} == TORCHVISION_TAPS
    assert all(backbone.strides[t] == 16 and backbone.channels[t] == 512 for t in backbone.taps)
    assert [index for name, index, _, _ in vgg.LAYERS if name.startswith("pool")] == [4, 9, 18, 27, 36]


def test_weights_layout(reference):
    _, _, weights = reference
    assert len(weights) == 32 and "classifier.0.weight" not in weights
    assert weights["features.0.weight"].shape == (3, 3, 3, 64)
    assert weights["features.34.weight"].shape == (3, 3, 512, 512)
    assert all(w.dtype == np.float32 for w in weights.values())


def test_parity_with_torch_at_all_taps(reference):
    model, _, weights = reference
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 96, 3)).astype(np.float32)
    expected = _torch_taps(model, images)
    got = vgg.features(jax.device_put(weights), images)
    assert list(got) == list(TORCHVISION_TAPS)
    for tap, ref in expected.items():
        assert got[tap].shape == (2, 4, 6, 512) and got[tap].dtype == jnp.float32
        error = float(np.max(np.abs(np.asarray(got[tap]) - ref)) / np.max(np.abs(ref)))
        print(f"vgg19 {tap}: max |jax - torch| / max |torch| = {error:.2e}")
        assert error < 1e-4, tap


def test_tap_subset_order_and_bfloat16(reference):
    _, _, weights = reference
    images = np.random.default_rng(1).uniform(0, 255, (1, 64, 64, 3)).astype(np.float32)
    full = vgg.features(weights, images)
    early = vgg.features(weights, images, taps=["relu5_2", "conv4_1", "pool2"])
    assert list(early) == ["relu5_2", "conv4_1", "pool2"]
    assert early["conv4_1"].shape == (1, 8, 8, 512) and early["pool2"].shape == (1, 16, 16, 128)
    np.testing.assert_allclose(early["relu5_2"], full["relu5_2"], rtol=1e-5, atol=1e-5)
    half = vgg.features(weights, images, taps=("relu5_2",), dtype=jnp.bfloat16)["relu5_2"]
    assert half.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(half - full["relu5_2"])) / jnp.max(full["relu5_2"])) < 0.1
    with pytest.raises(ValueError, match="unknown taps"):
        vgg.features(weights, images, taps=("conv6_1",))


def test_weights_are_arguments_not_constants(reference):
    _, _, weights = reference
    images = jnp.zeros((1, 32, 32, 3))
    hlo = jax.jit(vgg.features, static_argnames="taps").lower(weights, images, taps=("conv5_1",)).as_text()
    assert len(hlo) < 200_000  # 80 MB of weights would dominate the module text if baked in


def test_env_var_override(reference, monkeypatch):
    _, path, weights = reference
    monkeypatch.setenv(vgg.ENV_VAR, str(path))
    loaded = vgg.load_weights()
    np.testing.assert_array_equal(loaded["features.28.bias"], weights["features.28.bias"])
