"""Bulk reads of a patient's records by an institution, every read receipted (issue 14, ADR 0012).

`GET /v1/health/institution/records/{record_id}` reads one record and files one read receipt. A
hospital granted a real history (1,500–2,700 records) would need as many requests and as many
receipt txs, each waiting for its block. `POST /v1/health/institution/reads` reads up to
`READ_RECORDS_MAX` records of one patient at once:

1. Every record must exist, be the patient's and be readable by this institution now (it wrote it,
   or a live grant covers it: `policy.get_read_accesses`, the same policy as a single read);
   otherwise the answer is 403/404 and nothing is receipted or decrypted.
2. The reads under grants are receipted on the ledger first: one `health.read_receipt` per cited
   grant and per `RECEIPT_RECORDS_MAX` records, all submitted in one batch and all committed
   before any plaintext is returned (503, nothing decrypted, if they do not commit in time; 422
   if the rules refuse one). So a read of 2,700 records is receipted in full: eleven txs.
3. Only then are the records decrypted (off the event loop), each with the key its grant holds
   for it (`policy.get_grant_sealed_key`: a one-tx grant's or a grant part's). A record that does
   not open or verify is answered with its problem in place of its content, never shown.

The total ciphertext of one request is bounded (`READ_BYTES_MAX`, 413 beyond) so an answer's size
is bounded too.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any, Final

from aiohttp import web

from medledger.chain.errors import TxRejectedError
from medledger.crypto import DecryptionError, Identity
from medledger.health import policy
from medledger.health import state as st
from medledger.health.client import SignedTx, build_read_receipt
from medledger.health.errors import RecordVerificationError
from medledger.health.records import open_record
from medledger.health.types import RECEIPT_RECORDS_MAX, GrantState, RecordState
from medledger.node.auth import Access, add_route
from medledger.node.errors import BadRequestError
from medledger.node.health_api import (
    HEALTH_KEY,
    RECEIPT_WAIT_S,
    ApiProblem,
    HealthService,
    _check_keys,
    _hex_id,
    _me,
    _read_object,
    _require_patient,
    institution_route,
    record_json,
)

#: Most records one bulk read names.
READ_RECORDS_MAX: Final = 1000
#: Largest request body: the ids as hex, with room for the wrapper.
READ_REQUEST_BYTES_MAX: Final = READ_RECORDS_MAX * 70 + 4096
#: Most ciphertext bytes one bulk read decrypts (so the answer's size is bounded).
READ_BYTES_MAX: Final = 64 * 1024 * 1024


def _parse_ids(data: dict[str, Any]) -> tuple[bytes, list[bytes]]:
    _check_keys(data, {"patient_id", "record_ids"}, set())
    patient_id = _hex_id(data["patient_id"], "patient_id")
    raw_ids = data["record_ids"]
    if not isinstance(raw_ids, list) or not 1 <= len(raw_ids) <= READ_RECORDS_MAX:
        raise BadRequestError(f"record_ids must be a list of 1 to {READ_RECORDS_MAX} record ids")
    ids = [_hex_id(r, "record_ids[]") for r in raw_ids]
    return patient_id, list(dict.fromkeys(ids))  # a repeated id is read (and receipted) once


def compute_receipt_batches(
    grant_reads: Sequence[tuple[GrantState, RecordState]],
) -> list[tuple[bytes, tuple[bytes, ...]]]:
    """The read receipts covering `grant_reads`: per cited grant, sorted ids in chunks the rules take."""
    by_grant: dict[bytes, list[bytes]] = {}
    for grant, record in grant_reads:
        by_grant.setdefault(grant.grant_id, []).append(record.record_id)
    batches = []
    for grant_id in sorted(by_grant):
        ids = sorted(by_grant[grant_id])
        for start in range(0, len(ids), RECEIPT_RECORDS_MAX):
            batches.append((grant_id, tuple(ids[start : start + RECEIPT_RECORDS_MAX])))
    return batches


def _open_all(
    identity: Identity, reads: list[tuple[RecordState, GrantState | None, bytes | None]]
) -> list[dict[str, str]]:
    """Decrypt and verify each record (author's key, or the key its grant re-sealed); pure CPU,
    no state read, so it runs off the event loop."""
    opened: list[dict[str, str]] = []
    for record, grant, sealed in reads:
        try:
            if grant is None:
                decrypted = open_record(record, identity)
            else:
                decrypted = open_record(record, identity, grant=grant, sealed_key=sealed)
        except DecryptionError:
            opened.append({"error": "undecryptable"})
        except RecordVerificationError as exc:
            opened.append({"error": exc.code})
        else:
            # The record's JSON text exactly as its author submitted it (ADR 0011), spliced into the
            # answer as is (`open_record` parsed it as one strict JSON object): as the one-record
            # read, never a re-serialisation (`6.30` stays `6.30`).
            opened.append({"resource": decrypted.canonical_json.decode("utf-8")})
    return opened


async def _receipt(service: HealthService, receipts: list[tuple[bytes, tuple[bytes, ...]]]) -> list[Any]:
    """File the read receipts in one batch and wait until all are committed (or refuse)."""
    if not receipts:
        return []
    node = service.node
    signed: list[SignedTx] = [
        build_read_receipt(node.identity, grant_id, ids, chain_id=node.genesis.chain_id)
        for grant_id, ids in receipts
    ]
    tx_ids = await node.submit([raw for _, raw, _ in signed])
    locations = await node.wait_committed(tx_ids, RECEIPT_WAIT_S)
    if len(locations) != len(tx_ids):
        raise ApiProblem(
            503,
            "Read receipts pending",
            f"{len(tx_ids) - len(locations)} of {len(tx_ids)} read receipts were not committed in "
            "time; nothing was decrypted, retry",
            code="receipt_pending",
            headers={"Retry-After": "1"},
        )
    answer = []
    for (grant_id, ids), tx_id in zip(receipts, tx_ids, strict=True):
        location = locations[tx_id]
        if not location.ok:
            raise TxRejectedError(
                f"a read receipt was refused in block {location.height}; nothing was decrypted",
                rule=location.code,
            )
        answer.append(
            {
                "tx_id": tx_id.hex(),
                "height": location.height,
                "grant_id": grant_id.hex(),
                "record_count": len(ids),
            }
        )
    return answer


async def post_reads(request: web.Request) -> web.Response:
    """Decrypt many records of one patient; every read under a grant is receipted first."""
    service, me = _me(request)
    patient_id, record_ids = _parse_ids(await _read_object(request, READ_REQUEST_BYTES_MAX))
    state = service.node.store
    _require_patient(state, patient_id)
    records = [st.get_record(state, record_id) for record_id in record_ids]
    found = [r for r in records if r is not None and r.patient_id == patient_id]
    if len(found) != len(records):
        raise ApiProblem(
            404,
            "Unknown record",
            f"{len(records) - len(found)} of the {len(records)} ids name no record of this patient",
            code="record_unknown",
        )
    size = sum(len(r.envelope.ciphertext) for r in found)
    if size > READ_BYTES_MAX:
        raise ApiProblem(
            413,
            "Read too large",
            f"the records hold {size} bytes of ciphertext; one read decrypts at most {READ_BYTES_MAX}",
            code="too_large",
        )
    accesses = policy.get_read_accesses(state, me, patient_id, found, service.node.clock_ms())
    refused = sum(1 for access in accesses if access is None)
    if refused:
        raise ApiProblem(
            403,
            "Forbidden",
            f"this institution holds no live grant covering {refused} of the {len(found)} records; "
            "nothing was read (file an inquiry)",
            code="no_grant",
        )
    reads = [(record, access.grant) for record, access in zip(found, accesses, strict=True) if access]
    grant_reads = [(grant, record) for record, grant in reads if grant is not None]
    receipts = await _receipt(service, compute_receipt_batches(grant_reads))
    keyed = [
        (
            record,
            grant,
            None if grant is None else policy.get_grant_sealed_key(state, grant, record.record_id),
        )
        for record, grant in reads
    ]
    opened = await asyncio.to_thread(_open_all, service.node.identity, keyed)
    items: list[str] = []
    for (record, grant), content in zip(reads, opened, strict=True):
        access = policy.RecordAccess.AUTHOR if grant is None else policy.RecordAccess.GRANT
        item = {
            **record_json(service, record),
            "access": access.value,
            "grant_id": grant.grant_id.hex() if grant is not None else "",
        }
        if "resource" in content:
            items.append(f'{json.dumps(item)[:-1]}, "resource": {content["resource"]}}}')
        else:
            items.append(json.dumps({**item, **content}))
    text = (
        f'{{"patient_id": {json.dumps(patient_id.hex())}, "records": [{", ".join(items)}], '
        f'"receipts": {json.dumps(receipts)}}}'
    )
    return web.Response(status=200, text=text, content_type="application/json")


def add_health_read_routes(app: web.Application) -> None:
    """Register the bulk read route (after `add_health_routes`, whose service it uses)."""
    if HEALTH_KEY not in app:
        raise RuntimeError("add_health_routes must run first")
    add_route(app, "POST", "/v1/health/institution/reads", institution_route(post_reads), Access.TOKEN)


# --- OpenAPI (merged into the node's document by `node/openapi.py`) -----------------------------

_REF: Final = "#/components/schemas/"
#: Ids as this route accepts them (either hex case).
_ID: Final[dict[str, Any]] = {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}


def _problem(description: str) -> dict[str, Any]:
    schema = {"$ref": _REF + "Problem"}
    return {"description": description, "content": {"application/problem+json": {"schema": schema}}}


def health_reads_openapi_paths() -> dict[str, Any]:
    """The bulk read route's entry in the OpenAPI document."""
    return {
        "/v1/health/institution/reads": {
            "post": {
                "operationId": "readRecords",
                "summary": f"Decrypt up to {READ_RECORDS_MAX} records of one patient. Every read under "
                f"a grant is first receipted on the ledger (one receipt per grant and per "
                f"{RECEIPT_RECORDS_MAX} records, all committed before anything is decrypted); all or "
                "nothing is read.",
                "security": [{"apiToken": []}],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": _REF + "ReadRequest"}}},
                },
                "responses": {
                    "200": {
                        "description": "The records, decrypted (or each one's problem), and the receipts.",
                        "content": {"application/json": {"schema": {"$ref": _REF + "ReadResult"}}},
                    },
                    "400": _problem("Bad body."),
                    "401": _problem("Missing or wrong API token."),
                    "403": _problem("Not an institution, or no live grant covers one of the records."),
                    "404": _problem("Unknown patient, or an id names no record of this patient."),
                    "413": _problem("The body, or the records' ciphertext, is too large."),
                    "415": _problem("Unsupported content type."),
                    "422": _problem("A read receipt was refused by the rules."),
                    "429": _problem("The mempool is full."),
                    "503": _problem(
                        "The read receipts were not committed in time; nothing decrypted, retry."
                    ),
                },
            }
        }
    }


def health_reads_openapi_schemas() -> dict[str, Any]:
    integer = {"type": "integer", "minimum": 0}
    return {
        "ReadRequest": {
            "type": "object",
            "required": ["patient_id", "record_ids"],
            "additionalProperties": False,
            "properties": {
                "patient_id": _ID,
                "record_ids": {"type": "array", "minItems": 1, "maxItems": READ_RECORDS_MAX, "items": _ID},
            },
        },
        "ReadResult": {
            "type": "object",
            "required": ["patient_id", "records", "receipts"],
            "properties": {
                "patient_id": _ID,
                "records": {
                    "type": "array",
                    "items": {
                        "allOf": [{"$ref": _REF + "InstitutionRecord"}],
                        "properties": {
                            "resource": {"type": "object"},
                            "error": {"type": "string", "description": "why this record is not shown"},
                        },
                    },
                },
                "receipts": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["tx_id", "height", "grant_id", "record_count"],
                        "properties": {
                            "tx_id": _ID,
                            "height": integer,
                            "grant_id": _ID,
                            "record_count": {"type": "integer", "minimum": 1, "maximum": RECEIPT_RECORDS_MAX},
                        },
                    },
                },
            },
        },
    }
