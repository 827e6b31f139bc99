"""The health app under governance: a block mixing the chain's own txs with health txs.

A live network runs `GovernedApp(HealthApp())`; validator changes and the evidence proposers file
go in the same blocks as health txs. The health app derives each tx's id from `block.txs` index by
index, so it must be shown the block without the chain's txs (it used to raise on any such block).
"""

from __future__ import annotations

from health_testkit import CHAIN_ID, GENESIS_TIME_MS, Ledger, make_identity

from medledger.chain.codec import encode
from medledger.chain.governance import KIND_VALIDATOR_ADD, GovernedApp
from medledger.chain.txbuilder import sign_tx
from medledger.chain.types import ZERO_HASH, Block, Header, Validator, compute_tx_id
from medledger.chain.validation import compute_tx_root
from medledger.health import client
from medledger.health import state as st
from medledger.health.membership_types import KIND_INSTITUTION_SUSPEND
from medledger.health.types import Institution, compute_patient_id


def test_a_block_with_chain_and_health_txs_applies_both() -> None:
    ledger = Ledger()
    governed = GovernedApp(ledger.app, ledger.validators)
    validator = make_identity("validator")  # the genesis set's only member (see Ledger)
    newcomer = make_identity("newcomer")
    approval, _, _ = sign_tx(
        validator,
        chain_id=CHAIN_ID,
        kind=KIND_VALIDATOR_ADD,
        body=encode(Validator("new", newcomer.public.sign_key, newcomer.public.enc_key)),
        timestamp_ms=GENESIS_TIME_MS,
    )
    patient = make_identity("patient")
    register, register_raw, _ = client.build_register_patient(
        patient, chain_id=CHAIN_ID, nonce=1, timestamp_ms=GENESIS_TIME_MS
    )
    txs = (approval, register)
    raws = (encode(approval), register_raw)
    header = Header(
        chain_id=CHAIN_ID,
        height=1,
        round=0,
        parent_hash=ZERO_HASH,
        time_ms=GENESIS_TIME_MS + 1_000,
        proposer=ledger.proposer,
        tx_count=2,
        tx_root=compute_tx_root([compute_tx_id(raw) for raw in raws]),
        state_root=ledger.state_root,
        validators_hash=ledger.validators.hash(),
        next_validators_hash=ledger.validators.hash(),
    )

    execution = governed.apply_block(Block(header, raws), txs, ledger.state, ledger.state_root)

    assert [r.ok for r in execution.results] == [True, True], execution.results
    ledger._write(execution.writes)
    registered = st.get_patient(ledger.state, compute_patient_id(patient.public.sign_key))
    assert registered is not None
    assert (registered.sign_key, registered.height) == (patient.public.sign_key, 1)


def _apply(ledger: Ledger, governed: GovernedApp, signed: list[client.SignedTx]) -> list[str]:
    """Commit `signed` as one block through the governed app; the result codes, in order."""
    txs = tuple(s[0] for s in signed)
    raws = tuple(s[1] for s in signed)
    height = ledger.height + 1
    header = Header(
        chain_id=CHAIN_ID,
        height=height,
        round=0,
        parent_hash=ZERO_HASH,
        time_ms=ledger.next_time_ms,
        proposer=ledger.proposer,
        tx_count=len(raws),
        tx_root=compute_tx_root([compute_tx_id(raw) for raw in raws]),
        state_root=ledger.state_root,
        validators_hash=ledger.validators.hash(),
        next_validators_hash=ledger.validators.hash(),
    )
    execution = governed.apply_block(Block(header, raws), txs, ledger.state, ledger.state_root)
    ledger._write(execution.writes)
    ledger.height, ledger.state_root = height, execution.state_root
    ledger.next_time_ms += 1_000
    return [r.code for r in execution.results]


def test_membership_votes_follow_the_governed_validator_set() -> None:
    """The health app reads each height's set from the chain's governance state (ADR 0020): a
    validator voted in votes on institutions from the height its set governs, and the threshold
    follows the set's size."""
    ledger = Ledger(validator_count=1)
    governed = GovernedApp(ledger.app, ledger.validators)
    validator = ledger.validator_identities[0]
    newcomer = make_identity("newcomer")
    joiner = make_identity("joiner")
    institution = Institution("Joiner Clinic", "clinic", joiner.public.sign_key, joiner.public.enc_key)
    add_validator = sign_tx(
        validator,
        chain_id=CHAIN_ID,
        kind=KIND_VALIDATOR_ADD,
        body=encode(Validator("new", newcomer.public.sign_key, newcomer.public.enc_key)),
        nonce=ledger.nonce(),
    )
    # Block 1 passes the new set (it governs from height 3): the newcomer cannot vote yet.
    early = ledger.sign(client.build_institution_add, newcomer, institution)
    assert _apply(ledger, governed, [add_validator, early]) == ["ok", "health.membership_approver"]
    assert _apply(ledger, governed, []) == []
    # From height 3 the set has two: one approval is not enough (1 * 3 <= 2 * 2), two pass.
    assert _apply(ledger, governed, [ledger.sign(client.build_institution_add, validator, institution)]) == [
        "ok"
    ]
    assert st.get_institution(ledger.state, joiner.public.sign_key) is None
    assert _apply(ledger, governed, [ledger.sign(client.build_institution_add, newcomer, institution)]) == [
        "ok"
    ]
    assert st.get_institution(ledger.state, joiner.public.sign_key) == institution
    # Admission judges by the newest set too.
    status = ledger.sign(
        client.build_institution_status, newcomer, KIND_INSTITUTION_SUSPEND, joiner.public.sign_key
    )
    governed.check_tx(status[0], status[2], ledger.state)
