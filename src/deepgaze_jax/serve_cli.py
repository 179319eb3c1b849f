"""``deepgaze-jax serve [--host 127.0.0.1] [--port 8000] [--model default]``: the web service of `serve`.

Flask is imported only when the command runs, so the other commands work without the
``serve`` extra.
"""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("serve", help="web page and JSON API for fixation densities")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: localhost only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--model", default="default", help="model .npz (default: the bundled MIT1003 model)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from werkzeug.serving import make_server

    from deepgaze_jax.model import load_model
    from deepgaze_jax.serve import create_app

    try:
        model = load_model(args.model)
    except (FileNotFoundError, ValueError) as exc:
        print(f"cannot load model: {exc}", file=sys.stderr)
        return 2
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {args.host}, reachable from other machines", file=sys.stderr)
    server = make_server(args.host, args.port, create_app(model), threaded=True)
    print(f"serving {args.model} on http://{args.host}:{server.port}/ (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
