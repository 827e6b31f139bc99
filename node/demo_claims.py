"""The demo's insurer story (issue 12), one function for `medledger demo` to call after its own.

`run_insurer_story(clients, roles, patient, echo)`: the patient (the SDK: keys and signatures on
the patient's side) gives the insurer a standing consent for payment; the clinic adds an
encounter's records through its REST API, one of them an HIV diagnosis labelled sensitive
(`meta.security`), and files a claim citing them; the insurer lists the claim, reads what its
consent covers (the labelled record is refused, nothing decrypted) and approves; the patient sees
the decision and exactly which records the insurer read for the claim, checked against the chain.
The FHIR data is synthetic. `clients` are the demo's institution clients (anything with a `name`
and `call(method, path, body)` answering the decoded JSON, raising on an HTTP error).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol

from medledger.errors import MedledgerError
from medledger.health.sdk import PatientClient

CONSENT_DAYS: Final = 30
DAY_MS: Final = 24 * 3600 * 1000
_CLAIM_TYPE: Final = {
    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]
}


class InstitutionApi(Protocol):
    @property
    def name(self) -> str: ...

    def call(self, method: str, path: str, body: Any = None) -> Any: ...


def _encounter() -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": "Patient/demo"},
    }


def _observation() -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4", "display": "HbA1c"}]},
        "subject": {"reference": "Patient/demo"},
        "valueQuantity": {"value": 6.4, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"},
    }


def _hiv_condition() -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "HIV"}]},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "86406008"}]},
        "subject": {"reference": "Patient/demo"},
    }


def _claim() -> dict[str, Any]:
    return {
        "resourceType": "Claim",
        "status": "active",
        "type": _CLAIM_TYPE,
        "use": "claim",
        "patient": {"reference": "Patient/demo"},
        "created": time.strftime("%Y-%m-%d", time.gmtime()),
        "provider": {"reference": "Organization/clinic"},
        "priority": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/processpriority", "code": "normal"}]
        },
        "insurance": [{"sequence": 1, "focal": True, "coverage": {"reference": "Coverage/demo"}}],
        "item": [
            {
                "sequence": 1,
                "productOrService": {
                    "coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "99213"}]
                },
                "net": {"value": 95.0, "currency": "EUR"},
            }
        ],
    }


def _approval() -> dict[str, Any]:
    return {
        "resourceType": "ClaimResponse",
        "status": "active",
        "type": _CLAIM_TYPE,
        "use": "claim",
        "patient": {"reference": "Patient/demo"},
        "created": time.strftime("%Y-%m-%d", time.gmtime()),
        "insurer": {"reference": "Organization/insurer"},
        "outcome": "complete",
        "disposition": "Settled in full",
    }


def _first_of(roles: Mapping[str, str], role: str) -> str | None:
    return next((name for name, r in roles.items() if r == role), None)


def run_insurer_story(
    clients: Mapping[str, InstitutionApi],
    roles: Mapping[str, str],
    patient: PatientClient,
    echo: Callable[[str], None],
) -> str | None:
    """Run the insurer's story on a running demo network with a registered patient; returns the
    claim id (None, with a line saying so, if the network has no clinic or no insurer)."""
    clinic_name, insurer_name = _first_of(roles, "clinic"), _first_of(roles, "insurer")
    if clinic_name is None or insurer_name is None:
        echo("(no insurer story: the network needs a clinic and an insurer)")
        return None
    clinic, insurer = clients[clinic_name], clients[insurer_name]
    clinic_key = bytes.fromhex(clinic.call("GET", "/v1/health/institution")["sign_key"])
    insurer_key = bytes.fromhex(insurer.call("GET", "/v1/health/institution")["sign_key"])
    patient_id = patient.patient_id.hex()

    expires_ms = int(time.time() * 1000) + CONSENT_DAYS * DAY_MS
    consent = patient.grant_consent(
        insurer_key,
        record_types=("Condition", "Encounter", "Observation"),
        authors=[clinic_key],
        expires_ms=expires_ms,
        reseal_existing=False,  # the story is about the records written under the consent
    )
    echo(
        f"patient: standing consent for payment to {insurer_name}: new Encounter, Observation and "
        f"Condition records by {clinic_name}, no sensitive label, {CONSENT_DAYS} days "
        f"(grant {consent.tx_id.hex()[:16]}, height {consent.height})"
    )

    added: list[dict[str, Any]] = []
    for resource in (_encounter(), _observation(), _hiv_condition()):
        answer = clinic.call(
            "POST", "/v1/health/institution/records", {"patient_id": patient_id, "resource": resource}
        )
        added.append(answer)
        labels = ", ".join(answer.get("security_labels") or []) or "no label"
        echo(
            f"{clinic_name}: {answer['record_type']} {answer['record_id'][:16]} ({labels}) sealed for "
            f"{answer['readers']} reader(s)"
        )
    record_ids = sorted(a["record_id"] for a in added)
    filed = clinic.call(
        "POST",
        "/v1/health/institution/claims",
        {
            "patient_id": patient_id,
            "insurer": insurer_key.hex(),
            "encounter_id": added[0]["record_id"],
            "record_ids": record_ids,
            "claim": _claim(),
        },
    )
    claim_id = str(filed["claim_id"])
    echo(f"{clinic_name}: claim {claim_id[:16]} filed with {insurer_name}, citing {len(record_ids)} records")

    listed = [
        c for c in insurer.call("GET", "/v1/health/institution/claims")["claims"] if c["claim_id"] == claim_id
    ]
    if listed:
        echo(f"{insurer_name}: sees the claim: {listed[0]['claim']['item'][0]['net']['value']} EUR")
    for answer in added:
        path = f"/v1/health/institution/claims/{claim_id}/records/{answer['record_id']}"
        try:
            read = insurer.call("GET", path)
        except MedledgerError:
            echo(
                f"{insurer_name}: may not read the {answer['record_type']} "
                "(labelled; the consent names no label)"
            )
            continue
        echo(
            f"{insurer_name}: read the {answer['record_type']}, receipt at height {read['receipt']['height']}"
        )
    decided = insurer.call(
        "POST",
        f"/v1/health/institution/claims/{claim_id}/decision",
        {"version": 1, "outcome": "approved", "response": _approval()},
    )
    echo(f"{insurer_name}: approved claim {claim_id[:16]} at height {decided.get('height')}")

    for view in patient.claim_views():
        if view.claim.claim_id.hex() != claim_id:
            continue
        for decision, response in view.decisions:
            reason = (response or {}).get("disposition", "")
            echo(f"patient: claim {claim_id[:16]} version {decision.version}: {decision.outcome} ({reason})")
        for read_event in view.reads:
            ids = ", ".join(r.hex()[:16] for r in read_event.record_ids)
            echo(f"patient: {insurer_name} read {ids} for this claim at height {read_event.height}")
    return claim_id
