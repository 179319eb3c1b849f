"""deepgaze-jax command line: predict, evaluate, plot, serve.

Each subcommand lives in the module that implements it, which exposes
``add_parser(subparsers)``; the parser's ``func(args) -> int`` runs it.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import sys

COMMANDS = {
    "predict": "deepgaze_jax.predict_cli",
    "evaluate": "deepgaze_jax.evaluate",
    "plot": "deepgaze_jax.plot_cli",
    "serve": "deepgaze_jax.serve_cli",
}


# XLA:CPU's YNNPACK fusion for dots made inference 1.1-1.5x faster on a 2-core AVX2 EPYC
# (docs/benchmarks.md). XLA aborts on flags it does not know, so it is only set for the jaxlib
# versions it was measured with, only by the command line program (a library must not set
# process-wide flags), and never over a user's own XLA_FLAGS.
FAST_CPU_XLA_FLAGS = "--xla_cpu_experimental_ynn_fusion_type=dot"
FAST_CPU_XLA_FLAGS_JAXLIB = ("0.10.",)


def default_xla_flags() -> None:
    """Sets ``XLA_FLAGS`` to `FAST_CPU_XLA_FLAGS` if unset and jaxlib is a measured version (before any computation)."""
    if "XLA_FLAGS" in os.environ:
        return
    try:
        version = importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:
        return
    if version.startswith(FAST_CPU_XLA_FLAGS_JAXLIB):
        os.environ["XLA_FLAGS"] = FAST_CPU_XLA_FLAGS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deepgaze-jax", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS.values():
        importlib.import_module(module).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The program; ``argv=None`` (the console script) also applies `default_xla_flags`."""
    if argv is None:
        default_xla_flags()
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
