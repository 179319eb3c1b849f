"""Achieved FLOP/s of the backbones against the device's peak.

FLOPs per image come from XLA: ``jax.jit(f).lower(...).compile().cost_analysis()["flops"]``
for the backbone's taps at the working size (384 x 512). For VGG-19 they are checked
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

from benchmarks import cpu_ghz, cpu_peak_flops, machine_line, measure, table
from benchmarks.inference import BACKBONES, SHORT, benchmark_model


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


def backbone_flops(backbone: str, batch: int, height: int, width: int, dtype: str, repeat: int, with_torch: bool) -> dict:
    """XLA's FLOP count and the timings of the JAX (and torch) backbone for one configuration."""
    import jax
    import jax.numpy as jnp

    params = benchmark_model(backbone)
    config = params.config
    weights = jax.device_put(params.backbone_weights)
    images = jax.device_put(np.random.default_rng(0).uniform(0, 255, (batch, height, width, 3)).astype(np.float32))
    taps = config.resolved_taps()
    features = config.get_backbone().features
    fn = jax.jit(lambda w, x: features(w, x, taps, dtype=jnp.dtype(dtype)))
    compiled = fn.lower(weights, images).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    timing = measure(lambda: jax.block_until_ready(compiled(weights, images)), repeat)
    result = {"flops": float(cost["flops"]), "jax": timing.to_json()}
    if backbone == "vgg19":
        result["analytic_flops"] = [batch * f for f in vgg19_analytic_flops(height, width, taps)]
    if with_torch:
        result["torch"] = _torch_backbone_times(params, np.asarray(images), repeat)
    return result


def _torch_backbone_times(params, images: np.ndarray, repeat: int) -> list[float]:
    import torch

    from benchmarks.torch_reference import TorchDeepGaze

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = TorchDeepGaze(params, images.shape[1:3]).eval().to(device)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(device)

    def run():
        with torch.inference_mode():
            model.backbone(x)
        if device == "cuda":
            torch.cuda.synchronize()

    return measure(run, repeat).to_json()


def main(argv=None) -> list[str]:
    from benchmarks import Timing

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default=",".join(BACKBONES))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--peak-tflops", type=float, default=None, help="device peak (default: this CPU's fp32 peak)")
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args(argv)
    peak = args.peak_tflops * 1e12 if args.peak_tflops else cpu_peak_flops()
    peak_text = (
        f"{args.peak_tflops:g} TFLOP/s (given)" if args.peak_tflops
        else f"{peak / 1e9:.0f} GFLOP/s = {os.cpu_count()} cores x {cpu_ghz():.2f} GHz x 32 FLOP/cycle"
    )
    unit, scale = ("TFLOP/s", 1e12) if args.peak_tflops else ("GFLOP/s", 1e9)
    rows = []
    for backbone in args.backbones.split(","):
        r = backbone_flops(backbone, args.batch, args.height, args.width, args.dtype, args.repeat, not args.no_torch)
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
            row += [torch_t.seconds(), f"{flops / torch_t.median / scale:.3g}", f"{100 * flops / torch_t.median / peak:.1f}%"]
        else:
            row += ["—"] * 3
        rows.append(row)
    return [
        table(
            f"Backbone FLOP/s ({args.dtype}, batch {args.batch}, {args.height}x{args.width} input)",
            ["backbone", "GFLOP/image (XLA)", "analytic GFLOP/image", "JAX time", f"JAX {unit}", "JAX % of peak",
             "torch time", f"torch {unit}", "torch % of peak"],
            rows,
            notes=[
                f"Peak: {peak_text}. Machine: {machine_line()}.",
                "FLOPs counted by XLA's cost analysis for the JAX program; the torch column divides the same count by "
                "torch's time. Times: median (min-max) of the backbone call alone.",
            ],
        )
    ]


if __name__ == "__main__":
    main()
