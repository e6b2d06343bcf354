"""``convscope serve``: the local web calculator (Starlette, served by uvicorn).

``create_app()`` builds the app; ``serve(host, port, write)`` runs it until interrupted. The
JSON API under ``/api/`` answers exactly what the CLI prints with ``--json``
(``convscope.web.commands`` turns a query into the command line and runs it through
``convscope.cli.execute``).
"""

from __future__ import annotations

import socket
from typing import Any

from ..errors import ConvScopeError

__all__ = ["create_app", "serve"]


def create_app() -> Any:
    """The web calculator's Starlette app."""
    from .app import create_app as create

    return create()


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``; a ConvScopeError (one line) when it cannot be had,
    rather than uvicorn's exit."""
    shown = host if len(host) <= 60 else host[:59] + "…"
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family, backlog=128)
    except OSError as error:
        raise ConvScopeError(
            f"cannot listen on {shown}:{port}: {error.strerror or error}"
        ) from None
    except (UnicodeError, ValueError) as error:  # a host name no resolver takes ('a..b', NUL)
        raise ConvScopeError(f"--host {shown!r} is not a host name or address ({error})") from None


def serve(host: str, port: int, write: Any) -> None:
    """Serve the web calculator on ``host:port`` until interrupted, printing its address with
    ``write``. The default host, 127.0.0.1, is reachable from this machine only."""
    import uvicorn

    listener = _listen(host, port)
    bound = listener.getsockname()[1]
    shown_host = f"[{host}]" if ":" in host else host
    write(f"convscope web calculator on http://{shown_host}:{bound}/ (Ctrl+C stops)\n")
    config = uvicorn.Config(create_app(), log_level="info", timeout_graceful_shutdown=2)
    uvicorn.Server(config).run(sockets=[listener])
