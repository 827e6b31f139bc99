"""The rules of the patient's rights: records requests and amendments (issue 14, ADR 0014).

`validate_*` / `process_*` pairs over (state, ctx, body), as in `health.rules`, which decodes
these kinds (`RIGHTS_BODY_TYPES`) and dispatches here. Plain functions: no clock (time is the
block's `ctx.time_ms`, None at admission), no randomness, no I/O; refusals are `TxRejectedError`
naming the rule (`health.<rule>`), and every check comes before the first write.

Every rule reads only the genesis institutions and the entries of the one patient concerned (their
registration, records, requests, amendments and counters), so a patient's light client
(`health.verify.PatientLedger`) judges these transactions exactly as the chain does; the
per-institution indexes are written, never judged by.

Reads for the API and the SDK (listings, statuses) are at the end.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING

from medledger.chain.app import StateReader
from medledger.crypto import DecryptionError

# `rules` dispatches to this module and this module uses its audit helper: they import each
# other as modules (names are looked up when a tx is processed, when both are loaded).
from medledger.health import rules
from medledger.health import state as st
from medledger.health.errors import HealthStateError, reject
from medledger.health.policy import get_audit_events
from medledger.health.rights_types import (
    AMENDMENT_ACCEPTED,
    AMENDMENT_OPEN,
    AMENDMENT_REFUSED,
    AMENDMENTS_OPEN_MAX,
    AMENDMENTS_PER_RECORD_MAX,
    RECORDS_REQUEST_DEADLINE_MS,
    RECORDS_REQUESTS_OPEN_MAX,
    REQUEST_CLOSED,
    REQUEST_OPEN,
    SUPERSEDE_CHAIN_MAX,
    AcceptAmendmentBody,
    AmendmentState,
    CloseRecordsRequestBody,
    DisagreeBody,
    RecordsRequestState,
    RefuseAmendmentBody,
    RequestAmendmentBody,
    RequestRecordsBody,
    SealedText,
)
from medledger.health.types import (
    EVENT_AMENDMENT_ACCEPTED,
    EVENT_AMENDMENT_REFUSED,
    EVENT_AMENDMENT_REQUEST,
    EVENT_DISAGREEMENT,
    EVENT_RECORDS_REQUEST,
    EVENT_RECORDS_REQUEST_CLOSED,
    Institution,
    PatientState,
    RecordState,
    SupersedeRecordBody,
)

if TYPE_CHECKING:
    from medledger.health.rules import TxContext

#: How `health.rules` supersedes a record (its own rule, handed in so there is one).
Supersede = Callable[[st.StateWriter, "TxContext", SupersedeRecordBody], None]


def _institution(state: StateReader, sign_key: bytes, rule: str, what: str) -> Institution:
    institution = st.get_institution(state, sign_key)
    if institution is None:
        raise reject(rule, what)
    return institution


def _is_strictly_sorted(items: tuple[bytes, ...] | tuple[str, ...]) -> bool:
    return all(a < b for a, b in itertools.pairwise(items))  # type: ignore[operator]


def _validate_sealed_for(sealed: SealedText, readers: set[bytes], rule: str) -> None:
    """Free text is sealed for exactly the patient and the record's author (by label)."""
    try:
        sealed.to_envelope()
    except DecryptionError as exc:
        raise reject(rule, f"the sealed text is malformed: {exc.message}") from None
    if set(sealed.readers) != readers:
        raise reject(rule, "the text must be sealed for the patient and the record's author only")


# --- right of access: records requests ----------------------------------------------------------


def validate_request_records(state: StateReader, ctx: TxContext, body: RequestRecordsBody) -> PatientState:
    patient = rules.validate_patient(state, body.patient_id)
    rules.validate_acts_for_patient(patient, ctx.sender)
    _institution(state, body.institution, "institution_unknown", "the request is addressed to no institution")
    if not _is_strictly_sorted(body.record_types):
        raise reject("records_request", "record types must be sorted and without duplicates")
    if body.from_ms > body.to_ms:
        raise reject("records_request", "the requested period ends before it starts")
    if st.get_open_request_count(state, patient.patient_id) >= RECORDS_REQUESTS_OPEN_MAX:
        raise reject("records_requests_full", f"a patient may have {RECORDS_REQUESTS_OPEN_MAX} requests open")
    return patient


def process_request_records(state: st.StateWriter, ctx: TxContext, body: RequestRecordsBody) -> None:
    patient = validate_request_records(state, ctx, body)
    if st.get_records_request(state, ctx.tx_id) is not None:  # pragma: no cover - tx ids are unique
        raise reject("records_request", "a request with this id exists")
    time_ms = ctx.time_ms or 0
    request = RecordsRequestState(
        request_id=ctx.tx_id,
        patient_id=patient.patient_id,
        institution=body.institution,
        requested_by=ctx.sender,
        record_types=body.record_types,
        from_ms=body.from_ms,
        to_ms=body.to_ms,
        deadline_ms=time_ms + RECORDS_REQUEST_DEADLINE_MS,
        status=REQUEST_OPEN,
        close_id=b"",
        closed_height=0,
        closed_time_ms=0,
        record_ids=(),
        height=ctx.height,
        time_ms=time_ms,
    )
    st.save_records_request(state, request)
    st.save_open_request_count(
        state, patient.patient_id, st.get_open_request_count(state, patient.patient_id) + 1
    )
    rules.audit(state, ctx, patient.patient_id, EVENT_RECORDS_REQUEST, ctx.tx_id)


def validate_close_records_request(
    state: StateReader, ctx: TxContext, body: CloseRecordsRequestBody
) -> RecordsRequestState:
    request = st.get_records_request(state, body.request_id)
    if request is None:
        raise reject("records_request_unknown", "no such records request")
    if ctx.sender != request.institution:
        raise reject("not_addressee", "only the institution a request is addressed to may close it")
    if request.status != REQUEST_OPEN:
        raise reject("records_request_closed", "the records request is already closed")
    if not _is_strictly_sorted(body.record_ids):
        raise reject("records_request_records", "cited records must be sorted by id and unique")
    for record_id in body.record_ids:
        record = st.get_record(state, record_id)
        if record is None or record.patient_id != request.patient_id or record.author != ctx.sender:
            raise reject(
                "records_request_records", "a cited record is not this institution's record of the patient"
            )
    return request


def process_close_records_request(
    state: st.StateWriter, ctx: TxContext, body: CloseRecordsRequestBody
) -> None:
    request = validate_close_records_request(state, ctx, body)
    closed = dataclasses.replace(
        request,
        status=REQUEST_CLOSED,
        close_id=ctx.tx_id,
        closed_height=ctx.height,
        closed_time_ms=ctx.time_ms or 0,
        record_ids=body.record_ids,
    )
    st.save_records_request(state, closed)
    count = st.get_open_request_count(state, request.patient_id)
    if count < 1:
        raise HealthStateError("a patient's open records requests are miscounted")
    st.save_open_request_count(state, request.patient_id, count - 1)
    rules.audit(
        state, ctx, request.patient_id, EVENT_RECORDS_REQUEST_CLOSED, request.request_id, body.record_ids
    )


# --- right to amend -----------------------------------------------------------------------------


def validate_request_amendment(
    state: StateReader, ctx: TxContext, body: RequestAmendmentBody
) -> tuple[RecordState, PatientState]:
    record = st.get_record(state, body.record_id)
    if record is None:
        raise reject("record_unknown", "no such record")
    patient = rules.validate_patient(state, record.patient_id)
    rules.validate_acts_for_patient(patient, ctx.sender)
    if record.superseded_by:
        raise reject("amendment_record", "the record is superseded; ask to amend its latest version")
    author = _institution(state, record.author, "amendment_record", "the record's author is no institution")
    _validate_sealed_for(body.sealed_text, {patient.enc_key, author.enc_key}, "amendment_text")
    amendments = st.get_record_amendment_ids(state, record.record_id)
    if len(amendments) >= AMENDMENTS_PER_RECORD_MAX:
        raise reject("amendments_full", f"a record may receive at most {AMENDMENTS_PER_RECORD_MAX} requests")
    for amendment_id in amendments:
        earlier = st.get_amendment(state, amendment_id)
        if earlier is not None and earlier.status == AMENDMENT_OPEN:
            raise reject("amendment_open", "the record already has an open amendment request")
    if st.get_open_amendment_count(state, patient.patient_id) >= AMENDMENTS_OPEN_MAX:
        raise reject("amendments_full", f"a patient may have {AMENDMENTS_OPEN_MAX} amendment requests open")
    return record, patient


def process_request_amendment(state: st.StateWriter, ctx: TxContext, body: RequestAmendmentBody) -> None:
    record, patient = validate_request_amendment(state, ctx, body)
    if st.get_amendment(state, ctx.tx_id) is not None:  # pragma: no cover - tx ids are unique
        raise reject("amendment", "an amendment with this id exists")
    amendment = AmendmentState(
        amendment_id=ctx.tx_id,
        record_id=record.record_id,
        patient_id=patient.patient_id,
        author=record.author,
        requested_by=ctx.sender,
        sealed_text=body.sealed_text,
        status=AMENDMENT_OPEN,
        answer_id=b"",
        answer_height=0,
        answer_time_ms=0,
        refusal=(),
        statement=(),
        statement_by=b"",
        statement_height=0,
        statement_time_ms=0,
        height=ctx.height,
        time_ms=ctx.time_ms or 0,
    )
    st.save_amendment(state, amendment)
    count = st.get_open_amendment_count(state, patient.patient_id)
    st.save_open_amendment_count(state, patient.patient_id, count + 1)
    rules.audit(state, ctx, patient.patient_id, EVENT_AMENDMENT_REQUEST, ctx.tx_id, (record.record_id,))


def _validate_open_amendment_for_author(
    state: StateReader, ctx: TxContext, amendment_id: bytes
) -> AmendmentState:
    amendment = st.get_amendment(state, amendment_id)
    if amendment is None:
        raise reject("amendment_unknown", "no such amendment request")
    if ctx.sender != amendment.author:
        raise reject("not_author", "only the record's author may answer an amendment request")
    if amendment.status != AMENDMENT_OPEN:
        raise reject("amendment_answered", f"the amendment request is already {amendment.status}")
    return amendment


def get_latest_version(state: StateReader, record_id: bytes) -> RecordState:
    """The latest version of a record, following `superseded_by` (at most `SUPERSEDE_CHAIN_MAX`)."""
    record = st.get_record(state, record_id)
    for _ in range(SUPERSEDE_CHAIN_MAX):
        if record is None:
            raise HealthStateError("a record in a chain of corrections is missing")
        if not record.superseded_by:
            return record
        record = st.get_record(state, record.superseded_by)
    raise reject("amendment_record", f"the record has more than {SUPERSEDE_CHAIN_MAX} later versions")


def validate_accept_amendment(
    state: StateReader, ctx: TxContext, body: AcceptAmendmentBody
) -> AmendmentState:
    amendment = _validate_open_amendment_for_author(state, ctx, body.amendment_id)
    if body.correction.record.patient_id != amendment.patient_id:
        raise reject("amendment_correction", "the correction must concern the amendment's patient")
    latest = get_latest_version(state, amendment.record_id)
    if body.correction.supersedes != latest.record_id:
        raise reject("amendment_correction", "the correction must supersede the latest version of the record")
    return amendment


def process_accept_amendment(
    state: st.StateWriter, ctx: TxContext, body: AcceptAmendmentBody, supersede: Supersede
) -> None:
    amendment = validate_accept_amendment(state, ctx, body)
    supersede(state, ctx, body.correction)  # the supersede rules, and its writes (the new record)
    accepted = dataclasses.replace(
        amendment,
        status=AMENDMENT_ACCEPTED,
        answer_id=ctx.tx_id,
        answer_height=ctx.height,
        answer_time_ms=ctx.time_ms or 0,
    )
    st.save_amendment(state, accepted)
    _close_open_amendment(state, amendment.patient_id)
    rules.audit(
        state, ctx, amendment.patient_id, EVENT_AMENDMENT_ACCEPTED, amendment.amendment_id, (ctx.tx_id,)
    )


def _close_open_amendment(state: st.StateWriter, patient_id: bytes) -> None:
    count = st.get_open_amendment_count(state, patient_id)
    if count < 1:
        raise HealthStateError("a patient's open amendment requests are miscounted")
    st.save_open_amendment_count(state, patient_id, count - 1)


def validate_refuse_amendment(
    state: StateReader, ctx: TxContext, body: RefuseAmendmentBody
) -> AmendmentState:
    amendment = _validate_open_amendment_for_author(state, ctx, body.amendment_id)
    patient = rules.validate_patient(state, amendment.patient_id)
    author = _institution(
        state, amendment.author, "amendment_record", "the record's author is no institution"
    )
    _validate_sealed_for(body.sealed_reason, {patient.enc_key, author.enc_key}, "amendment_text")
    return amendment


def process_refuse_amendment(state: st.StateWriter, ctx: TxContext, body: RefuseAmendmentBody) -> None:
    amendment = validate_refuse_amendment(state, ctx, body)
    refused = dataclasses.replace(
        amendment,
        status=AMENDMENT_REFUSED,
        answer_id=ctx.tx_id,
        answer_height=ctx.height,
        answer_time_ms=ctx.time_ms or 0,
        refusal=(body.sealed_reason,),
    )
    st.save_amendment(state, refused)
    _close_open_amendment(state, amendment.patient_id)
    rules.audit(
        state,
        ctx,
        amendment.patient_id,
        EVENT_AMENDMENT_REFUSED,
        amendment.amendment_id,
        (amendment.record_id,),
    )


def validate_disagree(state: StateReader, ctx: TxContext, body: DisagreeBody) -> AmendmentState:
    amendment = st.get_amendment(state, body.amendment_id)
    if amendment is None:
        raise reject("amendment_unknown", "no such amendment request")
    rules.validate_acts_for_patient(rules.validate_patient(state, amendment.patient_id), ctx.sender)
    if amendment.status != AMENDMENT_REFUSED:
        raise reject("disagreement", "a statement of disagreement answers a refused amendment request")
    if amendment.statement:
        raise reject("disagreement", "the amendment request already carries a statement of disagreement")
    return amendment


def process_disagree(state: st.StateWriter, ctx: TxContext, body: DisagreeBody) -> None:
    amendment = validate_disagree(state, ctx, body)
    st.save_amendment(
        state,
        dataclasses.replace(
            amendment,
            statement=(body.statement,),
            statement_by=ctx.sender,
            statement_height=ctx.height,
            statement_time_ms=ctx.time_ms or 0,
        ),
    )
    rules.audit(
        state, ctx, amendment.patient_id, EVENT_DISAGREEMENT, amendment.amendment_id, (amendment.record_id,)
    )


# --- which txs concern a patient (for the light client) -------------------------------------------


def concerns_patient(state: StateReader, patient_id: bytes, body: object) -> bool | None:
    """Whether a rights tx concerns `patient_id`, judged on the patient's own state; None: not a
    rights body (the caller decides)."""
    if isinstance(body, RequestRecordsBody):
        return body.patient_id == patient_id
    if isinstance(body, CloseRecordsRequestBody):
        request = st.get_records_request(state, body.request_id)
        return request is not None and request.patient_id == patient_id
    if isinstance(body, RequestAmendmentBody):
        record = st.get_record(state, body.record_id)
        return record is not None and record.patient_id == patient_id
    if isinstance(body, AcceptAmendmentBody | RefuseAmendmentBody | DisagreeBody):
        amendment = st.get_amendment(state, body.amendment_id)
        return amendment is not None and amendment.patient_id == patient_id
    return None


# --- reads --------------------------------------------------------------------------------------


def get_patient_records_requests(state: StateReader, patient_id: bytes) -> list[RecordsRequestState]:
    """The patient's records requests in the order filed (found through the audit trail)."""
    requests: list[RecordsRequestState] = []
    for event in get_audit_events(state, patient_id):
        if event.event == EVENT_RECORDS_REQUEST:
            request = st.get_records_request(state, event.event_id)
            if request is None:
                raise HealthStateError("an audited records request is missing")
            requests.append(request)
    return requests


def get_patient_amendments(state: StateReader, patient_id: bytes) -> list[AmendmentState]:
    """The patient's amendment requests in the order filed (found through the audit trail)."""
    amendments: list[AmendmentState] = []
    for event in get_audit_events(state, patient_id):
        if event.event == EVENT_AMENDMENT_REQUEST:
            amendment = st.get_amendment(state, event.event_id)
            if amendment is None:
                raise HealthStateError("an audited amendment request is missing")
            amendments.append(amendment)
    return amendments


def get_record_amendments(state: StateReader, record_id: bytes) -> list[AmendmentState]:
    amendments: list[AmendmentState] = []
    for amendment_id in st.get_record_amendment_ids(state, record_id):
        amendment = st.get_amendment(state, amendment_id)
        if amendment is None:
            raise HealthStateError("a listed amendment request is missing")
        amendments.append(amendment)
    return amendments
