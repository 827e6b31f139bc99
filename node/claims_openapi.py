"""The OpenAPI part of the claims routes (`node/claims_api.py`, issue 12, ADR 0017).

As for every health route, nothing is restated by hand: views are the models' wire fields less
`health_api.VIEW_OMITS`, limits and code lists are the named constants the handlers enforce.
`node/openapi.py` merges these paths and schemas into the document it serves.
"""

from __future__ import annotations

from typing import Any

from medledger.health.claims_types import (
    CLAIM_RECORDS_MAX,
    CLAIM_VERSIONS_MAX,
    OUTCOMES,
    ClaimDecision,
    ClaimState,
)
from medledger.health.types import AuditEvent, RecordState
from medledger.node.health_api import WriteStatus


def claims_openapi_paths() -> dict[str, Any]:
    # `openapi` imports this module; its helpers are read when the document is built.
    from medledger.node import openapi as oa  # noqa: PLC0415

    bad = {"400": oa._problem("Bad parameter or body.")}
    unknown_claim = {"404": oa._problem("No claim has this id.")}
    claim_id = {"name": "claim_id", "in": "path", "required": True, "schema": oa._HEX64_INPUT}
    written = {
        "201": oa._ok("Committed.", {"$ref": oa._REF + "ClaimWrite"}),
        "202": oa._ok("Admitted, not yet committed.", {"$ref": oa._REF + "ClaimWrite"}),
    }
    write_errors = {
        **bad,
        **oa._AUTH_ERRORS,
        "413": oa._problem("The body is too large."),
        "415": oa._problem("Unsupported content type."),
        "422": oa._problem("Not valid FHIR R4, or refused by the rules."),
        "429": oa._problem("The mempool is full."),
    }

    def post(
        operation_id: str, summary: str, body: str, params: list[Any], errors: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "post": {
                "operationId": operation_id,
                "summary": summary,
                "security": oa._SECURED,
                "parameters": [*params, oa._WRITE_WAIT],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": oa._REF + body}}},
                },
                "responses": {**written, **write_errors, **errors},
            }
        }

    return {
        "/v1/health/institution/claims": {
            **post(
                "fileClaim",
                "File a FHIR R4 Claim for one of this clinic's Encounter records, citing supporting "
                "records, to a registered insurer (sealed for the patient, this clinic and the insurer).",
                "NewClaim",
                [],
                {
                    "403": oa._problem(
                        "This institution does not author records (not a clinic or hospital)."
                    ),
                    "404": oa._problem("Unknown patient, encounter or supporting record."),
                },
            ),
            **oa._get(
                "listClaims",
                "Claims addressed to this institution (an insurer) or filed by it (a clinic), each with "
                "its Claim and decisions opened with this institution's key.",
                {
                    "type": "object",
                    "required": ["total", "claims"],
                    "properties": {
                        "total": {"type": "integer"},
                        "claims": {"type": "array", "items": {"$ref": oa._REF + "InstitutionClaim"}},
                    },
                },
                params=[*oa._PAGE],
                secured=True,
                errors={**bad, **oa._AUTH_ERRORS},
            ),
        },
        "/v1/health/institution/claims/{claim_id}/versions": post(
            "amendClaim",
            "The filing clinic's next version of a claim not yet approved (e.g. answering a pended "
            "claim with more records).",
            "ClaimVersion",
            [claim_id],
            {
                **unknown_claim,
                "403": oa._problem("Another clinic's claim."),
                "409": oa._problem("The claim has its most versions."),
            },
        ),
        "/v1/health/institution/claims/{claim_id}/decision": post(
            "decideClaim",
            "The addressed insurer's decision on the claim's current version, with a FHIR R4 "
            "ClaimResponse agreeing with the outcome (sealed for the patient, the clinic and the insurer).",
            "ClaimDecisionRequest",
            [claim_id],
            {
                **unknown_claim,
                "403": oa._problem("The claim is addressed to another insurer."),
                "409": oa._problem("Not the claim's current, undecided version."),
            },
        ),
        "/v1/health/institution/claims/{claim_id}/records/{record_id}": oa._get(
            "readClaimRecord",
            "The addressed insurer reads one of the claim's supporting records under its live grant "
            "(a standing consent): a claim read receipt is committed first, then the record is decrypted.",
            {"$ref": oa._REF + "ClaimRecord"},
            params=[
                claim_id,
                {"name": "record_id", "in": "path", "required": True, "schema": oa._HEX64_INPUT},
            ],
            secured=True,
            errors={
                **bad,
                **oa._AUTH_ERRORS,
                "404": oa._problem("No such claim, or the record is not one of its supporting records."),
                "409": oa._problem("The record does not open or verify."),
                "422": oa._problem("The read receipt was refused by the rules."),
                "503": oa._problem("The read receipt was not committed in time; nothing decrypted, retry."),
            },
        ),
        "/v1/health/patients/{patient_id}/claims": oa._get(
            "getPatientClaims",
            "A patient's claims with their canonical encodings, every decision, and the reads each "
            "insurer receipted for each claim.",
            {**oa._list_of("claims", "PatientClaim", "total")},
            params=[oa._PATIENT_ID_PATH, *oa._PAGE],
            secured=False,
            errors={**bad, "404": oa._problem("No patient is registered under this id.")},
        ),
    }


def claims_openapi_schemas() -> dict[str, Any]:
    from medledger.node import openapi as oa  # noqa: PLC0415

    encoded = {"encoded": {"type": "string", "format": "byte", "description": "canonical encoding"}}
    record_ids = {
        "type": "array",
        "minItems": 1,
        "maxItems": CLAIM_RECORDS_MAX,
        "items": oa._HEX64_INPUT,
    }
    fhir = {
        "type": "object",
        "nullable": True,
        "description": "Opened with this institution's key (null: not readable).",
    }
    claim = {**oa._model_fields(ClaimState), "clinic_name": oa._NAME, "insurer_name": oa._NAME}
    decision = {**oa._model_fields(ClaimDecision), "insurer_name": oa._NAME, "response": fhir}
    return {
        "NewClaim": oa._object(
            {
                "patient_id": oa._HEX64_INPUT,
                "insurer": {**oa._HEX64_INPUT, "description": "The insurer's signing key."},
                "encounter_id": {**oa._HEX64_INPUT, "description": "An Encounter record this clinic wrote."},
                "record_ids": record_ids,
                "claim": {"type": "object", "description": "A FHIR R4 Claim (plaintext)."},
            },
            closed=True,
        ),
        "ClaimVersion": oa._object(
            {"record_ids": record_ids, "claim": {"type": "object", "description": "A FHIR R4 Claim."}},
            closed=True,
        ),
        "ClaimDecisionRequest": oa._object(
            {
                "version": {"type": "integer", "minimum": 1, "maximum": CLAIM_VERSIONS_MAX},
                "outcome": oa._enum(OUTCOMES),
                "response": {
                    "type": "object",
                    "description": "A FHIR R4 ClaimResponse: approved is outcome complete with no error; "
                    "denied is outcome error with an error code (the reason); pended is outcome queued or "
                    "partial with a processNote saying what is missing.",
                },
            },
            closed=True,
        ),
        "ClaimWrite": oa._object(
            {
                "tx_id": oa._HEX64,
                "status": oa._enum(WriteStatus),
                "claim_id": oa._HEX64,
                "version": {"type": "integer"},
            },
            {"height": {"type": "integer"}, "outcome": oa._enum(OUTCOMES)},
        ),
        "ClaimDecision": oa._object(decision),
        "PatientClaimDecision": oa._object({**decision, **encoded}),
        "InstitutionClaim": oa._object(
            {
                **claim,
                "claim": fhir,
                "decisions": {"type": "array", "items": {"$ref": oa._REF + "ClaimDecision"}},
            }
        ),
        "PatientClaim": oa._object(
            {
                **claim,
                **encoded,
                "decisions": {"type": "array", "items": {"$ref": oa._REF + "PatientClaimDecision"}},
                "reads": {
                    "type": "array",
                    "description": "The claim read receipts: which insurer read which records, when.",
                    "items": oa._object({**oa._model_fields(AuditEvent), "actor_name": oa._NAME}),
                },
            }
        ),
        "ClaimRecord": oa._object(
            {
                **oa._model_fields(RecordState),
                "author_name": oa._NAME,
                "readers": {"type": "integer", "minimum": 0},
                "resource": {"type": "object"},
                "claim_id": oa._HEX64,
                "receipt": oa._object(
                    {"tx_id": oa._HEX64, "height": {"type": "integer"}, "grant_id": oa._HEX64}
                ),
            }
        ),
    }
