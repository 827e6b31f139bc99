"""Evidence of Byzantine behaviour: what it is, how it is checked, and the pool it waits in.

Two offences are provable from signatures alone:

* a **duplicate vote**: one validator signed two different votes for one (height, round, kind);
* **conflicting proposals**: one proposer signed two different proposals for one (height, round).
  The evidence carries what the proposer signed (the proposal's fields and the block *hash*), not
  the blocks: a proposal's signature covers the hash, so evidence stays a few hundred bytes even
  when the blocks were megabytes.

The consensus core detects both (`RecordEvidence`) and its driver keeps them in an `EvidencePool`.
As in CometBFT, evidence goes on the ledger as part of a block, not as a gossiped transaction: only
a proposer includes evidence, from its own pool, in the block it proposes (as `chain.evidence*`
txs it signs itself), and evidence already on the ledger is dropped from every pool when a block
records it. So each offence is recorded once, by whoever proposes first after seeing it, and no
evidence ever passes through a mempool. The ledger keys an offence by its *slot* (signer, height,
round and kind), so a second piece of evidence for the same slot, even with another pair of
messages, is refused (`chain.evidence_known`).

Everything here is pure: `validate_evidence` takes the validator set of the offence's height.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable
from typing import ClassVar, Final

from medledger.chain.codec import FieldSpec, Struct, UInt, encode, encode_primitive, wire_fields
from medledger.chain.errors import TxRejectedError
from medledger.chain.types import (
    CHAIN_ID,
    HASH,
    KEY,
    SIGNATURE,
    OptionalRound,
    Proposal,
    ValidatorSet,
    Vote,
    VoteKind,
    compute_proposal_signing_bytes,
    compute_vote_signing_bytes,
)
from medledger.crypto import digest, verify_signature

#: Evidence a node keeps waiting to be recorded; past this the oldest is dropped (an equivocator
#: cannot fill a node's memory: each slot is one entry, and the core reports a slot once).
EVIDENCE_POOL_MAX: Final = 256
#: Evidence txs a proposer puts in one block at most (the rest waits for the next block).
EVIDENCE_PER_BLOCK_MAX: Final = 8

_SLOT_DOMAIN: Final = b"medledger/evidence-slot/v1\x00"

Verifier = Callable[[bytes, bytes, bytes], bool]


@dataclasses.dataclass(frozen=True, slots=True)
class DuplicateVoteEvidence:
    """Two votes of one validator for one (height, round, kind) and different blocks."""

    vote_a: Vote
    vote_b: Vote

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(vote_a=Struct(Vote), vote_b=Struct(Vote))

    @property
    def signer(self) -> bytes:
        return self.vote_a.validator

    @property
    def height(self) -> int:
        return self.vote_a.height

    def compute_slot(self) -> bytes:
        """What the ledger records once: the signer's (height, round, kind)."""
        a = self.vote_a
        return digest(_SLOT_DOMAIN + encode_slot(b"vote", a.validator, a.height, a.round, a.kind))


@dataclasses.dataclass(frozen=True, slots=True)
class SignedProposal:
    """What a proposer signed for a proposal (its fields and the block hash) and the signature."""

    chain_id: str
    height: int
    round: int
    pol_round: int
    block_hash: bytes
    proposer: bytes
    signature: bytes

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        chain_id=CHAIN_ID,
        height=UInt(minimum=1),
        round=UInt(),
        pol_round=OptionalRound(),
        block_hash=HASH,
        proposer=KEY,
        signature=SIGNATURE,
    )

    @classmethod
    def of(cls, proposal: Proposal, block_hash: bytes | None = None) -> SignedProposal:
        """The signed part of `proposal` (`block_hash`: its block's hash, when known already)."""
        return cls(
            proposal.chain_id,
            proposal.height,
            proposal.round,
            proposal.pol_round,
            proposal.block.hash() if block_hash is None else block_hash,
            proposal.proposer,
            proposal.signature,
        )

    def signing_bytes(self) -> bytes:
        return compute_proposal_signing_bytes(
            self.chain_id, self.height, self.round, self.pol_round, self.block_hash, self.proposer
        )


@dataclasses.dataclass(frozen=True, slots=True)
class ConflictingProposalEvidence:
    """Two different proposals signed by one proposer for one (height, round)."""

    proposal_a: SignedProposal
    proposal_b: SignedProposal

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        proposal_a=Struct(SignedProposal), proposal_b=Struct(SignedProposal)
    )

    @property
    def signer(self) -> bytes:
        return self.proposal_a.proposer

    @property
    def height(self) -> int:
        return self.proposal_a.height

    def compute_slot(self) -> bytes:
        a = self.proposal_a
        return digest(_SLOT_DOMAIN + encode_slot(b"proposal", a.proposer, a.height, a.round, 0))


Evidence = DuplicateVoteEvidence | ConflictingProposalEvidence


def encode_slot(kind: bytes, signer: bytes, height: int, round_: int, step: int) -> bytes:
    return kind + b"\x00" + signer + encode_primitive([height, round_, step])


def make_duplicate_vote_evidence(vote_a: Vote, vote_b: Vote) -> DuplicateVoteEvidence:
    """The evidence of two votes, in a canonical order (every node that sees them builds the same)."""
    first, second = sorted((vote_a, vote_b), key=encode)
    return DuplicateVoteEvidence(first, second)


def make_conflicting_proposal_evidence(
    proposal_a: SignedProposal, proposal_b: SignedProposal
) -> ConflictingProposalEvidence:
    first, second = sorted((proposal_a, proposal_b), key=encode)
    return ConflictingProposalEvidence(first, second)


def is_conflicting_votes(vote_a: Vote, vote_b: Vote) -> bool:
    """Two votes of one validator at one (height, round, kind) for different blocks."""
    return (
        vote_a.validator == vote_b.validator
        and vote_a.chain_id == vote_b.chain_id
        and vote_a.height == vote_b.height
        and vote_a.round == vote_b.round
        and vote_a.kind == vote_b.kind
        and vote_a.block_hash != vote_b.block_hash
    )


def is_conflicting_proposals(a: SignedProposal, b: SignedProposal) -> bool:
    """Two proposals of one proposer at one (height, round) that sign different content."""
    return (a.chain_id, a.height, a.round, a.proposer) == (b.chain_id, b.height, b.round, b.proposer) and (
        a.block_hash,
        a.pol_round,
    ) != (b.block_hash, b.pol_round)


def validate_evidence(
    evidence: Evidence, *, chain_id: str, validators: ValidatorSet, verify: Verifier = verify_signature
) -> None:
    """That `evidence` proves an offence by a member of `validators` (the set of its height) on
    this chain; raises `TxRejectedError` with rule `chain.evidence`."""
    if isinstance(evidence, DuplicateVoteEvidence):
        a, b = evidence.vote_a, evidence.vote_b
        if not is_conflicting_votes(a, b):
            raise TxRejectedError("the votes do not conflict", rule="chain.evidence")
        if a.kind not in (VoteKind.PREVOTE, VoteKind.PRECOMMIT):
            raise TxRejectedError("unknown vote kind", rule="chain.evidence")
        signed = [
            (
                compute_vote_signing_bytes(
                    v.chain_id, VoteKind(v.kind), v.height, v.round, v.block_hash, v.validator
                ),
                v.signature,
            )
            for v in (a, b)
        ]
        message_chain = a.chain_id
    else:
        pa, pb = evidence.proposal_a, evidence.proposal_b
        if not is_conflicting_proposals(pa, pb):
            raise TxRejectedError("the proposals do not conflict", rule="chain.evidence")
        signed = [(p.signing_bytes(), p.signature) for p in (pa, pb)]
        message_chain = pa.chain_id
    if message_chain != chain_id:
        raise TxRejectedError("the evidence is about another chain", rule="chain.evidence")
    if not validators.contains(evidence.signer):
        raise TxRejectedError("the signer was not a validator at that height", rule="chain.evidence")
    for message, signature in signed:
        if not verify(evidence.signer, message, signature):
            raise TxRejectedError("a signature in the evidence does not verify", rule="chain.evidence")


class EvidencePool:
    """Evidence seen by this node and not yet on the ledger, one entry per slot, oldest first.

    Owned by the consensus task (not thread-safe). Entries come from the core (which checked
    every signature) and leave when a committed block records their slot.
    """

    def __init__(self, capacity: int = EVIDENCE_POOL_MAX) -> None:
        self._capacity = capacity
        self._pending: OrderedDict[bytes, Evidence] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, evidence: Evidence) -> bool:
        """Keep `evidence` until a block records it; False when its slot is pending already."""
        slot = evidence.compute_slot()
        if slot in self._pending:
            return False
        self._pending[slot] = evidence
        while len(self._pending) > self._capacity:
            self._pending.popitem(last=False)
        return True

    def get_pending(self, limit: int = EVIDENCE_PER_BLOCK_MAX) -> list[Evidence]:
        return [evidence for _, evidence in zip(range(limit), self._pending.values(), strict=False)]

    def remove(self, evidence: Evidence) -> None:
        self._pending.pop(evidence.compute_slot(), None)

    def prune(self, is_recorded: Callable[[bytes], bool]) -> None:
        """Drop the evidence whose slot the ledger has recorded."""
        for slot in [s for s in self._pending if is_recorded(s)]:
            del self._pending[slot]


__all__ = [
    "EVIDENCE_PER_BLOCK_MAX",
    "EVIDENCE_POOL_MAX",
    "ConflictingProposalEvidence",
    "DuplicateVoteEvidence",
    "Evidence",
    "EvidencePool",
    "SignedProposal",
    "is_conflicting_proposals",
    "is_conflicting_votes",
    "make_conflicting_proposal_evidence",
    "make_duplicate_vote_evidence",
    "validate_evidence",
]
