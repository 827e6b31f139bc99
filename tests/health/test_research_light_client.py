"""The patient's light ledger follows their research txs (issue 13, ADR 0019; `health.verify`).

A patient who joins a study gets `study_joined` in their audit trail on the chain; their client
rebuilds that trail from certified blocks, so it must re-execute joins and leaves (and the studies'
registrations they are judged against), or it would take the node's true answer for a forgery.
Every block of a sequence (registrations, joins, refused joins, a leave, a rejoin, another
patient's join, a query, an expired study) is fed to a `PatientLedger`; its audit trail and its
outcomes equal the chain's.
"""

from __future__ import annotations

import dataclasses

from health_testkit import CHAIN_ID, GENESIS_TIME_MS, Ledger, Outcome, make_identity

from medledger.chain.codec import encode
from medledger.chain.lightclient import CertifiedBlock
from medledger.chain.types import ZERO_HASH, Block, Commit, Genesis, Header, TxId
from medledger.chain.validation import compute_tx_root
from medledger.health import client, research_client
from medledger.health import state as st
from medledger.health.app import encode_genesis
from medledger.health.client import SignedTx
from medledger.health.research_types import (
    GROUP_NONE,
    TEMPLATE_COUNT,
    QueryParams,
    QueryTemplate,
    RegisterStudyBody,
    SubmitQueryBody,
)
from medledger.health.types import EVENT_STUDY_JOINED, EVENT_STUDY_LEFT, HealthGenesis, compute_patient_id
from medledger.health.verify import PatientLedger

COUNT = QueryTemplate("count", TEMPLATE_COUNT, ("sct:44054006",), (), 0, 0, 1_000_000, 0)
DAY_MS = 24 * 3600 * 1000


class Chain:
    def __init__(self) -> None:
        self.ledger = Ledger({"clinic": "clinic", "research": "research"})
        genesis = Genesis(
            CHAIN_ID,
            GENESIS_TIME_MS,
            self.ledger.validators,
            encode_genesis(HealthGenesis(tuple(self.ledger.institutions.values()))),
        )
        self.patient = make_identity("patient")
        self.patient_id = compute_patient_id(self.patient.public.sign_key)
        self.light = PatientLedger(genesis, self.patient_id)

    def submit(self, signed: SignedTx) -> Outcome:
        _, raw, tx_id = signed
        height, time_ms = self.ledger.height + 1, self.ledger.next_time_ms
        outcome = self.ledger.submit(signed)
        header = Header(
            chain_id=CHAIN_ID,
            height=height,
            round=0,
            parent_hash=ZERO_HASH,
            time_ms=time_ms,
            proposer=self.ledger.proposer,
            tx_count=1,
            tx_root=compute_tx_root((raw,)),
            state_root=bytes(32),
            validators_hash=self.ledger.validators.hash(),
            next_validators_hash=self.ledger.validators.hash(),
        )
        block = Block(header, (raw,))
        self.light.apply_block(CertifiedBlock(block, Commit(height, 0, block.hash(), ()), (TxId(tx_id),)))
        fact = self.light.txs.get(tx_id)
        if fact is not None:
            assert fact.ok == outcome.ok, (fact.rule, outcome.rule)
        return outcome

    def assert_same_trail(self) -> None:
        chain = [encode(e) for e in st.list_audit_events(self.ledger.state, self.patient_id)]
        assert chain == [encode(e) for e in self.light.list_audit_events()]


def test_the_light_ledger_follows_joins_leaves_and_the_studies_they_name() -> None:
    c = Chain()
    sign = c.ledger.sign
    research, other = make_identity("research"), make_identity("other-patient")
    other_id = compute_patient_id(other.public.sign_key)
    assert c.submit(sign(client.build_register_patient, c.patient)).ok
    assert c.submit(sign(client.build_register_patient, other)).ok
    body = RegisterStudyBody(
        "Diabetes", "IRB-2026-0113", (COUNT,), 5_000_000, 0, 11, GENESIS_TIME_MS + 30 * DAY_MS
    )
    study = c.submit(sign(research_client.build_register_study, research, body)).tx_id
    short = RegisterStudyBody(
        "Short", "IRB-2026-0114", (COUNT,), 5_000_000, 0, 11, c.ledger.next_time_ms + 3_000
    )
    short_study = c.submit(sign(research_client.build_register_study, research, short)).tx_id

    assert c.submit(sign(research_client.build_join_study, c.patient, study, c.patient_id)).ok
    assert not c.submit(sign(research_client.build_join_study, c.patient, study, c.patient_id)).ok  # member
    assert c.submit(sign(research_client.build_join_study, other, study, other_id)).ok
    query = SubmitQueryBody(
        study,
        COUNT.name,
        QueryParams("sct:44054006", GROUP_NONE, 0, 0),
        (make_identity("clinic").public.sign_key,),
        1_000_000,
        0,
        c.ledger.height,
    )
    first = c.submit(sign(research_client.build_submit_query, research, query)).tx_id
    assert not c.submit(sign(research_client.build_submit_query, research, query)).ok  # repeated
    assert c.submit(sign(research_client.build_leave_study, c.patient, study, c.patient_id)).ok
    assert not c.submit(sign(research_client.build_leave_study, c.patient, study, c.patient_id)).ok
    away = dataclasses.replace(query, as_of_height=c.ledger.height)
    assert c.submit(sign(research_client.build_submit_query, research, away)).ok  # while not a member
    assert c.submit(sign(research_client.build_join_study, c.patient, study, c.patient_id)).ok  # rejoin
    back = dataclasses.replace(query, as_of_height=c.ledger.height, epsilon_micro=500_000)
    third = c.submit(sign(research_client.build_submit_query, research, back)).tx_id
    too_much = dataclasses.replace(query, as_of_height=c.ledger.height, epsilon_micro=1_000_000)
    later = []
    for _ in range(3):  # the budget runs out on the chain (5 - 2.5 = 2 more), and in the light ledger
        outcome = c.submit(sign(research_client.build_submit_query, research, too_much))
        later += [outcome.tx_id] if outcome.ok else []
        too_much = dataclasses.replace(too_much, as_of_height=too_much.as_of_height + 1)
    c.ledger.advance(5_000)
    assert not c.submit(sign(research_client.build_join_study, c.patient, short_study, c.patient_id)).ok
    assert not c.submit(sign(research_client.build_join_study, other, study, c.patient_id)).ok  # not theirs

    c.assert_same_trail()
    assert [q.query_id for q in c.light.list_queries_covering()] == [first, third, *later]
    assert len(later) == 2
    ((light_study, membership),) = [(s, m) for s, m in c.light.list_studies() if s.study_id == study]
    chain_study = st.get_study(c.ledger.state, study)
    assert chain_study is not None
    assert light_study.epsilon_remaining_micro == chain_study.epsilon_remaining_micro
    assert membership is not None
    assert membership.is_member
    events = [e.event for e in c.light.list_audit_events()]
    assert events.count(EVENT_STUDY_JOINED) == 2
    assert events.count(EVENT_STUDY_LEFT) == 1
