"""A Byzantine sync peer for the recovery tests, speaking the real peer protocol from the test process.

`MaliciousPeer` holds a genuine validator key and the genuine chain, runs the production
`PeerNetwork` (so the secret channel's handshake and framing are the node's own) and answers every
block request with a range damaged in one chosen way (`Misbehaviour`). It records what it was
asked and how each of its links ended, so a test can see, from the outside, that a node asked it
for blocks and then closed its link (dropped it) for the answer.

`GatedRelay` forwards TCP connections to an honest peer but holds them until it is opened: a test
lets the recovering node meet the malicious peer first, whatever its peer selection, and lets the
honest peers in once the malicious one has been asked.

`generate_chain` writes a chain straight into a store (as scripts/bench_recovery.py does): blocks
of signed kv txs, each certified by precommits of the given validators.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

import aiohttp
from aiohttp import web

from medledger.chain.codec import decode, encode
from medledger.chain.execution import build_block, execute_block
from medledger.chain.governance import GovernedApp
from medledger.chain.limits import BLOCK_BYTES_MAX, CONSENSUS_MESSAGE_BYTES_MAX, TX_BYTES_MAX
from medledger.chain.store import BlockStore
from medledger.chain.txbuilder import sign_tx
from medledger.chain.types import (
    Block,
    Commit,
    CommitSig,
    Genesis,
    Tx,
    VoteKind,
    compute_vote_signing_bytes,
)
from medledger.chain.validation import check_tx
from medledger.crypto import SIGNATURE_SIZE, Identity
from medledger.network.messages import (
    SYNC_BLOCKS_MAX,
    BlockRange,
    BlockRequest,
    CommittedBlock,
    Frame,
    FrameKind,
    PeerStatus,
)
from medledger.network.peers import PeerLink, PeerNetwork
from medledger.node.fixture_app import KIND_SET, KeyValueFixtureApp, encode_set_body

LOOPBACK: Final = "127.0.0.1"
RELAY_CHUNK_BYTES: Final = 64 * 1024


class Misbehaviour(enum.Enum):
    """How the malicious peer damages every range it serves."""

    #: A byte of each block's first tx changed (header and certificate intact): the tx root fails.
    TAMPERED_TX = "tampered-tx"
    #: Each header's time moved by 1 ms and the certificate re-pointed at the new hash: only the
    #: precommit signatures (over the genuine hash) give it away.
    TAMPERED_HEADER = "tampered-header"
    #: Certificates signed by a quorum of outsiders (valid signatures, keys that are no validators).
    NON_VALIDATOR_SIGNERS = "non-validator-signers"
    #: Certificates naming the genuine signers over random signature bytes.
    GARBAGE_SIGNATURES = "garbage-signatures"
    #: Certificates cut to one genuine precommit less than a quorum.
    TOO_FEW_SIGNERS = "too-few-signers"
    #: Certificates whose quorum is one genuine precommit repeated.
    DUPLICATED_SIGNER = "duplicated-signer"
    #: The BLOCKS frame cut in half before it is sealed (it opens, and holds no frame).
    TRUNCATED_FRAME = "truncated-frame"
    #: A well-formed BLOCKS frame whose first block's bytes are cut in half.
    TRUNCATED_BLOCK = "truncated-block"
    #: Genuine blocks, but only the first half of the range asked for (legal: a size cap does it).
    SHORT_RANGE = "short-range"
    #: No blocks at all, though the peer advertised them.
    EMPTY_RANGE = "empty-range"

    @property
    def is_invalid(self) -> bool:
        """An answer no honest peer sends and a node must drop the sender for."""
        return self not in (Misbehaviour.SHORT_RANGE, Misbehaviour.EMPTY_RANGE)


# -- the chain --------------------------------------------------------------------------------


def generate_chain(
    data_dir: Path,
    genesis: Genesis,
    signers: list[Identity],
    *,
    blocks: int,
    txs_per_block: int,
) -> None:
    """Write `blocks` blocks of kv txs into a new store at `data_dir`, certified by `signers`.

    The app is the governed kv fixture, as a networked node runs it; block times are real
    (recent) times, so the honest validators can extend the chain.
    """
    app = GovernedApp(KeyValueFixtureApp(), genesis.validators)
    chain_id = genesis.chain_id
    by_key = {s.public.sign_key: s for s in signers}
    sender = Identity.generate()
    store = BlockStore.open(data_dir)
    try:
        store.init_genesis(genesis, app.init_state(genesis))
        now_ms = time.time_ns() // 1_000_000
        for height in range(1, blocks + 1):
            raws = [
                sign_tx(
                    sender,
                    chain_id=chain_id,
                    kind=KIND_SET,
                    body=encode_set_body(f"key-{height}-{i}".encode(), os.urandom(16)),
                    timestamp_ms=now_ms,
                )[1]
                for i in range(txs_per_block)
            ]
            checked = [check_tx(raw, chain_id=chain_id, now_ms=now_ms) for raw in raws]
            validators = app.get_validators(store, height)
            block = build_block(
                store=store,
                validators=validators,
                next_validators=app.get_validators(store, height + 1),
                proposer=validators.get_proposer(height, 0).sign_key,
                round_=0,
                time_ms=now_ms,
                txs=checked,
            )
            executed = execute_block(
                app, store, block, tuple(c.tx for c in checked), [c.tx_id for c in checked]
            )
            block_hash = block.hash()
            sigs = tuple(
                CommitSig(key, by_key[key].sign(precommit_bytes(chain_id, height, 0, block_hash, key)))
                for key in sorted(by_key)
            )
            commit = Commit(height, 0, block_hash, sigs)
            store.save_block(executed.block, executed.raw, commit, executed.tx_ids, executed.execution)
    finally:
        store.close()


def precommit_bytes(chain_id: str, height: int, round_: int, block_hash: bytes, validator: bytes) -> bytes:
    return compute_vote_signing_bytes(chain_id, VoteKind.PRECOMMIT, height, round_, block_hash, validator)


def load_committed_blocks(data_dir: Path) -> list[CommittedBlock]:
    """Every block of the (closed) store at `data_dir` with its certificate, as sync serves them."""
    store = BlockStore.open(data_dir)
    try:
        served = []
        for height in range(1, store.height + 1):
            raw, commit = store.get_block_raw(height), store.get_commit(height)
            assert raw is not None
            assert commit is not None
            served.append(CommittedBlock(raw, encode(commit)))
        return served
    finally:
        store.close()


# -- damaging ranges ---------------------------------------------------------------------------


def _decode_pair(item: CommittedBlock) -> tuple[Block, Commit]:
    return (
        decode(Block, item.block, max_bytes=BLOCK_BYTES_MAX),
        decode(Commit, item.commit, max_bytes=CONSENSUS_MESSAGE_BYTES_MAX),
    )


def _flip_last_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0x01])


def _tamper_tx(item: CommittedBlock) -> CommittedBlock:
    block, _ = _decode_pair(item)
    tx = decode(Tx, block.txs[0], max_bytes=TX_BYTES_MAX)
    # Still a well-formed tx (whose signature no longer verifies); the header's tx root no longer
    # matches the txs, while the header, and so the certificate, are genuine.
    changed = encode(dataclasses.replace(tx, body=_flip_last_byte(tx.body)))
    return CommittedBlock(encode(Block(block.header, (changed, *block.txs[1:]))), item.commit)


def _tamper_header(item: CommittedBlock) -> CommittedBlock:
    block, commit = _decode_pair(item)
    header = dataclasses.replace(block.header, time_ms=block.header.time_ms + 1)
    repointed = dataclasses.replace(commit, block_hash=header.hash())
    return CommittedBlock(encode(Block(header, block.txs)), encode(repointed))


def _with_signatures(
    item: CommittedBlock, signatures: Callable[[Commit], tuple[CommitSig, ...]]
) -> CommittedBlock:
    _, commit = _decode_pair(item)
    return CommittedBlock(item.block, encode(dataclasses.replace(commit, signatures=signatures(commit))))


def _outsider_signatures(commit: Commit, chain_id: str) -> tuple[CommitSig, ...]:
    """As many valid precommits for the block as it has, by keys that are no validators."""
    forgers = [Identity.generate() for _ in commit.signatures]
    return tuple(
        CommitSig(
            f.public.sign_key,
            f.sign(
                precommit_bytes(chain_id, commit.height, commit.round, commit.block_hash, f.public.sign_key)
            ),
        )
        for f in forgers
    )


def _garbage_signatures(commit: Commit) -> tuple[CommitSig, ...]:
    return tuple(CommitSig(s.validator, os.urandom(SIGNATURE_SIZE)) for s in commit.signatures)


def _one_short_of_quorum(commit: Commit) -> tuple[CommitSig, ...]:
    """The chain's certificates hold exactly a quorum (the honest three): keep all but one."""
    return commit.signatures[:-1]


def _one_signer_repeated(commit: Commit) -> tuple[CommitSig, ...]:
    return tuple(commit.signatures[0] for _ in commit.signatures)


def damage_range(
    blocks: list[CommittedBlock], misbehaviour: Misbehaviour, *, chain_id: str
) -> list[CommittedBlock]:
    """The range `blocks` as the malicious peer serves it (framing damage is done in `encode_answer`)."""
    match misbehaviour:
        case Misbehaviour.TAMPERED_TX:
            return [_tamper_tx(item) for item in blocks]
        case Misbehaviour.TAMPERED_HEADER:
            return [_tamper_header(item) for item in blocks]
        case Misbehaviour.NON_VALIDATOR_SIGNERS:
            return [_with_signatures(item, lambda c: _outsider_signatures(c, chain_id)) for item in blocks]
        case Misbehaviour.GARBAGE_SIGNATURES:
            return [_with_signatures(item, _garbage_signatures) for item in blocks]
        case Misbehaviour.TOO_FEW_SIGNERS:
            return [_with_signatures(item, _one_short_of_quorum) for item in blocks]
        case Misbehaviour.DUPLICATED_SIGNER:
            return [_with_signatures(item, _one_signer_repeated) for item in blocks]
        case Misbehaviour.TRUNCATED_BLOCK if blocks:
            first = blocks[0]
            return [CommittedBlock(first.block[: len(first.block) // 2], first.commit), *blocks[1:]]
        case Misbehaviour.SHORT_RANGE:
            return blocks[: (len(blocks) + 1) // 2]
        case Misbehaviour.EMPTY_RANGE:
            return []
        case _:  # TRUNCATED_FRAME: the blocks are genuine, the frame carrying them is cut
            return blocks


def encode_answer(blocks: list[CommittedBlock], misbehaviour: Misbehaviour, *, chain_id: str) -> bytes:
    """The websocket message answering a block request: an encoded BLOCKS frame, damaged."""
    damaged = damage_range(blocks, misbehaviour, chain_id=chain_id)
    frame = encode(Frame(int(FrameKind.BLOCKS), encode(BlockRange(tuple(damaged)))))
    if misbehaviour is Misbehaviour.TRUNCATED_FRAME:
        return frame[: len(frame) // 2]
    return frame


# -- the malicious peer ------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class LinkRecord:
    """One link the recovering node opened to the malicious peer, and how it ended."""

    peer_key: bytes
    requests: list[BlockRequest] = dataclasses.field(default_factory=list)
    #: Damaged answers queued on this link (an answer to each request).
    answers: int = 0
    #: The websocket close code once the link ended (None while open).
    close_code: int | None = None

    @property
    def was_dropped(self) -> bool:
        """Closed by the other side for a protocol violation (`PeerNetwork.drop`'s close code)."""
        return self.close_code == aiohttp.WSCloseCode.POLICY_VIOLATION


class MaliciousPeer:
    """A validator turned Byzantine: eager to serve blocks, and every range it serves is damaged.

    It advertises `advertised_height` on every link, answers each block request at once (after
    `release()`; answers asked before are held until then) and accepts links from `victim_key`
    only. Links are dialled by the victim (the peer's URL is in its configuration), so a dropped
    link comes back whenever the victim redials it.
    """

    def __init__(
        self,
        *,
        identity: Identity,
        chain_id: str,
        victim_key: bytes,
        blocks: list[CommittedBlock],
        advertised_height: int,
        misbehaviour: Misbehaviour,
    ) -> None:
        self.chain_id = chain_id
        self.blocks = blocks
        self.advertised_height = advertised_height
        self.misbehaviour = misbehaviour
        self.links: list[LinkRecord] = []
        self._by_ws: dict[int, LinkRecord] = {}
        self.asked = asyncio.Event()
        self.dropped = asyncio.Event()
        self._released = asyncio.Event()
        self._answering: set[asyncio.Task[None]] = set()
        self.network = PeerNetwork(
            identity=identity,
            chain_id=chain_id,
            is_allowed=lambda key: key == victim_key,
            on_frame=self.on_frame,
            on_connect=self.on_connect,
        )
        self._runner: web.AppRunner | None = None
        self.url = ""

    @property
    def requests(self) -> list[BlockRequest]:
        return [request for link in self.links for request in link.requests]

    @property
    def answers(self) -> int:
        return sum(link.answers for link in self.links)

    async def start(self) -> None:
        app = web.Application(middlewares=[self._record_link_end])
        self.network.add_routes(app)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = self.network.create_site(runner, LOOPBACK, 0)
        await site.start()
        self._runner = runner
        self.url = f"http://{LOOPBACK}:{runner.addresses[0][1]}"
        await self.network.start()

    async def stop(self) -> None:
        for task in list(self._answering):
            task.cancel()
        for task in list(self._answering):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.network.stop()
        if self._runner is not None:
            await self._runner.cleanup()

    def release(self) -> None:
        """From now on answer block requests (the held ones first)."""
        self._released.set()

    # -- the reactor's interface (what `PeerNetwork` calls) --------------------------------------

    async def on_connect(self, link: PeerLink) -> None:
        record = LinkRecord(link.peer_key)
        self.links.append(record)
        self._by_ws[id(link.ws)] = record
        link.send(FrameKind.STATUS, encode(PeerStatus(self.advertised_height, 0)))

    async def on_frame(self, link: PeerLink, kind: int, payload: bytes) -> None:
        if kind != FrameKind.GET_BLOCKS:
            return  # statuses, txs and consensus messages: nothing to do for a sync server
        request = decode(BlockRequest, payload, max_bytes=64)
        record = self._by_ws[id(link.ws)]
        record.requests.append(request)
        self.asked.set()
        task = asyncio.create_task(self._answer(link, record, request), name="malicious answer")
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)

    async def _answer(self, link: PeerLink, record: LinkRecord, request: BlockRequest) -> None:
        await self._released.wait()
        last = min(request.to_height, len(self.blocks), request.from_height + SYNC_BLOCKS_MAX - 1)
        genuine = self.blocks[request.from_height - 1 : last]
        # Straight onto the link's send queue (it holds encoded frames, sealed as they are
        # written): a cut frame goes out as is, so the node opens it and finds no frame inside.
        link.send_frame(encode_answer(genuine, self.misbehaviour, chain_id=self.chain_id))
        record.answers += 1

    @web.middleware
    async def _record_link_end(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """The peer endpoint returns once a link has ended: note how it was closed."""
        response = await handler(request)
        if isinstance(response, web.WebSocketResponse):
            record = self._by_ws.pop(id(response), None)
            if record is not None:
                record.close_code = response.close_code
                if record.answers and record.was_dropped:
                    self.dropped.set()
        return response


# -- gated relays to the honest peers ----------------------------------------------------------


class GatedRelay:
    """Forwards TCP connections to `target_port` on loopback; holds each one until `open()`."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._gate = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.url = ""

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, LOOPBACK, 0)
        self.url = f"http://{LOOPBACK}:{self._server.sockets[0].getsockname()[1]}"

    def open(self) -> None:
        self._gate.set()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._gate.wait()
            upstream_reader, upstream_writer = await asyncio.open_connection(LOOPBACK, self.target_port)
            try:
                await asyncio.gather(_pump(reader, upstream_writer), _pump(upstream_reader, writer))
            finally:
                await _close(upstream_writer)
        except OSError:
            pass  # the honest peer is unreachable: the dialler sees its connection end
        finally:
            await _close(writer)
            self._connections.discard(task)


async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copy until either side ends, then close the sink (which ends the other direction too)."""
    try:
        while chunk := await source.read(RELAY_CHUNK_BYTES):
            sink.write(chunk)
            await sink.drain()
    except OSError:
        pass
    finally:
        await _close(sink)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
