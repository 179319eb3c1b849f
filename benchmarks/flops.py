"""Achieved FLOP/s of the backbones against the device's peak.

FLOPs per image come from XLA: ``jax.jit(f).lower(...).compile().cost_analysis()["flops"]``
for the backbone's taps at the working size (384 x 512), compiled for the CPU whatever the
device (`cpu_flops`). For VGG-19 they are checked
against the analytic count, 2 x 9 x C_in x C_out x H x W per 3x3 convolution up to the
deepest tap, and against the same count without the multiply-adds with padding zeros
(which XLA leaves out; bias, ReLU and pooling add < 0.1%). Achieved FLOP/s = FLOPs / median time of
the jitted backbone call (inputs already on the device, result awaited); the PyTorch
backbone of `benchmarks.torch_reference` is timed on the same input for comparison.

Peak of a CPU: cores x clock x 32 fp32 FLOP/cycle (AVX2 + FMA: two 256-bit FMA pipes,
8 lanes each, 2 FLOP per FMA; Zen 3 and Intel since Haswell). The clock is the one
/proc/cpuinfo reports (the nominal 2.45 GHz here; boost can exceed it). On a GPU the peak
is given on the command line (``--peak-tflops``; the H100 SXM's dense bf16 peak is 989).

    python -m benchmarks.flops [--batch 1] [--height 384 --width 512] [--dtype bfloat16] [--peak-tflops 989]
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from benchmarks import Timing, cpu_ghz, cpu_peak_flops, machine_line, measure, table
from benchmarks.inference import BACKBONES, SHORT, benchmark_model
from deepgaze_jax.xla_options import jit


def vgg19_analytic_flops(height: int, width: int, taps) -> tuple[float, float]:
    """VGG-19's convolution FLOPs up to the deepest tap: (dense, without the zero-padding taps).

    Dense: 2 x 9 x C_in x C_out x H x W per 3x3 convolution. The second count leaves out
    the multiply-adds with padding zeros, (3H - 2)(3W - 2) taps per channel pair instead of 9HW,
    which is what XLA's cost analysis counts.
    """
    from deepgaze_jax.backbones import vgg

    last = max(index for name, index, _, _ in vgg.LAYERS if name in taps)
    dense = valid = 0.0
    channels = 3
    for name, index, stride, width_out in vgg.LAYERS:
        if name.startswith("conv") and index <= last:
            h, w = height // stride, width // stride
            dense += 2 * 9 * channels * width_out * h * w
            valid += 2 * channels * width_out * (3 * h - 2) * (3 * w - 2)
            channels = width_out
    return dense, valid


def vgg19_nchw(weights, images, dtype):
    """VGG-19 up to relu5_4 with NCHW activations and OIHW kernels (the layout experiment of `main`)."""
    import jax
    import jax.numpy as jnp

    from deepgaze_jax.backbones import vgg

    mean, std = (np.asarray(v, np.float32).reshape(1, 3, 1, 1) for v in (vgg.MEAN, vgg.STD))
    x = ((jnp.transpose(images, (0, 3, 1, 2)) - mean) / std).astype(dtype)
    for name, index, _, _ in vgg.LAYERS[: vgg.LAYERS.index(("relu5_4", 35, 16, 512)) + 1]:
        if name.startswith("conv"):
            kernel = jnp.transpose(weights[f"features.{index}.weight"], (3, 2, 0, 1)).astype(dtype)
            x = jax.lax.conv_general_dilated(
                x, kernel, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NCHW", "OIHW", "NCHW")
            )
            x = x + weights[f"features.{index}.bias"].astype(dtype)[:, None, None]
        elif name.startswith("relu"):
            x = jax.nn.relu(x)
        else:
            x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
    return x.astype(jnp.float32)


def backbone_flops(
    backbone: str, batch: int, height: int, width: int, dtype: str, repeat: int, with_torch: bool,
    layout: str = "NHWC", precision: str | None = None,
) -> dict:
    """XLA's FLOP count and the timings of the JAX (and torch) backbone for one configuration."""
    import jax
    import jax.numpy as jnp

    params = benchmark_model(backbone)
    config = params.config
    weights = jax.device_put(params.backbone_weights)
    images = jax.device_put(np.random.default_rng(0).uniform(0, 255, (batch, height, width, 3)).astype(np.float32))
    taps = config.resolved_taps()
    features = config.get_backbone().features
    if layout == "NCHW":
        if backbone != "vgg19":
            raise ValueError("the NCHW layout experiment is VGG-19 only")
        fn = jit(lambda w, x: vgg19_nchw(w, x, jnp.dtype(dtype)))
    else:
        fn = jit(lambda w, x: features(w, x, taps, dtype=jnp.dtype(dtype)))
    with jax.default_matmul_precision(precision):
        compiled = fn.lower(weights, images).compile()
    timing = measure(lambda: jax.block_until_ready(compiled(weights, images)), repeat)
    on_cpu = jax.default_backend() == "cpu"
    flops = _flops(compiled.cost_analysis()) if on_cpu else cpu_flops(fn, weights, images)
    result = {"flops": flops, "jax": timing.to_json()}
    if backbone == "vgg19":
        result["analytic_flops"] = [batch * f for f in vgg19_analytic_flops(height, width, taps)]
    if with_torch:
        result["torch"] = _torch_backbone_times(params, np.asarray(images), repeat, dtype, layout)
    return result


def cpu_flops(fn, *args) -> float:
    """``fn.lower(...).compile().cost_analysis()["flops"]`` for arguments like ``args``, compiled for the CPU.

    XLA:CPU counts every convolution; a GPU compilation hands convolutions to cuDNN as
    custom calls, which its cost analysis leaves out, so the count always comes from the CPU.
    """
    import jax
    from jax.sharding import SingleDeviceSharding

    cpu = SingleDeviceSharding(jax.devices("cpu")[0])
    specs = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=cpu), args)
    return _flops(fn.lower(*specs).compile().cost_analysis())


def _flops(cost) -> float:
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"])


def _torch_backbone_times(params, images: np.ndarray, repeat: int, dtype: str, layout: str) -> list[float]:
    """The torch backbone (`torch_reference`) on the same images: bfloat16 by autocast, NHWC as channels_last."""
    import torch

    from benchmarks.torch_reference import TorchDeepGaze

    device = "cuda" if torch.cuda.is_available() else "cpu"
    memory_format = torch.channels_last if layout == "NHWC" else torch.contiguous_format
    model = TorchDeepGaze(params, images.shape[1:3]).eval().to(device, memory_format=memory_format)
    x = torch.tensor(images).permute(0, 3, 1, 2).to(device, memory_format=memory_format)

    def run():
        with torch.inference_mode(), torch.autocast(device, torch.bfloat16, enabled=dtype == "bfloat16"):
            model.backbone(x)
        if device == "cuda":
            torch.cuda.synchronize()

    return measure(run, repeat).to_json()


# (H, W, C, kernel, stride) of EfficientNet-Lite0's depthwise layers at the 384 x 512 working size
DEPTHWISE_LAYERS = (
    (192, 256, 96, 3, 2), (96, 128, 144, 5, 2), (48, 64, 240, 3, 1), (24, 32, 480, 5, 1), (12, 16, 1152, 3, 1)
)


def depthwise_table(batch: int, dtype: str, repeat: int) -> str:
    """Grouped convolution (``feature_group_count = C``) vs `_ops.shifted_slice_depthwise` per layer shape."""
    import jax
    import jax.numpy as jnp

    from deepgaze_jax.backbones._ops import conv2d, shifted_slice_depthwise

    rng = np.random.default_rng(0)
    rows = []
    for h, w, c, k, stride in DEPTHWISE_LAYERS:
        x = jax.device_put(rng.standard_normal((batch, h, w, c)).astype(dtype))
        kernel = jax.device_put(rng.standard_normal((k, k, 1, c)).astype(dtype))
        pad = ((k // 2, k // 2),) * 2
        grouped = jit(lambda x, kernel: conv2d(x, kernel, stride=stride, padding=pad, groups=c))
        shifted = jit(lambda x, kernel: shifted_slice_depthwise(x, kernel, stride=stride, padding=pad))
        diff = float(jnp.max(jnp.abs(grouped(x, kernel).astype(jnp.float32) - shifted(x, kernel).astype(jnp.float32))))
        times = [measure(lambda f=f: f(x, kernel).block_until_ready(), repeat) for f in (grouped, shifted)]
        flops = 2 * k * k * c * batch * (h // stride) * (w // stride)
        rows.append([f"{h}x{w}x{c}, {k}x{k}/{stride}",
                     *(f"{t.seconds()} = {flops / t.median / 1e9:.3g} GFLOP/s" for t in times),
                     f"{times[0].median / times[1].median:.1f}x", f"{diff:.1e}"])
    return table(
        f"Depthwise convolution: XLA grouped convolution vs sum of shifted slices ({dtype}, batch {batch})",
        ["layer (H x W x C, kernel/stride)", "grouped conv (used off CPU)", "shifted-slice sum (used on CPU)",
         "grouped÷shifted time", "max |diff|"],
        rows,
        notes=["EfficientNet-Lite0's depthwise layer shapes at the 384x512 working size; median (min-max)."],
    )


def main(argv=None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default=",".join(BACKBONES))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--peak-tflops", type=float, default=None, help="device peak (default: this CPU's fp32 peak)")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--layout", default="NHWC", choices=("NHWC", "NCHW"), help="NCHW: VGG-19 only")
    parser.add_argument("--precision", default=None, help="jax.default_matmul_precision (e.g. highest, tensorfloat32)")
    args = parser.parse_args(argv)
    peak = args.peak_tflops * 1e12 if args.peak_tflops else cpu_peak_flops()
    peak_text = (
        f"{args.peak_tflops:g} TFLOP/s (given)" if args.peak_tflops
        else f"{peak / 1e9:.0f} GFLOP/s = {os.cpu_count()} cores x {cpu_ghz():.2f} GHz x 32 FLOP/cycle"
    )
    unit, scale = ("TFLOP/s", 1e12) if args.peak_tflops else ("GFLOP/s", 1e9)
    rows = []
    for backbone in args.backbones.split(","):
        r = backbone_flops(backbone, args.batch, args.height, args.width, args.dtype, args.repeat, not args.no_torch,
                           args.layout, args.precision)
        jax_t = Timing(tuple(r["jax"]))
        flops = r["flops"]
        check = "—"
        if "analytic_flops" in r:
            dense, valid = (f / args.batch / 1e9 for f in r["analytic_flops"])
            check = f"{dense:.2f} dense, {valid:.2f} w/o padding taps"
        achieved = flops / jax_t.median
        row = [SHORT[backbone], f"{flops / 1e9 / args.batch:.2f}", check, jax_t.seconds(), f"{achieved / scale:.3g}",
               f"{100 * achieved / peak:.1f}%"]
        if "torch" in r:
            torch_t = Timing(tuple(r["torch"]))
            torch_rate = flops / torch_t.median
            row += [torch_t.seconds(), f"{torch_rate / scale:.3g}", f"{100 * torch_rate / peak:.1f}%"]
        else:
            row += ["—"] * 3
        rows.append(row)
    return [
        depthwise_table(args.batch, args.dtype, args.repeat),
        table(
            f"Backbone FLOP/s ({args.dtype}, batch {args.batch}, {args.height}x{args.width} input, {args.layout}"
            + (f", precision {args.precision}" if args.precision else "") + ")",
            ["backbone", "GFLOP/image (XLA)", "analytic GFLOP/image", "JAX time", f"JAX {unit}", "JAX % of peak",
             "torch time", f"torch {unit}", "torch % of peak"],
            rows,
            notes=[
                f"Peak: {peak_text}. Machine: {machine_line()}.",
                "FLOPs: XLA's cost analysis of the JAX program compiled for the CPU (a GPU compilation's count leaves "
                "out the cuDNN convolutions). The torch column divides the same count by torch's time. Times: median "
                "(min-max) of the backbone call alone.",
            ],
        )
    ]


if __name__ == "__main__":
    main()
