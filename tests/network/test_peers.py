"""Peer links: mutual authentication, membership, delivery, dropping bad peers, one link per pair."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from aiohttp import web

from medledger.chain.codec import encode_primitive
from medledger.crypto import Identity
from medledger.network.messages import FrameKind
from medledger.network.peers import BAN_S, PEER_PATH, PeerLink, PeerNetwork

CHAIN = "peer-test"
DEADLINE_S = 15.0


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

        network = PeerNetwork(
            identity=identity,
            chain_id=chain_id,
            is_allowed=lambda key: key in self.members,
            on_frame=on_frame,
            peer_urls=dial,
        )
        app = web.Application()
        network.add_routes(app)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = network.create_site(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        await network.start()
        peer = Peer(identity, network, runner, url, received)
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
