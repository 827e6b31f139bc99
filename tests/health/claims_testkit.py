"""Synthetic FHIR for the claims tests: an Encounter, a Claim and ClaimResponses (no real persons:
invented ids, codes from public code systems), and one-call sealing for the three claim readers."""

from __future__ import annotations

from typing import Any

from medledger.health.claim_seal import (
    seal_claim,
    seal_claim_response,
    validate_claim,
    validate_claim_response,
)
from medledger.health.claims_types import OUTCOME_APPROVED, OUTCOME_DENIED, OUTCOME_PENDED
from medledger.health.types import EnvelopeWire

_CLAIM_TYPE = {
    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]
}


def make_encounter(n: int) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": "Patient/synthetic-1"},
        "identifier": [{"system": "urn:example:encounter", "value": f"E-{n}"}],
    }


def make_claim(n: int, amount: float = 120.0) -> dict[str, Any]:
    return {
        "resourceType": "Claim",
        "status": "active",
        "type": _CLAIM_TYPE,
        "use": "claim",
        "patient": {"reference": "Patient/synthetic-1"},
        "created": "2026-12-01",
        "provider": {"reference": "Organization/clinic"},
        "priority": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/processpriority", "code": "normal"}]
        },
        "insurance": [{"sequence": 1, "focal": True, "coverage": {"reference": "Coverage/synthetic-1"}}],
        "item": [
            {
                "sequence": 1,
                "productOrService": {
                    "coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "99213"}]
                },
                "encounter": [{"reference": f"Encounter/E-{n}"}],
                "net": {"value": amount, "currency": "EUR"},
            }
        ],
    }


def make_claim_response(outcome: str) -> dict[str, Any]:
    response: dict[str, Any] = {
        "resourceType": "ClaimResponse",
        "status": "active",
        "type": _CLAIM_TYPE,
        "use": "claim",
        "patient": {"reference": "Patient/synthetic-1"},
        "created": "2026-12-02",
        "insurer": {"reference": "Organization/insurer"},
    }
    if outcome == OUTCOME_APPROVED:
        response |= {"outcome": "complete", "disposition": "Claim settled"}
    elif outcome == OUTCOME_DENIED:
        adjudication_error = "http://terminology.hl7.org/CodeSystem/adjudication-error"
        response |= {
            "outcome": "error",
            "error": [{"code": {"coding": [{"system": adjudication_error, "code": "a001"}]}}],
        }
    elif outcome == OUTCOME_PENDED:
        response |= {"outcome": "queued", "processNote": [{"number": 1, "text": "Send the lab report"}]}
    return response


def seal_test_claim(
    n: int,
    readers: list[bytes],
    *,
    patient_id: bytes,
    clinic: bytes,
    insurer: bytes,
    encounter_id: bytes,
    version: int,
) -> EnvelopeWire:
    return seal_claim(
        validate_claim(make_claim(n)),
        readers,
        patient_id=patient_id,
        clinic=clinic,
        insurer=insurer,
        encounter_id=encounter_id,
        version=version,
    )


def seal_test_response(
    outcome: str, readers: list[bytes], *, claim_id: bytes, version: int, insurer: bytes
) -> EnvelopeWire:
    response = validate_claim_response(make_claim_response(outcome), outcome)
    return seal_claim_response(response, readers, claim_id=claim_id, version=version, insurer=insurer)
