"""``deepgaze-jax serve [--host 127.0.0.1] [--port 8000] [--model default]``: the web service of `serve`.

It runs on waitress (`serve.make_server`), a production WSGI server. Flask and waitress
are imported only when the command runs, so the other commands work without the
``serve`` extra.
"""

from __future__ import annotations

import argparse
import sys

from deepgaze_jax.model_options import model_help

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("serve", help="web page and JSON API for fixation densities")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: localhost only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--model", default="default", help=model_help())
    p.add_argument("--threads", type=int, default=4, help="WSGI worker threads (default 4)")
    p.add_argument(
        "--max-concurrent", type=int, default=2,
        help="requests decoding and predicting at once; the others wait (default 2)",
    )
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest upload in MiB (default 20)")
    p.add_argument("--max-megapixels", type=float, default=40.0, help="largest image in megapixels (default 40)")
    p.add_argument(
        "--read-timeout", type=float, default=60.0,
        help="seconds a request may take to arrive completely before its connection is closed (default 60)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from deepgaze_jax.model import load_model
    from deepgaze_jax.serve import ServerConfig, ServiceLimits, create_app, make_server

    try:
        model = load_model(args.model)
        limits = ServiceLimits(
            max_upload_bytes=int(args.max_upload_mb * 2**20),
            max_pixels=int(args.max_megapixels * 1e6),
            max_concurrent=args.max_concurrent,
        )
        config = ServerConfig(host=args.host, port=args.port, threads=args.threads, read_timeout_s=args.read_timeout)
    except (FileNotFoundError, ValueError) as exc:
        print(f"cannot start the service: {exc}", file=sys.stderr)
        return 2
    if args.host not in LOCAL_HOSTS:
        print(f"warning: serving on {args.host}, reachable from other machines", file=sys.stderr)
    server = make_server(create_app(model, limits), config, limits)
    print(f"serving {args.model} on http://{args.host}:{server.effective_port}/ with waitress (Ctrl-C to stop)")
    try:
        server.run()  # returns on Ctrl-C
    finally:
        server.stop()
    return 0
