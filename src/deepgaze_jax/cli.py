"""deepgaze-jax command line: predict, evaluate, plot, serve, export, train.

Each subcommand lives in the module that implements it, which exposes
``add_parser(subparsers)``; the parser's ``func(args) -> int`` runs it.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from deepgaze_jax import compilation_cache

COMMANDS = {
    "predict": "deepgaze_jax.predict_cli",
    "evaluate": "deepgaze_jax.evaluate_cli",
    "plot": "deepgaze_jax.plot_cli",
    "serve": "deepgaze_jax.serve_cli",
    "export": "deepgaze_jax.export_cli",
    "train": "deepgaze_jax.train_cli",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deepgaze-jax", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS.values():
        importlib.import_module(module).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The program: parses ``argv`` (default ``sys.argv[1:]``), turns on the persistent compilation cache
    (`compilation_cache.enable`) and runs the subcommand."""
    args = build_parser().parse_args(argv)
    compilation_cache.enable()
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
