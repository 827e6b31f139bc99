"""The network's research small-cell threshold k, set at genesis (issue 13, ADR 0019 amendment).

A genesis that sets no k keeps its bytes, hash and state root; one that sets k records it in the
state every node starts from, and the rules then refuse a study asking for less.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from health_testkit import INSTITUTION_ROLES, Ledger, make_identity, make_institution
from test_research_rules import study_body

from medledger.chain.codec import encode, encode_primitive, to_primitive
from medledger.health import research_client
from medledger.health import state as st
from medledger.health.app import decode_genesis, decode_genesis_with_policy, encode_genesis
from medledger.health.errors import InvalidGenesisError
from medledger.health.research_types import RegisterStudyBody
from medledger.health.types import (
    RESEARCH_K_MAX,
    RESEARCH_K_MIN_DEFAULT,
    STATE_LAYOUT_LATEST,
    STATE_LAYOUT_V1,
    HealthGenesis,
    HealthGenesisWithPolicy,
)
from medledger.node.home import compute_health_app_state


def genesis() -> HealthGenesis:
    return HealthGenesis(
        tuple(make_institution(n, r) for n, r in INSTITUTION_ROLES.items()), STATE_LAYOUT_LATEST
    )


def register(ledger: Ledger, **changes: Any) -> RegisterStudyBody:
    return dataclasses.replace(study_body(ledger), **changes)


def test_a_genesis_without_a_policy_keeps_its_bytes_and_its_state_root() -> None:
    plain = genesis()
    assert encode_genesis(plain) == encode(plain)
    assert decode_genesis_with_policy(encode_genesis(plain)) == (plain, RESEARCH_K_MIN_DEFAULT)
    assert Ledger().state_root == Ledger(research_k_min=RESEARCH_K_MIN_DEFAULT).state_root
    assert st.get_research_k_min(Ledger().state) == RESEARCH_K_MIN_DEFAULT


def test_a_genesis_that_raises_k_records_it_for_every_node() -> None:
    raised = encode_genesis(genesis(), research_k_min=20)
    assert decode_genesis_with_policy(raised) == (genesis(), 20)
    assert decode_genesis(raised) == genesis()
    ledger = Ledger(research_k_min=20)
    assert st.get_research_k_min(ledger.state) == 20
    assert ledger.state_root != Ledger().state_root  # the policy is part of what the chain agrees on


def test_a_network_that_raised_k_refuses_a_study_below_it() -> None:
    ledger = Ledger(research_k_min=20)
    research = make_identity("research")
    for k in (RESEARCH_K_MIN_DEFAULT, 19):
        signed = ledger.sign(research_client.build_register_study, research, register(ledger, k_min=k))
        ledger.submit_rejected(signed, "health.study_k")
    study_id = ledger.submit_ok(
        ledger.sign(research_client.build_register_study, research, register(ledger, k_min=20))
    ).tx_id
    stored = st.get_study(ledger.state, study_id)
    assert stored is not None
    assert stored.k_min == 20


def test_a_network_may_lower_k_in_its_genesis_and_then_studies_may_use_it() -> None:
    ledger = Ledger(research_k_min=5)
    research = make_identity("research")
    ledger.submit_ok(ledger.sign(research_client.build_register_study, research, register(ledger, k_min=5)))
    signed = ledger.sign(
        research_client.build_register_study, research, register(ledger, k_min=4, title="k4")
    )
    ledger.submit_rejected(signed, "health.study_k")


@pytest.mark.parametrize("k", [0, 1, RESEARCH_K_MAX + 1])
def test_a_threshold_out_of_range_is_refused_when_the_genesis_is_made(k: int) -> None:
    with pytest.raises(InvalidGenesisError, match="small-cell threshold"):
        encode_genesis(genesis(), research_k_min=k)


def test_a_layout_1_genesis_cannot_carry_a_policy() -> None:
    with pytest.raises(InvalidGenesisError, match="layout-1"):
        encode_genesis(dataclasses.replace(genesis(), layout=STATE_LAYOUT_V1), research_k_min=20)


def test_a_genesis_spelling_out_the_default_policy_is_refused() -> None:
    # One genesis, one encoding: the default is written by leaving the policy out.
    explicit = encode(
        HealthGenesisWithPolicy(genesis().institutions, STATE_LAYOUT_LATEST, RESEARCH_K_MIN_DEFAULT)
    )
    with pytest.raises(InvalidGenesisError, match="default policy"):
        decode_genesis(explicit)


@pytest.mark.parametrize("k", [0, 1, RESEARCH_K_MAX + 1])
def test_a_forged_policy_out_of_range_does_not_decode(k: int) -> None:
    forged = to_primitive(HealthGenesisWithPolicy(genesis().institutions, STATE_LAYOUT_LATEST, 20))
    forged["research_k_min"] = k
    with pytest.raises(InvalidGenesisError, match="does not decode"):
        decode_genesis(encode_primitive(forged))


def test_the_operators_genesis_tool_sets_k() -> None:
    identity = make_identity("clinic")
    app_state = compute_health_app_state([("Clinic", "clinic", identity)], research_k_min=25)
    assert decode_genesis_with_policy(app_state)[1] == 25
    assert decode_genesis_with_policy(compute_health_app_state([("Clinic", "clinic", identity)]))[1] == 11
