"""What the reactor needs of the peer network: links by peer key, sending, and dropping peers.

`network/peers.py`'s `PeerNetwork` (authenticated, encrypted links over aiohttp) satisfies it, and
so does the simulator's in-memory network, so the same reactor runs over both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from medledger.network.messages import FrameKind


class Link(Protocol):
    """One peer link: whom it reaches and how much waits unsent on it."""

    @property
    def peer_key(self) -> bytes: ...

    @property
    def queued_bytes(self) -> int: ...

    def send(self, kind: FrameKind, payload: bytes) -> bool:
        """Queue a frame; False if the link is ending or the peer is too slow."""
        ...


class Transport(Protocol):
    @property
    def links(self) -> Mapping[bytes, Link]: ...

    def send(self, peer_key: bytes, kind: FrameKind, payload: bytes) -> bool: ...

    def broadcast(self, kind: FrameKind, payload: bytes, *, exclude: bytes | None = None) -> int: ...

    def drop_peer(self, peer_key: bytes, why: str) -> None:
        """End the link to a peer that broke the protocol (and keep it away for a while)."""
        ...
