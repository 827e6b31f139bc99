"""REST routes of the patient's rights (issue 14, ADR 0014): records requests and amendments.

Institution routes (`Access.TOKEN`, acting as this node's institution):

- `GET  /v1/health/institution/records-requests`: the records requests addressed to it (filter by
  `status`: open, overdue, closed), each with its deadline and whether it is overdue by the latest
  block time (the validators' time, not this node's clock).
- `POST /v1/health/institution/records-requests/{request_id}/close`: close one, citing the records
  it uploaded for the patient (through `POST /v1/health/institution/records`).
- `GET  /v1/health/institution/amendments`: amendment requests on records it wrote, with what the
  patient says is wrong (opened with its key), its refusal and any statement of disagreement.
- `POST /v1/health/institution/amendments/{amendment_id}/accept`: answer by superseding the record
  with the corrected FHIR resource (the supersede rules, in one tx that cites the amendment).
- `POST /v1/health/institution/amendments/{amendment_id}/refuse`: answer with a reason (sealed).

Patient routes (`Access.PATIENT`, signed by the patient or a representative): the patient's
records requests and amendments with their canonical encodings, which the SDK checks against the
chain. Patients act by transactions signed on their device (`POST /v1/txs`).

A reader's `GET .../records/{id}` (`health_api.read_record`) adds each statement of disagreement
attached to the record, opened with the record key that reader holds (`rights_seal.record_statements`).
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from aiohttp import web

from medledger.chain.app import StateReader
from medledger.chain.errors import TxRejectedError
from medledger.crypto import CryptoError
from medledger.health import policy, rights
from medledger.health import state as st
from medledger.health.fhir import RECORD_JSON_BYTES_MAX, validate_record
from medledger.health.records import encrypt_record
from medledger.health.rights_seal import (
    AmendmentTextUnreadableError,
    InvalidAmendmentTextError,
    build_accept_amendment,
    build_close_records_request,
    build_refuse_amendment,
    open_refusal_reason,
    open_request_text,
    record_statements,
    validate_amendment_text,
)
from medledger.health.rights_types import (
    AMENDMENT_OPEN,
    AMENDMENT_STATUSES,
    AMENDMENT_TEXT_LENGTH_MAX,
    RECORDS_REQUEST_RECORDS_MAX,
    REQUEST_CLOSED,
    REQUEST_OPEN,
    REQUEST_OVERDUE,
    REQUEST_VIEW_STATUSES,
    AmendmentState,
    RecordsRequestState,
    compute_request_status,
    is_closed_late,
)
from medledger.node.auth import Access, add_route
from medledger.node.errors import BadRequestError
from medledger.node.health_api import (
    HEALTH_KEY,
    RECORD_REQUEST_BYTES_MAX,
    RESEAL_ATTEMPTS_MAX,
    RESEAL_RULES,
    ApiProblem,
    Handler,
    HealthService,
    _b64,
    _check_keys,
    _hex_id,
    _json,
    _me,
    _page,
    _read_members,
    _read_object,
    _require_patient,
    _state,
    _submit_and_wait,
    _unusable_key_problem,
    _wait_ms,
    _write_result,
    institution_route,
    model_json,
    public_route,
)

#: Largest body of a close or refuse request.
RIGHTS_REQUEST_BYTES_MAX: Final = 64 * 1024
#: Records requests / amendments one listing page scans (filtered after).
RIGHTS_SCAN_MAX: Final = st.LIST_LIMIT_MAX


def _now_ms(service: HealthService) -> int:
    """The latest block's time: deadlines run on the validators' clock, not this node's."""
    return service.node.store.last_block_time_ms


def _check_query(request: web.Request, allowed: frozenset[str]) -> None:
    """Refuse query parameters the route does not take (never echoing their client-chosen names)."""
    unknown = set(request.query) - allowed
    if unknown:
        raise BadRequestError(
            f"{len(unknown)} unknown query parameter(s); allowed: {', '.join(sorted(allowed))}"
        )


_LIST_QUERY: Final = frozenset({"status", "start", "limit"})
_WRITE_QUERY: Final = frozenset({"wait_ms"})
_PAGE_QUERY: Final = frozenset({"start", "limit"})


def _status_query(request: web.Request, allowed: frozenset[str]) -> str | None:
    status = request.query.get("status")
    if status is not None and status not in allowed:
        raise BadRequestError(f"status must be one of {', '.join(sorted(allowed))}")
    return status


def records_request_json(service: HealthService, request: RecordsRequestState, now_ms: int) -> dict[str, Any]:
    shown = compute_request_status(request, now_ms)
    return {
        **model_json(request),
        "institution_name": service.name_of(request.institution),
        "overdue": shown == REQUEST_OVERDUE,
        "closed_late": is_closed_late(request),
        "as_of_ms": now_ms,
    }


def amendment_json(service: HealthService, amendment: AmendmentState) -> dict[str, Any]:
    return {
        **model_json(amendment),
        "author_name": service.name_of(amendment.author),
        "refused": bool(amendment.refusal),
        "has_statement": bool(amendment.statement),
    }


def _is_shown(request: RecordsRequestState, status: str | None, now_ms: int) -> bool:
    if status is None:
        return True
    shown = compute_request_status(request, now_ms)
    # "open" is every request not yet closed (overdue ones too); "overdue" only the late ones.
    return shown == status or (status == REQUEST_OPEN and shown == REQUEST_OVERDUE)


# --- institution routes -------------------------------------------------------------------------


async def list_records_requests(request: web.Request) -> web.Response:
    """Records requests addressed to this institution (all patients), in order of filing."""
    service, me = _me(request)
    _check_query(request, _LIST_QUERY)
    status = _status_query(request, REQUEST_VIEW_STATUSES)
    start, limit = _page(request)
    state = _state(service)
    now_ms = _now_ms(service)
    items = []
    for request_id in st.list_institution_request_ids(state, me.sign_key, start=start, limit=limit):
        found = st.get_records_request(state, request_id)
        if found is None:
            raise ApiProblem(503, "State not ready", "a listed request is missing; retry", code="state_gap")
        if _is_shown(found, status, now_ms):
            items.append(records_request_json(service, found, now_ms))
    total = st.get_institution_request_count(state, me.sign_key)
    return _json({"total": total, "as_of_ms": now_ms, "requests": items})


def _load_request(service: HealthService, request_id: bytes, me: bytes) -> RecordsRequestState:
    found = st.get_records_request(_state(service), request_id)
    if found is None:
        raise ApiProblem(
            404, "Unknown request", "no records request has this id", code="records_request_unknown"
        )
    if found.institution != me:
        raise ApiProblem(
            403, "Forbidden", "the records request is addressed to another institution", code="not_addressee"
        )
    return found


async def close_records_request(request: web.Request) -> web.Response:
    service, me = _me(request)
    _check_query(request, _WRITE_QUERY)
    wait_ms = _wait_ms(request)
    request_id = _hex_id(request.match_info["request_id"], "request id")
    data = await _read_object(request, RIGHTS_REQUEST_BYTES_MAX)
    _check_keys(data, set(), {"record_ids"})
    raw_ids = data.get("record_ids", [])
    if not isinstance(raw_ids, list) or len(raw_ids) > RECORDS_REQUEST_RECORDS_MAX:
        raise BadRequestError(f"record_ids must be a list of at most {RECORDS_REQUEST_RECORDS_MAX} ids")
    record_ids = tuple(_hex_id(r, "record_ids[]") for r in raw_ids)
    if len(set(record_ids)) != len(record_ids):
        raise BadRequestError("record_ids must not repeat an id")
    found = _load_request(service, request_id, me.sign_key)
    if found.status == REQUEST_CLOSED:
        raise ApiProblem(
            409, "Already closed", "the records request is already closed", code="records_request_closed"
        )
    node = service.node
    _, raw, tx_id = build_close_records_request(
        node.identity, request_id, record_ids, chain_id=node.genesis.chain_id
    )
    location = await _submit_and_wait(service, raw, wait_ms)
    return _json({**_write_result(tx_id, location), "request_id": request_id.hex()}, 201 if location else 202)


def _institution_amendment_json(
    service: HealthService, state: StateReader, amendment: AmendmentState
) -> dict[str, Any]:
    """The author's view: what is wrong, its own refusal, and the patient's statement, opened here."""
    identity = service.node.identity
    item = amendment_json(service, amendment)
    try:
        item["text"] = open_request_text(amendment, identity)
    except AmendmentTextUnreadableError:
        item["text"] = None
    try:
        item["refusal_reason"] = open_refusal_reason(amendment, identity)
    except AmendmentTextUnreadableError:
        item["refusal_reason"] = None
    record = st.get_record(state, amendment.record_id)
    statements = record_statements(state, record, identity, None) if record is not None else []
    item["statement"] = next(
        (s["statement"] for s in statements if s["amendment_id"] == amendment.amendment_id.hex()), None
    )
    return item


async def list_amendments(request: web.Request) -> web.Response:
    """Amendment requests on records this institution wrote, in order of filing."""
    service, me = _me(request)
    _check_query(request, _LIST_QUERY)
    status = _status_query(request, AMENDMENT_STATUSES)
    start, limit = _page(request)
    state = _state(service)
    items = []
    for amendment_id in st.list_author_amendment_ids(state, me.sign_key, start=start, limit=limit):
        amendment = st.get_amendment(state, amendment_id)
        if amendment is None:
            raise ApiProblem(503, "State not ready", "a listed amendment is missing; retry", code="state_gap")
        if status is None or amendment.status == status:
            items.append(_institution_amendment_json(service, state, amendment))
    return _json({"total": st.get_author_amendment_count(state, me.sign_key), "amendments": items})


def _load_open_amendment(service: HealthService, amendment_id: bytes, me: bytes) -> AmendmentState:
    amendment = st.get_amendment(_state(service), amendment_id)
    if amendment is None:
        raise ApiProblem(
            404, "Unknown amendment", "no amendment request has this id", code="amendment_unknown"
        )
    if amendment.author != me:
        raise ApiProblem(
            403, "Forbidden", "only the record's author may answer this request", code="not_author"
        )
    if amendment.status != AMENDMENT_OPEN:
        raise ApiProblem(
            409, "Already answered", f"the amendment request is {amendment.status}", code="amendment_answered"
        )
    return amendment


async def accept_amendment(request: web.Request) -> web.Response:
    """Supersede the record with the corrected resource, citing the amendment (one tx)."""
    service, me = _me(request)
    _check_query(request, _WRITE_QUERY)
    wait_ms = _wait_ms(request)
    amendment_id = _hex_id(request.match_info["amendment_id"], "amendment id")
    members = await _read_members(request, RECORD_REQUEST_BYTES_MAX)
    _check_keys({name: value for name, (value, _) in members.items()}, {"resource"}, set())
    if not isinstance(members["resource"][0], dict):
        raise BadRequestError("resource must be a FHIR R4 resource (a JSON object)")
    # The correction is the resource's JSON text as submitted (ADR 0011), as for a new record: a
    # re-serialisation would lose what FHIR says is significant (`6.30` is not `6.3`).
    resource = members["resource"][1].encode("utf-8")
    size = len(resource)
    if size > RECORD_JSON_BYTES_MAX:
        raise ApiProblem(
            413,
            "Record too large",
            f"the record is {size} bytes; at most {RECORD_JSON_BYTES_MAX}",
            code="too_large",
        )
    _load_open_amendment(service, amendment_id, me.sign_key)  # a 404 / 409 before the content's 422
    validated = validate_record(resource)  # once: encrypt_record takes it as it is
    record_type = validated.record_type
    deadline_s = asyncio.get_running_loop().time() + wait_ms / 1000
    for attempt in range(1, RESEAL_ATTEMPTS_MAX + 1):
        amendment = _load_open_amendment(service, amendment_id, me.sign_key)
        state = _state(service)
        patient = _require_patient(state, amendment.patient_id)
        latest = rights.get_latest_version(state, amendment.record_id)
        # The correction's labels are its own content's and every label of the record it corrects
        # (the one label decision, as for a new record): a correction adding an HIV diagnosis is
        # sealed for no consent that does not name HIV, and the labels go on the ledger with it.
        labels, readers = policy.compute_node_version_sealing(
            state,
            patient,
            me,
            record_type,
            validated.resource,
            service.node.clock_ms(),
            supersedes=latest.record_id,
        )
        try:
            encrypted = encrypt_record(
                validated,
                patient_id=patient.patient_id,
                author=me.sign_key,
                readers=sorted(readers),
                supersedes=latest.record_id,
            )
        except CryptoError:
            raise _unusable_key_problem() from None
        node = service.node
        _, raw, tx_id = build_accept_amendment(
            node.identity,
            amendment,
            latest.record_id,
            encrypted,
            chain_id=node.genesis.chain_id,
            labels=labels,
        )
        remaining_ms = max(0, int((deadline_s - asyncio.get_running_loop().time()) * 1000))
        try:
            location = await _submit_and_wait(service, raw, remaining_ms if wait_ms else 0)
        except TxRejectedError as exc:
            # Sealed from a state a block in between changed (a consent given, a grant revoked):
            # sealed again from the new state, as a new record is (`health_api.RESEAL_RULES`).
            if exc.rule in RESEAL_RULES and attempt < RESEAL_ATTEMPTS_MAX:
                continue
            raise
        body = {
            **_write_result(tx_id, location),
            "amendment_id": amendment_id.hex(),
            "record_id": tx_id.hex(),
            "supersedes": latest.record_id.hex(),
            "record_type": record_type,
            "security_labels": list(labels),
        }
        return _json(body, 201 if location else 202)
    raise AssertionError("unreachable: the last attempt returns or raises")  # pragma: no cover


async def refuse_amendment(request: web.Request) -> web.Response:
    service, me = _me(request)
    _check_query(request, _WRITE_QUERY)
    wait_ms = _wait_ms(request)
    amendment_id = _hex_id(request.match_info["amendment_id"], "amendment id")
    data = await _read_object(request, RIGHTS_REQUEST_BYTES_MAX)
    _check_keys(data, {"reason"}, set())
    raw_reason = data["reason"]
    if not isinstance(raw_reason, str) or not 1 <= len(raw_reason) <= AMENDMENT_TEXT_LENGTH_MAX:
        raise BadRequestError(f"reason must be a string of 1 to {AMENDMENT_TEXT_LENGTH_MAX} characters")
    try:
        reason = validate_amendment_text(raw_reason, "reason")
    except InvalidAmendmentTextError as exc:
        # Well-formed as the document says, but not acceptable text (printable, Unicode): a 422.
        raise BadRequestError(exc.message, status=422) from None
    amendment = _load_open_amendment(service, amendment_id, me.sign_key)
    patient = _require_patient(_state(service), amendment.patient_id)
    node = service.node
    try:
        _, raw, tx_id = build_refuse_amendment(
            node.identity, amendment, reason, patient_enc_key=patient.enc_key, chain_id=node.genesis.chain_id
        )
    except CryptoError:
        raise _unusable_key_problem() from None
    location = await _submit_and_wait(service, raw, wait_ms)
    return _json(
        {**_write_result(tx_id, location), "amendment_id": amendment_id.hex()}, 201 if location else 202
    )


# --- patient routes -----------------------------------------------------------------------------


async def get_patient_records_requests(request: web.Request) -> web.Response:
    service = request.app[HEALTH_KEY]
    patient_id = _hex_id(request.match_info["patient_id"], "patient id")
    _check_query(request, _PAGE_QUERY)
    start, limit = _page(request)
    state = _state(service)
    _require_patient(state, patient_id)
    now_ms = _now_ms(service)
    found = rights.get_patient_records_requests(state, patient_id)
    items = [
        {**records_request_json(service, r, now_ms), "encoded": _b64(r)} for r in found[start : start + limit]
    ]
    return _json({"patient_id": patient_id.hex(), "total": len(found), "requests": items})


async def get_patient_amendments(request: web.Request) -> web.Response:
    service = request.app[HEALTH_KEY]
    patient_id = _hex_id(request.match_info["patient_id"], "patient id")
    _check_query(request, _PAGE_QUERY)
    start, limit = _page(request)
    state = _state(service)
    _require_patient(state, patient_id)
    found = rights.get_patient_amendments(state, patient_id)
    items = [{**amendment_json(service, a), "encoded": _b64(a)} for a in found[start : start + limit]]
    return _json({"patient_id": patient_id.hex(), "total": len(found), "amendments": items})


def add_rights_routes(app: web.Application) -> None:
    """Register the rights routes (called by `health_api.add_health_routes`, after its own)."""
    institution: list[tuple[str, str, Handler]] = [
        ("GET", "/v1/health/institution/records-requests", list_records_requests),
        ("POST", "/v1/health/institution/records-requests/{request_id}/close", close_records_request),
        ("GET", "/v1/health/institution/amendments", list_amendments),
        ("POST", "/v1/health/institution/amendments/{amendment_id}/accept", accept_amendment),
        ("POST", "/v1/health/institution/amendments/{amendment_id}/refuse", refuse_amendment),
    ]
    for method, path, handler in institution:
        add_route(app, method, path, institution_route(handler), Access.TOKEN)
    for suffix, patient_handler in (
        ("/records-requests", get_patient_records_requests),
        ("/amendments", get_patient_amendments),
    ):
        add_route(
            app,
            "GET",
            f"/v1/health/patients/{{patient_id}}{suffix}",
            public_route(patient_handler),
            Access.PATIENT,
        )
