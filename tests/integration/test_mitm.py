"""Issue 9 #4 on real node processes: a relay without keys splices two validators' handshakes.

Four validators, each a real `medledger start` process. validator0 and validator1 are also told
that the other one listens at the relay's address (besides its real one), so both dial the relay,
both believing they reach the other. The relay holds no key: it pairs the two connections and
hands each one's handshake messages to the other, then injects a frame into each and stops
forwarding, which is how the attack of issue 9 spliced a link, got the real validator banned for
the garbage, and held a restarted validator's link slot (eclipsing it).

Asserted: the relay splices handshakes again and again and each spliced connection is ended by
the nodes before any injected frame counts (no node drops or bans a peer: `peers_dropped` stays 0
everywhere), the two validators end up linked directly (three peers each, none through the
relay, whose pairs never outlive a handshake), and the chain keeps committing throughout,
including after validator0 is restarted with the relay racing its redials.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from typing import Final

import aiohttp
import pytest
from aiohttp import web
from cluster_harness import (
    ApiClient,
    LoadStream,
    LocalCluster,
    MakeCluster,
    ProxyHub,
    assert_committed_everywhere,
    assert_same_chain,
    has_peers,
    rewrite_peers,
    wait_until,
)

from medledger.crypto import Identity
from medledger.network.peers import PEER_PATH

pytestmark = pytest.mark.slow

SPLICED: Final = ("validator0", "validator1")
#: Messages the relay forwards each way before it injects: a handshake's worth (hello, auth, verdict).
HANDSHAKE_MESSAGES: Final = 3
#: A frame of the peer protocol as version 1 sent it in the clear (kind VOTE, garbage payload).
INJECTED: Final = b"\x82\xa4kind\x05\xa7payload\xc4\x08injected"


@dataclasses.dataclass(eq=False)
class _Leg:
    """One node's connection to the relay, and what the node sent on it (None once it ended)."""

    ws: web.WebSocketResponse
    inbox: asyncio.Queue[bytes | None] = dataclasses.field(default_factory=asyncio.Queue)
    ended: bool = False


class SplicingRelay:
    """Accepts websocket connections at the peer path and splices them two by two: each one's
    first `HANDSHAKE_MESSAGES` messages go to the other, then `INJECTED`, then nothing (held)."""

    def __init__(self) -> None:
        self.pairs = 0
        self.open_pairs = 0
        self.forwarded = 0
        self._lobby: list[_Leg] = []
        self._splices: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(PEER_PATH, self._accept)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        for task in list(self._splices):
            task.cancel()
        await asyncio.gather(*self._splices, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()

    async def _accept(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0, compress=False)
        await ws.prepare(request)
        leg = _Leg(ws)
        self._lobby = [waiting for waiting in self._lobby if not waiting.ended]
        if self._lobby:
            task = asyncio.ensure_future(self._splice(self._lobby.pop(0), leg))
            self._splices.add(task)
            task.add_done_callback(self._splices.discard)
        else:
            self._lobby.append(leg)
        async for message in ws:  # this handler reads its socket for whichever splice uses it
            if message.type == aiohttp.WSMsgType.BINARY:
                leg.inbox.put_nowait(message.data)
        leg.ended = True
        leg.inbox.put_nowait(None)
        return ws

    async def _splice(self, a: _Leg, b: _Leg) -> None:
        self.pairs += 1
        self.open_pairs += 1
        try:
            await asyncio.gather(self._pump(a, b), self._pump(b, a), return_exceptions=True)
        finally:
            self.open_pairs -= 1
            for leg in (a, b):
                with contextlib.suppress(Exception):
                    await leg.ws.close()

    async def _pump(self, src: _Leg, dst: _Leg) -> None:
        for _ in range(HANDSHAKE_MESSAGES):
            data = await src.inbox.get()
            if data is None:
                return
            await dst.ws.send_bytes(data)
            self.forwarded += 1
        await dst.ws.send_bytes(INJECTED)
        while await src.inbox.get() is not None:
            pass  # hold the "link": forward nothing more (the eclipse) until a side ends it


def read_dropped(cluster: LocalCluster) -> dict[str, float]:
    """Each running node's `medledger_peers_dropped` gauge (links dropped for breaking the protocol)."""
    dropped: dict[str, float] = {}
    for node in cluster.nodes:
        ops = ApiClient(node.process.ops_url, node.spec.api_token)  # /metrics is on the ops address
        text = ops.request("GET", "/metrics").body.decode()
        for line in text.splitlines():
            if line.startswith("medledger_peers_dropped "):
                dropped[node.name] = float(line.split()[1])
    return dropped


def test_trust_4_a_relay_splicing_two_validators_is_refused_and_eclipses_nobody(
    fault_proxies: ProxyHub, cluster_factory: MakeCluster, signer: Identity
) -> None:
    relay = SplicingRelay()
    fault_proxies.call(relay.start())

    def through_relay(cluster: LocalCluster) -> None:
        for name in SPLICED:
            spec = cluster[name].spec
            others = [f"http://127.0.0.1:{n.spec.p2p_port}" for n in cluster.nodes if n.spec is not spec]
            rewrite_peers(spec, [relay.url, *others])

    try:
        cluster = cluster_factory(configure=through_relay)
        entry = cluster["validator2"]
        with LoadStream(entry, signer, "mitm") as load:
            load.wait_committed_height(entry.height() + 3, "the load to commit with the relay at work")
            wait_until(lambda: relay.pairs >= 3, "the relay to splice handshakes several times")

            # The eclipse attempt: validator0 restarts while the relay races for its links.
            victim = cluster[SPLICED[0]]
            victim.kill()
            pairs_before = relay.pairs
            victim.launch()
            victim.wait_serving()
            cluster.wait_meshed()
            wait_until(lambda: relay.pairs > pairs_before, "the relay to splice the restarted validator")
            target = entry.height() + 3
            load.wait_committed_height(target, "the chain to go on after the restart")
            wait_until(lambda: victim.height() >= target, "the restarted validator to catch up")
        assert load.failure is None, load.failure

        for node in cluster.nodes:
            assert has_peers(node, len(cluster.nodes) - 1), node.name
        assert read_dropped(cluster) == {n.name: 0.0 for n in cluster.nodes}
        # No spliced connection outlived its handshake: the four links each has are direct ones.
        wait_until(lambda: relay.open_pairs == 0, "every spliced pair to be closed by the nodes")
        tip = cluster.wait_agreed()
        blocks = assert_same_chain(cluster.nodes, tip["height"], cluster.validator_keys)
        committed, _ = load.snapshot()
        assert_committed_everywhere(cluster.nodes, blocks, committed)
        for node in cluster.nodes:
            log = node.process.read_log()
            assert "dropping peer" not in log, node.name
            assert "Traceback" not in log, node.name
    finally:
        fault_proxies.call(relay.stop())
