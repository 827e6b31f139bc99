"""The simulator's peer network: links between real reactors, in memory, on virtual time.

Each node gets a `SimTransport` that satisfies the reactor's `Transport` protocol (`links`,
`send`, `broadcast`, `drop`, `disconnect`); each of its `SimLink`s (`peer_key`, `queued_bytes`,
`send`) leads to every node that holds `peer_key`, so a Byzantine twin pair (two nodes, one key)
is one peer that speaks with two voices. A frame sent on a link is delivered to each such node
after a delay drawn from the seed, unless the network's `Conditions` lose it (loss, a symmetric
or one-way partition between sender and receiver); it may be duplicated, and delays are drawn per
frame, so frames overtake each other. Frames a node receives on one link are handed to its
handler (`on_frame`) one at a time, in arrival order, as a websocket reader does.

As `network/peers.py` does, a handler that raises `CodecError` or `PeerError` gets that peer's
link dropped (both ends) and the pair stays apart for `BAN_MS`; a link whose unsent frames exceed
`LINK_QUEUE_BYTES_MAX` is disconnected as a slow reader. A dropped or disconnected pair links up
again after the ban or `RECONNECT_MS`, like the real dialer, and both handlers get `on_connect`.

The network sees every frame sent (`on_sent`, once per frame however many links it goes out
on) and received (`on_received`), so the invariant checker can decode what a correct node signs.
Nothing here iterates a set or a dict of bytes keys in an order that hashing could change:
endpoints are kept in node order.

This module imports only `medledger.chain` and `medledger.network`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Final, Protocol

from medledger.chain.errors import CodecError
from medledger.network.messages import FrameKind
from medledger.network.peers import PeerError
from medledger.network.simloop import start_eager

#: Unsent bytes a link holds at most (its peer reads too slowly beyond: disconnected).
LINK_QUEUE_BYTES_MAX: Final = 64 * 1024 * 1024
#: A peer dropped for breaking the protocol is kept apart this long (virtual ms; peers.BAN_S).
BAN_MS: Final = 30_000
#: A pair disconnected without blame (a crash, a slow reader) links again after this (virtual ms).
RECONNECT_MS: Final = 500
#: How long establishing a link takes (the handshake), virtual ms.
CONNECT_MS: Final = 5


class PeerHandler(Protocol):
    """What a node offers its transport: the reactor's two peer entry points."""

    async def on_connect(self, link: SimLink) -> None: ...

    async def on_frame(self, link: SimLink, kind: int, payload: bytes) -> None: ...


@dataclasses.dataclass(frozen=True, slots=True)
class Conditions:
    """The network's faults at one moment: what the harness derives from its active fault plan."""

    loss: float = 0.0
    duplicate: float = 0.0
    extra_delay_ms: int = 0
    #: Each group cannot talk to the rest, nor the rest to it.
    partitions: tuple[frozenset[int], ...] = ()
    #: Frames from each group to the rest are lost (the other way works).
    one_way: tuple[frozenset[int], ...] = ()

    def is_cut(self, sender: int, receiver: int) -> bool:
        for group in self.partitions:
            if (sender in group) != (receiver in group):
                return True
        return any(sender in group and receiver not in group for group in self.one_way)


class SimLink:
    """One end of a link: from the owner node to every node holding `peer_key`."""

    __slots__ = ("_inbox", "_reading", "ended", "peer_key", "queued_bytes", "transport")

    def __init__(self, transport: SimTransport, peer_key: bytes) -> None:
        self.transport = transport
        self.peer_key = peer_key
        #: Bytes sent on this link not yet delivered (the send queue a slow reader fills).
        self.queued_bytes = 0
        self.ended = False
        self._inbox: deque[tuple[int, bytes]] = deque()
        self._reading = False

    @property
    def name(self) -> str:
        return self.peer_key.hex()[:12]

    def send(self, kind: FrameKind, payload: bytes) -> bool:
        """Queue a frame for the peer; False when the link is gone or its queue is full."""
        return self.transport.network.transmit(self, int(kind), payload)

    def __repr__(self) -> str:
        return f"SimLink(node {self.transport.node_id} -> {self.name})"


class SimTransport:
    """A node's side of the simulated network (the reactor's `Transport`)."""

    def __init__(self, network: SimNetwork, node_id: int, key: bytes, handler: PeerHandler) -> None:
        self.network = network
        self.node_id = node_id
        self.key = key
        self.handler = handler
        self.links: dict[bytes, SimLink] = {}
        self.up = True
        #: Links this node dropped for a fault, and disconnected without blame.
        self.dropped = 0
        self.disconnected = 0

    def send(self, peer_key: bytes, kind: FrameKind, payload: bytes) -> bool:
        link = self.links.get(peer_key)
        return link is not None and link.send(kind, payload)

    def broadcast(self, kind: FrameKind, payload: bytes, *, exclude: bytes | None = None) -> int:
        links = [link for link in self.links.values() if link.peer_key != exclude]
        return self.network.transmit_all(self, links, int(kind), payload)

    def drop(self, link: SimLink, why: str) -> None:
        """The peer broke the protocol: end the link, keep the pair apart for `BAN_MS`."""
        self.network.end_link(self, link.peer_key, why=why, fault=True)

    def drop_peer(self, peer_key: bytes, why: str) -> None:
        """`drop` by the peer's key (what the reactor's block sync knows of a peer)."""
        self.network.end_link(self, peer_key, why=why, fault=True)

    def disconnect(self, link: SimLink, why: str) -> None:
        self.network.end_link(self, link.peer_key, why=why, fault=False)


#: (sender node id, frame kind, payload, links it went out on): once per frame a node sends, however
#: many peers it is sent to.
SentHook = Callable[[int, int, bytes, int], None]
ReceivedHook = Callable[[int, int, bytes], None]
EndHook = Callable[[int, bytes, str, bool], None]
FailureHook = Callable[[int, BaseException], None]


class SimNetwork:
    """Every node's transport, the links between them, and the frames in flight."""

    def __init__(
        self,
        rng: random.Random,
        *,
        delay_ms_min: int,
        delay_ms_max: int,
        on_sent: SentHook,
        on_received: ReceivedHook,
        on_link_end: EndHook,
        on_failure: FailureHook,
    ) -> None:
        self.rng = rng
        self.delay_ms_min = delay_ms_min
        self.delay_ms_max = delay_ms_max
        self.conditions = Conditions()
        self._on_sent = on_sent
        self._on_received = on_received
        self._on_link_end = on_link_end
        self._on_failure = on_failure
        #: node id → its transport, for the nodes up.
        self.endpoints: dict[int, SimTransport] = {}
        #: key → the transports up holding it (in node order): a frame's receivers.
        self._by_key: dict[bytes, list[SimTransport]] = {}
        #: (node id, peer key) → virtual ms before which the pair does not link again.
        self._apart_until: dict[tuple[int, bytes], int] = {}
        #: Frames in flight by the virtual time they arrive, in the order sent: one timer for
        #: all the frames due at one instant (a broadcast to 100 peers sets a few dozen, not 100).
        self._arriving: dict[float, list[tuple[SimLink, SimTransport, int, bytes]]] = {}
        self.frames_sent = 0
        self.frames_lost = 0
        self.links_dropped = 0

    # -- membership ------------------------------------------------------------------------

    @property
    def _loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def _now_ms(self) -> int:
        return round(self._loop.time() * 1000)

    def join(self, node_id: int, key: bytes, handler: PeerHandler) -> SimTransport:
        """A node comes up: it gets a transport and links to every node up (after `CONNECT_MS`)."""
        transport = SimTransport(self, node_id, key, handler)
        self.endpoints[node_id] = transport
        holders = self._by_key.setdefault(key, [])
        holders.append(transport)
        holders.sort(key=lambda t: t.node_id)
        self._loop.call_later(CONNECT_MS / 1000, self.connect_all)
        return transport

    def leave(self, node_id: int) -> None:
        """A node goes down (a crash): its links end; peers of its key lose them unless a twin is up."""
        transport = self.endpoints.pop(node_id, None)
        if transport is None:
            return
        transport.up = False
        holders = self._by_key[transport.key]
        holders.remove(transport)
        if not holders:
            del self._by_key[transport.key]
        for own in list(transport.links.values()):
            own.ended = True
        transport.links.clear()
        if transport.key in self._by_key:
            return  # a twin holding the key is still up: peers keep their link to the key
        for other in self._sorted_endpoints():
            link = other.links.pop(transport.key, None)
            if link is not None:
                link.ended = True
                self._on_link_end(other.node_id, transport.key, "the peer went down", False)

    def _sorted_endpoints(self) -> list[SimTransport]:
        return [self.endpoints[i] for i in sorted(self.endpoints)]

    def connect_all(self) -> None:
        """Link every pair of up nodes of different keys that is not linked nor kept apart."""
        now = self._now_ms()
        endpoints = self._sorted_endpoints()
        for a in endpoints:
            for b in endpoints:
                if a.key == b.key or b.key in a.links:
                    continue
                if self._apart_until.get((a.node_id, b.key), 0) > now:
                    continue
                if a.key in b.links and b.links[a.key].ended:
                    continue
                self._link(a, b.key)
                # The other side: every node of b's key links back to a's key.
                for c in endpoints:
                    if c.key == b.key and a.key not in c.links:
                        self._link(c, a.key)

    def _link(self, transport: SimTransport, peer_key: bytes) -> None:
        link = SimLink(transport, peer_key)
        transport.links[peer_key] = link
        self._spawn(transport, transport.handler.on_connect(link))

    def _spawn(self, transport: SimTransport, work: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                await work
            except (CodecError, PeerError):
                raise
            except Exception as exc:  # a node's bug: the harness fails the run with it
                self._on_failure(transport.node_id, exc)

        self._loop.create_task(run())

    def end_link(self, transport: SimTransport, peer_key: bytes, *, why: str, fault: bool) -> None:
        """End the link between `transport`'s node and `peer_key` (both ends); relink later."""
        link = transport.links.pop(peer_key, None)
        if link is None:
            return
        link.ended = True
        if fault:
            transport.dropped += 1
            self.links_dropped += 1
        else:
            transport.disconnected += 1
        self._on_link_end(transport.node_id, peer_key, why, fault)
        pause_ms = BAN_MS if fault else RECONNECT_MS
        now = self._now_ms()
        self._apart_until[(transport.node_id, peer_key)] = now + pause_ms
        for other in list(self._by_key.get(peer_key, ())):
            back = other.links.pop(transport.key, None)
            if back is not None:
                back.ended = True
            self._apart_until[(other.node_id, transport.key)] = now + pause_ms
        self._loop.call_later(pause_ms / 1000 + 0.001, self.connect_all)

    # -- frames ----------------------------------------------------------------------------

    def transmit(self, link: SimLink, kind: int, payload: bytes) -> bool:
        return self.transmit_all(link.transport, [link], kind, payload) == 1

    def transmit_all(self, sender: SimTransport, links: list[SimLink], kind: int, payload: bytes) -> int:
        """Send one frame on each of `links` (the sender's); the links it went out on."""
        sent = 0
        for link in links:
            if self._may_send(link, payload):
                self._deliver(link, kind, payload)
                sent += 1
        if sent:
            self.frames_sent += sent
            self._on_sent(sender.node_id, kind, payload, sent)
        return sent

    def _may_send(self, link: SimLink, payload: bytes) -> bool:
        sender = link.transport
        if link.ended or not sender.up:
            return False
        if link.queued_bytes + len(payload) > LINK_QUEUE_BYTES_MAX:
            sender.disconnect(link, f"reads too slowly ({link.queued_bytes} bytes queued)")
            return False
        return True

    def _deliver(self, link: SimLink, kind: int, payload: bytes) -> None:
        sender = link.transport
        conditions = self.conditions
        rng = self.rng
        loop = self._loop
        for receiver in self._by_key.get(link.peer_key, ()):
            if (
                (conditions.partitions or conditions.one_way)
                and conditions.is_cut(sender.node_id, receiver.node_id)
            ) or (conditions.loss and rng.random() < conditions.loss):
                self.frames_lost += 1
                continue
            copies = 2 if conditions.duplicate and rng.random() < conditions.duplicate else 1
            for _ in range(copies):
                delay = rng.randint(self.delay_ms_min, self.delay_ms_max)
                if conditions.extra_delay_ms:
                    delay += rng.randint(0, conditions.extra_delay_ms)
                link.queued_bytes += len(payload)
                due = loop.time() + delay / 1000
                arriving = self._arriving.get(due)
                if arriving is None:
                    arriving = self._arriving[due] = []
                    loop.call_at(due, self._arrive_all, due)
                arriving.append((link, receiver, kind, payload))

    def _arrive_all(self, due: float) -> None:
        for link, receiver, kind, payload in self._arriving.pop(due):
            self._arrive(link, receiver, kind, payload)

    def _arrive(self, link: SimLink, receiver: SimTransport, kind: int, payload: bytes) -> None:
        link.queued_bytes -= len(payload)
        if link.ended or not receiver.up or self.endpoints.get(receiver.node_id) is not receiver:
            return
        back = receiver.links.get(link.transport.key)
        if back is None or back.ended:
            return
        back._inbox.append((kind, payload))
        if not back._reading:
            back._reading = True
            start_eager(self._read(receiver, back))

    async def _read(self, receiver: SimTransport, link: SimLink) -> None:
        """Hand a link's frames to the node one at a time (a websocket reader's loop)."""
        try:
            while link._inbox and not link.ended and receiver.up:
                kind, payload = link._inbox.popleft()
                self._on_received(receiver.node_id, kind, payload)
                try:
                    await receiver.handler.on_frame(link, kind, payload)
                except (CodecError, PeerError) as exc:
                    receiver.drop(link, str(exc))
                    return
                except Exception as exc:  # a node's bug: the harness fails the run with it
                    self._on_failure(receiver.node_id, exc)
                    return
        finally:
            link._reading = False
            link._inbox.clear() if link.ended else None

    def links_of(self, node_id: int) -> Mapping[bytes, SimLink]:
        transport = self.endpoints.get(node_id)
        return transport.links if transport is not None else {}


__all__ = [
    "BAN_MS",
    "LINK_QUEUE_BYTES_MAX",
    "RECONNECT_MS",
    "Conditions",
    "PeerHandler",
    "SimLink",
    "SimNetwork",
    "SimTransport",
]
