"""REST routes of claims (issue 12, ADR 0017): clinics file, insurers read and decide, patients see.

Institution routes (`Access.TOKEN`, acting as this node's institution):

- `POST /v1/health/institution/claims`: a clinic files a FHIR R4 Claim for one of its Encounter
  records, citing supporting records, to a registered insurer (sealed for patient, clinic, insurer).
- `POST /v1/health/institution/claims/{claim_id}/versions`: the filing clinic amends (the next
  version), e.g. a pended claim answered with more records.
- `GET  /v1/health/institution/claims`: claims addressed to this institution or filed by it, each
  with its current Claim and every decision, opened with this institution's key.
- `GET  /v1/health/institution/claims/{claim_id}/records/{record_id}`: the addressed insurer reads
  one of the claim's current supporting records under its live grant (a standing consent): a claim
  read receipt is committed first, then the record is decrypted (403 and nothing decrypted if no
  live grant of it covers the record, e.g. a labelled record its consent does not name).
- `POST /v1/health/institution/claims/{claim_id}/decision`: the addressed insurer decides the
  current version with a FHIR R4 ClaimResponse that agrees with the outcome.

Patient route (`Access.PATIENT`): `GET /v1/health/patients/{patient_id}/claims`, each claim with its
decisions and the reads each insurer receipted for it, with canonical encodings. The patient grants
and revokes standing consents by txs signed on their device (`POST /v1/txs`; the SDK builds them).

Refusals are the rules' (422 with the rule), checked before anything is signed where the node can
tell: an unknown encounter or record is a 404, a decision by another insurer a 403.
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from medledger.crypto import CryptoError, DecryptionError
from medledger.health import claims, policy
from medledger.health import state as st
from medledger.health.claim_seal import (
    ClaimUnreadableError,
    open_claim_response_validated,
    open_claim_validated,
    seal_claim,
    seal_claim_response,
    validate_claim,
    validate_claim_response,
)
from medledger.health.claims_client import (
    build_amend_claim,
    build_claim_read_receipt,
    build_decide_claim,
    build_file_claim,
)
from medledger.health.claims_types import (
    CLAIM_RECORDS_MAX,
    CLAIM_VERSIONS_MAX,
    OUTCOMES,
    ClaimDecision,
    ClaimState,
)
from medledger.health.errors import RecordVerificationError
from medledger.health.fhir import RECORD_JSON_BYTES_MAX, ValidatedRecord
from medledger.health.json_text import JsonText, compute_spliced_json
from medledger.health.records import open_record
from medledger.health.types import ROLE_INSURER, AuditEvent, Institution
from medledger.node.auth import Access, add_route
from medledger.node.errors import BadRequestError
from medledger.node.health_api import (
    HEALTH_KEY,
    RECEIPT_WAIT_S,
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
    _require_patient,
    _state,
    _submit_and_wait,
    _unusable_key_problem,
    _wait_ms,
    _write_result,
    audit_json,
    institution_route,
    model_json,
    public_route,
    record_json,
)

#: Largest body of a claim write: the FHIR resource and the record ids.
CLAIM_REQUEST_BYTES_MAX: Final = RECORD_JSON_BYTES_MAX + 8192


def _record_ids(value: object) -> tuple[bytes, ...]:
    if not isinstance(value, list) or not 1 <= len(value) <= CLAIM_RECORDS_MAX:
        raise BadRequestError(f"record_ids must be a list of 1 to {CLAIM_RECORDS_MAX} record ids")
    return tuple(sorted({_hex_id(v, "record id") for v in value}))


def _resource(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequestError(f"{what} must be a FHIR R4 {what} (a JSON object)")
    return value


def _load_claim(service: HealthService, claim_id: bytes) -> ClaimState:
    claim = st.get_claim(_state(service), claim_id)
    if claim is None:
        raise ApiProblem(404, "Unknown claim", "no claim has this id", code="claim_unknown")
    return claim


def _require_records(service: HealthService, patient_id: bytes, record_ids: tuple[bytes, ...]) -> None:
    for record_id in record_ids:
        record = st.get_record(_state(service), record_id)
        if record is None or record.patient_id != patient_id:
            raise ApiProblem(
                404,
                "Unknown record",
                "a supporting record does not exist for this patient",
                code="record_unknown",
            )


def _claim_readers(service: HealthService, claim: ClaimState) -> list[bytes]:
    patient = _require_patient(_state(service), claim.patient_id)
    return [
        patient.enc_key,
        service.institutions[claim.clinic].enc_key,
        service.institutions[claim.insurer].enc_key,
    ]


def decision_json(service: HealthService, decision: ClaimDecision, opened: JsonText | None) -> dict[str, Any]:
    return {**model_json(decision), "insurer_name": service.name_of(decision.insurer), "response": opened}


def claim_json(service: HealthService, claim: ClaimState) -> dict[str, Any]:
    return {
        **model_json(claim),
        "clinic_name": service.name_of(claim.clinic),
        "insurer_name": service.name_of(claim.insurer),
    }


def _submitted(validated: ValidatedRecord) -> JsonText:
    """A Claim or ClaimResponse as its author submitted it: spliced into the answer unchanged (ADR
    0011), never re-serialised from parsed values (`100.10` would become `100.1`, `1e2` `100.0`)."""
    return JsonText(validated.plaintext.decode("utf-8"))


def _opened_claim(service: HealthService, claim: ClaimState) -> dict[str, Any]:
    """A claim as one of its parties sees it: the Claim and every decision opened with its key,
    each as its submitted text (`compute_spliced_json` renders the answer)."""
    identity = service.node.identity
    try:
        resource: JsonText | None = _submitted(open_claim_validated(claim, identity))
    except ClaimUnreadableError:
        resource = None
    decisions = []
    for decision in claims.get_claim_decisions(_state(service), claim):
        try:
            opened: JsonText | None = _submitted(open_claim_response_validated(decision, identity))
        except ClaimUnreadableError:
            opened = None
        decisions.append(decision_json(service, decision, opened))
    return {**claim_json(service, claim), "claim": resource, "decisions": decisions}


def _spliced(data: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(status=status, text=compute_spliced_json(data), content_type="application/json")


# --- clinic: file and amend ---------------------------------------------------------------------


async def post_claim(request: web.Request) -> web.Response:
    service, me = _me(request)
    wait_ms = _wait_ms(request)
    members = await _read_members(request, CLAIM_REQUEST_BYTES_MAX)
    data = {name: value for name, (value, _) in members.items()}
    _check_keys(data, {"patient_id", "insurer", "encounter_id", "record_ids", "claim"}, set())
    patient_id = _hex_id(data["patient_id"], "patient_id")
    insurer_key = _hex_id(data["insurer"], "insurer")
    encounter_id = _hex_id(data["encounter_id"], "encounter_id")
    record_ids = _record_ids(data["record_ids"])
    _resource(data["claim"], "Claim")  # a JSON object, else a 400 naming it
    state = _state(service)
    patient = _require_patient(state, patient_id)
    if not policy.is_author_role(me.role):
        raise ApiProblem(
            403, "Forbidden", f"an institution with role {me.role!r} cannot file claims", code="claim_filer"
        )
    insurer = service.institutions.get(insurer_key)
    if insurer is None or insurer.role != ROLE_INSURER or not service.is_active(insurer_key):
        raise ApiProblem(
            422,
            "Unknown insurer",
            "the claim is not addressed to a registered, active insurer",
            code="claim_insurer",
        )
    encounter = st.get_record(state, encounter_id)
    if encounter is None or encounter.patient_id != patient_id or encounter.author != me.sign_key:
        raise ApiProblem(
            404,
            "Unknown encounter",
            "no Encounter record of this patient written here has this id",
            code="claim_encounter",
        )
    _require_records(service, patient_id, record_ids)
    # The Claim as submitted (its text, not a re-serialisation: `120.10` stays `120.10`; ADR 0011).
    validated = validate_claim(members["claim"][1].encode("utf-8"))
    try:
        sealed = seal_claim(
            validated,
            [patient.enc_key, me.enc_key, insurer.enc_key],
            patient_id=patient_id,
            clinic=me.sign_key,
            insurer=insurer.sign_key,
            encounter_id=encounter_id,
            version=1,
        )
    except CryptoError:
        raise _unusable_key_problem() from None
    node = service.node
    _, raw, tx_id = build_file_claim(
        node.identity,
        patient_id,
        insurer.sign_key,
        encounter_id,
        record_ids,
        sealed,
        chain_id=node.genesis.chain_id,
    )
    location = await _submit_and_wait(service, raw, wait_ms)
    return _json(
        {**_write_result(tx_id, location), "claim_id": tx_id.hex(), "version": 1}, 201 if location else 202
    )


async def post_claim_version(request: web.Request) -> web.Response:
    service, me = _me(request)
    wait_ms = _wait_ms(request)
    claim = _load_claim(service, _hex_id(request.match_info["claim_id"], "claim id"))
    members = await _read_members(request, CLAIM_REQUEST_BYTES_MAX)
    data = {name: value for name, (value, _) in members.items()}
    _check_keys(data, {"record_ids", "claim"}, set())
    record_ids = _record_ids(data["record_ids"])
    _resource(data["claim"], "Claim")  # a JSON object, else a 400 naming it
    if claim.clinic != me.sign_key:
        raise ApiProblem(
            403, "Forbidden", "only the clinic that filed a claim may amend it", code="not_claim_filer"
        )
    if claim.version >= CLAIM_VERSIONS_MAX:
        raise ApiProblem(
            409,
            "Too many versions",
            f"a claim has at most {CLAIM_VERSIONS_MAX} versions",
            code="claim_version",
        )
    _require_records(service, claim.patient_id, record_ids)
    version = claim.version + 1
    # The Claim as submitted (its text, not a re-serialisation: `120.10` stays `120.10`; ADR 0011).
    validated = validate_claim(members["claim"][1].encode("utf-8"))
    try:
        sealed = seal_claim(
            validated,
            _claim_readers(service, claim),
            patient_id=claim.patient_id,
            clinic=claim.clinic,
            insurer=claim.insurer,
            encounter_id=claim.encounter_id,
            version=version,
        )
    except CryptoError:
        raise _unusable_key_problem() from None
    node = service.node
    _, raw, tx_id = build_amend_claim(
        node.identity, claim.claim_id, version, record_ids, sealed, chain_id=node.genesis.chain_id
    )
    location = await _submit_and_wait(service, raw, wait_ms)
    answer = {**_write_result(tx_id, location), "claim_id": claim.claim_id.hex(), "version": version}
    return _json(answer, 201 if location else 202)


# --- both: list; insurer: read and decide -------------------------------------------------------


async def list_claims(request: web.Request) -> web.Response:
    service, me = _me(request)
    start, limit = _page(request)
    found = claims.list_institution_claims(_state(service), me.sign_key)
    items = [_opened_claim(service, c) for c in found[start : start + limit]]
    return _spliced({"total": len(found), "claims": items})


def _require_insurer(claim: ClaimState, me: Institution) -> None:
    if claim.insurer != me.sign_key:
        raise ApiProblem(
            403, "Forbidden", "the claim is addressed to another insurer", code="not_claim_insurer"
        )


async def read_claim_record(request: web.Request) -> web.Response:
    """Decrypt one supporting record of a claim for its insurer, after its claim read receipt."""
    service, me = _me(request)
    claim = _load_claim(service, _hex_id(request.match_info["claim_id"], "claim id"))
    record_id = _hex_id(request.match_info["record_id"], "record id")
    _require_insurer(claim, me)
    if record_id not in claim.record_ids:
        raise ApiProblem(
            404,
            "Unknown record",
            "the record is not one of the claim's supporting records",
            code="record_unknown",
        )
    state = _state(service)
    record = st.get_record(state, record_id)
    if record is None:  # pragma: no cover - the rules checked it when the claim was filed
        raise ApiProblem(404, "Unknown record", "no record has this id", code="record_unknown")
    node = service.node
    grant = policy.get_read_grant(state, me.sign_key, record, node.clock_ms())
    if grant is None:
        raise ApiProblem(
            403,
            "Forbidden",
            "no live grant of this insurer covers the record (a standing consent covers only the record "
            "types, authors, window and labels it names)",
            code="no_grant",
        )
    _, raw, tx_id = build_claim_read_receipt(
        node.identity, claim.claim_id, grant.grant_id, [record_id], chain_id=node.genesis.chain_id
    )
    location = await _submit_and_wait(service, raw, int(RECEIPT_WAIT_S * 1000))
    if location is None:
        raise ApiProblem(
            503,
            "Read receipt pending",
            "the read receipt was not committed in time; nothing was decrypted, retry",
            code="receipt_pending",
            headers={"Retry-After": "1"},
        )
    try:
        sealed_key = policy.get_grant_sealed_key(state, grant, record_id)
        decrypted = open_record(record, node.identity, grant=grant, sealed_key=sealed_key)
    except DecryptionError as exc:
        raise ApiProblem(409, "Record cannot be decrypted", exc.message, code="undecryptable") from None
    except RecordVerificationError as exc:
        raise ApiProblem(409, "Record fails verification", exc.message, code=exc.code) from None
    receipt = {"tx_id": tx_id.hex(), "height": location.height, "grant_id": grant.grant_id.hex()}
    # The record's JSON exactly as its author submitted it, as `health_api.read_record` sends it.
    return _spliced(
        {
            **record_json(service, record),
            "resource": JsonText(decrypted.canonical_json.decode("utf-8")),
            "claim_id": claim.claim_id.hex(),
            "receipt": receipt,
        }
    )


async def post_decision(request: web.Request) -> web.Response:
    service, me = _me(request)
    wait_ms = _wait_ms(request)
    claim = _load_claim(service, _hex_id(request.match_info["claim_id"], "claim id"))
    members = await _read_members(request, CLAIM_REQUEST_BYTES_MAX)
    data = {name: value for name, (value, _) in members.items()}
    _check_keys(data, {"version", "outcome", "response"}, set())
    version, outcome = data["version"], data["outcome"]
    if type(version) is not int or not 1 <= version <= CLAIM_VERSIONS_MAX:
        raise BadRequestError(f"version must be an integer in [1, {CLAIM_VERSIONS_MAX}]")
    if outcome not in OUTCOMES:
        raise BadRequestError(f"outcome must be one of {', '.join(sorted(OUTCOMES))}")
    _resource(data["response"], "ClaimResponse")  # a JSON object, else a 400 naming it
    _require_insurer(claim, me)
    if version != claim.version or claim.decided_version == claim.version:
        raise ApiProblem(
            409,
            "Not the open version",
            "only the claim's current, undecided version may be decided",
            code="claim_version",
        )
    validated = validate_claim_response(members["response"][1].encode("utf-8"), outcome)
    try:
        sealed = seal_claim_response(
            validated,
            _claim_readers(service, claim),
            claim_id=claim.claim_id,
            version=version,
            insurer=me.sign_key,
        )
    except CryptoError:
        raise _unusable_key_problem() from None
    node = service.node
    _, raw, tx_id = build_decide_claim(
        node.identity, claim.claim_id, version, outcome, sealed, chain_id=node.genesis.chain_id
    )
    location = await _submit_and_wait(service, raw, wait_ms)
    answer = {
        **_write_result(tx_id, location),
        "claim_id": claim.claim_id.hex(),
        "version": version,
        "outcome": outcome,
    }
    return _json(answer, 201 if location else 202)


# --- patient ------------------------------------------------------------------------------------


def _reads_json(service: HealthService, reads: list[AuditEvent]) -> list[dict[str, Any]]:
    return [audit_json(service, e) for e in reads]


async def get_patient_claims(request: web.Request) -> web.Response:
    service = request.app[HEALTH_KEY]
    patient_id = _hex_id(request.match_info["patient_id"], "patient id")
    start, limit = _page(request)
    state = _state(service)
    _require_patient(state, patient_id)
    found = claims.get_patient_claims(state, patient_id)
    events = policy.get_audit_events(state, patient_id)
    items = []
    for claim in found[start : start + limit]:
        decisions = [
            {**decision_json(service, d, None), "encoded": _b64(d)}
            for d in claims.get_claim_decisions(state, claim)
        ]
        items.append(
            {
                **claim_json(service, claim),
                "encoded": _b64(claim),
                "decisions": decisions,
                "reads": _reads_json(service, claims.get_claim_reads(events, claim.claim_id)),
            }
        )
    return _json({"patient_id": patient_id.hex(), "total": len(found), "claims": items})


def add_claims_routes(app: web.Application) -> None:
    """Register the claims routes (called by `health_api.add_health_routes`, after its own)."""
    institution: list[tuple[str, str, Handler]] = [
        ("POST", "/v1/health/institution/claims", post_claim),
        ("GET", "/v1/health/institution/claims", list_claims),
        ("POST", "/v1/health/institution/claims/{claim_id}/versions", post_claim_version),
        ("POST", "/v1/health/institution/claims/{claim_id}/decision", post_decision),
        ("GET", "/v1/health/institution/claims/{claim_id}/records/{record_id}", read_claim_record),
    ]
    for method, path, handler in institution:
        add_route(app, method, path, institution_route(handler), Access.TOKEN)
    add_route(
        app,
        "GET",
        "/v1/health/patients/{patient_id}/claims",
        public_route(get_patient_claims),
        Access.PATIENT,
    )
