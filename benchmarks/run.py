"""Every benchmark table: ``python -m benchmarks.run`` (what ``make bench`` runs).

Runs, in order, `benchmarks.inference`, `benchmarks.flops`, `benchmarks.training` and
`benchmarks.scaling` with their defaults, prints each table as it is done, then the total
wall time. ``--out FILE`` also writes all tables to a markdown file. Sized to finish in
under 10 minutes on a quiet 2-core CPU (docs/benchmarks.md has the figures and commands).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks import flops, inference, machine_line, scaling, training

SECTIONS = {"inference": inference.main, "flops": flops.main, "training": training.main, "scaling": scaling.main}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {list(SECTIONS)}")
    parser.add_argument("--out", type=Path, default=None, help="also write the tables to this markdown file")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    header = f"Benchmarks started on: {machine_line()}"
    print(header, flush=True)
    tables = []
    for name in args.only.split(","):
        section_start = time.perf_counter()
        tables += SECTIONS[name]([])
        print(f"[{name}: {time.perf_counter() - section_start:.0f} s]\n", flush=True)
    footer = f"Total wall time: {time.perf_counter() - start:.0f} s. At the end: {machine_line()}"
    print(footer)
    if args.out:
        args.out.write_text("\n\n".join([header, *tables, footer]) + "\n")


if __name__ == "__main__":
    main()
