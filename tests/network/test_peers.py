"""Peer links: the secret channel, membership, delivery, dropping bad peers, one link per pair, and
what outsiders and misbehaving peers can (not) cost a node (issue 9 defects 4, 5, 11 and 13)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import struct
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from medledger.chain.codec import decode, encode, encode_primitive
from medledger.chain.errors import CodecError
from medledger.crypto import Identity
from medledger.network import peers
from medledger.network.channel import (
    PROTOCOL_VERSION,
    SEALED_CHUNK_BYTES_MAX,
    ChunkSealer,
    EphemeralKeys,
    compute_session_secrets,
)
from medledger.network.messages import FRAME_WIRE_BYTES_MAX, ChannelHello, Frame, FrameKind
from medledger.network.peers import BAN_S, PEER_PATH, PeerLink, PeerNetwork

CHAIN = "peer-test"
DEADLINE_S = 15.0
#: A window in which a test checks that something does not happen.
OBSERVE_S = 2.0


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll `condition` until true, failing after a deadline (a condition, not a fixed sleep)."""
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@dataclasses.dataclass
class Peer:
    identity: Identity
    network: PeerNetwork
    runner: web.AppRunner
    url: str
    received: list[tuple[bytes, int, bytes]]
    #: Peer keys of every link this node opened (on_connect), in order.
    connected: list[bytes] = dataclasses.field(default_factory=list)
    #: Requests to the peer endpoint (each a connection that got as far as HTTP).
    requests: list[int] = dataclasses.field(default_factory=lambda: [0])
    request_seen: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    @property
    def key(self) -> bytes:
        return self.identity.public.sign_key


class Cluster:
    def __init__(self) -> None:
        self.peers: list[Peer] = []
        self.members: set[bytes] = set()

    async def add(
        self,
        *,
        identity: Identity | None = None,
        chain_id: str = CHAIN,
        dial: tuple[str, ...] = (),
        member: bool = True,
    ) -> Peer:
        identity = identity or Identity.generate()
        if member:
            self.members.add(identity.public.sign_key)
        received: list[tuple[bytes, int, bytes]] = []

        async def on_frame(link: PeerLink, kind: int, payload: bytes) -> None:
            received.append((link.peer_key, kind, payload))

        connected: list[bytes] = []

        async def on_connect(link: PeerLink) -> None:
            connected.append(link.peer_key)

        requests = [0]
        request_seen = asyncio.Event()

        @web.middleware
        async def count_requests(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            requests[0] += 1
            request_seen.set()
            return await handler(request)

        network = PeerNetwork(
            identity=identity,
            chain_id=chain_id,
            is_allowed=lambda key: key in self.members,
            on_frame=on_frame,
            on_connect=on_connect,
            peer_urls=dial,
        )
        app = web.Application(middlewares=[count_requests])
        network.add_routes(app)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = network.create_site(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        await network.start()
        peer = Peer(identity, network, runner, url, received, connected, requests, request_seen)
        self.peers.append(peer)
        return peer

    async def close(self) -> None:
        for peer in self.peers:
            await peer.network.stop()
            await peer.runner.cleanup()


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    c = Cluster()
    try:
        yield c
    finally:
        await c.close()


async def test_two_peers_authenticate_and_exchange_frames(cluster: Cluster) -> None:
    b = await cluster.add()
    a = await cluster.add(dial=(b.url,))
    await wait_until(lambda: b.key in a.network.links and a.key in b.network.links, "the link")
    assert a.network.broadcast(FrameKind.VOTE, b"vote-bytes") == 1
    assert b.network.send(a.key, FrameKind.PROPOSAL, b"proposal-bytes")
    await wait_until(lambda: bool(a.received and b.received), "delivery both ways")
    assert b.received == [(a.key, FrameKind.VOTE, b"vote-bytes")]
    assert a.received == [(b.key, FrameKind.PROPOSAL, b"proposal-bytes")]


async def test_invalid_peer_on_another_chain_is_refused(cluster: Cluster) -> None:
    b = await cluster.add()
    a = await cluster.add(chain_id="other-chain", dial=(b.url,))
    await wait_until(lambda: b.network.refused_handshakes >= 1, "b refusing a")
    assert not a.network.links
    assert not b.network.links


async def test_invalid_peer_outside_the_membership_is_refused(cluster: Cluster) -> None:
    b = await cluster.add()
    stranger = await cluster.add(dial=(b.url,), member=False)
    await wait_until(lambda: b.network.refused_handshakes >= 1, "b refusing the stranger")
    assert not b.network.links
    assert not stranger.network.links


async def test_invalid_handshake_bytes_close_the_connection(cluster: Cluster) -> None:
    b = await cluster.add()
    async with aiohttp.ClientSession() as session, session.ws_connect(b.url + PEER_PATH) as ws:
        await ws.receive_bytes()  # b's hello (in the clear: version, chain id, ephemeral key)
        await ws.send_bytes(b"\xc1 not msgpack")
        message = await ws.receive()
        assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    await wait_until(lambda: b.network.refused_handshakes == 1, "the refusal to be counted")
    assert not b.network.links


async def test_invalid_frame_after_the_handshake_drops_the_peer(cluster: Cluster) -> None:
    b = await cluster.add()
    evil = await cluster.add(dial=(b.url,))
    await wait_until(lambda: b.key in evil.network.links and evil.key in b.network.links, "the link")
    evil.network.links[b.key].send_frame(b"\x93garbage")  # sealed, so it is evil's own doing
    await wait_until(lambda: b.network.dropped_peers == 1, "b dropping the peer")
    await wait_until(lambda: evil.key not in b.network.links, "the link to go")
    assert b.received == []


async def test_invalid_frame_kind_after_the_handshake_drops_the_peer(cluster: Cluster) -> None:
    b = await cluster.add()
    evil = await cluster.add(dial=(b.url,))
    await wait_until(lambda: evil.key in b.network.links, "the link")
    evil.network.links[b.key].send_frame(encode_primitive({"kind": 1, "payload": b"hello again"}))
    await wait_until(lambda: b.network.dropped_peers == 1, "b dropping the peer")


async def test_peers_dialling_each_other_keep_exactly_one_link(cluster: Cluster) -> None:
    a_identity, b_identity = Identity.generate(), Identity.generate()
    cluster.members |= {a_identity.public.sign_key, b_identity.public.sign_key}
    b = await cluster.add(identity=b_identity)
    a = await cluster.add(identity=a_identity, dial=(b.url,))
    # b learns a's address only now, and dials it too: a second connection races the first.
    b.network.peer_urls = (a.url,)
    await b.network.stop()
    await b.runner.cleanup()
    cluster.peers.remove(b)
    b = await cluster.add(identity=b_identity, dial=(a.url,))
    await wait_until(lambda: b.key in a.network.links and a.key in b.network.links, "the link")
    link_a, link_b = a.network.links[b.key], b.network.links[a.key]
    assert link_a.dialer_key == link_b.dialer_key  # both sides kept the same connection
    a.network.broadcast(FrameKind.TXS, b"one")
    b.network.broadcast(FrameKind.TXS, b"two")
    await wait_until(lambda: bool(a.received and b.received), "delivery both ways")
    assert len(a.network.links) == len(b.network.links) == 1


async def test_a_restarted_peer_is_redialled(cluster: Cluster) -> None:
    b_identity = Identity.generate()
    b = await cluster.add(identity=b_identity)
    port = b.runner.addresses[0][1]
    a = await cluster.add(dial=(b.url,))
    await wait_until(lambda: b.key in a.network.links, "the first link")
    await b.network.stop()
    await b.runner.cleanup()
    cluster.peers.remove(b)
    await wait_until(lambda: b_identity.public.sign_key not in a.network.links, "a noticing")
    # b comes back on the same port; a's dialer finds it again.
    received: list[bytes] = []

    async def on_frame(link: PeerLink, kind: int, payload: bytes) -> None:
        received.append(payload)

    network = PeerNetwork(
        identity=b_identity, chain_id=CHAIN, is_allowed=lambda key: key in cluster.members, on_frame=on_frame
    )
    app = web.Application()
    network.add_routes(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await network.create_site(runner, "127.0.0.1", port).start()
    await network.start()
    cluster.peers.append(Peer(b_identity, network, runner, b.url, []))
    await wait_until(lambda: b_identity.public.sign_key in a.network.links, "the redial")
    a.network.broadcast(FrameKind.STATUS, b"back")
    await wait_until(lambda: received == [b"back"], "delivery after the redial")


class ImpostorNetwork(PeerNetwork):
    """Claims `claimed_key` in its hello but can only sign with its own identity."""

    claimed_key = b""

    @property
    def node_key(self) -> bytes:
        return self.claimed_key


async def test_invalid_peer_claiming_a_members_key_is_refused(cluster: Cluster) -> None:
    b = await cluster.add()
    victim = Identity.generate()
    cluster.members.add(victim.public.sign_key)

    async def on_frame(link: PeerLink, kind: int, payload: bytes) -> None:
        raise AssertionError("an impostor must never get a frame through")

    impostor = ImpostorNetwork(
        identity=Identity.generate(),
        chain_id=CHAIN,
        is_allowed=lambda key: True,
        on_frame=on_frame,
        peer_urls=(b.url,),
    )
    impostor.claimed_key = victim.public.sign_key
    await impostor.start()
    try:
        await wait_until(lambda: b.network.refused_handshakes >= 1, "b refusing the impostor")
        assert not b.network.links
    finally:
        await impostor.stop()


async def test_a_dropped_peer_is_refused_until_its_ban_ends(cluster: Cluster) -> None:
    b = await cluster.add()
    evil = await cluster.add(dial=(b.url,))
    await wait_until(lambda: evil.key in b.network.links, "the link")
    evil.network.links[b.key].send_frame(b"\x93garbage")
    await wait_until(lambda: b.network.dropped_peers == 1, "b dropping the peer")
    assert b.network.banned_for(evil.key) > BAN_S - 5
    # evil redials at once, and again: each time refused at the handshake, never linked.
    await wait_until(lambda: b.network.refused_handshakes >= 2, "b refusing the banned peer's redials")
    assert evil.key not in b.network.links
    assert b.network.banned_for(Identity.generate().public.sign_key) == 0


# -- relays an attacker (or a bad network) puts between two nodes ---------------------------------


class TcpRelay:
    """A transparent TCP relay to `target_port` that records every byte, and can damage or freeze.

    `flip_next`: the next chunk of bytes read towards the target gets its last byte flipped.
    `freeze()`: stop forwarding in both directions (sockets stay open: a stall, not a close).
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.recorded = bytearray()
        self.flip_next = False
        self.flipped = 0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self.url = ""

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._on_client, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def freeze(self) -> None:
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    def cut_all(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def stop(self) -> None:
        self._flowing.set()
        if self._server is not None:
            self._server.close()
        self.cut_all()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers += [writer, up_writer]
        pumps = [
            asyncio.ensure_future(self._pump(reader, up_writer, towards_target=True)),
            asyncio.ensure_future(self._pump(up_reader, writer, towards_target=False)),
        ]
        self._tasks.update(pumps)
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for pump in pumps:
            pump.cancel()
        for end in (writer, up_writer):
            end.transport.abort()
        self._tasks.difference_update(pumps)

    async def _pump(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, towards_target: bool
    ) -> None:
        while data := await src.read(64 * 1024):
            await self._flowing.wait()
            if towards_target and self.flip_next:
                self.flip_next = False
                self.flipped += 1
                data = data[:-1] + bytes([data[-1] ^ 0xFF])
            self.recorded += data
            dst.write(data)
            await dst.drain()


async def splice(a_url: str, b_url: str, *, inject: bytes) -> int:
    """A relay without keys dials two nodes and hands each one's handshake messages to the other
    (the attack of issue 9 #4), then injects `inject` into both; returns the messages forwarded."""
    forwarded = 0
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(a_url + PEER_PATH, compress=0, max_msg_size=0) as wa,
        session.ws_connect(b_url + PEER_PATH, compress=0, max_msg_size=0) as wb,
    ):

        async def pump(src: aiohttp.ClientWebSocketResponse, dst: aiohttp.ClientWebSocketResponse) -> None:
            nonlocal forwarded
            for _ in range(3):  # at most the handshake's messages each way
                message = await src.receive()
                if message.type != aiohttp.WSMsgType.BINARY:
                    return
                await dst.send_bytes(message.data)
                forwarded += 1
            await dst.send_bytes(inject)

        async with asyncio.timeout(DEADLINE_S):
            await asyncio.gather(pump(wa, wb), pump(wb, wa), return_exceptions=True)
            # Whatever the nodes decided, they decide it now: wait for them to end both sockets.
            await asyncio.gather(wa.receive(), wb.receive(), return_exceptions=True)
    return forwarded


# -- issue 9 #4: links are secret and bound to the connection ------------------------------------


async def test_trust_4_a_relay_splicing_two_handshakes_is_refused(cluster: Cluster) -> None:
    a = await cluster.add()
    b = await cluster.add()
    forwarded = await splice(a.url, b.url, inject=encode(Frame(int(FrameKind.VOTE), b"injected")))
    assert forwarded >= 2  # the hellos went through: it really spliced the two handshakes
    await wait_until(
        lambda: a.network.refused_handshakes >= 1 and b.network.refused_handshakes >= 1, "both refusing"
    )
    assert a.connected == b.connected == []  # neither took the relay for the other
    assert a.received == b.received == []  # nothing injected
    # The relay proved no key, so nobody is blamed: the honest pair links as soon as one dials.
    assert a.network.dropped_peers == b.network.dropped_peers == 0
    assert a.network.banned_for(b.key) == b.network.banned_for(a.key) == 0
    a.network.peer_urls = (b.url,)
    a.network._spawn(a.network._dial_forever(b.url), "dial b")
    await wait_until(lambda: b.key in a.network.links and a.key in b.network.links, "the direct link")


async def test_trust_4_peer_traffic_is_unreadable_on_the_wire(cluster: Cluster) -> None:
    b = await cluster.add()
    relay = TcpRelay(b.runner.addresses[0][1])
    await relay.start()
    try:
        a = await cluster.add(dial=(relay.url,))
        await wait_until(lambda: b.key in a.network.links and a.key in b.network.links, "the link")
        marker = b"inquiry purpose=HPAYMT reason=patient-visible-marker"
        a.network.broadcast(FrameKind.TXS, marker)
        b.network.broadcast(FrameKind.TXS, marker)
        await wait_until(lambda: bool(a.received and b.received), "delivery both ways")
        assert b.received == [(a.key, FrameKind.TXS, marker)]
        assert len(relay.recorded) > len(marker)
        assert marker[:16] not in relay.recorded
        assert a.key not in relay.recorded  # identities are sealed too
        assert b.key not in relay.recorded
    finally:
        await relay.stop()


async def test_trust_4_a_damaged_chunk_ends_the_link_without_blame(cluster: Cluster) -> None:
    b = await cluster.add()
    relay = TcpRelay(b.runner.addresses[0][1])
    await relay.start()
    try:
        a = await cluster.add(dial=(relay.url,))
        await wait_until(lambda: a.key in b.network.links, "the link")
        first = b.network.links[a.key]
        relay.flip_next = True
        a.network.broadcast(FrameKind.TXS, b"x" * 1000)
        await wait_until(first.ended.is_set, "b ending the damaged link")
        assert relay.flipped == 1
        assert b.received == []  # the damaged frame was not delivered
        assert b.network.dropped_peers == 0
        assert b.network.banned_for(a.key) == 0
        # a dials again at once; the next frame goes through.
        await wait_until(lambda: a.key in b.network.links and b.key in a.network.links, "the new link")
        a.network.broadcast(FrameKind.TXS, b"after")
        await wait_until(lambda: bool(b.received), "delivery on the new link")
        assert b.received == [(a.key, FrameKind.TXS, b"after")]
    finally:
        await relay.stop()


# -- issue 9 #5: bounded before authentication, bounded after it ----------------------------------


async def test_trust_5_compression_is_never_negotiated(cluster: Cluster) -> None:
    b = await cluster.add()
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(b.url + PEER_PATH, compress=15) as ws,
    ):
        assert ws.compress == 0  # the node declined permessage-deflate
        await ws.receive_bytes()


async def test_trust_5_a_large_message_before_authentication_is_refused_unbuffered(cluster: Cluster) -> None:
    b = await cluster.add()
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(b.url + PEER_PATH, compress=0, max_msg_size=0) as ws,
    ):
        await ws.receive_bytes()  # b's hello
        await ws.send_bytes(b"\x00" * (SEALED_CHUNK_BYTES_MAX * 8))
        message = await ws.receive()
        assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        # Refused by its declared length, not read to its end and then found wanting.
        assert ws.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
    assert not b.network.links


async def test_trust_5_silent_sockets_are_capped_and_cut(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(peers, "HANDSHAKE_TIMEOUT_S", 1.0)
    b = await cluster.add()
    port = b.runner.addresses[0][1]
    extra = 6
    sockets = [
        await asyncio.open_connection("127.0.0.1", port)
        for _ in range(peers.INBOUND_UNAUTHENTICATED_PER_ADDRESS_MAX + extra)
    ]
    try:
        # Over the per-address cap: cut on arrival. Within it: cut at the deadline. Silent all along.
        ended = await asyncio.gather(*(reader.read(1) for reader, _ in sockets))
        assert ended == [b""] * len(sockets)
        await wait_until(lambda: b.network.guard.open_connections == 0, "the guard to release them all")
        counts = b.network.refusal_counts
        assert counts["refused (too many unauthenticated connections from one address)"] == extra
        assert counts["cut (not authenticated in time)"] == peers.INBOUND_UNAUTHENTICATED_PER_ADDRESS_MAX
    finally:
        for _, writer in sockets:
            writer.transport.abort()
    # A member still links once the flood is gone.
    a = await cluster.add(dial=(b.url,))
    await wait_until(lambda: a.key in b.network.links, "the member's link")


async def test_trust_5_a_reader_too_slow_is_disconnected_not_banned(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(peers, "SEND_QUEUE_BYTES_MAX", 512 * 1024)
    monkeypatch.setattr(peers, "HEARTBEAT_S", 60.0)  # the stall must show in the queue, not a ping
    b = await cluster.add()
    a = await cluster.add(dial=(b.url,))
    await wait_until(lambda: b.key in a.network.links and a.key in b.network.links, "the link")
    stuck = asyncio.Event()

    async def reads_nothing(link: PeerLink, kind: int, payload: bytes) -> None:
        await stuck.wait()  # b's reader stops: its socket, then a's, fill up

    b.network.on_frame = reads_nothing
    link = a.network.links[b.key]
    deadline = time.monotonic() + DEADLINE_S
    try:
        while not link.ended.is_set():
            assert time.monotonic() < deadline, "a never gave up on the slow reader"
            link.send(FrameKind.TXS, b"t" * 64 * 1024)
            await asyncio.sleep(0)  # let the writer run: what it cannot write stays queued
        assert a.network.slow_peers == 1
        assert link.queued_bytes <= peers.SEND_QUEUE_BYTES_MAX
        assert a.network.dropped_peers == 0
        assert a.network.banned_for(b.key) == 0
    finally:
        stuck.set()
    await wait_until(lambda: b.key in a.network.links, "the link to come back")


# -- issue 9 #11: a pause is not an attack ---------------------------------------------------------


async def test_trust_11_a_missed_pong_is_a_disconnect_not_a_ban(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(peers, "HEARTBEAT_S", 1.0)
    b = await cluster.add()
    relay = TcpRelay(b.runner.addresses[0][1])
    await relay.start()
    try:
        a = await cluster.add(dial=(relay.url,))
        await wait_until(lambda: b.key in a.network.links and a.key in b.network.links, "the link")
        relay.freeze()  # a stall on the path (a paused VM, a GC pause): pings go unanswered
        await wait_until(lambda: not a.network.links and not b.network.links, "both ending the link")
        assert a.network.dropped_peers == b.network.dropped_peers == 0
        assert a.network.banned_for(b.key) == b.network.banned_for(a.key) == 0
        relay.cut_all()
        relay.thaw()
        await wait_until(lambda: b.key in a.network.links and a.key in b.network.links, "the link back")
    finally:
        await relay.stop()


async def test_trust_11_a_duplicate_link_does_not_redial_in_a_hot_loop(cluster: Cluster) -> None:
    a_identity, b_identity = Identity.generate(), Identity.generate()
    cluster.members |= {a_identity.public.sign_key, b_identity.public.sign_key}
    # Each dials the other: one of the two links is refused after its handshake, as a duplicate.
    b = await cluster.add(identity=b_identity, dial=("http://127.0.0.1:1",))
    a = await cluster.add(identity=a_identity, dial=(b.url,))
    b.network._spawn(b.network._dial_forever(a.url), "dial a")
    await wait_until(lambda: b.key in a.network.links and a.key in b.network.links, "the link")
    await wait_until(lambda: a.requests[0] >= 1, "b's dial to reach a")  # the second link raced
    before = a.requests[0] + b.requests[0]

    async def redials() -> None:
        while a.requests[0] + b.requests[0] - before <= 1:
            a.request_seen.clear()
            b.request_seen.clear()
            waits = [
                asyncio.ensure_future(a.request_seen.wait()),
                asyncio.ensure_future(b.request_seen.wait()),
            ]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for wait in waits:
                wait.cancel()

    # An observation window: the loser of the race must not keep redialling the peer it has.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(redials(), OBSERVE_S)
    assert len(a.network.links) == len(b.network.links) == 1


# -- issue 9 #13: outsiders cannot flood the operator's log ---------------------------------------


async def test_trust_13_peer_hostile_connections_log_at_most_a_summary(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    b = await cluster.add()
    port = b.runner.addresses[0][1]
    rounds = 30
    caplog.set_level(logging.INFO)

    async def garbage_request_line() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"\x16\x03\x01 NOT HTTP AT ALL\r\n\r\n")
        await reader.read()
        writer.transport.abort()

    async def plain_get() -> None:
        async with aiohttp.ClientSession() as session, session.get(b.url + PEER_PATH) as response:
            await response.read()

    async def reset_mid_handshake() -> None:
        session = aiohttp.ClientSession()
        try:
            ws = await session.ws_connect(b.url + PEER_PATH, compress=0)
            await ws.receive_bytes()
            transport = ws._response.connection.transport if ws._response.connection else None
            if transport is not None:
                sock = transport.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                transport.abort()  # an RST, not a close
        finally:
            await session.close()

    async def bad_handshake() -> None:
        async with aiohttp.ClientSession() as session, session.ws_connect(b.url + PEER_PATH) as ws:
            await ws.receive_bytes()
            await ws.send_bytes(os.urandom(64))
            await ws.receive()

    for _ in range(rounds):
        await asyncio.gather(garbage_request_line(), plain_get(), reset_mid_handshake(), bad_handshake())
    await wait_until(
        lambda: (
            sum(b.network.refusal_counts.values()) >= 3 * rounds and b.network.guard.open_connections == 0
        ),
        "the refusals to be counted",
    )
    b.network._refusals.flush()  # what the summary timer does every LOG_SUMMARY_S
    lines = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert not [r for r in lines if r.exc_info or r.levelno >= logging.ERROR], [r.getMessage() for r in lines]
    assert len(lines) <= 2, [r.getMessage() for r in lines]  # one summary (a timer may add one)
    assert "inbound handshake failed" in lines[-1].getMessage()


async def test_trust_5_an_unproven_peer_cannot_make_a_node_reassemble_a_large_message(
    cluster: Cluster,
) -> None:
    """The attacker is a genuine end of the key agreement (it can seal chunks), but has proved no
    node key: the node takes one small single-chunk message from it, nothing larger."""
    b = await cluster.add()
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(b.url + PEER_PATH, compress=0, max_msg_size=0) as ws,
    ):
        ephemeral = EphemeralKeys.generate()
        await ws.send_bytes(encode(ChannelHello(PROTOCOL_VERSION, CHAIN, ephemeral.public)))
        hello = decode(ChannelHello, await ws.receive_bytes(), max_bytes=1024)
        secrets = compute_session_secrets(
            ephemeral, hello.ephemeral_key, is_dialer=True, version=PROTOCOL_VERSION, chain_id=CHAIN
        )
        chunks = list(ChunkSealer(secrets.send_key).iter_sealed(bytes(64 * 1024)))
        for chunk in chunks[:3]:  # the start of a 64 KB "handshake message"
            with contextlib.suppress(ConnectionError):
                await ws.send_bytes(chunk)
        while (await ws.receive()).type == aiohttp.WSMsgType.BINARY:
            pass  # b's own auth, then its close
    await wait_until(lambda: b.network.refused_handshakes == 1, "b refusing it")
    assert not b.network.links
    assert b.network.dropped_peers == 0  # it proved no key: nobody to ban


def test_decoding_a_frame_costs_memory_in_proportion_to_its_bytes() -> None:
    """A few bytes claiming a 30 MB payload (the codec's limits apply before allocation)."""
    claim = b"\x82\xa4kind\x05\xa7payload\xc6" + (30_000_000).to_bytes(4, "big") + b"x" * 10
    tracemalloc.start()
    try:
        with pytest.raises(CodecError):
            decode(Frame, claim, max_bytes=FRAME_WIRE_BYTES_MAX)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024
