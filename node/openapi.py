"""The OpenAPI 3.0 document the node serves at `/openapi.json`: every route of `api.py`, and on
health nodes every route of `health_api.py`.

Who may call each operation is not restated here: `build_openapi` takes the API's route table
(`medledger.node.auth`) and derives each operation's `security` and its 401/403 answers from it.
Nor are limits and code lists: every bound and enum comes from the named constant or enum that the
handlers enforce, and each health view's schema is derived from its model's wire fields
(`WIRE_FIELDS`: the codec's own bounds) less the fields the view leaves out
(`health_api.VIEW_OMITS`), so a change to a model or a limit changes this document with it.
The operations endpoints (`/livez`, `/readyz`, `/metrics`, `/status` without credentials) are on
their own address and not part of this document.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from medledger import __version__
from medledger.chain.codec import Bytes, FieldSpec, HumanText, Seq, Struct, Text, UInt, WireType
from medledger.chain.limits import API_BATCH_TXS_MAX, API_BLOCK_RANGE_MAX, UINT_MAX
from medledger.crypto import HASH_SIZE
from medledger.health.auth import CHALLENGE_SIZE, CHALLENGE_TTL_MS, SIGNATURE_SCHEME
from medledger.health.claims_types import SECURITY_LABELS
from medledger.health.fhir import RECORD_JSON_BYTES_MAX
from medledger.health.policy import INQUIRY_TTL_MS_MIN, INQUIRY_TTL_MS_REQUEST_MAX, RecordAccess
from medledger.health.types import (
    ATTACHMENT_BYTES_MAX,
    GRANT_MANIFEST_RECORDS_MAX,
    INQUIRY_STATUSES,
    PURPOSES,
    REASON_BYTES_MAX,
    REASON_LENGTH_MAX,
    RECORD_TYPES,
    SCOPE_RECORD_IDS_MAX,
    AuditEvent,
    GrantState,
    InquiryState,
    Institution,
    PatientState,
    RecordKey,
    RecordState,
    Scope,
)
from medledger.node.auth import Access
from medledger.node.blobs import blob_openapi_paths
from medledger.node.claims_openapi import claims_openapi_paths, claims_openapi_schemas
from medledger.node.events_api import events_openapi_paths
from medledger.node.health_api import (
    LIST_LIMIT_MAX,
    LIST_START_MAX,
    TIME_MS_MAX,
    VIEW_OMITS,
    WAIT_MS_DEFAULT,
    WAIT_MS_MAX,
    WriteStatus,
)
from medledger.node.health_reads import health_reads_openapi_paths, health_reads_openapi_schemas
from medledger.node.idempotency import (
    IDEMPOTENCY_HEADER,
    IDEMPOTENCY_KEY_PATTERN,
    IDEMPOTENCY_TTL_MS,
    REPLAYED_HEADER,
)
from medledger.node.proof_api import proof_openapi_paths
from medledger.node.research_openapi import research_openapi_paths, research_openapi_schemas
from medledger.node.rights_openapi import rights_openapi_paths, rights_openapi_schemas

#: An id (a hash) or a public key, in hex.
_HEX64 = {"type": "string", "pattern": f"^[0-9a-f]{{{2 * HASH_SIZE}}}$"}
#: An id or key a client sends: the node reads hex in either case (and answers in lower case).
_HEX64_INPUT = {"type": "string", "pattern": f"^[0-9a-fA-F]{{{2 * HASH_SIZE}}}$"}
_PROBLEM = {"$ref": "#/components/schemas/Problem"}


def _enum(values: Iterable[str]) -> dict[str, Any]:
    """A string schema whose values are exactly `values` (a StrEnum or a code list), sorted."""
    return {"type": "string", "enum": sorted(str(v) for v in values)}


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/problem+json": {"schema": _PROBLEM}}}


def _ok(description: str, schema: dict[str, Any], *extra_types: str) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": schema}}
    for media_type in extra_types:
        content[media_type] = {"schema": {"type": "string", "format": "binary"}}
    return {"description": description, "content": content}


_SUBMIT_ERRORS = {
    "400": _problem("Malformed request or transaction."),
    "409": _problem("The transaction is already pending or committed (replay)."),
    "413": _problem("The transaction or body is too large."),
    "415": _problem("Unsupported content type."),
    "422": _problem(
        "The transaction is invalid (wrong chain, bad signature, stale, rejected by the application)."
    ),
    "429": _problem(
        "The mempool is full, or past its high-water mark (problem `overloaded`, with `retry_after_s`): "
        "retry after the Retry-After delay, or at another node."
    ),
}


_SECURITY_SCHEMES: dict[str, Any] = {
    "apiToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "The node's API token (the file `[api] token_file` in its home): the "
        "institution running the node and its operator's tools. It reads every route.",
    },
    "patientSignature": {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": f"A patient's signed request: `{SIGNATURE_SCHEME} key=<hex>, patient=<hex>, "
        "challenge=<hex>, time=<ms>, signature=<hex>`, an ed25519 signature (by the patient's key or "
        'a representative\'s) over the canonical msgpack array ["medledger/api-request/v1", chain '
        "id, challenge, method, path with query, time, key, patient id]. The challenge comes from "
        f"POST /v1/auth/challenge, is used once and expires after {CHALLENGE_TTL_MS} ms; the time is "
        "the client's clock. A patient reads their own /v1/health/patients/{patient_id}/... routes "
        "and the routes a light client needs (blocks, transactions, status, institutions).",
    },
}
_SECURITY_BY_ACCESS: dict[Access, list[dict[str, list[str]]]] = {
    Access.PUBLIC: [],
    Access.TOKEN: [{"apiToken": []}],
    Access.READER: [{"apiToken": []}, {"patientSignature": []}],
    Access.PATIENT: [{"apiToken": []}, {"patientSignature": []}],
}
_REFUSALS: dict[Access, dict[str, Any]] = {
    Access.TOKEN: {
        "401": _problem("No credentials, or a wrong API token."),
        "403": _problem("A patient's signature (this route needs the API token), or not allowed."),
    },
    Access.READER: {
        "401": _problem("No credentials, a wrong token, or a bad, replayed or expired signed request."),
        "403": _problem("The signer is not a registered patient or one of their representatives."),
    },
    Access.PATIENT: {
        "401": _problem("No credentials, a wrong token, or a bad, replayed or expired signed request."),
        "403": _problem("Another patient's data, or the signer acts for no registered patient."),
    },
}
AccessOf = Callable[[str, str], Access]


def build_openapi(*, health: bool = False, access_of: AccessOf | None = None) -> dict[str, Any]:
    """The document; with `health`, also the health application's routes (`health_api.py`).

    `access_of(method, path)` gives each operation's access level (the API's route table); each
    operation's `security` and 401/403 answers follow from it.
    """
    document = _build_core()
    document["paths"].update(proof_openapi_paths())
    if health:
        document["paths"].update(_health_paths())
        document["paths"].update(blob_openapi_paths())
        document["components"]["schemas"].update(_closed(_health_schemas()))
        document["paths"].update(health_reads_openapi_paths())
        document["components"]["schemas"].update(health_reads_openapi_schemas())
        document["paths"].update(rights_openapi_paths())  # patient rights (issue 14)
        document["components"]["schemas"].update(rights_openapi_schemas())
        document["paths"].update(events_openapi_paths())  # ledger events (issue 11, ADR 0015)
        document["paths"].update(claims_openapi_paths())  # claims (issue 12, ADR 0017)
        document["components"]["schemas"].update(claims_openapi_schemas())
        document["paths"].update(research_openapi_paths())  # research (issue 13, ADR 0019)
        document["components"]["schemas"].update(research_openapi_schemas())
        document["info"]["description"] += (
            " Health routes: /v1/health/institution/... act as this node's institution and need its "
            "API token; /v1/health/institutions and /v1/health/patients/... serve patients' clients "
            "(public keys, ciphertexts, inquiries, grants, audit events), each patient their own, "
            "by signed request."
        )
    document["components"]["securitySchemes"] = _SECURITY_SCHEMES
    document["security"] = _SECURITY_BY_ACCESS[Access.READER]
    for path, item in document["paths"].items():
        for method, operation in item.items():
            access = access_of(method.upper(), path) if access_of is not None else Access.READER
            operation["security"] = _SECURITY_BY_ACCESS[access]
            for status, answer in _REFUSALS.get(access, {}).items():
                operation["responses"].setdefault(status, answer)
    return document


def _build_core() -> dict[str, Any]:
    # `api` serves this document and so imports this module: its limits are read when the
    # document is built, not when this module loads.
    from medledger.node import api  # noqa: PLC0415

    wait = {
        "name": "wait_ms",
        "in": "query",
        "required": False,
        "description": "Wait up to this many milliseconds for the transactions to commit.",
        "schema": {"type": "integer", "minimum": 0, "maximum": api.WAIT_MS_MAX},
    }
    page_mb = api.API_BLOCKS_PAGE_BYTES_MAX // (1024 * 1024)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "medledger node API",
            "version": __version__,
            "description": "Submit signed transactions, read blocks and the node's status. Every read "
            "needs the node's API token or a patient's signed request (see the security schemes); "
            "the operations endpoints (/livez, /readyz, /metrics, /status) are served without "
            "credentials on the node's separate operations address. Every error is "
            "application/problem+json (RFC 9457).",
        },
        "paths": {
            "/v1/txs": {
                "post": {
                    "operationId": "submitTx",
                    "summary": "Submit one signed transaction.",
                    "parameters": [wait],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/TxSubmission"}},
                            "application/msgpack": {"schema": {"type": "string", "format": "binary"}},
                        },
                    },
                    "responses": {
                        "200": _ok("Committed (when waiting).", {"$ref": "#/components/schemas/TxStatus"}),
                        "202": _ok("Admitted to the mempool.", {"$ref": "#/components/schemas/TxStatus"}),
                        **_SUBMIT_ERRORS,
                    },
                }
            },
            "/v1/txs/batch": {
                "post": {
                    "operationId": "submitTxBatch",
                    "summary": "Submit a batch of signed transactions: all are admitted, or none.",
                    "parameters": [wait],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/TxBatch"}},
                            "application/msgpack": {"schema": {"type": "string", "format": "binary"}},
                        },
                    },
                    "responses": {
                        "200": _ok(
                            "All committed (when waiting).", {"$ref": "#/components/schemas/TxResults"}
                        ),
                        "202": _ok("Admitted to the mempool.", {"$ref": "#/components/schemas/TxResults"}),
                        **_SUBMIT_ERRORS,
                    },
                }
            },
            "/v1/txs/{tx_id}": {
                "get": {
                    "operationId": "getTx",
                    "summary": "A transaction's status.",
                    "parameters": [{"name": "tx_id", "in": "path", "required": True, "schema": _HEX64_INPUT}],
                    "responses": {
                        "200": _ok("Pending or committed.", {"$ref": "#/components/schemas/TxStatus"}),
                        "400": _problem("Not a tx id."),
                        "404": _problem("Unknown transaction."),
                    },
                }
            },
            "/v1/blocks": {
                "get": {
                    "operationId": "getBlocks",
                    "summary": (
                        f"A range of at most {API_BLOCK_RANGE_MAX} blocks with their certificates; the "
                        "page ends early (with at least one block) once it holds about "
                        f"{page_mb} MB: ask again from the next height."
                    ),
                    "parameters": [
                        {
                            "name": "from",
                            "in": "query",
                            "description": "First height (default 1); from ≤ to.",
                            "schema": {"type": "integer", "minimum": 1, "maximum": api.HEIGHT_MAX},
                        },
                        {
                            "name": "to",
                            "in": "query",
                            "description": f"Last height; from ≤ to ≤ from + {API_BLOCK_RANGE_MAX - 1}.",
                            "schema": {"type": "integer", "minimum": 1, "maximum": api.HEIGHT_MAX},
                        },
                    ],
                    "responses": {
                        "200": _ok(
                            "The blocks that exist in the range, from its start (possibly fewer).",
                            {
                                "type": "object",
                                "required": ["latest_height", "blocks"],
                                "properties": {
                                    "latest_height": {"type": "integer"},
                                    "blocks": {
                                        "type": "array",
                                        "items": {"$ref": "#/components/schemas/Block"},
                                    },
                                },
                            },
                            "application/msgpack",
                        ),
                        "400": _problem("Bad range."),
                    },
                }
            },
            "/v1/blocks/{height}": {
                "get": {
                    "operationId": "getBlock",
                    "summary": "One block and its commit certificate.",
                    "parameters": [
                        {
                            "name": "height",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "integer", "minimum": 1, "maximum": api.HEIGHT_MAX},
                        }
                    ],
                    "responses": {
                        "200": _ok(
                            "The block.", {"$ref": "#/components/schemas/Block"}, "application/msgpack"
                        ),
                        "400": _problem("Not a height."),
                        "404": _problem("No block at this height."),
                    },
                }
            },
            "/status": {
                "get": {
                    "operationId": "getStatus",
                    "summary": "The node's chain, height and mempool.",
                    "responses": {"200": _ok("Status.", {"$ref": "#/components/schemas/Status"})},
                }
            },
            "/v1/auth/challenge": {
                "post": {
                    "operationId": "createChallenge",
                    "summary": "A fresh challenge for one signed request (single use, short-lived).",
                    "responses": {
                        "201": _ok("The challenge.", {"$ref": "#/components/schemas/Challenge"}),
                        "429": _problem("Too many outstanding challenges from this client."),
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "getOpenApi",
                    "summary": "This document.",
                    "responses": {"200": _ok("The OpenAPI document.", {"type": "object"})},
                }
            },
        },
        "components": {
            "schemas": {
                "Problem": {
                    "type": "object",
                    "required": ["type", "title", "status", "detail"],
                    "properties": {
                        "type": {"type": "string"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                        "errors": {"type": "array", "items": {"type": "object"}},
                        "rule": {"type": "string"},
                    },
                },
                "TxSubmission": {
                    "type": "object",
                    "required": ["tx"],
                    "properties": {
                        "tx": {
                            "type": "string",
                            "format": "byte",
                            "description": "base64 of the canonical signed tx",
                        }
                    },
                },
                "TxBatch": {
                    "type": "object",
                    "required": ["txs"],
                    "properties": {
                        "txs": {
                            "type": "array",
                            "maxItems": API_BATCH_TXS_MAX,
                            "items": {"type": "string", "format": "byte"},
                        }
                    },
                },
                "TxStatus": {
                    "type": "object",
                    "required": ["tx_id", "status"],
                    "properties": {
                        "tx_id": _HEX64,
                        "status": {"type": "string", "enum": ["pending", "committed"]},
                        "height": {"type": "integer"},
                        "index": {"type": "integer"},
                        "result": {
                            "type": "object",
                            "properties": {"ok": {"type": "boolean"}, "code": {"type": "string"}},
                        },
                    },
                },
                "TxResults": {
                    "type": "object",
                    "required": ["results"],
                    "properties": {
                        "results": {"type": "array", "items": {"$ref": "#/components/schemas/TxStatus"}}
                    },
                },
                "Block": {
                    "type": "object",
                    "required": ["height", "hash", "header", "txs", "commit"],
                    "properties": {
                        "height": {"type": "integer"},
                        "hash": _HEX64,
                        "header": {"type": "object"},
                        "txs": {"type": "array", "items": {"type": "object"}},
                        "commit": {"type": "object"},
                    },
                },
                "Challenge": {
                    "type": "object",
                    "required": ["challenge", "expires_ms", "chain_id", "scheme"],
                    "properties": {
                        "challenge": {"type": "string", "pattern": f"^[0-9a-f]{{{2 * CHALLENGE_SIZE}}}$"},
                        "expires_ms": {"type": "integer"},
                        "chain_id": {"type": "string"},
                        "scheme": {"type": "string", "enum": [SIGNATURE_SCHEME]},
                    },
                },
                "Status": {
                    "type": "object",
                    "required": ["node", "chain_id", "height"],
                    "properties": {
                        "node": {"type": "string"},
                        "chain_id": {"type": "string"},
                        "height": {"type": "integer"},
                        "latest_block_hash": {"type": "string"},
                        "state_root": {"type": "string"},
                        "mempool": {"type": "object"},
                    },
                },
            }
        },
    }


# --- health application -------------------------------------------------------------------------

_REF = "#/components/schemas/"
_PATIENT_ID_PATH = {
    "name": "patient_id",
    "in": "path",
    "required": True,
    "description": "The patient's pseudonymous id (hex, either case).",
    "schema": _HEX64_INPUT,
}
_PATIENT_ID_QUERY = {**_PATIENT_ID_PATH, "in": "query"}
_PAGE = [
    {"name": "start", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": LIST_START_MAX}},
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": LIST_LIMIT_MAX}},
]
_WRITE_WAIT = {
    "name": "wait_ms",
    "in": "query",
    "required": False,
    "description": f"Wait up to this many milliseconds for the commit (default {WAIT_MS_DEFAULT}).",
    "schema": {"type": "integer", "minimum": 0, "maximum": WAIT_MS_MAX},
}
_IDEMPOTENCY_KEY = {
    "name": IDEMPOTENCY_HEADER,
    "in": "header",
    "required": False,
    "description": "Makes a retry safe: the same key with the same request (same patient, same record "
    "bytes) answers with the first request's record and writes nothing new; the same key with another "
    f"request is a 422. Keys are remembered by this node for {IDEMPOTENCY_TTL_MS // 3_600_000} h.",
    "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN},
}
_SECURED: list[dict[str, list[str]]] = [{"apiToken": []}]


def _replayable(answers: dict[str, Any]) -> dict[str, Any]:
    """`answers` that may carry the header saying they were replayed for an idempotency key."""
    header = {
        REPLAYED_HEADER: {
            "description": f"`true` when this is the remembered answer to an earlier {IDEMPOTENCY_HEADER}.",
            "schema": {"type": "string", "enum": ["true"]},
        }
    }
    return {status: {**answer, "headers": header} for status, answer in answers.items()}


_AUTH_ERRORS = {
    "401": _problem("Missing or wrong API token."),
    "403": _problem("Not allowed (this node is no institution, or holds no live grant)."),
}
_HEX64_OR_EMPTY = {"type": "string", "pattern": f"^([0-9a-f]{{{2 * HASH_SIZE}}})?$"}
_NAME = {"type": "string", "nullable": True}
#: Nested models with a schema of their own (referenced, not inlined).
_NAMED_MODELS: dict[type, str] = {Scope: "Scope"}


def _list_of(key: str, schema_name: str, *extra: str) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "patient_id": _HEX64,
        key: {"type": "array", "items": {"$ref": _REF + schema_name}},
    }
    for name in extra:
        properties[name] = {"type": "integer"}
    return {"type": "object", "required": ["patient_id", key], "properties": properties}


def _get(
    operation_id: str,
    summary: str,
    ok: dict[str, Any],
    *,
    params: list[Any],
    secured: bool,
    errors: dict[str, Any],
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "parameters": params,
        "responses": {"200": _ok("OK.", ok), **errors},
    }
    if secured:
        operation["security"] = _SECURED
    return {"get": operation}


def _health_paths() -> dict[str, Any]:
    bad = {"400": _problem("Bad parameter.")}
    unknown_patient = {"404": _problem("No patient is registered under this id.")}
    written = {
        "201": _ok("Committed.", {"$ref": _REF + "HealthWrite"}),
        "202": _ok("Admitted, not yet committed.", {"$ref": _REF + "HealthWrite"}),
    }
    return {
        "/v1/health/institution": _get(
            "getInstitution",
            "The institution this node acts as.",
            {"$ref": _REF + "Institution"},
            params=[],
            secured=True,
            errors=_AUTH_ERRORS,
        ),
        "/v1/health/institution/records": {
            "post": {
                "operationId": "addRecord",
                "summary": "Add a record for a patient: plaintext FHIR R4 in; the node validates it, "
                "encrypts it for the patient, this institution and current grantees, and signs it.",
                "security": _SECURED,
                "parameters": [_WRITE_WAIT, _IDEMPOTENCY_KEY],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": _REF + "NewRecord"}}},
                },
                "responses": {
                    **_replayable(written),
                    **bad,
                    **_AUTH_ERRORS,
                    **unknown_patient,
                    "409": _problem(
                        f"A retry ({IDEMPOTENCY_HEADER}) whose first transaction was not committed and is "
                        "too old to submit again."
                    ),
                    "413": _problem(f"The record is larger than {RECORD_JSON_BYTES_MAX} bytes."),
                    "415": _problem("Unsupported content type."),
                    "422": _problem(
                        "Not valid FHIR R4, not a record type, refused by the rules, or an "
                        f"{IDEMPOTENCY_HEADER} already used for a different request."
                    ),
                    "429": _problem("The mempool is full."),
                },
            },
            **_get(
                "listInstitutionRecords",
                "The patient's records this institution may decrypt (authored, or under a live grant).",
                _list_of("records", "InstitutionRecord"),
                params=[_PATIENT_ID_QUERY, *_PAGE],
                secured=True,
                errors={**bad, **_AUTH_ERRORS, **unknown_patient},
            ),
        },
        "/v1/health/institution/records/{record_id}": _get(
            "readRecord",
            "Decrypt one record. A read under a grant is first recorded on the ledger (read receipt).",
            {"$ref": _REF + "DecryptedRecord"},
            params=[{"name": "record_id", "in": "path", "required": True, "schema": _HEX64_INPUT}],
            secured=True,
            errors={
                **bad,
                **_AUTH_ERRORS,
                "404": _problem("No record has this id."),
                "409": _problem("The record does not open with this institution's key."),
                "422": _problem("The read receipt was refused by the rules."),
                "503": _problem("The read receipt was not committed in time; nothing decrypted, retry."),
            },
        ),
        "/v1/health/institution/inquiries": {
            "post": {
                "operationId": "createInquiry",
                "summary": "Ask a patient for access (scope, purpose of use, reason, time to live).",
                "security": _SECURED,
                "parameters": [_WRITE_WAIT],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": _REF + "NewInquiry"}}},
                },
                "responses": {
                    **written,
                    **bad,
                    **_AUTH_ERRORS,
                    **unknown_patient,
                    "413": _problem("The body is too large."),
                    "415": _problem("Unsupported content type."),
                    "422": _problem("Refused by the rules (e.g. a purpose this role may not ask for)."),
                    "429": _problem("The mempool is full."),
                },
            },
            **_get(
                "listInstitutionInquiries",
                "This institution's inquiries about a patient and the patient's decisions.",
                _list_of("inquiries", "InstitutionInquiry"),
                params=[_PATIENT_ID_QUERY],
                secured=True,
                errors={**bad, **_AUTH_ERRORS, **unknown_patient},
            ),
        },
        "/v1/health/institution/audit": _get(
            "getInstitutionAudit",
            "The part of a patient's audit trail that concerns this institution.",
            _list_of("events", "AuditEvent"),
            params=[_PATIENT_ID_QUERY],
            secured=True,
            errors={**bad, **_AUTH_ERRORS, **unknown_patient},
        ),
        "/v1/health/institutions": _get(
            "listInstitutions",
            "The registered institutions (names, roles, public keys).",
            {
                "type": "object",
                "required": ["institutions"],
                "properties": {"institutions": {"type": "array", "items": {"$ref": _REF + "Institution"}}},
            },
            params=[],
            secured=False,
            errors={},
        ),
        "/v1/health/membership": _get(
            "getMembership",
            "Institution membership by the validators' vote (ADR 0020): the validators, every "
            "institution with its status (active, suspended, removed), every change pending or passed.",
            {
                "type": "object",
                "required": ["validators", "institutions", "changes"],
                "properties": {
                    "validators": {"type": "array", "items": {"type": "string"}},
                    "institutions": {"type": "array", "items": {"type": "object"}},
                    "changes": {"type": "array", "items": {"type": "object"}},
                },
            },
            params=[],
            secured=True,
            errors=_AUTH_ERRORS,
        ),
        "/v1/health/patients/{patient_id}": _get(
            "getPatient",
            "A patient's public keys and representatives.",
            {"$ref": _REF + "Patient"},
            params=[_PATIENT_ID_PATH],
            secured=False,
            errors={**bad, **unknown_patient},
        ),
        "/v1/health/patients/{patient_id}/records": _get(
            "getPatientRecords",
            "A patient's records as ciphertext with their canonical encoding (decrypt on the device).",
            _list_of("records", "EncryptedRecord", "total"),
            params=[_PATIENT_ID_PATH, *_PAGE],
            secured=False,
            errors={**bad, **unknown_patient},
        ),
        "/v1/health/patients/{patient_id}/inquiries": _get(
            "getPatientInquiries",
            "Inquiries about a patient (filter by status).",
            _list_of("inquiries", "Inquiry"),
            params=[
                _PATIENT_ID_PATH,
                {"name": "status", "in": "query", "schema": _enum(INQUIRY_STATUSES)},
            ],
            secured=False,
            errors={**bad, **unknown_patient},
        ),
        "/v1/health/patients/{patient_id}/grants": _get(
            "getPatientGrants",
            "Every grant the patient gave, live or not.",
            _list_of("grants", "Grant"),
            params=[_PATIENT_ID_PATH],
            secured=False,
            errors={**bad, **unknown_patient},
        ),
        "/v1/health/patients/{patient_id}/audit": _get(
            "getPatientAudit",
            "The patient's audit trail: inquiries, decisions, revocations, reads, in chain order.",
            _list_of("events", "AuditEvent", "total"),
            params=[_PATIENT_ID_PATH, *_PAGE],
            secured=False,
            errors={**bad, **unknown_patient},
        ),
    }


def _object(
    required: dict[str, Any], optional: dict[str, Any] | None = None, *, closed: bool = False
) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "required": sorted(required),
        "properties": {**required, **(optional or {})},
    }
    if closed:
        schema["additionalProperties"] = False
    return schema


def _field_schema(spec: FieldSpec) -> dict[str, Any]:
    """The JSON schema of one wire field as the views render it (`health_api.model_json`)."""
    if isinstance(spec, UInt):
        schema: dict[str, Any] = {"type": "integer", "minimum": spec.minimum}
        if spec.maximum < UINT_MAX:
            schema["maximum"] = spec.maximum
        return schema
    if isinstance(spec, Bytes):  # hex, two characters a byte
        if spec.min_length == spec.max_length:
            return {"type": "string", "pattern": f"^[0-9a-f]{{{2 * spec.max_length}}}$"}
        return {"type": "string", "pattern": f"^([0-9a-f]{{2}}){{{spec.min_length},{spec.max_length}}}$"}
    if isinstance(spec, Text):
        if spec.allowed is not None:
            return _enum(spec.allowed)
        return {"type": "string", "minLength": spec.min_length, "maxLength": spec.max_length}
    if isinstance(spec, HumanText):
        return {
            "type": "string",
            "minLength": spec.min_length,
            "maxLength": spec.max_length,
            "description": f"Printable Unicode text in NFC, at most {spec.max_bytes} bytes of UTF-8.",
        }
    if isinstance(spec, Seq):
        return {"type": "array", "maxItems": spec.max_items, "items": _field_schema(spec.item)}
    if isinstance(spec, Struct):
        name = _NAMED_MODELS.get(spec.cls)
        return {"$ref": _REF + name} if name is not None else _model_schema(spec.cls)
    raise TypeError(f"no JSON schema for the wire field {type(spec).__name__}")


def _model_fields(model: type[WireType]) -> dict[str, Any]:
    """The schema of each field a view shows of `model`: its wire fields less `VIEW_OMITS`."""
    omit = VIEW_OMITS.get(model, frozenset())
    return {name: _field_schema(spec) for name, spec in model.WIRE_FIELDS.items() if name not in omit}


def _model_schema(model: type[WireType]) -> dict[str, Any]:
    return _object(_model_fields(model))


def _closed(schemas: dict[str, Any]) -> dict[str, Any]:
    """Every object schema says whether it takes other members (issue 14, defect 8): the health
    views are derived from their models, so an answer holds exactly the members declared, and a
    request body with an undeclared member is refused (400)."""
    for schema in schemas.values():
        if schema.get("type") == "object" and "properties" in schema:
            schema.setdefault("additionalProperties", False)
    return schemas


def _health_schemas() -> dict[str, Any]:
    integer = {"type": "integer"}
    time_ms = {"type": "integer", "minimum": 0, "maximum": TIME_MS_MAX}
    record = {
        **_model_fields(RecordState),
        "author_name": _NAME,
        "readers": {"type": "integer", "minimum": 0},
    }
    inquiry = {**_model_fields(InquiryState), "requester_name": _NAME}
    granted_records = GrantState.WIRE_FIELDS["record_keys"]
    assert isinstance(granted_records, Seq)  # the grant's records: a bounded list
    grant = {
        **_model_fields(GrantState),
        "grantee_name": _NAME,
        "record_ids": {
            "type": "array",
            "maxItems": granted_records.max_items,
            "items": _field_schema(RecordKey.WIRE_FIELDS["record_id"]),
        },
        "revoked": {"type": "boolean"},
        "record_count": {
            "type": "integer",
            "minimum": 0,
            "maximum": GRANT_MANIFEST_RECORDS_MAX,
            "description": "Records the grant shares (a grant in parts lists them in the audit trail).",
        },
        "keys_received": {
            "type": "integer",
            "minimum": 0,
            "maximum": GRANT_MANIFEST_RECORDS_MAX,
            "description": "Of those, records whose keys are on the ledger (all, once every part arrived).",
        },
    }
    encoded = {"encoded": {"type": "string", "format": "byte", "description": "canonical encoding"}}
    record_types = {"type": "array", "maxItems": len(RECORD_TYPES), "items": _enum(RECORD_TYPES)}
    return {
        "Institution": _object(_model_fields(Institution), {"chain_id": {"type": "string"}}),
        "Patient": _object({**_model_fields(PatientState), **encoded}),
        "Scope": _model_schema(Scope),
        "NewRecord": _object(
            {
                "patient_id": _HEX64_INPUT,
                "resource": {
                    "type": "object",
                    "description": "A FHIR R4 resource or Bundle of a record type (plaintext; encrypted by "
                    f"the node). Its JSON text is kept exactly as submitted: at most {RECORD_JSON_BYTES_MAX} "
                    "bytes of UTF-8 as written (escapes count as written), strict JSON (no repeated member "
                    "names, no NaN), read back byte for byte.",
                },
            },
            closed=True,
        ),
        "NewInquiry": _object(
            {
                "patient_id": _HEX64_INPUT,
                "purpose": _enum(PURPOSES),
                "reason": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": REASON_LENGTH_MAX,
                    "description": "Free text in any language, sealed for the patient and this institution "
                    f"only (never in the clear on the ledger): at most {REASON_LENGTH_MAX} characters and "
                    f"{REASON_BYTES_MAX} bytes of UTF-8, printable (no control characters or line breaks), "
                    "kept in Unicode NFC. Text that is not printable is a 422.",
                },
            },
            {
                "record_types": record_types,
                "record_ids": {"type": "array", "maxItems": SCOPE_RECORD_IDS_MAX, "items": _HEX64_INPUT},
                "from_ms": {
                    **time_ms,
                    "description": "Start of the window (ms); from_ms ≤ to_ms, else a 422.",
                },
                "to_ms": {**time_ms, "description": "End of the window (ms); from_ms ≤ to_ms, else a 422."},
                "ttl_ms": {
                    "type": "integer",
                    "minimum": INQUIRY_TTL_MS_MIN,
                    "maximum": INQUIRY_TTL_MS_REQUEST_MAX,
                },
            },
            closed=True,
        ),
        "HealthWrite": _object(
            {"tx_id": _HEX64, "status": _enum(WriteStatus)},
            {
                "height": integer,
                "record_id": _HEX64,
                "inquiry_id": _HEX64,
                "record_type": _enum(RECORD_TYPES),
                "commitment": _HEX64,
                "readers": integer,
                "security_labels": {
                    "type": "array",
                    "description": "The record's security labels on the ledger (issue 12): from "
                    "meta.security and the default condition mapping (docs/health.md).",
                    "items": _enum(SECURITY_LABELS),
                },
            },
        ),
        "InstitutionRecord": _object({**record, "access": _enum(RecordAccess), "grant_id": _HEX64_OR_EMPTY}),
        "EncryptedRecord": _object({**record, **encoded}),
        "DecryptedRecord": _object(
            {
                **record,
                "resource": {"type": "object"},
                "receipt": {
                    "type": "object",
                    "nullable": True,
                    "description": "The read receipt (null when the institution reads what it authored).",
                    "properties": {"tx_id": _HEX64, "height": integer, "grant_id": _HEX64},
                },
                "statements": {
                    "type": "array",
                    "description": "Statements of disagreement attached to the record (issue 14).",
                    "items": {"$ref": _REF + "RecordStatement"},
                },
            },
            {
                "attachments": {
                    "type": "array",
                    "description": "A document's attached files (ADR 0013): fetch each from "
                    "/v1/health/institution/records/{record_id}/attachments/{blob_id}.",
                    "items": _object(
                        {
                            "blob_id": _HEX64,
                            "size": {"type": "integer", "minimum": 1, "maximum": ATTACHMENT_BYTES_MAX},
                            "url": {"type": "string"},
                        },
                        closed=True,
                    ),
                },
            },
        ),
        "Inquiry": _object({**inquiry, **encoded}),
        "InstitutionInquiry": _object(
            {
                **inquiry,
                "reason": {
                    "type": "string",
                    "nullable": True,
                    "description": "The reason, opened with this institution's key (sealed on the ledger).",
                },
                "grant": {"allOf": [{"$ref": _REF + "Grant"}], "nullable": True},
            }
        ),
        "Grant": _object(grant, encoded),
        "AuditEvent": _object({**_model_fields(AuditEvent), "actor_name": _NAME}, encoded),
    }
