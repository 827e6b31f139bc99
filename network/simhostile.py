"""Hostile sync peers: nodes that speak the frame protocol but lie, for the simulator.

A `HostilePeer` links to every node like a peer (it is no validator: its height claims alone
never back a node's sync target) and announces a height, so honest nodes ask it for ranges of
blocks. What it answers is its `HostileKind`:

* `LIE_HEIGHT`: claims a huge height and answers every request with no block;
* `WITHHOLD`: claims a little more than the network has and never answers;
* the others claim the network's height (so they are asked for what a node needs next) and:
* `TAMPER_TX_ROOT`: real blocks (read from a correct node's store) with one tx changed or added;
* `FORGE_CERTIFICATE` / `SHORT_CERTIFICATE`: real blocks whose certificates carry flipped
  signatures / a single signature (below a quorum);
* `OTHER_PARENT`: real blocks moved onto another parent, sent with the real certificates;
* `GAPS`: real blocks and certificates with the second block of a range left out;
* `GARBAGE`: frames of every kind whose payload does not decode.

Honest nodes must drop such a peer (it comes back after a ban and tries again), never commit what
it serves, and keep committing. This module imports only `medledger.chain` and
`medledger.network`.
"""

from __future__ import annotations

import dataclasses
import random
from typing import TYPE_CHECKING, Final

from medledger.chain.codec import decode, encode
from medledger.chain.errors import CodecError
from medledger.chain.limits import BLOCK_BYTES_MAX
from medledger.chain.types import Block, Commit, CommitSig
from medledger.crypto import Identity
from medledger.network.messages import BlockRange, BlockRequest, CommittedBlock, FrameKind, PeerStatus
from medledger.network.simconfig import HostileKind
from medledger.network.simnet import SimLink, SimTransport

if TYPE_CHECKING:
    from medledger.chain.store import BlockStore
    from medledger.network.simcluster import Simulation

#: How often a hostile peer repeats its height claim (virtual seconds).
ANNOUNCE_S: Final = 0.5
#: How far above the best correct node's height a withholding peer claims to be.
CLAIM_LEAD_BLOCKS: Final = 4
#: The height a `LIE_HEIGHT` peer claims.
LIE_HEIGHT_CLAIM: Final = 1 << 40
#: Blocks a hostile answer carries at most.
ANSWER_BLOCKS_MAX: Final = 8


class HostilePeer:
    """A lying peer: answers block requests (and sends frames) according to its kind."""

    def __init__(
        self, sim: Simulation, node_id: int, kind: HostileKind, identity: Identity, seed: int
    ) -> None:
        self.sim = sim
        self.id = node_id
        self.kind = kind
        self.key = identity.public.sign_key
        # Not for secrets: its choices replay from the run's seed.
        self.rng = random.Random(seed)  # noqa: S311
        self.transport: SimTransport | None = None
        #: Times an honest node dropped this peer, and answers it sent.
        self.dropped = 0
        self.answers = 0

    def start(self) -> None:
        self.transport = self.sim.network.join(self.id, self.key, self)
        self.sim.loop.call_later(ANNOUNCE_S, self._announce)

    def _source(self) -> BlockStore | None:
        """The chain of the best correct node that is up (what a lying peer could have learned)."""
        best: BlockStore | None = None
        for peer in self.sim.peers[: self.sim.config.n]:
            if peer.up and peer.correct and (best is None or peer.store.height > best.height):
                best = peer.store
        return best

    def _claim(self) -> int:
        if self.kind is HostileKind.LIE_HEIGHT:
            return LIE_HEIGHT_CLAIM
        source = self._source()
        height = source.height if source is not None else 0
        # A withholding peer claims what nobody has yet; a peer that serves lies claims what it
        # can serve, so that it is asked for the heights a node needs next.
        return height + CLAIM_LEAD_BLOCKS if self.kind is HostileKind.WITHHOLD else height

    def _announce(self) -> None:
        transport = self.transport
        if transport is not None:
            payload = encode(PeerStatus(self._claim(), 0))
            if self.kind is HostileKind.GARBAGE:
                kind = self.rng.choice(list(FrameKind))
                payload = self.rng.randbytes(self.rng.randint(0, 64))
                transport.broadcast(kind, payload)
            else:
                transport.broadcast(FrameKind.STATUS, payload)
        self.sim.loop.call_later(ANNOUNCE_S, self._announce)

    # -- the peer protocol ------------------------------------------------------------------

    async def on_connect(self, link: SimLink) -> None:
        link.send(FrameKind.STATUS, encode(PeerStatus(self._claim(), 0)))

    async def on_frame(self, link: SimLink, kind: int, payload: bytes) -> None:
        if kind != FrameKind.GET_BLOCKS:
            return
        try:
            request = decode(BlockRequest, payload, max_bytes=64)
        except CodecError:
            return
        answer = self._answer(request.from_height, request.to_height)
        if answer is None:
            return
        self.answers += 1
        link.send(FrameKind.BLOCKS, answer)

    def _answer(self, first: int, last: int) -> bytes | None:
        kind = self.kind
        if kind is HostileKind.WITHHOLD:
            return None
        if kind is HostileKind.LIE_HEIGHT:
            return encode(BlockRange(()))
        if kind is HostileKind.GARBAGE:
            return self.rng.randbytes(self.rng.randint(1, 256))
        source = self._source()
        if source is None:
            return None
        items: list[CommittedBlock] = []
        for height in range(first, min(last, source.height, first + ANSWER_BLOCKS_MAX - 1) + 1):
            raw = source.get_block_raw(height)
            commit = source.get_commit(height)
            if raw is None or commit is None:
                break
            items.append(self._tamper(raw, commit))
        if kind is HostileKind.GAPS and len(items) >= 3:
            del items[1]  # first, first + 2, …: a hole in the heights
        return encode(BlockRange(tuple(items)))

    def _tamper(self, raw: bytes, commit: Commit) -> CommittedBlock:
        kind = self.kind
        if kind is HostileKind.GAPS:
            return CommittedBlock(raw, encode(commit))
        block = decode(Block, raw, max_bytes=BLOCK_BYTES_MAX)
        if kind is HostileKind.TAMPER_TX_ROOT:
            if block.txs:
                txs = (block.txs[0][:-1] + bytes([block.txs[0][-1] ^ 1]), *block.txs[1:])
            else:
                txs = (self.rng.randbytes(64),)
            return CommittedBlock(encode(Block(block.header, txs)), encode(commit))
        if kind is HostileKind.OTHER_PARENT:
            header = dataclasses.replace(
                block.header, parent_hash=self.rng.randbytes(len(block.header.parent_hash))
            )
            return CommittedBlock(encode(Block(header, block.txs)), encode(commit))
        if kind is HostileKind.SHORT_CERTIFICATE:
            return CommittedBlock(raw, encode(dataclasses.replace(commit, signatures=commit.signatures[:1])))
        # FORGE_CERTIFICATE: every signature with one bit flipped.
        forged = tuple(
            CommitSig(sig.validator, sig.signature[:-1] + bytes([sig.signature[-1] ^ 1]))
            for sig in commit.signatures
        )
        return CommittedBlock(raw, encode(dataclasses.replace(commit, signatures=forged)))


__all__ = ["ANNOUNCE_S", "HostilePeer"]
