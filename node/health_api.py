"""The health application's REST routes (DESIGN.md §4, §5): the institution API and patient reads.

Two audiences, one node:

- **Institutions** (`/v1/health/institution/...`): the node acts as the institution whose signing
  key is its node key (registered in the genesis `app_state`). Every call carries
  `Authorization: Bearer <token>` with the token from the node's `[api] token_file`
  (compared in constant time); a missing or wrong token is a 401. The node validates plaintext
  FHIR, encrypts and signs records with the institution's keys, files inquiries, and decrypts the
  records the institution may read, writing a read receipt on the ledger before it returns any
  plaintext. A read without a live grant is a 403 and nothing is decrypted.
- **Patients' clients** (`/v1/health/patients/{patient_id}/...`, `/v1/health/institutions`): a
  patient's signed request (`medledger.node.auth`: a challenge signed with the patient's key, or a
  representative's); a patient reads only their own `{patient_id}`, the institution list is open
  to every registered patient. Patients act through transactions they sign on their own device
  (`POST /v1/txs`); what they read here is what every node holds (public keys, record
  ciphertexts, inquiries, grants, audit events, each with its canonical encoding so the client can
  decode and check it itself). The node's API token reads these routes too (it is the operator's).

Handlers parse the request, ask `medledger.health` (the consent policy is `health/policy.py`: who a
record is sealed for, which grant a read cites, what an institution sees of an audit trail), hand
writes to the `Node` and render the answer; problems are `application/problem+json`.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import re
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any, Final

from aiohttp import web

from medledger.chain.app import StateReader
from medledger.chain.codec import WireType, encode
from medledger.chain.errors import TxRejectedError
from medledger.chain.governance import GovernedApp
from medledger.chain.limits import UINT_MAX
from medledger.chain.store import TxLocation
from medledger.crypto import HASH_SIZE, CryptoError, DecryptionError
from medledger.health import policy
from medledger.health import state as st
from medledger.health.app import decode_genesis
from medledger.health.claims_types import ClaimDecision, ClaimState
from medledger.health.client import build_read_receipt, build_request_access, make_scope
from medledger.health.errors import (
    InvalidReasonError,
    InvalidRecordError,
    ReasonUnreadableError,
    RecordVerificationError,
)
from medledger.health.fhir import RECORD_JSON_BYTES_MAX, validate_record
from medledger.health.json_text import JsonTextError, split_members
from medledger.health.reasons import open_reason, validate_reason
from medledger.health.records import encrypt_record, open_record
from medledger.health.rights_seal import record_statements
from medledger.health.rights_types import AmendmentState, RecordsRequestState
from medledger.health.types import (
    INQUIRY_STATUSES,
    PURPOSES,
    REASON_LENGTH_MAX,
    RECORD_TYPES,
    SCOPE_RECORD_IDS_MAX,
    AuditEvent,
    GrantPartsState,
    GrantState,
    InquiryState,
    Institution,
    PatientState,
    RecordState,
    Scope,
)
from medledger.node.auth import API_AUTH_KEY, Access, add_route
from medledger.node.blobs import add_blob_routes, attachments_json, build_record_tx
from medledger.node.errors import BadRequestError, NodeError
from medledger.node.idempotency import IdempotentWrite, compute_fingerprint
from medledger.node.idempotent_writes import (
    IDEMPOTENCY_STORE_KEY,
    add_idempotency_store,
    get_idempotency_key,
    replay_write,
)
from medledger.node.node import Node
from medledger.node.problems import problem_response

#: Largest body of `POST .../records`: the record JSON and a little room for the wrapper.
RECORD_REQUEST_BYTES_MAX: Final = RECORD_JSON_BYTES_MAX + 4096
#: Largest body of `POST .../inquiries`.
INQUIRY_REQUEST_BYTES_MAX: Final = 64 * 1024
#: How long a write waits for its commit by default, and at most.
WAIT_MS_DEFAULT: Final = 10_000
WAIT_MS_MAX: Final = 30_000
#: How long a read waits for its read receipt to commit before it gives up (503, retry).
RECEIPT_WAIT_S: Final = 15.0
#: How many times the node seals one record request (the first time and again). A record version
#: whose block refused it for its readers (`RESEAL_RULES`) was sealed from a state that a block in
#: between changed (a standing consent given, a grant revoked): the node seals it again from the
#: state after that block (ADR 0017, amendment 2). Each retry needs another such block in the
#: time its tx waits, so three are plenty; past them the refusal is the answer (a 422).
RESEAL_ATTEMPTS_MAX: Final = 3
#: The refusals of a record version that mean "sealed for the wrong readers for this block's
#: state": an insurer of a live covering consent missing, or a reader no longer authorised.
RESEAL_RULES: Final = frozenset({"health.record_consent_unsealed", "health.record_readers"})
LIST_LIMIT_DEFAULT: Final = 100
LIST_LIMIT_MAX: Final = st.LIST_LIMIT_MAX
#: Largest `start` of a page (a list position: a signed 64-bit integer, as clients hold one).
LIST_START_MAX: Final = 2**63 - 1
#: Latest time a scope may name: the largest value the codec's unsigned integers hold.
TIME_MS_MAX: Final = UINT_MAX

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiProblem(NodeError):
    """A problem this module answers itself (401, 403, 404, 413, 422, 503) with its own title."""

    code = "api_problem"

    def __init__(
        self, status: int, title: str, detail: str, *, code: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.problem_code = code
        self.headers = headers


@dataclasses.dataclass(frozen=True, slots=True)
class HealthService:
    """What the routes need: the node and the registered institutions, as its committed state
    says (`fixed_institutions`: a fixed table instead, for a service without a node's store)."""

    node: Node
    fixed_institutions: dict[bytes, Institution] | None = None

    @property
    def institutions(self) -> dict[bytes, Institution]:
        """Every registered institution (genesis or joined, removed ones too: see `is_active`)."""
        if self.fixed_institutions is not None:
            return self.fixed_institutions
        return self.node.membership.institutions

    def is_active(self, key: bytes) -> bool:
        if self.fixed_institutions is not None:
            return key in self.fixed_institutions
        return self.node.membership.is_active(key)

    @property
    def me(self) -> Institution | None:
        """This node's institution while it is an active member; None otherwise."""
        key = self.node.identity.public.sign_key
        return self.institutions.get(key) if self.is_active(key) else None

    def describe_not_member(self) -> tuple[str, str]:
        """Why `me` is None: a problem code and a message (no PHI: only membership facts)."""
        key = self.node.identity.public.sign_key
        if self.fixed_institutions is None:
            status = self.node.membership.status_of(key)
            if status is not None:
                return (
                    "not_member",
                    f"this node's institution is {status}: it acts for no one on this network",
                )
            if self.node.membership.is_pending_addition(key):
                return (
                    "not_member",
                    "this node's institution is not yet a member: its addition awaits the validators' "
                    "approval (medledger governance list)",
                )
        return "not_institution", "this node's key is not a registered institution"

    def name_of(self, key: bytes) -> str | None:
        institution = self.institutions.get(key)
        return institution.name if institution is not None else None


HEALTH_KEY: Final = web.AppKey("health", HealthService)


# --- request parsing ----------------------------------------------------------------------------


def _hex_id(value: object, what: str) -> bytes:
    if not isinstance(value, str) or re.fullmatch(f"[0-9a-fA-F]{{{2 * HASH_SIZE}}}", value) is None:
        raise BadRequestError(f"{what} must be {2 * HASH_SIZE} hex characters")
    return bytes.fromhex(value)


def _query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if re.fullmatch("[0-9]{1,19}", raw) is None or not low <= int(raw) <= high:
        raise BadRequestError(f"{name} must be an integer in [{low}, {high}]")
    return int(raw)


def _page(request: web.Request) -> tuple[int, int]:
    start = _query_int(request, "start", 0, 0, LIST_START_MAX)
    return start, _query_int(request, "limit", LIST_LIMIT_DEFAULT, 1, LIST_LIMIT_MAX)


def _patient_query(request: web.Request) -> bytes:
    if "patient_id" not in request.query:
        raise BadRequestError("the patient_id query parameter is required")
    return _hex_id(request.query["patient_id"], "patient_id")


async def _read_object(request: web.Request, limit: int) -> dict[str, Any]:
    return {name: value for name, (value, _) in (await _read_members(request, limit)).items()}


async def _read_members(request: web.Request, limit: int) -> dict[str, tuple[Any, str]]:
    """The body's members with their exact text (`json_text.split_members`: strict JSON)."""
    try:
        return split_members(await _read_body(request, limit))
    except JsonTextError as exc:
        raise BadRequestError(f"the body is not a valid JSON object: {exc.message}") from None


async def _read_body(request: web.Request, limit: int) -> bytes:
    if request.content_type != "application/json":
        raise BadRequestError(
            # Never echo the header: it is client-chosen text (issue 9, defect 8).
            "unsupported content type: use application/json",
            status=415,
        )
    if request.content_length is not None and request.content_length > limit:
        raise ApiProblem(413, "Request too large", f"the body exceeds {limit} bytes", code="too_large")
    # `read(n)` returns what has arrived so far; a chunked body may still be larger than announced.
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await request.content.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    body = b"".join(chunks)
    if len(body) > limit:
        raise ApiProblem(413, "Request too large", f"the body exceeds {limit} bytes", code="too_large")
    return body


def _check_keys(data: dict[str, Any], required: set[str], optional: set[str]) -> None:
    missing = sorted(required - set(data))
    if missing:
        raise BadRequestError(f"missing field(s): {', '.join(missing)}")
    unknown = set(data) - required - optional
    if unknown:
        # Never echo a client-chosen key: it may be anything, PHI included (issue 9, defect 8).
        allowed = ", ".join(sorted(required | optional))
        raise BadRequestError(f"{len(unknown)} unknown field(s); the fields are: {allowed}")


def _int_field(data: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = data.get(name, default)
    if type(value) is not int or not low <= value <= high:
        raise BadRequestError(f"{name} must be an integer in [{low}, {high}]")
    return value


def _wait_ms(request: web.Request) -> int:
    return _query_int(request, "wait_ms", WAIT_MS_DEFAULT, 0, WAIT_MS_MAX)


# --- JSON views ---------------------------------------------------------------------------------
#
# A view is a stored value's fields, each rendered by its type (bytes as hex, tuples as lists,
# nested values as objects), less the fields named here, plus the extras its function adds. The
# OpenAPI document (`node/openapi.py`) derives each view's schema from the same model and table,
# so a field added to a model appears in both.

#: Fields a view leaves out: ciphertexts and sealed keys travel in `encoded` (canonical bytes) only.
VIEW_OMITS: Final[dict[type, frozenset[str]]] = {
    Institution: frozenset(),
    PatientState: frozenset(),
    Scope: frozenset(),
    RecordState: frozenset({"envelope"}),
    InquiryState: frozenset({"sealed_reason"}),
    GrantState: frozenset({"grantee_enc_key", "record_keys"}),
    AuditEvent: frozenset(),
    RecordsRequestState: frozenset(),
    AmendmentState: frozenset({"sealed_text", "refusal", "statement"}),
    ClaimState: frozenset({"sealed_claim"}),
    ClaimDecision: frozenset({"sealed_response"}),
}


class WriteStatus(StrEnum):
    """Where a write stands when its answer is sent."""

    PENDING = "pending"  # admitted, not (yet) seen committed
    COMMITTED = "committed"


def _b64(value: WireType) -> str:
    return base64.b64encode(encode(value)).decode()


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(data), content_type="application/json")


def _value_json(value: object) -> object:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, tuple):
        return [_value_json(item) for item in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return model_json(value)
    return value


def model_json(value: object) -> dict[str, Any]:
    """A stored value's view: its fields (less `VIEW_OMITS`), bytes as hex, nested values as objects."""
    if not dataclasses.is_dataclass(value) or isinstance(value, type):
        raise TypeError(f"a view renders a stored value (a dataclass), not {type(value).__name__}")
    omit = VIEW_OMITS.get(type(value), frozenset())
    return {
        field.name: _value_json(getattr(value, field.name))
        for field in dataclasses.fields(value)
        if field.name not in omit
    }


def institution_json(institution: Institution) -> dict[str, Any]:
    return model_json(institution)


def patient_json(patient: PatientState) -> dict[str, Any]:
    return {**model_json(patient), "encoded": _b64(patient)}


def record_json(service: HealthService, record: RecordState) -> dict[str, Any]:
    return {
        **model_json(record),
        "author_name": service.name_of(record.author),
        "readers": len(record.envelope.wrapped_keys),
    }


def grant_json(
    service: HealthService, grant: GrantState, parts: GrantPartsState | None = None
) -> dict[str, Any]:
    """`parts`: a grant in parts' progress (ADR 0012); it lists its records in the audit trail."""
    return {
        **model_json(grant),
        "grantee_name": service.name_of(grant.grantee),
        "record_ids": [rk.record_id.hex() for rk in grant.record_keys],
        "revoked": grant.is_revoked,
        "record_count": len(grant.record_keys) if parts is None else parts.record_count,
        "keys_received": len(grant.record_keys) if parts is None else parts.keys_received,
    }


def inquiry_json(service: HealthService, inquiry: InquiryState) -> dict[str, Any]:
    return {**model_json(inquiry), "requester_name": service.name_of(inquiry.requester)}


def audit_json(service: HealthService, event: AuditEvent) -> dict[str, Any]:
    return {**model_json(event), "actor_name": service.name_of(event.actor)}


# --- shared state reads -------------------------------------------------------------------------


def _state(service: HealthService) -> StateReader:
    return service.node.store


def _require_patient(state: StateReader, patient_id: bytes) -> PatientState:
    patient = st.get_patient(state, patient_id)
    if patient is None:
        raise ApiProblem(
            404, "Unknown patient", "no patient is registered under this id", code="patient_unknown"
        )
    return patient


async def _submit_and_wait(service: HealthService, raw: bytes, wait_ms: int) -> TxLocation | None:
    """Admit a tx the node signed and wait for its commit; a tx refused in its block is a 422."""
    node = service.node
    (tx_id,) = await node.submit([raw])
    location = (await node.wait_committed([tx_id], wait_ms / 1000)).get(tx_id) if wait_ms else None
    if location is not None and not location.ok:
        raise TxRejectedError(f"the transaction was refused in block {location.height}", rule=location.code)
    return location


def _write_result(tx_id: bytes, location: TxLocation | None) -> dict[str, Any]:
    status = WriteStatus.PENDING if location is None else WriteStatus.COMMITTED
    result: dict[str, Any] = {"tx_id": tx_id.hex(), "status": status.value}
    if location is not None:
        result["height"] = location.height
    return result


# --- route wrappers -----------------------------------------------------------------------------


def _problem(exc: ApiProblem) -> web.Response:
    return problem_response(exc.status, exc.title, exc.message, code=exc.problem_code, headers=exc.headers)


def public_route(handler: Handler) -> Handler:
    """A patient-facing read; who may call it is the route table's `Access` (checked before)."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiProblem as exc:
            return _problem(exc)

    return wrapped


def institution_route(handler: Handler) -> Handler:
    """The institution API (`Access.TOKEN`, checked before): this node must be an institution."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        service = request.app[HEALTH_KEY]
        try:
            if service.me is None:
                code, message = service.describe_not_member()
                raise ApiProblem(403, "Forbidden", message, code=code)
            return await handler(request)
        except ApiProblem as exc:
            return _problem(exc)
        except InvalidRecordError as exc:
            return problem_response(
                422, "Invalid FHIR record", exc.message, code=exc.code, paths=list(exc.paths)
            )

    return wrapped


def _me(request: web.Request) -> tuple[HealthService, Institution]:
    service = request.app[HEALTH_KEY]
    me = service.me
    if me is None:  # institution_route checked it
        code, message = service.describe_not_member()
        raise ApiProblem(403, "Forbidden", message, code=code)
    return service, me


# --- institution routes -------------------------------------------------------------------------


async def get_me(request: web.Request) -> web.Response:
    service, me = _me(request)
    return _json({**institution_json(me), "chain_id": service.node.genesis.chain_id})


def _unusable_key_problem() -> ApiProblem:
    """A patient registered an encryption key nothing can be sealed to (e.g. a small-order point)."""
    return ApiProblem(
        422,
        "Unusable patient key",
        "the patient's encryption key is not a usable x25519 public key: nothing can be sealed for them",
        code="patient_key_unusable",
    )


async def post_record(request: web.Request) -> web.Response:
    service, me = _me(request)
    wait_ms = _wait_ms(request)
    idempotency_key = get_idempotency_key(request)
    members = await _read_members(request, RECORD_REQUEST_BYTES_MAX)
    data = {name: value for name, (value, _) in members.items()}
    _check_keys(data, {"patient_id", "resource"}, set())
    patient_id = _hex_id(data["patient_id"], "patient_id")
    resource = data["resource"]
    if not isinstance(resource, dict):
        raise BadRequestError("resource must be a FHIR R4 resource (a JSON object)")
    # The record is the resource's JSON text as submitted, in UTF-8 (issue 14, defect 4; ADR 0011):
    # the limit is on those bytes, not on the request that carries them.
    record_text = members["resource"][1].encode("utf-8")
    if idempotency_key is None:
        return await _add_record(request, service, me, patient_id, record_text, wait_ms)
    store = request.app[IDEMPOTENCY_STORE_KEY]
    fingerprint = compute_fingerprint("POST /v1/health/institution/records", patient_id, record_text)
    async with store.lock(idempotency_key):
        write = store.get(idempotency_key, service.node.clock_ms())
        if write is not None and not _is_resealable(service.node, write, fingerprint):
            return await replay_write(service.node, store, idempotency_key, write, fingerprint, wait_ms)
        # New, or remembered but refused for its readers (the first request's answer was pending):
        # sealed (again) now, and the table then names the tx that will commit.
        return await _add_record(
            request, service, me, patient_id, record_text, wait_ms, idempotent=(idempotency_key, fingerprint)
        )


def _is_resealable(node: Node, write: IdempotentWrite, fingerprint: bytes) -> bool:
    """Whether a remembered record write of this very request was refused in its block for its
    readers (`RESEAL_RULES`), so a retry seals the record again instead of replaying the refusal."""
    if write.fingerprint != fingerprint:
        return False
    location = node.store.get_tx_location(write.tx_id)
    return location is not None and not location.ok and location.code in RESEAL_RULES


async def _add_record(
    request: web.Request,
    service: HealthService,
    me: Institution,
    patient_id: bytes,
    record_text: bytes,
    wait_ms: int,
    *,
    idempotent: tuple[str, bytes] | None = None,
) -> web.Response:
    size = len(record_text)
    if size > RECORD_JSON_BYTES_MAX:
        raise ApiProblem(
            413,
            "Record too large",
            f"the record is {size} bytes; at most {RECORD_JSON_BYTES_MAX}",
            code="too_large",
        )
    state = _state(service)
    patient = _require_patient(state, patient_id)
    if not policy.is_author_role(me.role):
        raise ApiProblem(
            403,
            "Forbidden",
            f"an institution with role {me.role!r} cannot author records",
            code="author_role",
        )
    validated = validate_record(record_text)  # once: encrypt_record takes it as it is
    record_type = validated.record_type
    deadline_s = asyncio.get_running_loop().time() + wait_ms / 1000
    for attempt in range(1, RESEAL_ATTEMPTS_MAX + 1):
        # Security labels from meta.security and the default condition mapping (issue 12): a
        # labelled record is sealed only for grants naming its labels. The rules' own sealing rule,
        # with a margin around this node's clock (the block's time differs), on the latest state.
        state = _state(service)
        labels, readers = policy.compute_node_version_sealing(
            state, patient, me, record_type, validated.resource, service.node.clock_ms()
        )
        try:
            encrypted = encrypt_record(
                validated, patient_id=patient_id, author=me.sign_key, readers=sorted(readers)
            )
        except CryptoError:
            raise _unusable_key_problem() from None
        # A resource naming uploaded attachments becomes a document (node/blobs.py, ADR 0013).
        raw, tx_id = build_record_tx(request.app, patient_id, encrypted, validated.resource, labels)
        answer = {
            "record_id": tx_id.hex(),
            "record_type": record_type,
            "commitment": encrypted.commitment.hex(),
            "readers": len(readers),
            "security_labels": list(labels),
        }
        if idempotent is not None:  # remembered before it is submitted: a crash in between loses nothing
            key, fingerprint = idempotent
            remembered = IdempotentWrite(fingerprint, tx_id, raw, service.node.clock_ms(), answer)
            await asyncio.to_thread(request.app[IDEMPOTENCY_STORE_KEY].put, key, remembered)  # a synced write
        remaining_ms = max(0, int((deadline_s - asyncio.get_running_loop().time()) * 1000))
        try:
            location = await _submit_and_wait(service, raw, remaining_ms if wait_ms else 0)
        except TxRejectedError as exc:
            # Sealed from a state a block in between changed: seal it again from the new state
            # (the refused tx committed nothing; the table above already names the new one).
            if exc.rule in RESEAL_RULES and attempt < RESEAL_ATTEMPTS_MAX:
                continue
            raise
        body = {**_write_result(tx_id, location), **answer}
        return _json(body, 201 if location is not None else 202)
    raise AssertionError("unreachable: the last attempt returns or raises")  # pragma: no cover


async def list_records(request: web.Request) -> web.Response:
    service, me = _me(request)
    patient_id = _patient_query(request)
    start, limit = _page(request)
    state = _state(service)
    _require_patient(state, patient_id)
    now_ms = service.node.clock_ms()
    items = []
    for record in st.list_records(state, patient_id, start=start, limit=limit):
        access = policy.get_read_access(state, me, record, now_ms)
        if access is not None:
            grant_id = access.grant.grant_id.hex() if access.grant is not None else ""
            items.append({**record_json(service, record), "access": access.access, "grant_id": grant_id})
    return _json({"patient_id": patient_id.hex(), "records": items})


async def read_record(request: web.Request) -> web.Response:
    """Decrypt one record; a grantee's read is recorded on the ledger first (read receipt)."""
    service, me = _me(request)
    record_id = _hex_id(request.match_info["record_id"], "record id")
    state = _state(service)
    record = st.get_record(state, record_id)
    if record is None:
        raise ApiProblem(404, "Unknown record", "no record has this id", code="record_unknown")
    node = service.node
    receipt: dict[str, Any] | None = None
    try:
        access = policy.get_read_access(state, me, record, node.clock_ms())
        if access is None:
            raise ApiProblem(
                403,
                "Forbidden",
                "this institution holds no live grant covering the record; file an inquiry",
                code="no_grant",
            )
        if access.grant is None:  # its author
            decrypted = open_record(record, node.identity)
        else:
            grant = access.grant
            _, raw, tx_id = build_read_receipt(
                node.identity, grant.grant_id, [record_id], chain_id=node.genesis.chain_id
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
            receipt = {"tx_id": tx_id.hex(), "height": location.height, "grant_id": grant.grant_id.hex()}
            sealed_key = policy.get_grant_sealed_key(state, grant, record_id)
            decrypted = open_record(record, node.identity, grant=grant, sealed_key=sealed_key)
    except DecryptionError as exc:
        raise ApiProblem(
            409,
            "Record cannot be decrypted",
            f"the record does not open with this institution's key: {exc.message}",
            code="undecryptable",
        ) from None
    except RecordVerificationError as exc:
        # Re-published under another author, moved, or altered: never shown (issue 9, defect 6).
        raise ApiProblem(409, "Record fails verification", exc.message, code=exc.code) from None
    # The record's JSON exactly as its author submitted it (ADR 0011), not a re-serialisation:
    # `open_record` parsed it as one strict JSON object, so it is spliced in as a member's text.
    # Members in the order they always had: the record's view, its resource, a document's
    # attachments (ADR 0013), the statements of disagreement that travel with the record to every
    # reader (ADR 0014), then the receipt, last.
    grant_used = access.grant if access is not None else None
    after: dict[str, Any] = {}
    attached = attachments_json(state, record)  # only a document's answer has them
    if attached:
        after["attachments"] = attached
    after["statements"] = record_statements(state, record, node.identity, grant_used)
    after["receipt"] = receipt
    head = json.dumps(record_json(service, record))
    resource = decrypted.canonical_json.decode("utf-8")
    tail = "".join(f", {json.dumps(name)}: {json.dumps(value)}" for name, value in after.items())
    text = f'{head[:-1]}, "resource": {resource}{tail}}}'
    return web.Response(status=200, text=text, content_type="application/json")


async def post_inquiry(request: web.Request) -> web.Response:
    service, _ = _me(request)
    wait_ms = _wait_ms(request)
    data = await _read_object(request, INQUIRY_REQUEST_BYTES_MAX)
    _check_keys(
        data,
        {"patient_id", "purpose", "reason"},
        {"record_types", "record_ids", "from_ms", "to_ms", "ttl_ms"},
    )
    patient_id = _hex_id(data["patient_id"], "patient_id")
    purpose = data["purpose"]
    if not isinstance(purpose, str) or purpose not in PURPOSES:
        raise BadRequestError(f"purpose must be one of {', '.join(sorted(PURPOSES))}")
    raw_reason = data["reason"]
    if not isinstance(raw_reason, str) or not 1 <= len(raw_reason) <= REASON_LENGTH_MAX:
        raise BadRequestError(f"reason must be a string of 1 to {REASON_LENGTH_MAX} characters")
    try:
        reason = validate_reason(raw_reason)
    except InvalidReasonError as exc:
        # Well-formed as the document says, but not acceptable text (printable, bytes): a 422.
        raise BadRequestError(exc.message, status=422) from None
    record_types = data.get("record_types", [])
    if (
        not isinstance(record_types, list)
        or len(record_types) > len(RECORD_TYPES)
        or not all(isinstance(t, str) and t in RECORD_TYPES for t in record_types)
    ):
        raise BadRequestError(
            f"record_types must be a list of at most {len(RECORD_TYPES)} record types (docs/health.md)"
        )
    record_ids = data.get("record_ids", [])
    if not isinstance(record_ids, list) or len(record_ids) > SCOPE_RECORD_IDS_MAX:
        raise BadRequestError(f"record_ids must be a list of at most {SCOPE_RECORD_IDS_MAX} ids")
    ids = [_hex_id(r, "record_ids[]") for r in record_ids]
    from_ms = _int_field(data, "from_ms", 0, 0, TIME_MS_MAX)
    to_ms = _int_field(data, "to_ms", TIME_MS_MAX, 0, TIME_MS_MAX)
    if from_ms > to_ms:  # each is well-formed; together they name no window
        raise BadRequestError("from_ms must not be after to_ms", status=422)
    ttl_ms = _int_field(
        data,
        "ttl_ms",
        policy.INQUIRY_TTL_MS_DEFAULT,
        policy.INQUIRY_TTL_MS_MIN,
        policy.INQUIRY_TTL_MS_REQUEST_MAX,
    )
    state = _state(service)
    patient = _require_patient(state, patient_id)
    node = service.node
    scope = make_scope(record_types=record_types, record_ids=ids, from_ms=from_ms, to_ms=to_ms)
    try:
        _, raw, tx_id = build_request_access(
            node.identity,
            patient_id,
            scope,
            purpose,
            node.clock_ms() + ttl_ms,
            reason,
            patient_enc_key=patient.enc_key,
            chain_id=node.genesis.chain_id,
        )
    except CryptoError:
        raise _unusable_key_problem() from None
    location = await _submit_and_wait(service, raw, wait_ms)
    return _json({**_write_result(tx_id, location), "inquiry_id": tx_id.hex()}, 201 if location else 202)


def _inquiry_with_decision(
    service: HealthService, state: StateReader, inquiry: InquiryState
) -> dict[str, Any]:
    """The requester's view of its own inquiry: the reason, opened with its own key, and the decision."""
    item = inquiry_json(service, inquiry)
    try:
        item["reason"] = open_reason(inquiry, service.node.identity)
    except ReasonUnreadableError:
        item["reason"] = None
    grant = st.get_grant(state, inquiry.decision_id) if inquiry.decision_id else None
    item["grant"] = (
        grant_json(service, grant, st.get_grant_parts(state, grant.grant_id)) if grant is not None else None
    )
    return item


async def list_inquiries(request: web.Request) -> web.Response:
    """This institution's inquiries about one patient, with the patient's decisions."""
    service, me = _me(request)
    patient_id = _patient_query(request)
    state = _state(service)
    _require_patient(state, patient_id)
    inquiries = policy.get_inquiries(state, patient_id, me.sign_key)
    return _json(
        {
            "patient_id": patient_id.hex(),
            "inquiries": [_inquiry_with_decision(service, state, i) for i in inquiries],
        }
    )


async def get_institution_audit(request: web.Request) -> web.Response:
    """The part of a patient's audit trail that concerns this institution, in chain order."""
    service, me = _me(request)
    patient_id = _patient_query(request)
    state = _state(service)
    _require_patient(state, patient_id)
    events = [audit_json(service, e) for e in policy.get_institution_audit(state, patient_id, me.sign_key)]
    return _json({"patient_id": patient_id.hex(), "events": events})


# --- public routes (patients' clients) ----------------------------------------------------------


async def list_institutions(request: web.Request) -> web.Response:
    service = request.app[HEALTH_KEY]
    # Every institution ever registered (a removed one keeps its entry: the history names it);
    # their statuses are in /v1/health/membership.
    return _json({"institutions": [institution_json(i) for i in service.institutions.values()]})


async def get_membership(request: web.Request) -> web.Response:
    """Institution membership governance (ADR 0020): every institution with its status, and every
    proposed change, pending or decided, with its approvals and what it needs to pass."""
    service = request.app[HEALTH_KEY]
    node = service.node
    state = _state(service)
    validators = (
        node.app.get_validators(state, node.store.height + 1)
        if isinstance(node.app, GovernedApp)
        else node.genesis.validators
    )
    keys = frozenset(v.sign_key for v in validators.validators)
    needed = 2 * len(keys) // 3 + 1
    changes = []
    for change_id in st.list_membership_change_ids(state):
        change = st.get_membership_change(state, change_id)
        if change is None:  # pragma: no cover - listed ids are stored
            continue
        counted = sum(1 for a in change.approvals if a in keys)
        changes.append(
            {
                "change_id": change.change_id.hex(),
                "kind": change.kind,
                "institution": institution_json(change.institution),
                "status": "pending" if change.is_pending else "passed",
                "approvals": [a.hex() for a in change.approvals],
                "approvals_counted": counted,
                "approvals_needed": needed,
                "proposed_height": change.proposed_height,
                "decided_height": change.decided_height,
            }
        )
    institutions = [
        {**institution_json(i), "status": node.membership.status_of(k)}
        for k, i in service.institutions.items()
    ]
    return _json(
        {
            "validators": [v.sign_key.hex() for v in validators.validators],
            "institutions": institutions,
            "changes": changes,
        }
    )


async def get_patient(request: web.Request) -> web.Response:
    service = request.app[HEALTH_KEY]
    patient_id = _hex_id(request.match_info["patient_id"], "patient id")
    return _json(patient_json(_require_patient(_state(service), patient_id)))


async def get_patient_records(request: web.Request) -> web.Response:
    """The patient's records as ciphertext (decrypted on the patient's device)."""
    service = request.app[HEALTH_KEY]
    patient_id = _hex_id(request.match_info["patient_id"], "patient id")
    start, limit = _page(request)
    state = _state(service)
    _require_patient(state, patient_id)
    records = st.list_records(state, patient_id, start=start, limit=limit)
    total = st.get_record_count(state, patient_id)
    items = [{**record_json(service, r), "encoded": _b64(r)} for r in records]
    return _json({"patient_id": patient_id.hex(), "total": total, "records": items})


async def get_patient_inquiries(request: web.Request) -> web.Response:
    service = request.app[HEALTH_KEY]
    patient_id = _hex_id(request.match_info["patient_id"], "patient id")
    status = request.query.get("status")
    if status is not None and status not in INQUIRY_STATUSES:
        raise BadRequestError(f"status must be one of {', '.join(sorted(INQUIRY_STATUSES))}")
    state = _state(service)
    _require_patient(state, patient_id)
    inquiries = [i for i in policy.get_inquiries(state, patient_id) if status is None or i.status == status]
    items = [{**inquiry_json(service, i), "encoded": _b64(i)} for i in inquiries]
    return _json({"patient_id": patient_id.hex(), "inquiries": items})


async def get_patient_grants(request: web.Request) -> web.Response:
    service = request.app[HEALTH_KEY]
    patient_id = _hex_id(request.match_info["patient_id"], "patient id")
    state = _state(service)
    _require_patient(state, patient_id)
    items = [
        {**grant_json(service, g, st.get_grant_parts(state, g.grant_id)), "encoded": _b64(g)}
        for g in st.list_grants(state, patient_id)
    ]
    return _json({"patient_id": patient_id.hex(), "grants": items})


async def get_patient_audit(request: web.Request) -> web.Response:
    """The patient's whole audit trail (the same facts are in the blocks)."""
    service = request.app[HEALTH_KEY]
    patient_id = _hex_id(request.match_info["patient_id"], "patient id")
    start, limit = _page(request)
    state = _state(service)
    _require_patient(state, patient_id)
    events = st.list_audit_events(state, patient_id, start=start, limit=limit)
    total = st.get_audit_event_count(state, patient_id)
    items = [{**audit_json(service, e), "encoded": _b64(e)} for e in events]
    return _json({"patient_id": patient_id.hex(), "total": total, "events": items})


def add_health_routes(app: web.Application, node: Node) -> None:
    """Register the health routes on the node's API (called by `build_app` for health nodes)."""
    app[HEALTH_KEY] = HealthService(node=node)
    add_idempotency_store(app, node)
    app[API_AUTH_KEY].patient_check = lambda signer, patient_id: policy.is_patient_signer(
        node.store, signer, patient_id
    )
    # Who may call what (`medledger.node.auth.Access`): the health routes' table.
    institution: list[tuple[str, str, Handler]] = [
        ("GET", "/v1/health/institution", get_me),
        ("POST", "/v1/health/institution/records", post_record),
        ("GET", "/v1/health/institution/records", list_records),
        ("GET", "/v1/health/institution/records/{record_id}", read_record),
        ("POST", "/v1/health/institution/inquiries", post_inquiry),
        ("GET", "/v1/health/institution/inquiries", list_inquiries),
        ("GET", "/v1/health/institution/audit", get_institution_audit),
    ]
    for method, path, handler in institution:
        add_route(app, method, path, institution_route(handler), Access.TOKEN)
    add_route(app, "GET", "/v1/health/institutions", public_route(list_institutions), Access.READER)
    add_route(app, "GET", "/v1/health/membership", public_route(get_membership), Access.TOKEN)
    patient: list[tuple[str, Handler]] = [
        ("", get_patient),
        ("/records", get_patient_records),
        ("/inquiries", get_patient_inquiries),
        ("/grants", get_patient_grants),
        ("/audit", get_patient_audit),
    ]
    for suffix, handler in patient:
        add_route(
            app, "GET", f"/v1/health/patients/{{patient_id}}{suffix}", public_route(handler), Access.PATIENT
        )
    # Patient rights (issue 14): its module imports this one's helpers, hence imported here.
    from medledger.node.rights_api import add_rights_routes  # noqa: PLC0415

    add_rights_routes(app)
    # Claims (issue 12): likewise.
    from medledger.node.claims_api import add_claims_routes  # noqa: PLC0415

    add_claims_routes(app)
    # Research (issue 13): the institute's routes, and an author institution answers its queries.
    from medledger.node.research_answers import add_research_answerer  # noqa: PLC0415
    from medledger.node.research_api import add_research_routes  # noqa: PLC0415

    add_research_routes(app)
    # The store is not open yet: judge by the genesis. A node whose key the genesis does not name
    # may join as an author (ADR 0020) and runs the answerer too; it is asked nothing until then
    # (a query names only registered authors).
    genesis_me = next(
        (
            i
            for i in decode_genesis(node.genesis.app_state).institutions
            if i.sign_key == node.identity.public.sign_key
        ),
        None,
    )
    if genesis_me is None or policy.is_author_role(genesis_me.role):
        add_research_answerer(app, node)
    add_blob_routes(
        app,
        node,
        submit_and_wait=lambda raw, wait_ms: _submit_and_wait(app[HEALTH_KEY], raw, wait_ms),
        receipt_wait_ms=int(RECEIPT_WAIT_S * 1000),
    )
