"""Benchmark scripts for deepgaze-jax (`python -m benchmarks.run` prints every table).

Each script prints figures, one table each; none of them is a test. This module holds
what they share: timing (`measure`, `Timing`), markdown tables (`table`), facts about
the machine (`machine_line`, `cpu_peak_flops`), a compile counter (`CompileCounter`),
and `isolated`, which runs one configuration in a fresh Python process so that its
peak memory (RSS high-water mark) and its XLA flags are its own.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

REPO = Path(__file__).resolve().parent.parent
RESULT_MARKER = "BENCHMARK-RESULT "

# ----------------------------------------------------------------------------- timing


@dataclasses.dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of repeated runs of one thing."""

    times: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def low(self) -> float:
        return min(self.times)

    @property
    def high(self) -> float:
        return max(self.times)

    def seconds(self, per: float = 1.0) -> str:
        """``median (min-max)`` in s or ms, each divided by ``per``."""
        scale, unit = (1e3, "ms") if self.median / per < 1.0 else (1.0, "s")
        m, lo, hi = (scale * t / per for t in (self.median, self.low, self.high))
        return f"{m:.3g} {unit} ({lo:.3g}-{hi:.3g})"

    def rate(self, items: float = 1.0) -> str:
        """``items / median (items / max - items / min)`` per second."""
        return f"{items / self.median:.3g} ({items / self.high:.3g}-{items / self.low:.3g})"

    def scaled(self, factor: float) -> "Timing":
        """Every time multiplied by ``factor`` (a measurement on part of the work, extrapolated)."""
        return Timing(tuple(t * factor for t in self.times))

    def to_json(self) -> list[float]:
        return list(self.times)


def measure(fn: Callable[[], object], repeat: int = 5, warmup: int = 1, min_seconds: float = 0.0) -> Timing:
    """Times ``fn()`` (which must block until its result is ready) after ``warmup`` calls.

    Runs at least ``repeat`` times and until ``min_seconds`` have been spent timing.
    """
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeat or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return Timing(tuple(times))


# ----------------------------------------------------------------------------- tables


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]], notes: Sequence[str] = ()) -> str:
    """A markdown table with a ``### title`` line and notes underneath; also printed."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = lambda values: "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths)) + " |"  # noqa: E731
    out = [f"### {title}", "", line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in cells]
    out += [""] + [f"{n}" for n in notes] + ([""] if notes else [])
    text = "\n".join(out)
    print(text, flush=True)
    return text


# ----------------------------------------------------------------------------- machine


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_ghz() -> float:
    """Current clock of the first core from /proc/cpuinfo (GHz), 0 if unknown."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return float(line.split(":", 1)[1]) / 1e3
    except OSError:
        pass
    return 0.0


FP32_FLOP_PER_CYCLE = {"avx512f": 64, "avx2": 32, "": 8}
"""fp32 FLOP per cycle and core by the widest vector flag: two FMA pipes x lanes (16 for 512-bit, 8 for
256-bit) x 2 FLOP per FMA (Xeon Scalable with two AVX-512 FMA units; Zen 3 or Haswell+ for AVX2); SSE: 8."""
AMX_BF16_FLOP_PER_CYCLE = 1024
"""bf16 FLOP per cycle and core of AMX (one TMUL: a 16 x 32 by 32 x 16 tile product, 16 x 16 x 32 multiply-adds,
every 16 cycles), Intel's figure for Sapphire Rapids."""


def cpu_flags(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> frozenset[str]:
    """The first core's feature flags from /proc/cpuinfo (empty if unknown)."""
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_peak_flops(flags: frozenset[str] | None = None) -> float:
    """Peak fp32 FLOP/s of this CPU: cores x clock x `FP32_FLOP_PER_CYCLE` of its widest vector flag."""
    flags = cpu_flags() if flags is None else flags
    per_cycle = next(n for flag, n in FP32_FLOP_PER_CYCLE.items() if not flag or flag in flags)
    return (os.cpu_count() or 1) * cpu_ghz() * 1e9 * per_cycle


def cpu_peak_bf16_flops(flags: frozenset[str] | None = None) -> float:
    """Peak bf16 FLOP/s: with AMX-BF16, cores x clock x `AMX_BF16_FLOP_PER_CYCLE`; else the fp32 peak x 2
    with AVX512-BF16 (its dot products pair bf16 values), else the fp32 peak."""
    flags = cpu_flags() if flags is None else flags
    if "amx_bf16" in flags:
        return (os.cpu_count() or 1) * cpu_ghz() * 1e9 * AMX_BF16_FLOP_PER_CYCLE
    return cpu_peak_flops(flags) * (2 if "avx512_bf16" in flags else 1)


def vector_units(flags: frozenset[str] | None = None) -> str:
    """The flags that set the peaks, e.g. ``"AVX-512, AVX512-BF16, AMX-BF16"`` or ``"AVX2"``."""
    flags = cpu_flags() if flags is None else flags
    widest = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "SSE"
    extras = [name for flag, name in (("avx512_bf16", "AVX512-BF16"), ("amx_bf16", "AMX-BF16")) if flag in flags]
    return ", ".join([widest, *extras])


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def machine_line() -> str:
    """One line saying where and under what load the figures were taken."""
    import jax

    devices = jax.devices()
    kinds = sorted({d.device_kind for d in devices})
    return (
        f"{cpu_model()}, {os.cpu_count()} logical cores at {cpu_ghz():.2f} GHz ({vector_units()}; peak "
        f"{cpu_peak_flops() / 1e9:.0f} GFLOP/s fp32, {cpu_peak_bf16_flops() / 1e9:.0f} bf16); "
        f"jax {jax.__version__} on {len(devices)} {devices[0].platform} device(s) ({', '.join(kinds)}); "
        f"load average (1/5/15 min) {load_average()}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}"
    )


def peak_rss_mib() -> float:
    """High-water mark of this process's resident memory (MiB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ----------------------------------------------------------------------------- compilations


class CompileCounter:
    """Counts XLA compilations (and sums their trace + lower + compile seconds) while active.

    Listens to JAX's monitoring events; listeners cannot be removed, so one counter is
    installed per process and `reset` between measurements.
    """

    _EVENTS = {
        "/jax/core/compile/backend_compile_duration": "compile",
        "/jax/core/compile/jaxpr_trace_duration": "trace",
        "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
    }
    _instance: "CompileCounter | None" = None

    def __init__(self) -> None:
        self.compiles = 0
        self.seconds = 0.0

    @classmethod
    def get(cls) -> "CompileCounter":
        if cls._instance is None:
            import jax

            cls._instance = cls()
            jax.monitoring.register_event_duration_secs_listener(cls._instance._listen)
        return cls._instance

    def _listen(self, event: str, duration: float, **_) -> None:
        kind = self._EVENTS.get(event)
        if kind is not None:
            self.seconds += duration
            self.compiles += kind == "compile"

    def reset(self) -> "CompileCounter":
        self.compiles, self.seconds = 0, 0.0
        return self


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


# ----------------------------------------------------------------------------- isolated runs


def with_xla_flag(flag: str | None) -> dict[str, str]:
    """Environment overrides adding ``flag`` to the inherited ``XLA_FLAGS`` (none for None)."""
    if not flag:
        return {}
    return {"XLA_FLAGS": " ".join(f for f in (os.environ.get("XLA_FLAGS", ""), flag) if f)}


def isolated(target: str, env: dict[str, str] | None = None, timeout: float = 600, **kwargs) -> dict:
    """Calls ``module:function(**kwargs)`` in a fresh Python process and returns its dict.

    The child adds ``peak_rss_mib`` (its own RSS high-water mark). ``env`` overrides
    variables of the inherited environment (e.g. ``XLA_FLAGS``, which XLA reads once per
    process). Raises RuntimeError with the child's stderr if it fails.
    """
    cmd = [sys.executable, "-c", "import benchmarks; benchmarks.child_main()", target, json.dumps(kwargs)]
    proc = subprocess.run(
        cmd, cwd=REPO, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout
    )
    results = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_MARKER)]
    if proc.returncode != 0 or not results:
        raise RuntimeError(f"{target}({kwargs}) failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(results[-1][len(RESULT_MARKER) :])


def child_main() -> None:
    """Entry point of `isolated`'s child process: argv = [target, JSON kwargs]."""
    import importlib

    module, function = sys.argv[1].split(":")
    result = getattr(importlib.import_module(module), function)(**json.loads(sys.argv[2]))
    result["peak_rss_mib"] = peak_rss_mib()
    print(RESULT_MARKER + json.dumps(result), flush=True)
