"""Validator-set governance and equivocation evidence as chain transactions (`GovernedApp`)."""

from __future__ import annotations

import dataclasses
import time

import pytest

from medledger.chain.app import BlockExecution
from medledger.chain.codec import decode, encode
from medledger.chain.consensus import NIL, sign_vote
from medledger.chain.errors import CodecError, TxRejectedError
from medledger.chain.evidence import (
    ConflictingProposalEvidence,
    EvidencePool,
    SignedProposal,
    make_duplicate_vote_evidence,
)
from medledger.chain.governance import (
    ACTIVATION_DELAY,
    KIND_EVIDENCE,
    KIND_EVIDENCE_PROPOSAL,
    KIND_VALIDATOR_ADD,
    KIND_VALIDATOR_REMOVE,
    GovernedApp,
    encode_evidence,
    encode_removal,
)
from medledger.chain.txbuilder import sign_tx
from medledger.chain.types import (
    NO_ROUND,
    Block,
    Header,
    Tx,
    TxId,
    Validator,
    ValidatorSet,
    Vote,
    VoteKind,
    compute_proposal_signing_bytes,
)
from medledger.crypto import Identity
from medledger.node.fixture_app import KIND_SET, KeyValueFixtureApp, encode_set_body

CHAIN = "gov-test"
ZERO = bytes(32)


class DictState:
    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def apply(self, execution: BlockExecution) -> None:
        for key, value in execution.writes.items():
            if value is None:
                self.data.pop(key, None)
            else:
                self.data[key] = value


def make_set(identities: list[Identity]) -> ValidatorSet:
    return ValidatorSet.of(
        [Validator(f"v{i}", x.public.sign_key, x.public.enc_key) for i, x in enumerate(identities)]
    )


def block_at(height: int, txs: tuple[Tx, ...]) -> Block:
    header = Header(CHAIN, height, 0, ZERO, 0, ZERO, len(txs), ZERO, ZERO, ZERO, ZERO)
    return Block(header, tuple(encode(t) for t in txs))


def chain_tx(identity: Identity, kind: str, body: bytes) -> Tx:
    tx, _, _ = sign_tx(identity, chain_id=CHAIN, kind=kind, body=body, timestamp_ms=time.time_ns() // 10**6)
    return tx


class Chain:
    def __init__(self, n: int) -> None:
        self.ids = [Identity.generate() for _ in range(n)]
        self.app = GovernedApp(KeyValueFixtureApp(), make_set(self.ids))
        self.state = DictState()
        self.root = ZERO
        self.height = 0

    def run(self, *txs: Tx) -> BlockExecution:
        self.height += 1
        execution = self.app.apply_block(block_at(self.height, txs), txs, self.state, self.root)
        self.state.apply(execution)
        self.root = execution.state_root
        return execution

    def validators_at(self, height: int) -> ValidatorSet:
        return self.app.get_validators(self.state, height)


def add_body(identity: Identity) -> bytes:
    return encode(Validator("new", identity.public.sign_key, identity.public.enc_key))


def test_a_change_passes_with_more_than_two_thirds_and_takes_effect_two_heights_later() -> None:
    chain = Chain(4)
    newcomer = Identity.generate()
    body = add_body(newcomer)
    two = chain.run(*(chain_tx(x, KIND_VALIDATOR_ADD, body) for x in chain.ids[:2]))
    assert all(r.ok for r in two.results)
    assert len(chain.validators_at(chain.height + 10)) == 4  # 2 of 4 is not more than 2/3
    passed = chain.run(chain_tx(chain.ids[2], KIND_VALIDATOR_ADD, body))
    assert passed.results[0].ok
    assert len(chain.validators_at(chain.height + ACTIVATION_DELAY - 1)) == 4
    assert chain.validators_at(chain.height + ACTIVATION_DELAY).contains(newcomer.public.sign_key)


def test_removal_by_more_than_two_thirds() -> None:
    chain = Chain(4)
    body = encode_removal(chain.ids[3].public.sign_key)
    execution = chain.run(*(chain_tx(x, KIND_VALIDATOR_REMOVE, body) for x in chain.ids[:3]))
    assert all(r.ok for r in execution.results)
    assert not chain.validators_at(chain.height + ACTIVATION_DELAY).contains(chain.ids[3].public.sign_key)


def assert_refused(chain: Chain, tx: Tx, rule: str) -> None:
    """A refused chain tx is in the block without effect: same state, a failed result naming the rule."""
    before = dict(chain.state.data)
    execution = chain.run(tx)
    assert (execution.results[0].ok, execution.results[0].code) == (False, rule)
    assert chain.state.data == before


def test_invalid_approval_by_a_non_validator() -> None:
    chain = Chain(4)
    stranger = Identity.generate()
    assert_refused(chain, chain_tx(stranger, KIND_VALIDATOR_ADD, add_body(stranger)), "chain.approver")
    with pytest.raises(TxRejectedError):
        chain.app.check_tx(chain_tx(stranger, KIND_VALIDATOR_ADD, add_body(stranger)), TxId(b""), chain.state)


def test_invalid_duplicate_approval() -> None:
    chain = Chain(4)
    body = add_body(Identity.generate())
    chain.run(chain_tx(chain.ids[0], KIND_VALIDATOR_ADD, body))
    assert_refused(chain, chain_tx(chain.ids[0], KIND_VALIDATOR_ADD, body), "chain.duplicate_approval")


def test_invalid_removal_that_would_break_quorum() -> None:
    chain = Chain(2)  # quorum 2: one validator left could never certify the blocks around the change
    body = encode_removal(chain.ids[1].public.sign_key)
    assert_refused(chain, chain_tx(chain.ids[0], KIND_VALIDATOR_REMOVE, body), "chain.breaks_quorum")


def test_invalid_second_change_before_the_first_takes_effect() -> None:
    chain = Chain(1)
    chain.run(chain_tx(chain.ids[0], KIND_VALIDATOR_ADD, add_body(Identity.generate())))  # passes at once
    assert_refused(
        chain, chain_tx(chain.ids[0], KIND_VALIDATOR_ADD, add_body(Identity.generate())), "chain.one_change"
    )


def test_invalid_adding_an_existing_validator_and_removing_a_stranger() -> None:
    chain = Chain(4)
    assert_refused(
        chain, chain_tx(chain.ids[0], KIND_VALIDATOR_ADD, add_body(chain.ids[1])), "chain.already_validator"
    )
    stranger = Identity.generate().public.sign_key
    assert_refused(
        chain, chain_tx(chain.ids[0], KIND_VALIDATOR_REMOVE, encode_removal(stranger)), "chain.not_validator"
    )
    assert_refused(chain, chain_tx(chain.ids[0], KIND_VALIDATOR_ADD, b"\x00garbage"), "chain.body")


def conflicting_votes(identity: Identity, height: int = 3) -> tuple[Vote, Vote]:
    a = sign_vote(
        identity, chain_id=CHAIN, kind=VoteKind.PREVOTE, height=height, round_=0, block_hash=b"\x01" * 32
    )
    b = sign_vote(
        identity, chain_id=CHAIN, kind=VoteKind.PREVOTE, height=height, round_=0, block_hash=b"\x02" * 32
    )
    return a, b


def test_equivocation_evidence_is_recorded_once() -> None:
    chain = Chain(4)
    a, b = conflicting_votes(chain.ids[1])
    recorded = chain.run(chain_tx(chain.ids[0], KIND_EVIDENCE, encode_evidence(a, b)))
    assert recorded.results[0].ok
    assert_refused(
        chain, chain_tx(chain.ids[2], KIND_EVIDENCE, encode_evidence(b, a)), "chain.evidence_known"
    )


def test_invalid_evidence() -> None:
    chain = Chain(4)
    a, b = conflicting_votes(chain.ids[1])
    assert_refused(chain, chain_tx(chain.ids[0], KIND_EVIDENCE, encode_evidence(a, a)), "chain.evidence")
    outsider_a, outsider_b = conflicting_votes(Identity.generate())
    assert_refused(
        chain,
        chain_tx(chain.ids[0], KIND_EVIDENCE, encode_evidence(outsider_a, outsider_b)),
        "chain.evidence",
    )
    forged = Vote(b.chain_id, b.kind, b.height, b.round, b.block_hash, b.validator, bytes(64))
    assert_refused(chain, chain_tx(chain.ids[0], KIND_EVIDENCE, encode_evidence(a, forged)), "chain.evidence")


def test_app_txs_pass_through_and_chain_writes_change_the_root() -> None:
    chain = Chain(4)
    plain = KeyValueFixtureApp()
    kv = chain_tx(chain.ids[0], KIND_SET, encode_set_body(b"k", b"v"))
    wrapped = chain.app.apply_block(block_at(1, (kv,)), (kv,), DictState(), ZERO)
    alone = plain.apply_block(block_at(1, (kv,)), (kv,), DictState(), ZERO)
    assert wrapped == alone  # no chain tx: the wrapped app is untouched, root included
    mixed = chain.run(kv, chain_tx(chain.ids[0], KIND_VALIDATOR_ADD, add_body(Identity.generate())))
    assert [r.ok for r in mixed.results] == [True, True]
    assert mixed.state_root != plain.apply_block(block_at(1, (kv,)), (kv,), DictState(), ZERO).state_root


def signed_proposal(
    identity: Identity, block_hash: bytes, height: int = 3, round_: int = 0
) -> SignedProposal:
    me = identity.public.sign_key
    signature = identity.sign(compute_proposal_signing_bytes(CHAIN, height, round_, NO_ROUND, block_hash, me))
    return SignedProposal(CHAIN, height, round_, NO_ROUND, block_hash, me, signature)


def proposal_evidence_tx(filer: Identity, a: SignedProposal, b: SignedProposal) -> Tx:
    return chain_tx(filer, KIND_EVIDENCE_PROPOSAL, encode(ConflictingProposalEvidence(a, b)))


def test_trust_12_conflicting_proposals_are_recorded_once() -> None:
    """Two signed proposals of one proposer for one (height, round) are an offence on the ledger."""
    chain = Chain(4)
    a = signed_proposal(chain.ids[1], b"\x01" * 32)
    b = signed_proposal(chain.ids[1], b"\x02" * 32)
    recorded = chain.run(proposal_evidence_tx(chain.ids[0], a, b))
    assert recorded.results[0].ok
    evidence = ConflictingProposalEvidence(a, b)
    assert GovernedApp.is_evidence_recorded(chain.state, evidence.compute_slot())
    # The same offence again, filed by another validator or with a third proposal: refused.
    c = signed_proposal(chain.ids[1], b"\x03" * 32)
    assert_refused(chain, proposal_evidence_tx(chain.ids[2], b, a), "chain.evidence_known")
    assert_refused(chain, proposal_evidence_tx(chain.ids[2], a, c), "chain.evidence_known")


def test_trust_12_an_equivocation_slot_is_recorded_once_whatever_the_pair() -> None:
    chain = Chain(4)
    a, b = conflicting_votes(chain.ids[1])
    assert chain.run(chain_tx(chain.ids[0], KIND_EVIDENCE, encode_evidence(a, b))).results[0].ok
    c = sign_vote(chain.ids[1], chain_id=CHAIN, kind=VoteKind.PREVOTE, height=3, round_=0, block_hash=NIL)
    assert_refused(
        chain, chain_tx(chain.ids[2], KIND_EVIDENCE, encode_evidence(a, c)), "chain.evidence_known"
    )


def test_trust_12_evidence_never_enters_the_mempool() -> None:
    """Evidence is filed by a proposer in its block: a node's admission refuses it as a tx, so
    every node that saw an equivocation cannot each file its own copy."""
    chain = Chain(4)
    a, b = conflicting_votes(chain.ids[1])
    pa, pb = signed_proposal(chain.ids[1], b"\x01" * 32), signed_proposal(chain.ids[1], b"\x02" * 32)
    for tx in (
        chain_tx(chain.ids[0], KIND_EVIDENCE, encode_evidence(a, b)),
        proposal_evidence_tx(chain.ids[0], pa, pb),
    ):
        with pytest.raises(TxRejectedError) as refused:
            chain.app.check_tx(tx, TxId(b""), chain.state)
        assert refused.value.rule == "chain.evidence_in_block"


def test_invalid_proposal_evidence() -> None:
    chain = Chain(4)
    a = signed_proposal(chain.ids[1], b"\x01" * 32)
    assert_refused(chain, proposal_evidence_tx(chain.ids[0], a, a), "chain.evidence")
    other_round = signed_proposal(chain.ids[1], b"\x02" * 32, round_=1)
    assert_refused(chain, proposal_evidence_tx(chain.ids[0], a, other_round), "chain.evidence")
    by_another = signed_proposal(chain.ids[2], b"\x02" * 32)
    assert_refused(chain, proposal_evidence_tx(chain.ids[0], a, by_another), "chain.evidence")
    outsider = Identity.generate()
    oa, ob = signed_proposal(outsider, b"\x01" * 32), signed_proposal(outsider, b"\x02" * 32)
    assert_refused(chain, proposal_evidence_tx(chain.ids[0], oa, ob), "chain.evidence")
    b = signed_proposal(chain.ids[1], b"\x02" * 32)
    forged = dataclasses.replace(b, signature=bytes(64))
    assert_refused(chain, proposal_evidence_tx(chain.ids[0], a, forged), "chain.evidence")
    wrong_chain = dataclasses.replace(a, chain_id="other"), dataclasses.replace(b, chain_id="other")
    assert_refused(chain, proposal_evidence_tx(chain.ids[0], *wrong_chain), "chain.evidence")
    assert_refused(chain, chain_tx(chain.ids[0], KIND_EVIDENCE_PROPOSAL, b"\x00junk"), "chain.body")


def test_evidence_pool_keeps_one_entry_per_slot_and_is_bounded() -> None:
    identity = Identity.generate()
    pool = EvidencePool(capacity=2)
    a, b = conflicting_votes(identity, height=3)
    assert pool.add(make_duplicate_vote_evidence(a, b))
    assert not pool.add(make_duplicate_vote_evidence(b, a))  # the same slot
    for height in (4, 5):
        pool.add(make_duplicate_vote_evidence(*conflicting_votes(identity, height=height)))
    assert [e.height for e in pool.get_pending()] == [4, 5]  # the oldest went
    pool.prune(lambda slot: slot == pool.get_pending()[0].compute_slot())
    assert [e.height for e in pool.get_pending()] == [5]


def test_evidence_bodies_round_trip_through_the_codec_and_refuse_junk() -> None:
    identity = Identity.generate()
    votes = make_duplicate_vote_evidence(*conflicting_votes(identity))
    proposals = ConflictingProposalEvidence(
        signed_proposal(identity, b"\x01" * 32), signed_proposal(identity, b"\x02" * 32)
    )
    for evidence in (votes, proposals):
        raw = encode(evidence)
        assert decode(type(evidence), raw, max_bytes=len(raw)) == evidence
        with pytest.raises(CodecError):
            decode(type(evidence), raw[:-1], max_bytes=len(raw))
    assert votes.compute_slot() != proposals.compute_slot()
