"""Issue #5: a malicious sync peer is detected and dropped, and recovery completes from honest peers.

The network: four genesis validators. Three honest ones run as real node processes on a chain
generated straight into their stores (every block certified by their three precommits, a quorum
of four); the fourth validator's key belongs to `MaliciousPeer`, which runs in this test process
on the production peer code (handshake, framing) and holds the genuine chain. The recovering node
is the network's observer, a real process started with an empty data directory for each case.

Each case lets the recovering node meet the malicious peer first: its links to the honest peers
go through relays held shut until the malicious peer has been asked for blocks, so that peer is
asked under any peer selection. The malicious peer claims the whole chain (the honest peers'
height) and holds its first answer until the recovering node has its honest peers too, so the
bad range arrives when it can be fetched elsewhere. Then every range it serves is damaged in the
case's way (see `Misbehaviour`).

Asserted from the outside, for every case: the malicious peer was asked for blocks; the
recovering node reaches the honest peers' height with the same block hashes, latest block hash
and state root. For every invalid answer (tampered blocks, forged certificates, bytes cut on the
wire): the recovering node closed a link on which it had been served one, with the
protocol-violation close code its peer layer drops peers with. A short range (genuine blocks,
fewer than asked, as a size cap makes them) is legal: it must neither stall recovery nor get its
sender dropped. An empty range must not stall recovery. The honest validators are shared by all
cases; every process started here is stopped, pass or fail.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import nacl.pwhash.argon2id
import pytest
from malicious_peer import (
    GatedRelay,
    MaliciousPeer,
    Misbehaviour,
    generate_chain,
    load_committed_blocks,
)
from recovery_harness import NET_CHAIN_ID, NODE_ENV, PASSPHRASE, POLL_S, wait_until

from medledger.network.messages import CommittedBlock
from medledger.node.genesis_file import load_genesis
from medledger.node.home import GENESIS_FILE
from medledger.node.process import NodeProcess
from medledger.node.testnet import TestnetNode as NodeSpec  # not "Test*": pytest would collect it
from medledger.node.testnet import create_testnet

pytestmark = pytest.mark.slow

NAMES: Final = ("honest0", "honest1", "honest2", "byzantine")
HONEST: Final = 3
#: Three sync ranges' worth (at most 100 blocks a range), so parallel range fetching has ranges to share.
CHAIN_BLOCKS: Final = 240
TXS_PER_BLOCK: Final = 2
DEADLINE_S: Final = 30.0
#: Catching up 240 blocks takes about a second once honest peers are asked; the margin covers a
#: loaded machine and sync's re-asking after timeouts.
RECOVERY_DEADLINE_S: Final = 60.0

Tip = tuple[int, str, str]


@dataclasses.dataclass(frozen=True, slots=True)
class Cluster:
    specs: list[NodeSpec]
    honest: list[NodeProcess]
    blocks: list[CommittedBlock]
    tip: Tip
    block_hashes: list[str]

    @property
    def byzantine(self) -> NodeSpec:
        return self.specs[HONEST]

    @property
    def recovering(self) -> NodeSpec:
        return self.specs[HONEST + 1]


def read_tip(proc: NodeProcess) -> Tip:
    status = proc.get_json("/status")
    return int(status["height"]), str(status["latest_block_hash"]), str(status["state_root"])


def is_meshed(proc: NodeProcess) -> bool:
    return bool(proc.get_json("/status")["peers"] == HONEST - 1)


def read_block_hashes(proc: NodeProcess, last: int) -> list[str]:
    hashes: list[str] = []
    for start in range(1, last + 1, 100):
        data = proc.get_json(f"/v1/blocks?from={start}&to={min(start + 99, last)}")
        hashes += [str(b["hash"]) for b in data["blocks"]]
    return hashes


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    specs = create_testnet(
        tmp_path_factory.mktemp("malicious") / "net",
        validators=len(NAMES),
        observers=1,
        chain_id=NET_CHAIN_ID,
        block_interval_ms=20,
        passphrase=PASSPHRASE.encode(),
        key_opslimit=nacl.pwhash.argon2id.OPSLIMIT_MIN,
        key_memlimit=nacl.pwhash.argon2id.MEMLIMIT_MIN,
        names=NAMES,
    )
    honest_specs = specs[:HONEST]
    genesis = load_genesis(specs[0].home / GENESIS_FILE)
    data = honest_specs[0].home / "data"
    generate_chain(
        data, genesis, [s.identity for s in honest_specs], blocks=CHAIN_BLOCKS, txs_per_block=TXS_PER_BLOCK
    )
    for spec in honest_specs[1:]:
        shutil.copytree(data, spec.home / "data")
    blocks = load_committed_blocks(data)
    # The honest validators dial only each other: the recovering node must reach them through the
    # test's relays, and the malicious validator's key is the test's.
    honest = [
        NodeProcess(
            spec.home,
            env={
                **NODE_ENV,
                "MEDLEDGER_P2P_PEERS": ",".join(
                    f"http://127.0.0.1:{other.p2p_port}" for other in honest_specs if other is not spec
                ),
            },
            use_config_ports=True,
        )
        for spec in honest_specs
    ]
    try:
        for proc in honest:
            proc.start()
        for proc in honest:
            proc.wait_ready(DEADLINE_S, require_ready=False)
        for proc in honest:
            wait_until(functools.partial(is_meshed, proc), f"{proc.home.name} to reach its honest peers")
        tips = {read_tip(proc) for proc in honest}
        assert len(tips) == 1, tips
        tip = tips.pop()
        assert tip[0] == CHAIN_BLOCKS
        yield Cluster(specs, honest, blocks, tip, read_block_hashes(honest[0], CHAIN_BLOCKS))
    finally:
        for proc in honest:
            proc.stop()
        for proc in honest:
            print(f"===== {proc.home.name}\n{proc.read_log()[-3000:]}")  # shown when a test failed


async def poll_until(check: Callable[[], bool], what: Callable[[], str], timeout_s: float) -> None:
    """Poll a blocking `check` (in a thread, so the malicious peer keeps serving) until it holds."""
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what()}")
        await asyncio.sleep(POLL_S)


async def wait_event(event: asyncio.Event, what: str, timeout_s: float) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what}") from None


def describe(malicious: MaliciousPeer) -> str:
    """What the malicious peer saw: its links, requests, answers and how the first links ended."""
    links = malicious.links
    first = "; ".join(
        f"link {i}: requests {[(r.from_height, r.to_height) for r in link.requests[:3]]}"
        f"{'…' if len(link.requests) > 3 else ''}, {link.answers} answer(s), close code {link.close_code}"
        for i, link in enumerate(links[:3])
    )
    dropped = sum(link.was_dropped for link in links)
    return (
        f"{len(links)} link(s), {len(malicious.requests)} request(s), {malicious.answers} answer(s), "
        f"{dropped} link(s) dropped; {first}"
    )


def wipe(home: Path) -> None:
    shutil.rmtree(home / "data", ignore_errors=True)
    (home / "node.log").unlink(missing_ok=True)


@pytest.mark.parametrize("misbehaviour", list(Misbehaviour), ids=lambda m: m.value)
async def test_a_malicious_sync_peer_is_dropped_and_recovery_completes_from_honest_peers(
    cluster: Cluster, misbehaviour: Misbehaviour
) -> None:
    spec = cluster.recovering
    wipe(spec.home)
    malicious = MaliciousPeer(
        identity=cluster.byzantine.identity,
        chain_id=NET_CHAIN_ID,
        victim_key=spec.identity.public.sign_key,
        blocks=cluster.blocks,
        advertised_height=cluster.tip[0],
        misbehaviour=misbehaviour,
    )
    relays = [GatedRelay(s.p2p_port) for s in cluster.specs[:HONEST]]
    node: NodeProcess | None = None
    try:
        await malicious.start()
        for relay in relays:
            await relay.start()
        node = NodeProcess(
            spec.home,
            env={
                **NODE_ENV,
                "MEDLEDGER_P2P_PEERS": ",".join([malicious.url, *(r.url for r in relays)]),
                "MEDLEDGER_P2P_PORT": "0",  # no one dials it: it dials out, to the relays and the peer
            },
        )
        await asyncio.to_thread(node.start)
        await wait_event(malicious.asked, "the recovering node to ask its only peer for blocks", DEADLINE_S)
        await asyncio.to_thread(node.wait_ready, DEADLINE_S, require_ready=False)
        for relay in relays:
            relay.open()
        status: dict[str, Any] = {}

        def has_every_peer() -> bool:
            assert node is not None
            status.update(node.get_json("/status"))
            return bool(status["peers"] == HONEST + 1)

        await poll_until(has_every_peer, lambda: f"the honest peers to connect (status {status})", DEADLINE_S)
        malicious.release()

        seen: list[Tip] = []

        def caught_up() -> bool:
            assert node is not None
            seen[:] = [read_tip(node)]
            return seen[0] == cluster.tip

        await poll_until(
            caught_up,
            lambda: (
                f"recovery to the honest tip {cluster.tip} (last seen {seen}; "
                f"the malicious peer: {describe(malicious)})"
            ),
            RECOVERY_DEADLINE_S,
        )
        assert await asyncio.to_thread(read_block_hashes, node, CHAIN_BLOCKS) == cluster.block_hashes

        assert malicious.requests, "the malicious peer was never asked for blocks"
        assert malicious.answers >= 1
        # Every link close with the protocol-violation code came from the recovering node.
        assert malicious.network.dropped_peers == 0
        if misbehaviour.is_invalid:
            await wait_event(
                malicious.dropped,
                f"the recovering node to drop the malicious peer ({describe(malicious)})",
                DEADLINE_S,
            )
            assert any(link.answers and link.was_dropped for link in malicious.links)
        elif misbehaviour is Misbehaviour.SHORT_RANGE:
            assert not any(link.was_dropped for link in malicious.links), describe(malicious)
    finally:
        if node is not None:
            await asyncio.to_thread(node.stop)
        await malicious.stop()
        for relay in relays:
            await relay.stop()
        lines = node.read_log().splitlines() if node is not None else []
        events = "\n".join(line for line in lines if "committed block" not in line)  # peers, drops
        print(f"===== recovering node ({misbehaviour.value})\n{events[-8000:]}")  # shown when it failed
