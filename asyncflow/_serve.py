"""``flow.cli()``'s ``serve`` command: the ASGI app on uvicorn (the ``server`` extra)."""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import logging
import os
from typing import TYPE_CHECKING, Any

from ._exceptions import ConfigError
from ._validate import seconds

if TYPE_CHECKING:
    from ._flow import Flow

__all__ = ["add_parser", "serve"]


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add ``serve`` to the CLI's subcommands (``sub`` is argparse's subparsers action), with
    the options every command takes (``parents``: ``--backend``, ``--loop``...)."""
    serve = sub.add_parser(
        "serve",
        parents=parents,
        help="serve the runs over HTTP (needs asyncflow-durable[server])",
        description="Serve this script's workflows over HTTP (routes: see asyncflow.asgi).",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=8000, help="port to bind (default 8000)")
    serve.add_argument(
        "--resume-every",
        metavar="SECONDS",
        type=_seconds,
        help="also resume due runs every SECONDS, in this process",
    )
    serve.add_argument(
        "--token",
        help="require 'Authorization: Bearer TOKEN' (default: $ASYNCFLOW_TOKEN); needed to"
        " bind to an address other than loopback",
    )


def serve(flow: Flow, args: argparse.Namespace) -> int:
    """Serve ``flow`` until interrupted; return the exit status.

    Raises:
        ConfigError: uvicorn is missing, or a non-loopback address has no token.
    """
    token = args.token or os.environ.get("ASYNCFLOW_TOKEN") or None
    if token is None and not _is_loopback(args.host):
        raise ConfigError(
            f"refusing to serve on {args.host} without a token: anyone who reaches it could"
            " start runs; set --token or ASYNCFLOW_TOKEN, or bind to 127.0.0.1"
        )
    try:
        import uvicorn
    except ImportError:
        raise ConfigError("serve needs uvicorn: pip install 'asyncflow-durable[server]'") from None
    from .asgi import app

    application = app(flow, token=token, resume_every=args.resume_every)
    _log_to_console()
    # uvicorn's access log: one line per request.
    config = uvicorn.Config(
        application, host=args.host, port=args.port, lifespan="on", access_log=True
    )
    server = uvicorn.Server(config)
    # uvicorn shuts down gracefully on Ctrl-C, then raises it again for its caller: here that
    # is how serving is meant to end.
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    # uvicorn logs why it could not start (a port in use, say) and returns.
    return 0 if server.started else 1


def _log_to_console() -> None:
    """Show the ``asyncflow`` logger's INFO records (a line per invocation: what advanced, how
    long; the runs' ``c.log`` lines) on the console, beside uvicorn's, unless the application
    configured that logger itself."""
    log = logging.getLogger("asyncflow")
    if log.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:     asyncflow: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: a number from 0 to 65535")
    return int(text)


def _seconds(text: str) -> float:
    try:
        return seconds(float(text), "SECONDS", error=ConfigError)
    except (ValueError, ConfigError):
        raise argparse.ArgumentTypeError(f"invalid SECONDS {text!r}: a positive number") from None
