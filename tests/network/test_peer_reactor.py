"""What a linked peer can make the reactor do for it (issue 9 #5): no block is read for a
consensus message whose signature does not verify, and block answers are rate-limited per peer."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

import pytest
from aiohttp import web

from medledger.chain.admission import Admission
from medledger.chain.codec import encode
from medledger.chain.consensus import sign_vote
from medledger.chain.execution import build_block, execute_block
from medledger.chain.executor import BlockExecutor
from medledger.chain.memdb import MemDB
from medledger.chain.mempool import Mempool
from medledger.chain.store import BlockStore
from medledger.chain.txbuilder import sign_commit, sign_tx
from medledger.chain.types import Commit, CommitSig, Genesis, Validator, ValidatorSet, Vote, VoteKind
from medledger.chain.validation import check_tx
from medledger.crypto import Identity
from medledger.network import reactor as reactor_module
from medledger.network import syncservice
from medledger.network.channel import ChunkAssembler, ChunkSealer
from medledger.network.clock import LoopClock
from medledger.network.messages import BlockRequest, FrameKind, PeerStatus
from medledger.network.peers import PeerError, PeerLink, PeerNetwork
from medledger.network.reactor import Reactor
from medledger.node.fixture_app import KeyValueFixtureApp, encode_set_body

CHAIN = "peer-reactor-test"


class Node:
    """A one-validator reactor with block 1 committed, and links that record what it sends."""

    def __init__(self, identity: Identity, genesis: Genesis, reactor: Reactor, network: PeerNetwork) -> None:
        self.identity = identity
        self.genesis = genesis
        self.reactor = reactor
        self.network = network

    def link(self) -> PeerLink:
        key = os.urandom(32)
        link = PeerLink(
            peer_key=key,
            dialer_key=key,
            ws=web.WebSocketResponse(),
            sealer=ChunkSealer(os.urandom(32)),
            assembler=ChunkAssembler(os.urandom(32), message_bytes_max=1024),
            on_overflow=lambda link: None,
        )
        self.network.links[key] = link
        return link


def make_reactor(store: BlockStore, app: KeyValueFixtureApp, identity: Identity, genesis: Genesis) -> Reactor:
    """A reactor over `store` with small limits and the wall clock (no peers until attached)."""
    mempool = Mempool()
    return Reactor(
        store=store,
        app=app,
        mempool=mempool,
        admission=Admission(store=store, mempool=mempool, app=app),
        identity=identity,
        genesis=genesis,
        block_interval_ms=10,
        max_block_txs=100,
        max_block_bytes=1 << 20,
        clock=LoopClock(),
        on_committed=lambda executed: None,
    )


@pytest.fixture
async def node() -> Node:
    identity = Identity.generate()
    public = identity.public
    genesis = Genesis(CHAIN, 0, ValidatorSet.of([Validator("v", public.sign_key, public.enc_key)]), b"")
    app = KeyValueFixtureApp()
    store = BlockStore.open_memory(MemDB())
    store.init_genesis(genesis, app.init_state(genesis))
    now = time.time_ns() // 1_000_000
    _, raw, _ = sign_tx(identity, chain_id=CHAIN, kind="kv.set", body=encode_set_body(b"k", b"v" * 1000))
    executed = BlockExecutor(store=store, app=app, genesis=genesis).build_proposal(
        proposer=identity.public.sign_key,
        round_=0,
        time_ms=now,
        txs=[check_tx(raw, chain_id=CHAIN, now_ms=now)],
    )
    commit = sign_commit([identity], chain_id=CHAIN, height=1, round_=0, block_hash=executed.block.hash())
    reactor = make_reactor(store, app, identity, genesis)
    await reactor._commit(executed.block, commit)
    assert store.height == 1
    network = PeerNetwork(
        identity=identity, chain_id=CHAIN, is_allowed=lambda key: True, on_frame=reactor.on_frame
    )
    reactor.attach(network)
    return Node(identity, genesis, reactor, network)


async def test_trust_5_a_forged_vote_for_a_committed_height_drops_the_peer_before_any_block(
    node: Node,
) -> None:
    genuine = sign_vote(
        node.identity, chain_id=CHAIN, kind=VoteKind.PRECOMMIT, height=1, round_=0, block_hash=b"\x01" * 32
    )
    forged = Vote(CHAIN, genuine.kind, 1, 0, genuine.block_hash, genuine.validator, bytes(64))
    link = node.link()
    for _ in range(3):
        with pytest.raises(PeerError, match="bad signature"):
            await node.reactor.on_frame(link, FrameKind.VOTE, encode(forged))
    outsider = Identity.generate()
    from_outsider = sign_vote(
        outsider, chain_id=CHAIN, kind=VoteKind.PRECOMMIT, height=1, round_=0, block_hash=b"\x01" * 32
    )
    with pytest.raises(PeerError, match="non-validator"):
        await node.reactor.on_frame(link, FrameKind.VOTE, encode(from_outsider))
    assert link.queued_bytes == 0  # no block was read or queued for it
    # A genuine vote for a committed height is taken (the reactor may help its lagging signer).
    await node.reactor.on_frame(link, FrameKind.VOTE, encode(genuine))
    assert node.reactor._inbox.qsize() == 1


async def test_trust_5_block_requests_are_rate_limited_per_peer(node: Node) -> None:
    greedy, other = node.link(), node.link()
    request = encode(BlockRequest(1, 1))
    burst = syncservice.BLOCK_REQUESTS_BURST
    for _ in range(3 * burst):
        await node.reactor.on_frame(greedy, FrameKind.GET_BLOCKS, request)
        greedy._queue.clear()  # as if it read every answer at once: only the rate limits it
        greedy.queued_bytes = 0
    answered = 3 * burst - node.reactor.block_requests_refused
    # The burst, and what the rate refilled while the loop ran (well below the burst again).
    assert burst <= answered < 2 * burst
    await node.reactor.on_frame(other, FrameKind.GET_BLOCKS, request)
    assert other.queued_bytes > 0  # another peer is answered all the same


async def test_trust_5_a_peer_that_does_not_drain_gets_no_more_blocks(node: Node) -> None:
    slow = node.link()
    request = encode(BlockRequest(1, 1))
    await node.reactor.on_frame(slow, FrameKind.GET_BLOCKS, request)
    first = slow.queued_bytes
    assert first > 0
    slow.queued_bytes = syncservice.BLOCK_ANSWER_BACKLOG_BYTES_MAX + 1  # unsent, as if stuck
    await node.reactor.on_frame(slow, FrameKind.GET_BLOCKS, request)
    assert len(slow._queue) == 1
    assert node.reactor.block_requests_refused == 1


@pytest.fixture
async def pair() -> tuple[Node, Identity, bytes]:
    """A reactor of a two-validator chain with block 1 committed (certified by both), working on
    height 2; the other validator's identity and block 1's hash."""
    me, other = Identity.generate(), Identity.generate()
    validators = ValidatorSet.of(
        [Validator(name, i.public.sign_key, i.public.enc_key) for name, i in (("a", me), ("b", other))]
    )
    genesis = Genesis(CHAIN, 0, validators, b"")
    proposer = me if validators.get_proposer(1, 0).sign_key == me.public.sign_key else other
    app = KeyValueFixtureApp()
    store = BlockStore.open_memory(MemDB())
    store.init_genesis(genesis, app.init_state(genesis))
    now = time.time_ns() // 1_000_000
    _, raw, _ = sign_tx(me, chain_id=CHAIN, kind="kv.set", body=encode_set_body(b"k", b"v" * 1000))
    checked = check_tx(raw, chain_id=CHAIN, now_ms=now)
    block = build_block(
        store=store,
        validators=validators,
        proposer=proposer.public.sign_key,
        round_=0,
        time_ms=now,
        txs=[checked],
    )
    executed = execute_block(app, store, block, (checked.tx,), [checked.tx_id])
    block_hash = executed.block.hash()
    commit = Commit(
        1,
        0,
        block_hash,
        tuple(
            CommitSig(i.public.sign_key, sign_vote(
                i, chain_id=CHAIN, kind=VoteKind.PRECOMMIT, height=1, round_=0, block_hash=block_hash
            ).signature)
            for i in sorted((me, other), key=lambda i: i.public.sign_key)
        ),
    )  # fmt: skip
    reactor = make_reactor(store, app, me, genesis)
    await reactor._commit(executed.block, commit)
    assert store.height == 1
    network = PeerNetwork(identity=me, chain_id=CHAIN, is_allowed=lambda key: True, on_frame=reactor.on_frame)
    reactor.attach(network)
    await reactor._execute(reactor.core.start_height(2, reactor.validators_for(2)))
    assert reactor.core.height == 2
    return Node(me, genesis, reactor, network), other, block_hash


def _link_for(node: Node, key: bytes) -> PeerLink:
    link = PeerLink(
        peer_key=key,
        dialer_key=key,
        ws=web.WebSocketResponse(),
        sealer=ChunkSealer(os.urandom(32)),
        assembler=ChunkAssembler(os.urandom(32), message_bytes_max=1024),
        on_overflow=lambda link: None,
    )
    node.network.links[key] = link
    return link


async def _deliver(node: Node, link: PeerLink, vote: Vote) -> None:
    """Hand a frame to the reactor and run the resulting message through it (no event loop task)."""
    await node.reactor.on_frame(link, FrameKind.VOTE, encode(vote))
    while not node.reactor._inbox.empty():
        event = node.reactor._inbox.get_nowait()
        if isinstance(event, reactor_module._Message):
            await node.reactor._on_message(event)


async def test_trust_5_a_relayed_old_vote_sends_no_block_to_its_signer(
    pair: tuple[Node, Identity, bytes],
) -> None:
    """A peer relaying another validator's genuine vote of a committed height made this node push
    that block, unasked, to the vote's signer (a reflection: a 200-byte vote, a block of up to
    16 MB sent to a node that may be up to date). Blocks go to the link the message came from."""
    node, other, block_hash = pair
    victim, relay = _link_for(node, other.public.sign_key), _link_for(node, os.urandom(32))
    old = sign_vote(other, chain_id=CHAIN, kind=VoteKind.PRECOMMIT, height=1, round_=0, block_hash=block_hash)
    await _deliver(node, relay, old)
    # The link that showed the old height is the one helped (once the grace for late votes is over).
    await wait_until(lambda: relay.queued_bytes > 0, "the block pushed to the relaying link")
    assert victim.queued_bytes == 0
    # The signer's own old vote, on its own link, still gets it the block it lacks.
    node.reactor.core._behind_hinted.clear()  # the core hints once per (signer, height) a while
    await _deliver(node, victim, old)
    await wait_until(lambda: victim.queued_bytes > 0, "the block pushed to the vote's signer")


async def test_a_late_vote_of_a_peer_that_has_the_height_gets_no_block(
    pair: tuple[Node, Identity, bytes],
) -> None:
    """A precommit that arrives just after this node committed its height is usually only late:
    its sender commits the height a moment later and says so by its status. Pushing it the whole
    block regardless cost every node a block per late vote (in a 100-validator simulation most of
    the run); the push waits `PUSH_GRACE_S` and is dropped for a peer whose status has the height."""
    node, other, block_hash = pair
    peer = _link_for(node, other.public.sign_key)
    late = sign_vote(
        other, chain_id=CHAIN, kind=VoteKind.PRECOMMIT, height=1, round_=0, block_hash=block_hash
    )
    await _deliver(node, peer, late)
    await node.reactor.on_frame(peer, FrameKind.STATUS, encode(PeerStatus(1, 0)))
    syncer = node.reactor.syncer
    await wait_until(lambda: syncer._deferred_timer is None, "the held-back push to be decided")
    assert peer.queued_bytes == 0
    # Once it has said so, a later vote of that height sends nothing either (no grace needed).
    node.reactor.core._behind_hinted.clear()
    await _deliver(node, peer, late)
    assert syncer._deferred == {}
    assert peer.queued_bytes == 0


async def wait_until(condition: Callable[[], bool], what: str, deadline_s: float = 15.0) -> None:
    """Poll `condition` until true, failing after a deadline (a condition, not a fixed sleep)."""
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)
