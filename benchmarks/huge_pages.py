"""What filling a fresh array of grids costs with and without transparent huge pages, in fresh processes.

`input_pipeline.stack_padded` stacks the training grids (1.3 GB of float32 for MIT1003 and
EfficientNet-Lite0) into memory of ordinary 4 KiB pages (`input_pipeline.zeros_in_small_pages`), since
NumPy's default advice for large arrays (transparent huge pages) can make the first touch wait while
the kernel compacts memory. Each row is one allocation style; each of ``--processes`` fresh processes
allocates one array and fills it once, and the table gives every process's seconds and their median.
The kernel's THP settings are printed with it (the stall needs ``defrag`` on ``madvise`` or ``always``).

    python -m benchmarks.huge_pages [--processes 3] [--gigabytes 1.33]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks import isolated, load_average, machine_line, positive_int, table

STYLES = {"NumPy default (np.zeros)": "numpy", "4 KiB pages (zeros_in_small_pages)": "small"}
THP = Path("/sys/kernel/mm/transparent_hugepage")


def fill_seconds(style: str, gigabytes: float) -> float:
    """Seconds to allocate a float32 array of ``gigabytes`` in ``style`` and write every element once."""
    from deepgaze_jax.input_pipeline import zeros_in_small_pages

    shape = (max(1, int(gigabytes * 1e9 / 4 / 1024)), 1024)
    started = time.perf_counter()
    array = np.zeros(shape, np.float32) if style == "numpy" else zeros_in_small_pages(shape, np.float32)
    array[...] = 1.0
    return time.perf_counter() - started


def fill_run(style: str, gigabytes: float) -> dict:
    """`fill_seconds` as `benchmarks.isolated` runs it, in a fresh process (whose first large allocation is the
    one that faults)."""
    return {"seconds": fill_seconds(style, gigabytes)}


def thp_settings() -> str:
    """The kernel's transparent-huge-page ``enabled`` and ``defrag`` settings (the chosen value in brackets)."""
    values = [f"{name} {(THP / name).read_text().strip()}" for name in ("enabled", "defrag") if (THP / name).exists()]
    return "; ".join(values) or "no transparent huge pages on this kernel"


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=positive_int, default=3)
    parser.add_argument("--gigabytes", type=float, default=1.33)
    args = parser.parse_args(argv)
    rows = []
    for _ in range(args.processes):  # the styles in turn, so that a change of the machine's state hits both
        rows.append([isolated("benchmarks.huge_pages:fill_run", style=style, gigabytes=args.gigabytes)["seconds"]
                     for style in STYLES.values()])
    columns = list(zip(*rows))
    text = table(
        f"Allocating and filling {args.gigabytes:g} GB of float32 in fresh processes",
        ["allocation", "seconds per process", "median s"],
        [[name, ", ".join(f"{s:.2f}" for s in seconds), f"{statistics.median(seconds):.2f}"]
         for name, seconds in zip(STYLES, columns)],
        [f"Kernel: {thp_settings()}.", f"{machine_line()}; load average after: {load_average()}."],
    )
    return [text]


if __name__ == "__main__":
    main()
