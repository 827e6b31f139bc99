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
from medledger.health.types import compute_patient_id


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
