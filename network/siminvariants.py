"""The simulator's safety invariants, checked at every event that could break them.

`InvariantChecker` watches real nodes from the outside: every frame a node sends (decoded by the
network), every block a node commits (its reactor's `on_committed`), every restart, every
consensus message a node refuses (`on_rejected`) and the evidence a node gathers. It fails a run
(`InvariantViolation`, with the replay line) when:

* two correct nodes commit different blocks at one height (a fork), or one state root differs;
* a commit certificate is invalid, or a node commits a height that does not follow its tip;
* a correct validator signs two different votes or proposals at one (height, round, step), or a
  node forwards a message whose signature is bad;
* a node's committed height goes back, even across a crash (but a store rebuilt from scratch
  after corruption starts again at genesis, as an operator's rebuild does);
* a committed block's time is not after its parent's, or lies outside the PBTS bounds of honest
  clocks (ahead of the virtual time by more than PRECISION plus the clock offset, or behind the
  moment a correct node first saw the block by more than MSGDELAY + PRECISION plus the offset);
* evidence is about messages that do not conflict or about a correct validator, or a block
  files an offence the ledger holds already;
* a correct node refuses a correct node's message as a forgery;
* a node whose state a fault made diverge (`diverged`: restored from a wrong backup) commits a
  block: it must halt at the first certified block that does not fit its state, since every
  block the network certifies carries the network's state root, not its own;
* a correct node sends a block request (GET_BLOCKS) for a height it has committed, or one of the
  run its block sync is applying, or the one its consensus decided (being written), or one it
  holds downloaded (an efficiency invariant: each block is downloaded once, barring losses).
  Asking again is legitimate only for heights it still lacks: a request that timed out, a peer
  that answered nothing or was dropped, a link that closed with a request on it; those heights
  are neither committed, being applied or written, nor buffered.

A diverged node is otherwise held to what a correct node must do (it runs the real code): it
drops no correct peer (the simulation checks dropped links) and signs nothing twice; only the
state it restarted with is not compared with the chain's.

`Caches` are pure functions memoised across nodes (signature checks, block hashes, decoded
txs): sharing them changes no outcome and keeps a 100-node run fast.

This module imports only `medledger.chain`, `medledger.crypto` and `medledger.network`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from medledger.chain.codec import encode_primitive
from medledger.chain.errors import InvalidCommitError, InvalidTxError
from medledger.chain.evidence import (
    DuplicateVoteEvidence,
    Evidence,
    is_conflicting_proposals,
    is_conflicting_votes,
)
from medledger.chain.execution import ExecutedBlock
from medledger.chain.governance import decode_evidence_tx
from medledger.chain.store import BlockStore
from medledger.chain.types import Block, BlockHash, Commit, Header, Proposal, Tx, TxId, ValidatorSet, Vote
from medledger.chain.validation import decode_tx, validate_commit, validate_tx_envelope
from medledger.crypto import verify_signature
from medledger.network.simreport import SimTimeline

#: Decoded proposals remembered by their frame's bytes (a broadcast sends one payload to all).
DECODED_FRAMES_MAX = 4_096


class InvariantViolation(AssertionError):
    """A safety or liveness property failed; the message says which and how to replay the run.

    `timeline`: what the run did up to the failure (set by the simulation that raised it)."""

    timeline: SimTimeline | None = None


class Caches:
    """Pure functions memoised for every node of a run."""

    def __init__(self, chain_id: str) -> None:
        self.chain_id = chain_id
        self.signatures: dict[tuple[bytes, bytes, bytes], bool] = {}
        self.block_hashes: dict[Header, BlockHash] = {}
        self.txs: dict[bytes, tuple[Tx, TxId] | None] = {}
        self.certificates: dict[tuple[Commit, bytes], bool] = {}

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        key = (public_key, message, signature)
        ok = self.signatures.get(key)
        if ok is None:
            ok = self.signatures[key] = verify_signature(public_key, message, signature)
        return ok

    def block_hash(self, block: Block) -> BlockHash:
        """A block's hash; a frozen header hashes (as a dict key) much faster than it encodes."""
        block_hash = self.block_hashes.get(block.header)
        if block_hash is None:
            block_hash = self.block_hashes[block.header] = block.hash()
        return block_hash

    def decode_tx(self, raw: bytes) -> tuple[Tx, TxId] | None:
        if raw in self.txs:
            return self.txs[raw]
        try:
            tx, tx_id = decode_tx(raw)
            validate_tx_envelope(tx, chain_id=self.chain_id)
            result: tuple[Tx, TxId] | None = (tx, tx_id)
        except InvalidTxError:
            result = None
        self.txs[raw] = result
        return result


class CheckedNode(Protocol):
    """What the checker reads of a node."""

    @property
    def id(self) -> int: ...

    @property
    def key(self) -> bytes: ...

    @property
    def store(self) -> BlockStore: ...

    def validators_at(self, height: int) -> ValidatorSet: ...


class InvariantChecker:
    """Safety properties, checked at the events that could break them."""

    def __init__(
        self,
        *,
        chain_id: str,
        faulty_keys: frozenset[bytes],
        caches: Caches,
        describe: Callable[[], str],
        precision_ms: int,
        clock_offset_ms_max: int,
        message_delay_ms: Callable[[int], int],
    ) -> None:
        self._chain_id = chain_id
        self._faulty_keys = faulty_keys
        self._caches = caches
        self._describe = describe
        self._precision_ms = precision_ms
        self._offset_ms = clock_offset_ms_max
        self._message_delay_ms = message_delay_ms
        self.signed: dict[tuple[bytes, int, int, int], bytes] = {}
        #: height → (block hash, state root after it), as first committed by a correct node.
        self.committed: dict[int, tuple[bytes, bytes]] = {}
        self.max_height: dict[int, int] = {}
        self.evidence = 0
        #: Offence slots recorded on the ledger (by the first correct node to commit the block).
        self.recorded_slots: set[bytes] = set()
        self._evidence_checked: set[int] = set()
        self.recorded_kinds: set[str] = set()
        #: Block hash → the virtual time a correct node first saw a proposal carrying it.
        self.first_seen_ms: dict[bytes, int] = {}
        #: Called with each violation's text before it is raised (the timeline records it).
        self.on_violation: Callable[[int | None, str], None] | None = None
        #: Nodes (by id) whose durable state a fault altered (until a rebuild replaced it).
        self.diverged: set[int] = set()

    def fail(self, what: str, node: int | None = None) -> None:
        if self.on_violation is not None:
            self.on_violation(node, what)
        raise InvariantViolation(f"{what}\nreplay: run_simulation({self._describe()})")

    def is_correct(self, key: bytes) -> bool:
        return key not in self._faulty_keys

    # -- messages --------------------------------------------------------------------------

    def on_sent(self, node: CheckedNode, message: Proposal | Vote) -> None:
        """No correct validator signs two different messages at one (height, round, step).

        Keyed by the signer, not the sender: a proposer forwards others' prevotes (its proof of lock).
        """
        if isinstance(message, Proposal):
            signer = message.proposer
            key = (signer, message.height, message.round, 0)
            signed = self._caches.block_hash(message.block) + encode_primitive(message.pol_round + 1)
        else:
            signer = message.validator
            key = (signer, message.height, message.round, message.kind)
            signed = message.block_hash
        if signer != node.key and not self._caches.verify(signer, message.signing_bytes(), message.signature):
            self.fail(f"node {node.id} forwarded a message with a bad signature", node.id)
        if not self.is_correct(signer):
            return
        previous = self.signed.setdefault(key, signed)
        if previous != signed:
            self.fail(
                f"validator {signer.hex()[:16]} double-signed at height {key[1]} round {key[2]} "
                f"step {key[3]}: {previous.hex()[:16]} then {signed.hex()[:16]} (sent by node {node.id})",
                node.id,
            )

    def on_proposal_seen(self, node: CheckedNode, block_hash: bytes, now_ms: int) -> None:
        if self.is_correct(node.key):
            self.first_seen_ms.setdefault(block_hash, now_ms)

    def on_rejected(self, node: CheckedNode, sender: bytes | None, is_forgery: bool, detail: str) -> None:
        """A correct node never takes a correct node for a forger."""
        if not is_forgery or sender is None:
            return
        if self.is_correct(sender) and self.is_correct(node.key):
            self.fail(f"node {node.id} took a correct peer's message for a forgery: {detail}", node.id)

    def on_evidence(self, node: CheckedNode, evidence: Evidence) -> None:
        if isinstance(evidence, DuplicateVoteEvidence):
            conflicting = is_conflicting_votes(evidence.vote_a, evidence.vote_b)
        else:
            conflicting = is_conflicting_proposals(evidence.proposal_a, evidence.proposal_b)
        if not conflicting:
            self.fail(f"node {node.id} recorded evidence of messages that do not conflict", node.id)
        if self.is_correct(evidence.signer):
            self.fail(f"node {node.id} holds evidence that a correct validator equivocated", node.id)
        self.evidence += 1

    # -- block sync ------------------------------------------------------------------------

    def on_block_request(
        self,
        node: CheckedNode,
        first: int,
        last: int,
        *,
        committed: int,
        applying_through: int,
        decided: int = 0,
        is_downloaded: Callable[[int], bool],
    ) -> None:
        """A correct node asks only for blocks it lacks: above its committed height, the run its
        block sync applies (`applying_through`, 0 for none) and the height its consensus decided
        and is writing (`decided`, 0 for none), none it holds downloaded."""
        if first <= committed:
            self.fail(f"node {node.id} asks for blocks {first}..{last}, committed up to {committed}", node.id)
        if first <= decided:
            self.fail(
                f"node {node.id} asks for blocks {first}..{last} while it writes block {decided}, "
                "which its consensus decided: it downloads it again",
                node.id,
            )
        if first <= applying_through:
            self.fail(
                f"node {node.id} asks for blocks {first}..{last} while it applies the run up to "
                f"{applying_through}: it downloads them again",
                node.id,
            )
        held = next((height for height in range(first, last + 1) if is_downloaded(height)), None)
        if held is not None:
            self.fail(f"node {node.id} asks for blocks {first}..{last}, it holds {held} downloaded", node.id)

    # -- commits ---------------------------------------------------------------------------

    def on_committed(
        self, node: CheckedNode, executed: ExecutedBlock, *, parent_time_ms: int, now_ms: int
    ) -> None:
        """A block `node` just wrote (block sync writes a run, then reports each): every check a
        commit must pass."""
        block = executed.block
        height = block.header.height
        if node.id in self.diverged:
            self.fail(
                f"node {node.id} commits block {height} on a state restored from a wrong backup: "
                "a certified block that does not fit its state must halt it",
                node.id,
            )
        store = node.store
        commit = store.get_commit(height)
        state_root = executed.execution.state_root
        if commit is None or store.height < height:
            self.fail(f"node {node.id} reported height {height} committed, its store is at {store.height}")
            return
        self._check_certificate(node, block, commit)
        previous = self.max_height.get(node.id, 0)
        if height != previous + 1:
            self.fail(f"node {node.id}: height went from {previous} to {height}", node.id)
        self.max_height[node.id] = height
        self._check_block_time(node, block, commit, parent_time_ms, now_ms)
        if self.is_correct(node.key):
            block_hash = self._caches.block_hash(block)
            agreed = self.committed.setdefault(height, (block_hash, state_root))
            if agreed[0] != block_hash:
                self.fail(
                    f"FORK at height {height}: node {node.id} commits {block_hash.hex()[:16]}, "
                    f"another correct node committed {agreed[0].hex()[:16]}",
                    node.id,
                )
            if agreed[1] != state_root:
                self.fail(
                    f"node {node.id}: state root at height {height} differs from another correct node's",
                    node.id,
                )
            self._check_recorded(executed)

    def _check_certificate(self, node: CheckedNode, block: Block, commit: Commit) -> None:
        height = block.header.height
        block_hash = self._caches.block_hash(block)
        if commit.block_hash != block_hash or commit.height != height:
            self.fail(f"node {node.id}: the certificate at height {height} is for another block", node.id)
        cache_key = (commit, block_hash)
        if cache_key in self._caches.certificates:
            return
        try:
            validate_commit(
                commit,
                chain_id=self._chain_id,
                validators=node.validators_at(height),
                block_hash=block_hash,
                height=height,
                verify=self._caches.verify,
            )
        except InvalidCommitError as exc:
            self.fail(f"node {node.id}: invalid certificate at height {height}: {exc.message}", node.id)
        self._caches.certificates[cache_key] = True

    def _check_block_time(
        self, node: CheckedNode, block: Block, commit: Commit, parent_ms: int, now_ms: int
    ) -> None:
        """A committed block's time: after its parent's, and within the bounds of honest clocks."""
        header = block.header
        if header.time_ms <= parent_ms:
            self.fail(
                f"node {node.id} commits block {header.height} at {header.time_ms} ms, parent {parent_ms} ms",
                node.id,
            )
        latest = now_ms + self._precision_ms + self._offset_ms
        if header.time_ms > latest:
            self.fail(
                f"node {node.id} commits block {header.height} at {header.time_ms} ms, ahead of every "
                f"honest clock's bound ({latest} ms at virtual time {now_ms} ms)",
                node.id,
            )
        seen = self.first_seen_ms.get(self._caches.block_hash(block))
        if seen is not None:
            earliest = seen - self._message_delay_ms(commit.round) - self._precision_ms - self._offset_ms
            if header.time_ms < earliest:
                self.fail(
                    f"node {node.id} commits block {header.height} at {header.time_ms} ms, behind the "
                    f"bound ({earliest} ms) of the honest clocks that first saw it at {seen} ms",
                    node.id,
                )

    def _check_recorded(self, executed: ExecutedBlock) -> None:
        """The evidence txs of a block a correct node committed first: each a new offence, valid."""
        height = executed.block.header.height
        if height in self._evidence_checked:
            return
        self._evidence_checked.add(height)
        for raw, result in zip(executed.block.txs, executed.execution.results, strict=True):
            decoded = self._caches.decode_tx(raw)
            if decoded is None:
                continue
            tx = decoded[0]
            evidence = decode_evidence_tx(tx)
            if evidence is None:
                continue
            if not result.ok:
                self.fail(f"block {height} files evidence the ledger refuses ({result.code}): a duplicate")
            slot = evidence.compute_slot()
            if slot in self.recorded_slots:
                self.fail(f"block {height} records an offence the ledger holds already")
            if self.is_correct(evidence.signer):
                self.fail(f"block {height} records evidence against a correct validator")
            self.recorded_slots.add(slot)
            self.recorded_kinds.add(tx.kind)

    # -- restarts --------------------------------------------------------------------------

    def after_restart(self, node: CheckedNode, *, rebuilt: bool) -> None:
        """A synced block survives a crash; a rebuilt store starts again at genesis."""
        store = node.store
        height = store.height
        if rebuilt:
            self.max_height[node.id] = height
            return
        if height < self.max_height.get(node.id, 0):
            self.fail(
                f"node {node.id} restarted at height {height}, below its committed "
                f"{self.max_height[node.id]}: a synced block was lost",
                node.id,
            )
        self.max_height[node.id] = height
        agreed = self.committed.get(height)
        if node.id in self.diverged:
            # Its state is the fault's (the block is still the chain's): only the block is compared.
            agreed = agreed if agreed is None else (agreed[0], store.state_root)
        if (
            height
            and self.is_correct(node.key)
            and agreed is not None
            and agreed != (store.last_block_hash, store.state_root)
        ):
            self.fail(f"node {node.id} restarted with another block or state at height {height}", node.id)


__all__ = ["Caches", "CheckedNode", "InvariantChecker", "InvariantViolation"]
