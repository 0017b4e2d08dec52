"""``celeriac dashboard``: serve the dashboard (``celeriac.dashboard``) with uvicorn until stopped.

It listens on loopback unless told otherwise; beyond loopback it needs a token, so that a fleet's
metrics (and, later, its controls) are not open to whoever reaches the port.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import sys
from typing import TYPE_CHECKING

from celeriac._outages import safe_url
from celeriac.exceptions import CeleriacError

if TYPE_CHECKING:
    from celeriac.app import Celeriac

__all__ = ["add_parser", "is_loopback", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``dashboard`` command to the ``celeriac`` parser."""
    parser = sub.add_parser("dashboard", help="serve /metrics (and, later, web pages) for the whole fleet")
    parser.add_argument("--host", help="the address to listen on (dashboard_host, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="the port to listen on (dashboard_port, 5566)")
    parser.add_argument(
        "--auth-token",
        help="a token every request but /healthz must bear (Authorization: Bearer TOKEN); required "
        "beyond loopback. Prefer CELERIAC_DASHBOARD_AUTH_TOKEN: a command line is visible to other users",
    )
    parser.add_argument(
        "-Q", "--queues", help="comma-separated queues to show (default: those the app names)"
    )


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``): reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def run(args: argparse.Namespace, app: Celeriac) -> int:
    """Serve until interrupted; refuse to listen beyond loopback without a token."""
    conf = app.conf
    host = args.host or conf.dashboard_host
    port = args.port if args.port is not None else conf.dashboard_port
    token = args.auth_token or conf.dashboard_auth_token
    if not is_loopback(host) and not token:
        raise CeleriacError(
            f"the dashboard listens on {host}, beyond loopback: give it a token with --auth-token or "
            "dashboard_auth_token (CELERIAC_DASHBOARD_AUTH_TOKEN), or listen on 127.0.0.1"
        )
    if not 0 <= port <= 65535:
        raise CeleriacError(f"--port {port} is not a TCP port (0-65535)")
    try:
        import uvicorn

        from celeriac.dashboard import create_app
    except ModuleNotFoundError as exc:
        raise CeleriacError(f"{exc}; the dashboard needs: pip install 'celeriac[dashboard]'") from None
    queues = [q for q in args.queues.split(",") if q] if args.queues else None
    asgi = create_app(app, queues=queues, auth_token=token)
    config = uvicorn.Config(asgi, host=host, port=port, log_level="info", lifespan="on")
    server = uvicorn.Server(config)
    print(
        f"celeriac dashboard: http://{host}:{port}/ for the fleet on {safe_url(app.broker_url)}"
        + (" (token required)" if token else ""),
        file=sys.stderr,
    )

    async def serve() -> None:
        try:
            await server.serve()
        finally:
            await app.aclose()

    asyncio.run(serve())
    return 0
