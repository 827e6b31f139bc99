"""The OpenAPI part of the patient-rights routes (`node/rights_api.py`, issue 14).

As for every health route, nothing is restated by hand: views are the models' wire fields less
`health_api.VIEW_OMITS` (`openapi._model_fields`), limits and code lists are the named constants the
handlers enforce. `node/openapi.py` merges these paths and schemas into the document it serves.
"""

from __future__ import annotations

from typing import Any

from medledger.health.claims_types import SECURITY_LABELS
from medledger.health.rights_types import (
    AMENDMENT_STATUSES,
    AMENDMENT_TEXT_LENGTH_MAX,
    RECORDS_REQUEST_RECORDS_MAX,
    REQUEST_VIEW_STATUSES,
    AmendmentState,
    RecordsRequestState,
)
from medledger.node.health_api import WriteStatus


def rights_openapi_paths() -> dict[str, Any]:
    # `openapi` imports this module; its helpers are read when the document is built.
    from medledger.node import openapi as oa  # noqa: PLC0415

    bad = {"400": oa._problem("Bad parameter.")}
    unknown_patient = {"404": oa._problem("No patient is registered under this id.")}
    status = {"name": "status", "in": "query", "required": False}
    written = {
        "201": oa._ok("Committed.", {"$ref": oa._REF + "RightsWrite"}),
        "202": oa._ok("Admitted, not yet committed.", {"$ref": oa._REF + "RightsWrite"}),
    }
    write_errors = {
        **bad,
        **oa._AUTH_ERRORS,
        "413": oa._problem("The body is too large."),
        "415": oa._problem("Unsupported content type."),
        "422": oa._problem("Refused by the rules."),
        "429": oa._problem("The mempool is full."),
    }

    def post(
        operation_id: str, summary: str, body: str, path_param: str, errors: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "post": {
                "operationId": operation_id,
                "summary": summary,
                "security": oa._SECURED,
                "parameters": [
                    {"name": path_param, "in": "path", "required": True, "schema": oa._HEX64},
                    oa._WRITE_WAIT,
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": oa._REF + body}}},
                },
                "responses": {**written, **write_errors, **errors},
            }
        }

    answered = {
        "403": oa._problem("Not allowed (another institution's request or record)."),
        "409": oa._problem("Already closed or answered."),
    }
    return {
        "/v1/health/institution/records-requests": oa._get(
            "listRecordsRequests",
            "Records requests addressed to this institution (right of access), with their 30-day "
            "deadlines; `overdue` by the latest block time.",
            {
                "type": "object",
                "required": ["total", "as_of_ms", "requests"],
                "properties": {
                    "total": {"type": "integer"},
                    "as_of_ms": {"type": "integer"},
                    "requests": {"type": "array", "items": {"$ref": oa._REF + "RecordsRequest"}},
                },
            },
            params=[*oa._PAGE, {**status, "schema": oa._enum(REQUEST_VIEW_STATUSES)}],
            secured=True,
            errors={**bad, **oa._AUTH_ERRORS},
        ),
        "/v1/health/institution/records-requests/{request_id}/close": post(
            "closeRecordsRequest",
            "Close a records request addressed to this institution, citing the records it uploaded.",
            "CloseRecordsRequest",
            "request_id",
            {**answered, "404": oa._problem("No records request has this id.")},
        ),
        "/v1/health/institution/amendments": oa._get(
            "listAmendments",
            "Amendment requests on records this institution wrote (right to amend), with the texts "
            "opened with its key.",
            {
                "type": "object",
                "required": ["total", "amendments"],
                "properties": {
                    "total": {"type": "integer"},
                    "amendments": {"type": "array", "items": {"$ref": oa._REF + "InstitutionAmendment"}},
                },
            },
            params=[*oa._PAGE, {**status, "schema": oa._enum(AMENDMENT_STATUSES)}],
            secured=True,
            errors={**bad, **oa._AUTH_ERRORS},
        ),
        "/v1/health/institution/amendments/{amendment_id}/accept": post(
            "acceptAmendment",
            "Accept: supersede the record (its latest version) with the corrected FHIR resource.",
            "AmendmentCorrection",
            "amendment_id",
            {
                **answered,
                **unknown_patient,
                "404": oa._problem("No amendment request has this id."),
                "422": oa._problem("Not valid FHIR R4, or refused by the rules."),
            },
        ),
        "/v1/health/institution/amendments/{amendment_id}/refuse": post(
            "refuseAmendment",
            "Refuse, with a reason sealed for the patient and this institution.",
            "AmendmentRefusal",
            "amendment_id",
            {**answered, "404": oa._problem("No amendment request has this id.")},
        ),
        "/v1/health/patients/{patient_id}/records-requests": oa._get(
            "getPatientRecordsRequests",
            "A patient's records requests with their canonical encodings.",
            {**oa._list_of("requests", "PatientRecordsRequest", "total")},
            params=[oa._PATIENT_ID_PATH, *oa._PAGE],
            secured=False,
            errors={**bad, **unknown_patient},
        ),
        "/v1/health/patients/{patient_id}/amendments": oa._get(
            "getPatientAmendments",
            "A patient's amendment requests with their canonical encodings (texts sealed).",
            {**oa._list_of("amendments", "Amendment", "total")},
            params=[oa._PATIENT_ID_PATH, *oa._PAGE],
            secured=False,
            errors={**bad, **unknown_patient},
        ),
    }


def rights_openapi_schemas() -> dict[str, Any]:
    from medledger.node import openapi as oa  # noqa: PLC0415

    boolean = {"type": "boolean"}
    text = {"type": "string", "nullable": True}
    request = {
        **oa._model_fields(RecordsRequestState),
        "institution_name": oa._NAME,
        "overdue": boolean,
        "closed_late": boolean,
        "as_of_ms": {"type": "integer"},
    }
    amendment = {
        **oa._model_fields(AmendmentState),
        "author_name": oa._NAME,
        "refused": boolean,
        "has_statement": boolean,
    }
    encoded = {"encoded": {"type": "string", "format": "byte", "description": "canonical encoding"}}
    return {
        "RecordsRequest": oa._object(request),
        "PatientRecordsRequest": oa._object({**request, **encoded}),
        "Amendment": oa._object({**amendment, **encoded}),
        "InstitutionAmendment": oa._object(
            {
                **amendment,
                "text": {**text, "description": "What the patient says is wrong (opened with this key)."},
                "refusal_reason": text,
                "statement": {**text, "description": "The patient's statement of disagreement."},
            }
        ),
        "RecordStatement": oa._object(
            {
                "amendment_id": oa._HEX64,
                "statement": text,
                "readable": boolean,
                "height": {"type": "integer"},
                "time_ms": {"type": "integer"},
            }
        ),
        "CloseRecordsRequest": oa._object(
            {},
            {
                "record_ids": {
                    "type": "array",
                    "maxItems": RECORDS_REQUEST_RECORDS_MAX,
                    "uniqueItems": True,
                    "items": oa._HEX64,
                }
            },
            closed=True,
        ),
        "AmendmentCorrection": oa._object(
            {"resource": {"type": "object", "description": "The corrected FHIR R4 resource (plaintext)."}},
            closed=True,
        ),
        "AmendmentRefusal": oa._object(
            {
                "reason": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": AMENDMENT_TEXT_LENGTH_MAX,
                    "description": "Free text, sealed for the patient and this institution only.",
                }
            },
            closed=True,
        ),
        "RightsWrite": oa._object(
            {"tx_id": oa._HEX64, "status": oa._enum(WriteStatus)},
            {
                "height": {"type": "integer"},
                "request_id": oa._HEX64,
                "amendment_id": oa._HEX64,
                "record_id": oa._HEX64,
                "supersedes": oa._HEX64,
                "record_type": {"type": "string"},
                "security_labels": {
                    "type": "array",
                    "description": "An accepted correction's security labels on the ledger (issue 12): "
                    "its content's and every label of the record it corrects (docs/health.md).",
                    "items": oa._enum(SECURITY_LABELS),
                },
            },
        ),
    }
