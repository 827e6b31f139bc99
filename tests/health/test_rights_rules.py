"""The patient-rights rules (issue 14): records requests and amendments, and each one's refusals.

Every refusal goes through `Ledger.submit_rejected` (the named rule, the full state unchanged, and
admission agreeing with execution). The hostile cases the issue names are here: an institution
closing a request addressed to another, a non-author answering an amendment, a statement of
disagreement by someone who does not act for the patient, replays and oversize input.
"""

from __future__ import annotations

import dataclasses

import pytest
from health_testkit import GENESIS_TIME_MS, Ledger, Outcome, make_condition, make_identity, make_observation
from test_client_ledger import _feed

from medledger.chain.codec import encode, encode_primitive
from medledger.chain.txbuilder import sign_tx
from medledger.chain.types import Genesis
from medledger.crypto import Identity
from medledger.health import client, rights, rights_seal
from medledger.health import state as st
from medledger.health.app import encode_genesis
from medledger.health.client import SignedTx
from medledger.health.records import encrypt_record, get_verified_record_key, open_record, reseal_record_keys
from medledger.health.rights_seal import (
    AmendmentTextUnreadableError,
    InvalidAmendmentTextError,
    open_refusal_reason,
    open_request_text,
    open_statement,
    seal_statement,
)
from medledger.health.rights_types import (
    AMENDMENT_ACCEPTED,
    AMENDMENT_REFUSED,
    AMENDMENT_TEXT_LENGTH_MAX,
    RECORDS_REQUEST_DEADLINE_MS,
    RECORDS_REQUEST_RECORDS_MAX,
    REQUEST_CLOSED,
    REQUEST_OPEN,
    REQUEST_OVERDUE,
    AmendmentState,
    CloseRecordsRequestBody,
    RecordsRequestState,
    RequestRecordsBody,
    compute_request_status,
    is_closed_late,
)
from medledger.health.types import (
    EVENT_AMENDMENT_ACCEPTED,
    EVENT_AMENDMENT_REFUSED,
    EVENT_AMENDMENT_REQUEST,
    EVENT_DISAGREEMENT,
    EVENT_RECORDS_REQUEST,
    EVENT_RECORDS_REQUEST_CLOSED,
    KIND_CLOSE_RECORDS_REQUEST,
    KIND_REQUEST_RECORDS,
    HealthGenesis,
    RecordState,
    compute_patient_id,
)
from medledger.health.verify import PatientLedger

CHAIN_ID = "medledger-health-test"


@dataclasses.dataclass
class World:
    ledger: Ledger
    patient: Identity
    patient_id: bytes
    other: Identity
    representative: Identity
    clinic: Identity
    hospital: Identity
    insurer: Identity


@pytest.fixture
def world() -> World:
    ledger = Ledger()
    patient, other, representative = (
        make_identity("patient-a"),
        make_identity("patient-b"),
        make_identity("rep"),
    )
    ledger.submit_ok(ledger.sign(client.build_register_patient, patient))
    ledger.submit_ok(ledger.sign(client.build_register_patient, other))
    patient_id = compute_patient_id(patient.public.sign_key)
    ledger.submit_ok(
        ledger.sign(client.build_add_representative, patient, patient_id, representative.public.sign_key)
    )
    return World(
        ledger,
        patient,
        patient_id,
        other,
        representative,
        make_identity("clinic"),
        make_identity("hospital"),
        make_identity("insurer"),
    )


def add_record(w: World, author: Identity, resource: dict[str, object]) -> RecordState:
    readers = [w.patient.public.enc_key, author.public.enc_key]
    encrypted = encrypt_record(
        resource, patient_id=w.patient_id, author=author.public.sign_key, readers=readers
    )
    outcome = w.ledger.submit_ok(w.ledger.sign(client.build_add_record, author, w.patient_id, encrypted))
    record = st.get_record(w.ledger.state, outcome.tx_id)
    assert record is not None
    return record


def request_records(
    w: World, signer: Identity, institution: Identity, **kwargs: object
) -> RecordsRequestState:
    signed = w.ledger.sign(
        rights_seal.build_request_records, signer, w.patient_id, institution.public.sign_key, **kwargs
    )
    request = st.get_records_request(w.ledger.state, w.ledger.submit_ok(signed).tx_id)
    assert request is not None
    return request


def ask_amendment(
    w: World, signer: Identity, record: RecordState, text: str = "wrong dosage"
) -> AmendmentState:
    signed = w.ledger.sign(
        rights_seal.build_request_amendment,
        signer,
        w.patient_id,
        record.record_id,
        text,
        author=record.author,
        patient_enc_key=w.patient.public.enc_key,
        author_enc_key=make_identity_for(w, record.author).public.enc_key,
    )
    amendment = st.get_amendment(w.ledger.state, w.ledger.submit_ok(signed).tx_id)
    assert amendment is not None
    return amendment


def make_identity_for(w: World, sign_key: bytes) -> Identity:
    return next(i for i in (w.clinic, w.hospital, w.insurer) if i.public.sign_key == sign_key)


def refuse(
    w: World, amendment: AmendmentState, author: Identity, reason: str = "the chart is right"
) -> AmendmentState:
    signed = w.ledger.sign(
        rights_seal.build_refuse_amendment,
        author,
        amendment,
        reason,
        patient_enc_key=w.patient.public.enc_key,
    )
    w.ledger.submit_ok(signed)
    refused = st.get_amendment(w.ledger.state, amendment.amendment_id)
    assert refused is not None
    return refused


def events(w: World) -> list[tuple[str, bytes]]:
    return [(e.event, e.actor) for e in st.list_audit_events(w.ledger.state, w.patient_id)]


# --- right of access ----------------------------------------------------------------------------


def test_records_request_is_filed_answered_and_closed_with_its_legal_clock(world: World) -> None:
    w = world
    request = request_records(
        w, w.patient, w.hospital, record_types=("Observation",), from_ms=5, to_ms=10**13
    )
    assert request.status == REQUEST_OPEN
    assert request.deadline_ms == request.time_ms + RECORDS_REQUEST_DEADLINE_MS
    assert request.record_types == ("Observation",)
    assert st.list_institution_request_ids(w.ledger.state, w.hospital.public.sign_key) == [request.request_id]
    assert compute_request_status(request, request.deadline_ms - 1) == REQUEST_OPEN
    assert compute_request_status(request, request.deadline_ms) == REQUEST_OVERDUE

    uploaded = [add_record(w, w.hospital, make_observation(60 + n)) for n in range(2)]
    ids = tuple(sorted(r.record_id for r in uploaded))
    w.ledger.submit_ok(
        w.ledger.sign(rights_seal.build_close_records_request, w.hospital, request.request_id, ids)
    )
    closed = st.get_records_request(w.ledger.state, request.request_id)
    assert closed is not None
    assert (closed.status, closed.record_ids, closed.closed_height) == (REQUEST_CLOSED, ids, w.ledger.height)
    assert compute_request_status(closed, closed.deadline_ms + 1) == REQUEST_CLOSED
    assert st.get_open_request_count(w.ledger.state, w.patient_id) == 0
    trail = events(w)
    assert (EVENT_RECORDS_REQUEST, w.patient.public.sign_key) in trail
    assert trail[-1] == (EVENT_RECORDS_REQUEST_CLOSED, w.hospital.public.sign_key)
    assert rights.get_patient_records_requests(w.ledger.state, w.patient_id) == [closed]


def test_a_representative_may_file_and_an_insurer_may_be_asked(world: World) -> None:
    request = request_records(world, world.representative, world.insurer)
    assert request.requested_by == world.representative.public.sign_key
    world.ledger.submit_ok(
        world.ledger.sign(rights_seal.build_close_records_request, world.insurer, request.request_id)
    )


def test_invalid_close_by_an_institution_the_request_is_not_addressed_to(world: World) -> None:
    w = world
    request = request_records(w, w.patient, w.hospital)
    signed = w.ledger.sign(rights_seal.build_close_records_request, w.clinic, request.request_id)
    w.ledger.submit_rejected(signed, "health.not_addressee")
    signed = w.ledger.sign(rights_seal.build_close_records_request, w.patient, request.request_id)
    w.ledger.submit_rejected(signed, "health.not_addressee")


def test_invalid_close_citing_records_of_another_author_or_patient(world: World) -> None:
    w = world
    request = request_records(w, w.patient, w.hospital)
    clinics = add_record(w, w.clinic, make_observation(70))
    signed = w.ledger.sign(
        rights_seal.build_close_records_request, w.hospital, request.request_id, (clinics.record_id,)
    )
    w.ledger.submit_rejected(signed, "health.records_request_records")
    unsorted = CloseRecordsRequestBody(request.request_id, (b"\x02" * 32, b"\x01" * 32))
    signed = w.ledger.sign(client.build_tx, w.hospital, KIND_CLOSE_RECORDS_REQUEST, unsorted)
    w.ledger.submit_rejected(signed, "health.records_request_records")


def test_invalid_close_replayed_and_unknown(world: World) -> None:
    w = world
    request = request_records(w, w.patient, w.hospital)
    w.ledger.submit_ok(w.ledger.sign(rights_seal.build_close_records_request, w.hospital, request.request_id))
    # A second closing (a new tx: the chain refuses the very same bytes as a replay by tx id).
    again = w.ledger.sign(rights_seal.build_close_records_request, w.hospital, request.request_id)
    w.ledger.submit_rejected(again, "health.records_request_closed")
    unknown = w.ledger.sign(rights_seal.build_close_records_request, w.hospital, b"\x07" * 32)
    w.ledger.submit_rejected(unknown, "health.records_request_unknown")


def test_invalid_records_request_by_a_stranger_or_to_no_institution(world: World) -> None:
    w = world
    for signer in (w.other, w.clinic, make_identity("stranger")):
        signed = w.ledger.sign(
            rights_seal.build_request_records, signer, w.patient_id, w.hospital.public.sign_key
        )
        w.ledger.submit_rejected(signed, "health.not_authorised")
    signed = w.ledger.sign(rights_seal.build_request_records, w.patient, w.patient_id, b"\x05" * 32)
    w.ledger.submit_rejected(signed, "health.institution_unknown")
    backwards = RequestRecordsBody(w.patient_id, w.hospital.public.sign_key, (), 10, 5)
    signed = w.ledger.sign(client.build_tx, w.patient, KIND_REQUEST_RECORDS, backwards)
    w.ledger.submit_rejected(signed, "health.records_request")
    unsorted = RequestRecordsBody(
        w.patient_id, w.hospital.public.sign_key, ("Observation", "Condition"), 0, 5
    )
    signed = w.ledger.sign(client.build_tx, w.patient, KIND_REQUEST_RECORDS, unsorted)
    w.ledger.submit_rejected(signed, "health.records_request")


def test_invalid_oversize_closing_does_not_decode(world: World) -> None:
    w = world
    request = request_records(w, w.patient, w.hospital)
    ids = sorted(i.to_bytes(32, "big") for i in range(RECORDS_REQUEST_RECORDS_MAX + 1))
    # One more id than the limit: the codec refuses the body before any rule reads it.
    oversized = encode_primitive({"record_ids": ids, "request_id": request.request_id})
    signed = sign_tx(
        w.hospital,
        chain_id=CHAIN_ID,
        kind=KIND_CLOSE_RECORDS_REQUEST,
        body=oversized,
        nonce=w.ledger.nonce(),
        timestamp_ms=w.ledger.next_time_ms,
    )
    w.ledger.submit_rejected(signed, "health.body")


# --- right to amend -----------------------------------------------------------------------------


def test_amendment_accepted_by_superseding_the_record(world: World) -> None:
    w = world
    record = add_record(w, w.clinic, make_condition("hypertension since 2019"))
    amendment = ask_amendment(w, w.patient, record, "It started in 2021, not 2019.")
    assert open_request_text(amendment, w.patient) == "It started in 2021, not 2019."
    assert open_request_text(amendment, w.clinic) == "It started in 2021, not 2019."
    with pytest.raises(AmendmentTextUnreadableError):
        open_request_text(amendment, w.hospital)
    readers = [w.patient.public.enc_key, w.clinic.public.enc_key]
    corrected = encrypt_record(
        make_condition("hypertension since 2021"),
        patient_id=w.patient_id,
        author=w.clinic.public.sign_key,
        readers=readers,
        supersedes=record.record_id,
    )
    signed = w.ledger.sign(
        rights_seal.build_accept_amendment, w.clinic, amendment, record.record_id, corrected
    )
    outcome = w.ledger.submit_ok(signed)
    accepted = st.get_amendment(w.ledger.state, amendment.amendment_id)
    new = st.get_record(w.ledger.state, outcome.tx_id)
    old = st.get_record(w.ledger.state, record.record_id)
    assert accepted is not None
    assert new is not None
    assert old is not None
    assert (accepted.status, accepted.answer_id) == (AMENDMENT_ACCEPTED, new.record_id)
    assert (new.supersedes, old.superseded_by) == (record.record_id, new.record_id)
    assert open_record(new, w.patient).resource["note"] == [{"text": "hypertension since 2021"}]
    assert [e for e, _ in events(w)][-2:] == [EVENT_AMENDMENT_REQUEST, EVENT_AMENDMENT_ACCEPTED]
    assert st.get_open_amendment_count(w.ledger.state, w.patient_id) == 0


def test_refusal_then_statement_that_every_reader_of_the_record_reads(world: World) -> None:
    w = world
    record = add_record(w, w.clinic, make_observation(80))
    amendment = ask_amendment(w, w.representative, record)  # a representative may ask
    refused = refuse(w, amendment, w.clinic, "Measured twice; the value stands.")
    assert refused.status == AMENDMENT_REFUSED
    assert open_refusal_reason(refused, w.patient) == "Measured twice; the value stands."
    assert open_refusal_reason(refused, w.clinic) == "Measured twice; the value stands."
    statement_text = "Ich widerspreche: der Wert wurde nach dem Treppensteigen gemessen."
    key = get_verified_record_key(record, w.patient)
    statement = seal_statement(statement_text, record_key=key, amendment=refused)
    w.ledger.submit_ok(w.ledger.sign(rights_seal.build_disagree, w.patient, refused, statement))
    stored = st.get_amendment(w.ledger.state, amendment.amendment_id)
    assert stored is not None
    assert stored.statement_by == w.patient.public.sign_key
    # The author reads it with its own record key; a grantee granted *later* reads it too.
    assert open_statement(stored, get_verified_record_key(record, w.clinic)) == statement_text
    inquiry = w.ledger.submit_ok(
        w.ledger.sign(
            client.build_request_access,
            w.hospital,
            w.patient_id,
            client.make_scope(),
            "TREAT",
            w.ledger.next_time_ms + 3_600_000,
            "follow-up",
            patient_enc_key=w.patient.public.enc_key,
        )
    ).tx_id
    keys = reseal_record_keys([record], w.patient, w.hospital.public.enc_key)
    grant_id = w.ledger.submit_ok(w.ledger.sign(client.build_grant, w.patient, inquiry, keys)).tx_id
    grant = st.get_grant(w.ledger.state, grant_id)
    assert grant is not None
    hospital_key = get_verified_record_key(record, w.hospital, grant=grant)
    assert open_statement(stored, hospital_key) == statement_text
    # Another record's key does not open it.
    other = add_record(w, w.clinic, make_observation(81))
    with pytest.raises(AmendmentTextUnreadableError):
        open_statement(stored, get_verified_record_key(other, w.clinic))
    assert [e for e, _ in events(w)][1:] == [
        EVENT_AMENDMENT_REQUEST,
        EVENT_AMENDMENT_REFUSED,
        EVENT_DISAGREEMENT,
        "inquiry",
        "grant",
    ]
    assert rights.get_record_amendments(w.ledger.state, record.record_id) == [stored]


def test_invalid_answer_by_someone_other_than_the_author(world: World) -> None:
    w = world
    record = add_record(w, w.clinic, make_observation(90))
    amendment = ask_amendment(w, w.patient, record)
    for intruder in (w.hospital, w.insurer):
        signed = w.ledger.sign(
            rights_seal.build_refuse_amendment,
            intruder,
            amendment,
            "no",
            patient_enc_key=w.patient.public.enc_key,
        )
        w.ledger.submit_rejected(signed, "health.not_author")
    # A hospital cannot "accept" by superseding the clinic's record either.
    corrected = encrypt_record(
        make_observation(91),
        patient_id=w.patient_id,
        author=w.hospital.public.sign_key,
        readers=[w.patient.public.enc_key, w.hospital.public.enc_key],
        supersedes=record.record_id,
    )
    signed = w.ledger.sign(
        rights_seal.build_accept_amendment, w.hospital, amendment, record.record_id, corrected
    )
    w.ledger.submit_rejected(signed, "health.not_author")


def test_invalid_amendment_requests(world: World) -> None:
    w = world
    record = add_record(w, w.clinic, make_observation(95))
    for signer in (w.other, w.clinic):
        signed = w.ledger.sign(
            rights_seal.build_request_amendment,
            signer,
            w.patient_id,
            record.record_id,
            "wrong",
            author=w.clinic.public.sign_key,
            patient_enc_key=w.patient.public.enc_key,
            author_enc_key=w.clinic.public.enc_key,
        )
        w.ledger.submit_rejected(signed, "health.not_authorised")
    # Sealed for a third party (the hospital) instead of the author: refused by label.
    signed = w.ledger.sign(
        rights_seal.build_request_amendment,
        w.patient,
        w.patient_id,
        record.record_id,
        "wrong",
        author=w.clinic.public.sign_key,
        patient_enc_key=w.patient.public.enc_key,
        author_enc_key=w.hospital.public.enc_key,
    )
    w.ledger.submit_rejected(signed, "health.amendment_text")
    ask_amendment(w, w.patient, record)
    signed = w.ledger.sign(
        rights_seal.build_request_amendment,
        w.patient,
        w.patient_id,
        record.record_id,
        "again",
        author=w.clinic.public.sign_key,
        patient_enc_key=w.patient.public.enc_key,
        author_enc_key=w.clinic.public.enc_key,
    )
    w.ledger.submit_rejected(signed, "health.amendment_open")


def test_invalid_statements_of_disagreement(world: World) -> None:
    w = world
    record = add_record(w, w.clinic, make_observation(99))
    amendment = ask_amendment(w, w.patient, record)
    key = get_verified_record_key(record, w.patient)
    early = seal_statement("too early", record_key=key, amendment=amendment)
    w.ledger.submit_rejected(
        w.ledger.sign(rights_seal.build_disagree, w.patient, amendment, early), "health.disagreement"
    )
    refused = refuse(w, amendment, w.clinic)
    statement = seal_statement("I disagree", record_key=key, amendment=refused)
    for intruder in (w.other, w.clinic, w.hospital):
        signed = w.ledger.sign(rights_seal.build_disagree, intruder, refused, statement)
        w.ledger.submit_rejected(signed, "health.not_authorised")
    w.ledger.submit_ok(w.ledger.sign(rights_seal.build_disagree, w.patient, refused, statement))
    # Replayed in a new tx (same statement, fresh nonce): one statement per refusal.
    again = w.ledger.sign(rights_seal.build_disagree, w.patient, refused, statement)
    w.ledger.submit_rejected(again, "health.disagreement")
    # Answering twice is refused too.
    signed = w.ledger.sign(
        rights_seal.build_refuse_amendment,
        w.clinic,
        refused,
        "again",
        patient_enc_key=w.patient.public.enc_key,
    )
    w.ledger.submit_rejected(signed, "health.amendment_answered")


def test_invalid_acceptance_of_an_old_version(world: World) -> None:
    w = world
    record = add_record(w, w.clinic, make_observation(100))
    amendment = ask_amendment(w, w.patient, record)
    readers = [w.patient.public.enc_key, w.clinic.public.enc_key]
    newer = encrypt_record(
        make_observation(101),
        patient_id=w.patient_id,
        author=w.clinic.public.sign_key,
        readers=readers,
        supersedes=record.record_id,
    )
    newer_id = w.ledger.submit_ok(
        w.ledger.sign(client.build_supersede_record, w.clinic, w.patient_id, record.record_id, newer)
    ).tx_id
    stale = encrypt_record(
        make_observation(102),
        patient_id=w.patient_id,
        author=w.clinic.public.sign_key,
        readers=readers,
        supersedes=record.record_id,
    )
    signed = w.ledger.sign(rights_seal.build_accept_amendment, w.clinic, amendment, record.record_id, stale)
    w.ledger.submit_rejected(signed, "health.amendment_correction")
    fresh = encrypt_record(
        make_observation(103),
        patient_id=w.patient_id,
        author=w.clinic.public.sign_key,
        readers=readers,
        supersedes=newer_id,
    )
    w.ledger.submit_ok(
        w.ledger.sign(rights_seal.build_accept_amendment, w.clinic, amendment, newer_id, fresh)
    )


def test_invalid_amendment_text_is_refused_on_the_client() -> None:
    clinic, patient = make_identity("clinic"), make_identity("patient-a")
    for text in ("", "   ", "x" * (AMENDMENT_TEXT_LENGTH_MAX + 1), "bell\x07", "\ud800", 7):
        with pytest.raises(InvalidAmendmentTextError) as caught:
            rights_seal.seal_amendment_text(
                text,  # type: ignore[arg-type]
                associated_data=b"ad",
                patient_enc_key=patient.public.enc_key,
                author_enc_key=clinic.public.enc_key,
            )
        assert str(text)[:8] not in caught.value.message or not str(text).strip()
    sealed = rights_seal.seal_amendment_text(
        "Zeile eins\nligne deux é",
        associated_data=b"ad",
        patient_enc_key=patient.public.enc_key,
        author_enc_key=clinic.public.enc_key,
    )
    assert (
        rights_seal.open_amendment_text(sealed, clinic, associated_data=b"ad") == "Zeile eins\nligne deux é"
    )
    with pytest.raises(AmendmentTextUnreadableError):
        rights_seal.open_amendment_text(sealed, clinic, associated_data=b"other")


# --- the patient's light ledger ---------------------------------------------------------------------


def test_light_ledgers_judge_rights_txs_as_the_chain_and_show_overdue() -> None:
    """Every rights rule reads only the patient's own entries: a patient's light ledger, fed the
    certified blocks, holds the same requests and amendments as the chain (another patient's holds
    none of them), and sees an unanswered request turn overdue by block time alone."""
    fresh = Ledger()
    patient, other = make_identity("patient-a"), make_identity("patient-b")
    w = World(
        fresh,
        patient,
        compute_patient_id(patient.public.sign_key),
        other,
        make_identity("rep"),
        make_identity("clinic"),
        make_identity("hospital"),
        make_identity("insurer"),
    )
    genesis = Genesis(
        CHAIN_ID,
        GENESIS_TIME_MS,
        fresh.validators,
        encode_genesis(HealthGenesis(tuple(fresh.institutions.values()))),
    )
    mine = PatientLedger(genesis, w.patient_id)
    theirs = PatientLedger(genesis, compute_patient_id(other.public.sign_key))
    lights = [mine, theirs]

    def feed(signed: SignedTx) -> Outcome:
        outcome = _feed(fresh, lights, signed)
        assert outcome.ok, outcome.rule
        return outcome

    feed(fresh.sign(client.build_register_patient, w.patient))
    feed(fresh.sign(client.build_register_patient, w.other))
    readers = [w.patient.public.enc_key, w.clinic.public.enc_key]
    encrypted = encrypt_record(
        make_observation(70), patient_id=w.patient_id, author=w.clinic.public.sign_key, readers=readers
    )
    record_id = feed(fresh.sign(client.build_add_record, w.clinic, w.patient_id, encrypted)).tx_id
    request_id = feed(
        fresh.sign(rights_seal.build_request_records, w.patient, w.patient_id, w.hospital.public.sign_key)
    ).tx_id
    record = mine.get_record(record_id)
    assert record is not None
    amendment_id = feed(
        fresh.sign(
            rights_seal.build_request_amendment,
            w.patient,
            w.patient_id,
            record_id,
            "wrong",
            author=w.clinic.public.sign_key,
            patient_enc_key=w.patient.public.enc_key,
            author_enc_key=w.clinic.public.enc_key,
        )
    ).tx_id
    amendment = st.get_amendment(fresh.state, amendment_id)
    assert amendment is not None
    feed(
        fresh.sign(
            rights_seal.build_refuse_amendment,
            w.clinic,
            amendment,
            "no",
            patient_enc_key=w.patient.public.enc_key,
        )
    )
    refused = st.get_amendment(fresh.state, amendment_id)
    assert refused is not None
    statement = seal_statement(
        "I disagree", record_key=get_verified_record_key(record, w.patient), amendment=refused
    )
    feed(fresh.sign(rights_seal.build_disagree, w.patient, refused, statement))

    (request,) = mine.list_records_requests()
    assert compute_request_status(request, mine.time_ms) == REQUEST_OPEN
    # A month of block time passes without an answer: the patient's client shows it overdue.
    fresh.advance(RECORDS_REQUEST_DEADLINE_MS)
    feed(fresh.sign(client.build_register_patient, make_identity("patient-c")))
    (request,) = mine.list_records_requests()
    assert compute_request_status(request, mine.time_ms) == REQUEST_OVERDUE
    feed(fresh.sign(rights_seal.build_close_records_request, w.hospital, request_id))
    (request,) = mine.list_records_requests()
    assert compute_request_status(request, mine.time_ms) == REQUEST_CLOSED
    assert is_closed_late(request)

    chain_requests = rights.get_patient_records_requests(fresh.state, w.patient_id)
    chain_amendments = rights.get_patient_amendments(fresh.state, w.patient_id)
    assert [encode(r) for r in mine.list_records_requests()] == [encode(r) for r in chain_requests]
    assert [encode(a) for a in mine.list_amendments()] == [encode(a) for a in chain_amendments]
    assert [e.event for e in mine.list_audit_events()] == [
        e.event for e in st.list_audit_events(fresh.state, w.patient_id)
    ]
    assert chain_amendments[0].statement == (statement,)
    assert theirs.list_records_requests() == []
    assert theirs.list_amendments() == []
