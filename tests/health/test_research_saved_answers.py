"""An institution answers a query once: its answer is saved before it is posted and the same bytes
are posted again after a crash (`node.research_answers`, ADR 0019). No second draw of noise."""

from __future__ import annotations

from pathlib import Path

import pytest
from health_testkit import CHAIN_ID, GENESIS_TIME_MS, Ledger, make_identity

from medledger.chain.validation import decode_tx
from medledger.health import client, research_client
from medledger.health import state as st
from medledger.health.research_types import (
    GROUP_YEAR,
    TEMPLATE_HISTOGRAM,
    QueryParams,
    QueryState,
    QueryTemplate,
    RegisterStudyBody,
    SubmitQueryBody,
)
from medledger.node.research_answers import SavedAnswers, prepare_answer, resign_answer

CODE = "sct:44054006"
HISTOGRAM = QueryTemplate("hist", TEMPLATE_HISTOGRAM, (CODE,), (GROUP_YEAR,), 0, 0, 1_000_000, 0)
DAY_MS = 24 * 3600 * 1000


def asked_query() -> tuple[Ledger, QueryState]:
    ledger = Ledger({"clinic": "clinic", "research": "research"})
    research = make_identity("research")
    study = RegisterStudyBody(
        "Diabetes by year", "IRB-2026-0113", (HISTOGRAM,), 5_000_000, 0, 11, GENESIS_TIME_MS + DAY_MS
    )
    study_id = ledger.submit_ok(ledger.sign(research_client.build_register_study, research, study)).tx_id
    body = SubmitQueryBody(
        study_id,
        HISTOGRAM.name,
        QueryParams(CODE, GROUP_YEAR, 0, 0),
        (make_identity("clinic").public.sign_key,),
        1_000_000,
        0,
        ledger.height,
    )
    query_id = ledger.submit_ok(ledger.sign(research_client.build_submit_query, research, body)).tx_id
    query = st.get_query(ledger.state, query_id)
    assert query is not None
    return ledger, query


def test_a_saved_answer_is_the_answer_after_a_restart(tmp_path: Path) -> None:
    ledger, query = asked_query()
    clinic = make_identity("clinic")
    first = prepare_answer(SavedAnswers(tmp_path), ledger.state, clinic, CHAIN_ID, query, GENESIS_TIME_MS)
    # A new process (a crash, a restart): the same bytes from disk, never a fresh draw.
    again = prepare_answer(SavedAnswers(tmp_path), ledger.state, clinic, CHAIN_ID, query, GENESIS_TIME_MS + 5)
    assert again == first
    assert SavedAnswers(tmp_path).list_query_ids() == [query.query_id]
    tx, _ = decode_tx(first)
    ledger.submit_ok((tx, first, decode_tx(first)[1]))
    assert st.get_answer(ledger.state, query.query_id, clinic.public.sign_key) is not None


def test_a_stale_saved_answer_is_signed_again_with_the_same_body(tmp_path: Path) -> None:
    ledger, query = asked_query()
    clinic = make_identity("clinic")
    saved = SavedAnswers(tmp_path)
    first = prepare_answer(saved, ledger.state, clinic, CHAIN_ID, query, GENESIS_TIME_MS)
    fresh = resign_answer(saved, clinic, query.query_id, first, GENESIS_TIME_MS + 10 * DAY_MS)
    assert fresh != first
    assert decode_tx(fresh)[0].body == decode_tx(first)[0].body
    assert saved.load(query.query_id) == fresh


def test_invalid_another_answer_never_replaces_a_saved_one(tmp_path: Path) -> None:
    ledger, query = asked_query()
    clinic = make_identity("clinic")
    saved = SavedAnswers(tmp_path)
    first = prepare_answer(saved, ledger.state, clinic, CHAIN_ID, query, GENESIS_TIME_MS)
    _, other, _ = client.build_tx(clinic, "health.post_answer", decode_tx(first)[0], chain_id=CHAIN_ID)
    with pytest.raises(FileExistsError):
        saved.save(query.query_id, other)
    assert saved.load(query.query_id) == first
