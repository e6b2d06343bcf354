"""``convscope serve``: the local web calculator."""

from __future__ import annotations

from typing import Any

from ..errors import ConvScopeError


def serve(host: str, port: int, write: Any) -> None:
    """Serve the web calculator on ``host:port`` until interrupted."""
    raise ConvScopeError("serve: not built yet")
