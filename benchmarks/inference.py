"""Inference speed: `predict_density` on 1024x768 images, JAX vs the PyTorch reference.

For each backbone (EfficientNet-Lite0/1/2 with their ImageNet weights; VGG-19 with random
weights in torchvision's layout, as the real ones are not available offline — speed does
not depend on the values) and each batch size, one fresh process measures:

* images/s of the whole `predict_density` call on a list of B random 1024x768 uint8 images
  (decoding excluded; working-size resize, model, resampling to 1024x768 included), median
  and range over the timed calls after one warm-up call;
* the process's peak RSS (MiB), so peaks of different configurations never mix;
* the first call's tracing + compilation time (JAX monitoring events) and the number of
  XLA compilations in the timed calls (must be 0);

and the same for `benchmarks.torch_reference.Pipeline` (torch's own threads, default
settings). On CPU, JAX is also run with ``DEEPGAZE_JAX_XLA_CPU_YNN=0`` (without the YNNPACK
dot option that `xla_options.jit` passes to XLA:CPU by default). A second table counts compilations over images of
different sizes, and a third compares the densities of the two pipelines and of a
bfloat16 backbone against float32.

    python -m benchmarks.inference [--backbones efficientnet_lite0,vgg19] [--batches 1,2,4]
        [--tables speed,recompile,agreement,forward]   (forward: the model alone on device-resident inputs)
    python -m benchmarks.inference --tables bundled [--models lite0,lite0+lite2] [--processes 5] [--costs-out costs.json]

``bundled``: the cost of each bundled model (`model.load_model` names, ensembles included) as
shipped: ms per 1024x768 image of `predict_density` on one image per call (wall median and
process CPU time), in ``--processes`` fresh processes per name (the cost: the median of the
processes' medians; on the 2-core machines one process's median moved by up to 15% from run to
run); ``--costs-out`` writes them as the JSON that ``experiments.bundle_models --costs`` puts
in the model card.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import CompileCounter, Timing, isolated, machine_line, measure, positive_int, table
from deepgaze_jax.xla_options import OFF_SWITCH, compiler_options

BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "vgg19")
BATCHES = {
    "efficientnet_lite0": (1, 4),
    "efficientnet_lite1": (1, 4),
    "efficientnet_lite2": (1, 4),
    "vgg19": (1, 2),
}
IMAGE_SHAPE = (768, 1024)  # (H, W): MIT1003's landscape size; working size 384 x 512
SHORT = {
    "efficientnet_lite0": "Lite0",
    "efficientnet_lite1": "Lite1",
    "efficientnet_lite2": "Lite2",
    "vgg19": "VGG-19",
}
DTYPES = ("float32", "bfloat16")
BUNDLED_NAMES = ("lite0", "lite1", "lite2", "lite0+lite1+lite2", "lite0+lite2")
NO_YNN = "jax, YNN off"


def vgg19_random_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """He-initialised VGG-19 ``features`` weights in `vgg.load_weights`'s layout (HWIO kernels)."""
    from deepgaze_jax.backbones import vgg

    rng = np.random.default_rng(seed)
    weights, channels = {}, 3
    for name, index, _, width in vgg.LAYERS:
        if name.startswith("conv"):
            std = math.sqrt(2.0 / (9 * channels))
            kernel = rng.standard_normal((3, 3, channels, width)) * std
            weights[f"features.{index}.weight"] = kernel.astype(np.float32)
            weights[f"features.{index}.bias"] = rng.uniform(-0.1, 0.1, width).astype(np.float32)
            channels = width
    return weights


def benchmark_model(backbone: str):
    """A `DeepGazeParams` with a random head and a Gaussian centre-bias template (seeded)."""
    import jax

    from deepgaze_jax.model import ModelConfig, get_backbone, init_params

    weights = vgg19_random_weights() if backbone == "vgg19" else get_backbone(backbone).load_weights()
    yy, xx = np.mgrid[0:64, 0:64] / 63.0 - 0.5
    template = (-(xx**2) / 0.08 - yy**2 / 0.05).astype(np.float32)
    config = ModelConfig(backbone=backbone)
    return init_params(config, jax.random.PRNGKey(0), backbone_weights=weights, centerbias=template)


def random_images(count: int, shape: tuple[int, int] = IMAGE_SHAPE, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*shape, 3), dtype=np.uint8) for _ in range(count)]


def jax_run(backbone: str, batch: int, repeat: int, min_seconds: float = 0.0) -> dict:
    """`predict_density` on ``batch`` images per call (run by `isolated`)."""
    from deepgaze_jax.predict import predict_density

    counter = CompileCounter.get()
    params = benchmark_model(backbone)
    images = random_images(batch)
    counter.reset()
    start = time.perf_counter()
    predict_density(params, images, batch_size=batch)
    first = time.perf_counter() - start
    compile_seconds = counter.seconds
    counter.reset()
    timing = measure(lambda: predict_density(params, images, batch_size=batch), repeat, 1, min_seconds)
    return {
        "times": timing.to_json(), "first_s": first, "compile_s": compile_seconds, "steady_compiles": counter.compiles
    }


def torch_run(backbone: str, batch: int, repeat: int, min_seconds: float = 0.0) -> dict:
    """`torch_reference.Pipeline` on ``batch`` images per call (run by `isolated`).

    Timed with the faster (over one probe call each) of torch's default number of intra-op
    threads and one thread: on a shared machine two OpenMP threads on two busy cores ran 3-8x
    slower than one.
    """
    import torch

    from benchmarks.torch_reference import Pipeline
    from deepgaze_jax.images import working_size

    pipeline = Pipeline(benchmark_model(backbone), working_size(*IMAGE_SHAPE))
    images = random_images(batch)
    start = time.perf_counter()
    pipeline(images)
    first = time.perf_counter() - start
    threads = min(dict.fromkeys((torch.get_num_threads(), 1)), key=lambda t: _probe(pipeline, images, t))
    torch.set_num_threads(threads)
    timing = measure(lambda: pipeline(images), repeat, 1, min_seconds)
    return {"times": timing.to_json(), "first_s": first, "threads": threads}


def _probe(pipeline, images, threads: int) -> float:
    """Seconds of one call with ``threads`` torch intra-op threads."""
    import torch

    torch.set_num_threads(threads)
    start = time.perf_counter()
    pipeline(images)
    return time.perf_counter() - start


def forward_sweep(backbone: str, framework: str, batches: list[int], repeat: int) -> dict:
    """The model alone on device-resident working images, per backbone dtype and batch size (run by `isolated`).

    ``framework`` "jax" (`model.prepared_log_density_grid` with the head prepared beforehand, as
    `predict_density` runs it; backbone in float32 or bfloat16) or
    "torch" (`torch_reference.Pipeline.forward`, bfloat16 by autocast). Memory: for JAX the
    compiled program's arguments + outputs + temporaries (``memory_analysis``), for torch the
    CUDA allocator's peak (reset per configuration); nothing on CPU.
    """
    from deepgaze_jax.images import working_size

    params = benchmark_model(backbone)
    shape = working_size(*IMAGE_SHAPE)
    rows = []
    if framework == "jax":
        import jax
        import jax.numpy as jnp

        from deepgaze_jax.model import centerbias_on_grid, density_grid_shape, feature_grid_shape, prepared_log_density_grid
        from deepgaze_jax.prepared_head import prepare_head

        device = jax.devices()[0]
        log_cb = centerbias_on_grid(params.centerbias, density_grid_shape(params.config, shape))
        prepared = prepare_head(params.config, params.head, feature_grid_shape(params.config, shape), log_cb.shape)
        for dtype in DTYPES:
            for batch in batches:
                x = jax.device_put(np.stack(random_images(batch, shape)))
                cb = jax.device_put(jnp.broadcast_to(log_cb, (batch, *log_cb.shape)))
                compiled = prepared_log_density_grid.lower(params.config, params.backbone_weights, prepared, x, cb,
                                                           jnp.dtype(dtype)).compile()
                timing = measure(lambda: compiled(params.backbone_weights, prepared, x, cb).block_until_ready(), repeat,
                                 warmup=2)
                m = compiled.memory_analysis()
                mib = (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes) / 2**20 if m else 0.0
                rows.append({"dtype": dtype, "batch": batch, "times": timing.to_json(), "memory_mib": mib})
        return {"rows": rows, "device": device.device_kind}
    import torch

    from benchmarks.torch_reference import Pipeline

    cuda = torch.cuda.is_available()
    pipeline = Pipeline(params, shape, "cuda" if cuda else "cpu")
    for dtype in DTYPES:
        for batch in batches:
            x = torch.from_numpy(np.stack(random_images(batch, shape))).to(pipeline.device)
            if cuda:
                torch.cuda.reset_peak_memory_stats()

            def run():
                with torch.autocast(pipeline.device.type, torch.bfloat16, enabled=dtype == "bfloat16"):
                    pipeline.forward(x)
                if cuda:
                    torch.cuda.synchronize()

            timing = measure(run, repeat, warmup=2)
            mib = torch.cuda.max_memory_allocated() / 2**20 if cuda else 0.0
            rows.append({"dtype": dtype, "batch": batch, "times": timing.to_json(), "memory_mib": mib})
    return {"rows": rows, "device": torch.cuda.get_device_name() if cuda else "cpu"}


def forward_table(backbones, batches, repeat: int) -> str:
    rows = []
    for backbone in backbones:
        sizes = list(batches.get(backbone, BATCHES[backbone]))
        found = {}
        for framework in ("jax", "torch"):
            r = isolated("benchmarks.inference:forward_sweep", backbone=backbone, framework=framework, batches=sizes,
                         repeat=repeat)
            for row in r["rows"]:
                found[framework, row["dtype"], row["batch"]] = (Timing(tuple(row["times"])), row["memory_mib"])
        for dtype in DTYPES:
            for batch in sizes:
                (jt, jm), (tt, tm) = found["jax", dtype, batch], found["torch", dtype, batch]
                rows.append([SHORT[backbone], dtype, batch, jt.rate(batch), f"{jm:.0f}", tt.rate(batch), f"{tm:.0f}",
                             f"{jt.median / tt.median:.2f}"])
    return table(
        "Model forward on the device: working images (384x512) in, log density grid out",
        ["backbone", "backbone dtype", "batch", "JAX images/s", "JAX program MiB", "torch images/s", "torch peak MiB",
         "time JAX÷torch"],
        rows,
        notes=[
            f"Machine: {machine_line()}.",
            "Inputs already on the device; no host preprocessing or resampling. JAX float32 convolutions run at "
            "JAX's default precision (TF32 on NVIDIA GPUs), torch's at its default (cuDNN TF32 allowed); torch "
            "bfloat16 = autocast. Memory: JAX's compiled program (arguments + outputs + temporaries), torch's CUDA "
            "allocator peak (0 on CPU).",
        ],
    )


def recompile_run(backbone: str = "efficientnet_lite0") -> dict:
    """Compilations triggered by each `predict_density` call over a sequence of image sizes."""
    from deepgaze_jax.images import working_size
    from deepgaze_jax.predict import predict_density

    counter = CompileCounter.get()
    params = benchmark_model(backbone)
    rows = []
    for shape in [(768, 1024), (768, 1024), (750, 1000), (600, 800), (480, 640), (1024, 768), (700, 1024), (768, 1024)]:
        counter.reset()
        start = time.perf_counter()
        predict_density(params, random_images(1, shape)[0])
        rows.append([shape, working_size(*shape), counter.compiles, time.perf_counter() - start])
    return {"rows": rows}


def agreement_run(backbone: str = "efficientnet_lite0") -> dict:
    """max |log p_a - log p_b| and KL(p_a || p_b) of JAX float32 vs torch, and of JAX bfloat16 vs float32."""
    import jax.numpy as jnp

    from benchmarks.torch_reference import Pipeline
    from deepgaze_jax.images import working_size
    from deepgaze_jax.predict import predict_density

    params = benchmark_model(backbone)
    images = _test_images()
    f32 = predict_density(params, images)
    bf16 = predict_density(params, images, backbone_dtype=jnp.bfloat16)
    torch_out = Pipeline(params, working_size(*IMAGE_SHAPE))(images)
    return {"torch": _differences(f32, torch_out), "bfloat16": _differences(f32, bf16), "images": len(images)}


def _test_images() -> list[np.ndarray]:
    """Up to 4 real 1024x768 MIT1003 photos if the dataset is there, else random images."""
    from deepgaze_jax.data.mit1003 import find_mit1003_root
    from deepgaze_jax.images import to_rgb_uint8

    try:
        paths = sorted(find_mit1003_root().glob("stimuli/*.jpg"))
    except (FileNotFoundError, ValueError):
        paths = []
    photos = [img for img in (to_rgb_uint8(p) for p in paths[:40]) if img.shape[:2] == IMAGE_SHAPE][:4]
    return photos or random_images(2)


def _differences(a: list[np.ndarray], b: list[np.ndarray]) -> dict:
    max_abs = max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))
    kl = max(float(np.sum(np.exp(x.astype(np.float64)) * (x.astype(np.float64) - y))) for x, y in zip(a, b))
    return {"max_abs_log_p": max_abs, "kl_nats": kl}


def bundled_run(name: str, repeat: int) -> dict:
    """`predict_density` of bundled model ``name`` on one 1024x768 image per call, after a warm-up call (run by
    `isolated`): wall seconds per call and the process's CPU seconds (all threads) per call."""
    from deepgaze_jax.model import ensemble_members, load_model
    from deepgaze_jax.predict import predict_density

    model = load_model(name)
    image = random_images(1)[0]
    predict_density(model, image)
    cpu = time.process_time()
    timing = measure(lambda: predict_density(model, image), repeat, warmup=0)
    return {"times": timing.to_json(), "cpu_s": (time.process_time() - cpu) / len(timing.times),
            "backbones": [m.config.backbone for m in ensemble_members(model)]}


def missing_bundled(name: str) -> list[str]:
    """The members of bundled name ``name`` whose file is not installed (all is well when empty)."""
    from deepgaze_jax.model import bundled_members, bundled_model_path

    members = bundled_members(name)
    if members is None:
        raise ValueError(f"{name!r} is not a bundled name (model.BUNDLED_MODELS, joined by +)")
    return [m for m in members if not bundled_model_path(m).is_file()]


def bundled_costs(names, repeat: int, processes: int = 1) -> dict:
    """{name: [`bundled_run` result per process]} for the installed names; the others left out. Each name runs in
    ``processes`` fresh processes, the names taken in turn (name 1, name 2, ..., name 1, ...) so that a change in
    the machine's speed while they run falls on every name alike."""
    installed = [n for n in names if not missing_bundled(n)]
    results: dict[str, list[dict]] = {n: [] for n in installed}
    for _ in range(processes):
        for name in installed:
            results[name].append(isolated("benchmarks.inference:bundled_run", name=name, repeat=repeat))
    return results


def process_medians(runs: list[dict]) -> Timing:
    """The median wall seconds per call of each process's timed calls."""
    return Timing(tuple(Timing(tuple(r["times"])).median for r in runs))


def bundled_table(names, repeat: int, costs_out: Path | None, processes: int = 1) -> str:
    """The cost of each bundled name per 1024x768 image: the median over ``processes`` fresh processes of each
    one's median call; with ``costs_out`` also written as JSON."""
    results = bundled_costs(names, repeat, processes)
    rows = []
    for name in names:
        if name not in results:
            rows.append([name, f"not installed ({', '.join(missing_bundled(name))}): run experiments.bundle_models"]
                        + ["—"] * 4)
            continue
        runs = results[name]
        calls = Timing(tuple(t for r in runs for t in r["times"]))
        rows.append([name, " + ".join(SHORT[b] for b in runs[0]["backbones"]), process_medians(runs).seconds(),
                     calls.seconds(), f"{1e3 * statistics.median(r['cpu_s'] for r in runs):.0f}",
                     f"{max(r['peak_rss_mib'] for r in runs):.0f}"])
    machine = machine_line()
    if costs_out is not None:
        write_costs(costs_out, {n: 1e3 * process_medians(runs).median for n, runs in results.items()},
                    {n: 1e3 * statistics.median(r["cpu_s"] for r in runs) for n, runs in results.items()}, machine)
    return table(
        f"Cost of the bundled models: predict_density per 1024x768 image ({machine_kind()})",
        ["name", "backbones", f"wall per image: median of {processes} processes (range of their medians)",
         "all calls: median (range)", "CPU ms per image", "peak RSS MiB"],
        rows,
        notes=[f"Machine: {machine}.",
               f"One random 1024x768 uint8 image per call, {repeat} timed calls after a warm-up call, in each of "
               f"{processes} fresh process(es) per name, the names in turn; decoding excluded. The cost is the median "
               "over the processes of each one's median call. CPU ms: the process's user + system time over all "
               "its threads (median over the processes)."],
    )


def write_costs(path: Path, wall_ms: dict, cpu_ms: dict, machine: str) -> None:
    """The JSON `experiments.bundle_models --costs` reads, written atomically."""
    from deepgaze_jax.atomic_file import write_atomic

    write_atomic(path, json.dumps({"ms_per_image": wall_ms, "cpu_ms_per_image": cpu_ms, "machine": machine,
                                   "command": "python -m benchmarks.inference " + " ".join(sys.argv[1:])}, indent=1)
                 + "\n")


# ----------------------------------------------------------------------------- driver


def run_configurations(backbones, batches, repeat: int) -> list[dict]:
    """Every (backbone, framework, batch) in its own process; on CPU also JAX without the YNN option at batch 1."""
    import jax

    results = []
    for backbone in backbones:
        sizes = batches.get(backbone, BATCHES[backbone])
        runs = [("jax", "jax_run", {}, b) for b in sizes] + [("torch", "torch_run", {}, b) for b in sizes]
        if jax.default_backend() == "cpu" and compiler_options():  # an XLA:CPU option
            runs.append((NO_YNN, "jax_run", {OFF_SWITCH: "0"}, 1))
        reps = repeat if backbone != "vgg19" else max(2, repeat // 2)
        for framework, target, env, batch in runs:
            r = isolated(f"benchmarks.inference:{target}", env, backbone=backbone, batch=batch, repeat=reps)
            results.append(r | {"backbone": backbone, "framework": framework, "batch": batch,
                                "timing": Timing(tuple(r["times"]))})
    return results


def speed_table(results: list[dict]) -> str:
    """Per backbone: each framework at batch 1 and at its best batch; ratios against torch at the same choice."""
    rows = []
    for backbone in dict.fromkeys(r["backbone"] for r in results):
        mine = {(r["framework"], r["batch"]): r for r in results if r["backbone"] == backbone}
        per_image = {key: r["timing"].median / r["batch"] for key, r in mine.items()}
        best = {}
        for fw, b in mine:
            if fw not in best or per_image[fw, b] < per_image[fw, best[fw]]:
                best[fw] = b
        for (fw, b), r in mine.items():
            if b != 1 and b != best[fw]:
                continue
            torch_b = 1 if b == 1 else best["torch"]
            if fw == "torch":
                ratio = "—"
            else:
                ratio = f"{per_image[fw, b] / per_image['torch', torch_b]:.2f}"
                ratio += "" if torch_b == b else f" (torch b={torch_b})"
            if fw == NO_YNN:
                ratio += f"; the default is {per_image[fw, b] / per_image['jax', b]:.2f}x faster"
            label = f"torch ({r['threads']} thread{'s' if r['threads'] > 1 else ''})" if fw == "torch" else fw
            rows.append([
                SHORT[backbone], label, f"{b}{' (best)' if b == best[fw] and b != 1 else ''}", r["timing"].rate(b),
                f"{1e3 * per_image[fw, b]:.0f}", f"{r['peak_rss_mib']:.0f}", f"{r['first_s']:.2f}",
                f"{r['compile_s']:.1f}" if "compile_s" in r else "—", r.get("steady_compiles", "—"), ratio,
            ])
    candidates = {SHORT[b]: sorted({r["batch"] for r in results if r["backbone"] == b}) for b in BACKBONES}
    return table(
        f"Inference: predict_density on 1024x768 images ({machine_kind()})",
        ["backbone", "framework", "batch", "images/s median (range)", "ms/image", "peak RSS MiB",
         "first call s", "compile s", "compiles in timed calls", "time/image JAX÷torch"],
        rows,
        notes=[
            f"Machine: {machine_line()}.",
            "Each row is a fresh process; images/s over the timed calls after one warm-up call. 'first call' includes "
            "tracing and XLA compilation ('compile s': sum of JAX's trace/lower/compile events); torch has none. "
            "torch: the faster (one probe call each) of its default intra-op threads and 1 thread. "
            "Ratio < 1: JAX faster. 'best' = the batch size with the highest images/s among "
            f"{ {k: v for k, v in candidates.items() if v} }. {NO_YNN}: {OFF_SWITCH}=0 (XLA:CPU without YNNPACK dots).",
        ],
    )


def machine_kind() -> str:
    import jax

    device = jax.devices()[0]
    return "CPU" if device.platform == "cpu" else device.device_kind


def recompile_table() -> str:
    result = isolated("benchmarks.inference:recompile_run")
    return table(
        "Compilations per predict_density call (Lite0, batch 1, one process)",
        ["image H x W", "working size", "XLA compilations", "call s"],
        [[f"{s[0]} x {s[1]}", f"{w[0]} x {w[1]}", c, f"{t:.2f}"] for s, w, c, t in result["rows"]],
        notes=["Working sizes are bucketed to multiples of 32, so only a new working size compiles the model."],
    )


def agreement_table(backbones) -> str:
    rows = []
    for backbone in backbones:
        r = isolated("benchmarks.inference:agreement_run", backbone=backbone)
        comparisons = (("torch", "torch reference vs JAX (float32)"), ("bfloat16", "JAX bfloat16 backbone vs float32"))
        for name, label in comparisons:
            rows.append([SHORT[backbone], label, f"{r[name]['max_abs_log_p']:.2e}", f"{r[name]['kl_nats']:.2e}"])
    return table(
        "Do the pipelines compute the same density? (1024x768 images)",
        ["backbone", "comparison", "max |Δ log p| (nats)", "KL(p_f32 ‖ p_other) (nats)"],
        rows,
        notes=["Worst of 4 MIT1003 photos (random images if the dataset is absent). On NVIDIA GPUs the float32 "
               "reference itself runs at TF32. |KL| below ~1e-5 is float32 rounding (it can come out negative)."],
    )


def main(argv=None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default=",".join(BACKBONES))
    parser.add_argument("--agreement-backbones", default="efficientnet_lite0,efficientnet_lite1,efficientnet_lite2",
                        help="backbones of the agreement table (VGG-19's random weights say little about bfloat16)")
    parser.add_argument("--batches", default=None, help="comma-separated batch sizes for every backbone")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tables", default="speed,recompile,agreement",
                        help="any of speed, recompile, agreement, forward, bundled")
    parser.add_argument("--models", default=",".join(BUNDLED_NAMES), help="bundled names of the bundled table")
    parser.add_argument("--processes", type=positive_int, default=1,
                        help="fresh processes per name in the bundled table (its cost: the median of their medians)")
    parser.add_argument("--costs-out", type=Path, default=None,
                        help="write the bundled table's costs as JSON (for experiments.bundle_models --costs)")
    args = parser.parse_args(argv)
    backbones = args.backbones.split(",")
    batches = {b: tuple(int(x) for x in args.batches.split(",")) for b in backbones} if args.batches else BATCHES
    makers = {
        "speed": lambda: speed_table(run_configurations(backbones, batches, args.repeat)),
        "recompile": recompile_table,
        "agreement": lambda: agreement_table(args.agreement_backbones.split(",")),
        "forward": lambda: forward_table(backbones, batches, args.repeat),
        "bundled": lambda: bundled_table(args.models.split(","), args.repeat, args.costs_out, args.processes),
    }
    return [makers[name]() for name in args.tables.split(",")]


if __name__ == "__main__":
    main()
