"""Starting the node's listening sockets with an answer an operator can act on.

A port that is taken (another node on this machine, a previous run still shutting down) made
`medledger start` print a 40-line traceback (issue 14, defect 8). `start_site` turns that, and any
other error binding an address, into a `PortInUseError` / `NodeError` of one line naming the
address, what it is for and the flag or config key that moves it.
"""

from __future__ import annotations

import errno

from aiohttp import web

from medledger.node.errors import NodeError


class PortInUseError(NodeError):
    """The address is taken by another process."""

    code = "port_in_use"


async def start_site(site: web.BaseSite, *, what: str, host: str, port: int, hint: str) -> None:
    """`site.start()`; a bind failure is a one-line `NodeError` (`hint`: how to choose another port)."""
    try:
        await site.start()
    except OSError as exc:
        address = f"{host}:{port}"
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError(
                f"{what} address {address} is already in use (another medledger node, or an earlier run "
                f"still stopping?): stop it, or {hint}"
            ) from None
        reason = exc.strerror or type(exc).__name__
        raise NodeError(f"cannot listen on {address} for the {what}: {reason}; {hint}") from None
