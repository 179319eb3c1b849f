"""The DeepGaze II forward pass in PyTorch, the yardstick of the speed benchmarks.

An equivalent pipeline, built from the same weights as a `DeepGazeParams`, written the
way a PyTorch user would write it (NCHW, ``torch.inference_mode``, eval-mode modules):

* backbone: ``efficientnet_lite_pytorch``'s ``EfficientNet`` with the same ImageNet
  ``.pth`` (batch norm left unfolded, as that package runs it), or a torchvision-layout
  VGG-19 ``features`` ``nn.Sequential`` holding the JAX model's VGG weights;
* taps bilinearly resized to the finest tap and concatenated, standardised with the
  head's feature statistics, 1x1 convolutions 16-32-2-1 with ReLUs;
* bilinear upsampling to the density grid, separable Gaussian blur (replicate padding),
  plus the weighted log centre bias, log-softmax;
* bilinear upsampling to the original image size and renormalisation.

Images are decoded and resized to their working size by the library's own
`load_working_image` (PIL), as `predict_density` does, so both pipelines start from the
same working images. torch is a benchmark/test-only dependency: the library never
imports this module.
"""

from __future__ import annotations

import math
import os

import flax
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deepgaze_jax.backbones import efficientnet_lite as lite
from deepgaze_jax.backbones import vgg
from deepgaze_jax.images import load_working_image
from deepgaze_jax.model import DeepGazeParams


class VGGTaps(nn.Module):
    """torchvision's ``vgg19().features`` (same indices), returning the chosen taps."""

    def __init__(self, weights, taps: tuple[str, ...]):
        super().__init__()
        layers, channels = [], 3
        for name, index, _, width in vgg.LAYERS:
            if name.startswith("conv"):
                conv = nn.Conv2d(channels, width, 3, padding=1)
                kernel = np.asarray(weights[f"features.{index}.weight"]).transpose(3, 2, 0, 1)  # HWIO -> OIHW
                conv.weight.data = torch.from_numpy(kernel.copy())
                conv.bias.data = torch.from_numpy(np.asarray(weights[f"features.{index}.bias"]).copy())
                layers.append(conv)
                channels = width
            elif name.startswith("relu"):
                layers.append(nn.ReLU())
            else:
                layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        self.taps = {index: name for name, index, _, _ in vgg.LAYERS if name in taps}
        self.order = taps
        self.register_buffer("mean", torch.tensor(vgg.MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(vgg.STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.mean) / self.std
        out = {}
        for index, layer in enumerate(self.features[: max(self.taps) + 1]):
            x = layer(x)
            if index in self.taps:
                out[self.taps[index]] = x
        return [out[t] for t in self.order]


class LiteTaps(nn.Module):
    """``efficientnet_lite_pytorch``'s model (static TF "same" padding for one input size), returning taps."""

    def __init__(self, variant: str, taps: tuple[str, ...], image_size: tuple[int, int]):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        spec = lite.VARIANTS[variant]
        path = os.environ.get(spec.env_var) or lite._packaged_file(spec)
        name = variant.replace("_", "-")
        self.net = EfficientNet.from_pretrained(name, weights_path=str(path), image_size=image_size)
        ends = spec.stage_ends
        self.taps = {ends[t]: t for t in taps}
        self.order = taps

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        net = self.net
        x = net._swish(net._bn0(net._conv_stem((x - 127.0) / 128.0)))
        out = {}
        for index, block in enumerate(net._blocks[: max(self.taps) + 1]):
            x = block(x)
            if index in self.taps:
                out[self.taps[index]] = x
        return [out[t] for t in self.order]


class TorchDeepGaze(nn.Module):
    """(B, 3, h, w) float 0..255 working images, (H, W) log centre bias -> (B, H, W) log density."""

    def __init__(self, params: DeepGazeParams, working_shape: tuple[int, int]):
        super().__init__()
        config = params.config
        if params.num_components != 1:
            raise ValueError("the torch reference handles single models (M = 1) only")
        taps = config.resolved_taps()
        if config.backbone == "vgg19":
            self.backbone = VGGTaps(params.backbone_weights, taps)
        else:
            self.backbone = LiteTaps(config.backbone, taps, working_shape)
        head = {k: np.asarray(v)[0] for k, v in flax.traverse_util.flatten_dict(params.head, sep="/").items()}
        self.register_buffer("mean", torch.tensor(head["stats/readout/mean"]).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(head["stats/readout/std"]).view(1, -1, 1, 1))
        self.readout = nn.ModuleList()
        for i in range(len(config.readout_features)):
            kernel = head[f"params/readout/layer{i}/kernel"]  # (in, out)
            conv = nn.Conv2d(kernel.shape[0], kernel.shape[1], 1)
            conv.weight.data = torch.from_numpy(kernel.T.copy()[:, :, None, None])
            conv.bias.data = torch.from_numpy(head[f"params/readout/layer{i}/bias"].copy())
            self.readout.append(conv)
        sigma = min(max(math.exp(float(head["params/finalizer/log_sigma"])), 0.5), config.max_sigma) / config.cell
        radius = math.ceil(3 * config.max_sigma / config.cell)
        taps_ = torch.softmax(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32) / sigma) ** 2, 0)
        self.register_buffer("blur_rows", taps_.view(1, 1, -1, 1))
        self.register_buffer("blur_cols", taps_.view(1, 1, 1, -1))
        self.radius = radius
        self.alpha = float(head["params/finalizer/center_bias_weight"])
        self.grid_stride, self.cell = config.grid_stride(), config.cell

    def forward(self, images: torch.Tensor, log_centerbias: torch.Tensor) -> torch.Tensor:
        h, w = images.shape[-2] // self.grid_stride, images.shape[-1] // self.grid_stride
        feats = self.backbone(images)
        grid = torch.cat(
            [f if f.shape[-2:] == (h, w) else F.interpolate(f, size=(h, w), mode="bilinear") for f in feats], dim=1
        )
        x = (grid - self.mean) / self.std
        for i, conv in enumerate(self.readout):
            x = conv(x)
            if i < len(self.readout) - 1:
                x = F.relu(x)
        x = F.interpolate(x, size=tuple(log_centerbias.shape), mode="bilinear")
        r = self.radius
        x = F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), self.blur_rows)
        x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), self.blur_cols)
        x = x[:, 0] + self.alpha * log_centerbias
        return torch.log_softmax(x.flatten(1), dim=1).view_as(x)


def centerbias_on_grid(template: np.ndarray | None, shape: tuple[int, int]) -> torch.Tensor:
    """(H, W) normalised log centre bias: the template resized bilinearly (antialiased), or uniform."""
    if template is None:
        return torch.full(shape, -math.log(shape[0] * shape[1]))
    t = torch.from_numpy(np.asarray(template, np.float32))[None, None]
    resized = F.interpolate(t, size=shape, mode="bilinear", antialias=True)[0, 0]
    return torch.log_softmax(resized.flatten(), 0).view(shape)


class Pipeline:
    """``Pipeline(params, working_shape)(images)``: the torch counterpart of `predict_density`.

    ``images`` are same-size (H, W, 3) uint8 arrays whose working size is ``working_shape``;
    returns (H, W) float32 log densities (nats per pixel, logsumexp 0).
    """

    def __init__(self, params: DeepGazeParams, working_shape: tuple[int, int], device: str = "cpu"):
        self.device = torch.device(device)
        self.model = TorchDeepGaze(params, working_shape).eval().to(self.device)
        grid_shape = (working_shape[0] // params.config.cell, working_shape[1] // params.config.cell)
        template = None if params.centerbias is None else np.asarray(params.centerbias)
        self.log_centerbias = centerbias_on_grid(template, grid_shape).to(self.device)
        self.long_side = params.config.long_side

    @torch.inference_mode()
    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, h, w, 3) uint8 working images on the device -> (B, H, W) log density over cells."""
        return self.model(batch.permute(0, 3, 1, 2).float(), self.log_centerbias)

    @torch.inference_mode()
    def __call__(self, images: list[np.ndarray]) -> list[np.ndarray]:
        working, originals = zip(*(load_working_image(im, self.long_side) for im in images))
        batch = torch.from_numpy(np.stack(working)).to(self.device)
        log_density = self.forward(batch)
        size = tuple(originals[0])
        pixels = F.interpolate(log_density[:, None], size=size, mode="bilinear")[:, 0]
        pixels = torch.log_softmax(pixels.flatten(1), dim=1).view(-1, *size)
        return list(pixels.cpu().numpy())
