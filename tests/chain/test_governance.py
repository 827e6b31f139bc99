"""Validator-set governance and equivocation evidence as chain transactions (`GovernedApp`)."""

from __future__ import annotations

import time

import pytest

from medledger.chain.app import BlockExecution
from medledger.chain.codec import encode
from medledger.chain.consensus import sign_vote
from medledger.chain.errors import TxRejectedError
from medledger.chain.governance import (
    ACTIVATION_DELAY,
    KIND_EVIDENCE,
    KIND_VALIDATOR_ADD,
    KIND_VALIDATOR_REMOVE,
    GovernedApp,
    encode_evidence,
    encode_removal,
)
from medledger.chain.txbuilder import sign_tx
from medledger.chain.types import Block, Header, Tx, TxId, Validator, ValidatorSet, Vote, VoteKind
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
