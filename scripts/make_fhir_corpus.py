"""Generate the FHIR R4 test corpus once (offline): one realistic resource per accepted record type,
patient bundles from carebundle, and resources whose decimals carry trailing zeros.

    .venv/bin/python -m pip install carebundle==0.5.0   # once; the tests never need it
    .venv/bin/python scripts/make_fhir_corpus.py         # writes tests/health/fixtures/corpus/

The output is committed (tests/health/fixtures/corpus/, a few hundred KB) and read by
tests/health/test_records_corpus.py and tests/health_api/test_records_api.py; the tests never
generate anything. Every file is the JSON text a clinic would submit, written as it should be read
back: what the tests compare is these bytes. A resource per type is written by hand below from the
FHIR R4 examples (synthetic people only); the bundles come from carebundle (seeded, so a rerun
writes the same files) with the bundle's Patient kept: the usual shape of a patient summary.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Final

from medledger.health.fhir import validate_record
from medledger.health.types import RECORD_TYPES

OUT: Final = Path(__file__).resolve().parent.parent / "tests" / "health" / "fixtures" / "corpus"
PATIENT: Final = {"reference": "Patient/corpus-patient-1", "display": "Synthetic Patient One"}
GP: Final = {"reference": "Practitioner/corpus-gp-1", "display": "Dr. Synthetic General"}
CLINIC: Final = {"reference": "Organization/corpus-clinic", "display": "Synthetic Clinic"}
INSURER: Final = {"reference": "Organization/corpus-insurer", "display": "Synthetic Health Insurance"}
ENCOUNTER: Final = {"reference": "Encounter/corpus-encounter-1"}
SNOMED: Final = "http://snomed.info/sct"
LOINC: Final = "http://loinc.org"
RXNORM: Final = "http://www.nlm.nih.gov/research/umls/rxnorm"
CVX: Final = "http://hl7.org/fhir/sid/cvx"
UCUM: Final = "http://unitsofmeasure.org"
WHEN: Final = "2025-03-14T09:30:00+01:00"
PERIOD: Final = {"start": "2025-03-14T09:30:00+01:00", "end": "2025-03-14T10:10:00+01:00"}


def concept(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def money(value: str) -> dict[str, Any]:
    return {"value": float(value), "currency": "EUR"}


DIABETES = concept(SNOMED, "44054006", "Diabetes mellitus type 2")
METFORMIN = concept(RXNORM, "860975", "Metformin hydrochloride 500 MG Oral Tablet")
HBA1C = concept(LOINC, "4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood")
GLUCOSE = concept(LOINC, "2339-0", "Glucose [Mass/volume] in Blood")
CONSULT = concept(SNOMED, "11429006", "Consultation")
CLAIM_TYPE = concept("http://terminology.hl7.org/CodeSystem/claim-type", "professional", "Professional")
CT_CHEST = concept(SNOMED, "169069000", "Computed tomography of chest")
EXAM_ITEM = concept("http://terminology.hl7.org/CodeSystem/ex-USCLS", "1205", "Exam, comprehensive")

#: One resource per record type (Bundle apart): realistic, synthetic, small.
RESOURCES: Final[dict[str, dict[str, Any]]] = {
    "Account": {"status": "active", "name": "Outpatient account", "subject": [PATIENT], "owner": CLINIC},
    "AdverseEvent": {
        "actuality": "actual",
        "event": concept(SNOMED, "422587007", "Nausea"),
        "subject": PATIENT,
        "date": WHEN,
        "suspectEntity": [{"instance": {"reference": "Medication/corpus-metformin"}}],
    },
    "AllergyIntolerance": {
        "clinicalStatus": concept(
            "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "active", "Active"
        ),
        "verificationStatus": concept(
            "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification", "confirmed", "Confirmed"
        ),
        "code": concept(SNOMED, "91936005", "Allergy to penicillin"),
        "patient": PATIENT,
        "criticality": "high",
        "reaction": [{"manifestation": [concept(SNOMED, "247472004", "Hives")], "severity": "moderate"}],
    },
    "Appointment": {
        "status": "booked",
        "serviceType": [CONSULT],
        "description": "Diabetes review",
        "start": "2025-06-02T08:00:00+02:00",
        "end": "2025-06-02T08:20:00+02:00",
        "participant": [
            {"actor": PATIENT, "status": "accepted"},
            {"actor": GP, "status": "accepted"},
        ],
    },
    "AppointmentResponse": {
        "appointment": {"reference": "Appointment/corpus-appointment-1"},
        "actor": PATIENT,
        "participantStatus": "accepted",
        "comment": "Ich komme gerne um 8 Uhr.",
    },
    "Basic": {
        "code": concept("http://terminology.hl7.org/CodeSystem/basic-resource-type", "adminact", "Admin act"),
        "subject": PATIENT,
        "created": "2025-03-14",
        "author": GP,
    },
    "BodyStructure": {
        "morphology": concept(SNOMED, "4147007", "Mass"),
        "location": concept(SNOMED, "74262004", "Oral cavity"),
        "description": "7 mm lesion, left buccal mucosa",
        "patient": PATIENT,
    },
    "CarePlan": {
        "status": "active",
        "intent": "plan",
        "title": "Type 2 diabetes care plan",
        "subject": PATIENT,
        "period": {"start": "2025-03-14"},
        "addresses": [{"reference": "Condition/corpus-condition-1"}],
        "activity": [{"detail": {"status": "in-progress", "code": concept(SNOMED, "229065009", "Exercise")}}],
    },
    "CareTeam": {
        "status": "active",
        "name": "Diabetes team",
        "subject": PATIENT,
        "participant": [{"role": [concept(SNOMED, "309343006", "Physician")], "member": GP}],
    },
    "ChargeItem": {
        "status": "billable",
        "code": CONSULT,
        "subject": PATIENT,
        "occurrenceDateTime": WHEN,
        "quantity": {"value": 1},
    },
    "Claim": {
        "status": "active",
        "type": CLAIM_TYPE,
        "use": "claim",
        "patient": PATIENT,
        "created": "2025-03-15",
        "provider": CLINIC,
        "priority": concept("http://terminology.hl7.org/CodeSystem/processpriority", "normal", "Normal"),
        "insurance": [
            {"sequence": 1, "focal": True, "coverage": {"reference": "Coverage/corpus-coverage-1"}}
        ],
        "item": [{"sequence": 1, "productOrService": EXAM_ITEM, "unitPrice": money("135.57")}],
        "total": money("135.57"),
    },
    "ClaimResponse": {
        "status": "active",
        "type": CLAIM_TYPE,
        "use": "claim",
        "patient": PATIENT,
        "created": "2025-03-20",
        "insurer": INSURER,
        "request": {"reference": "Claim/corpus-claim-1"},
        "outcome": "complete",
        "disposition": "Claim settled as per contract.",
    },
    "ClinicalImpression": {
        "status": "completed",
        "subject": PATIENT,
        "effectiveDateTime": WHEN,
        "assessor": GP,
        "summary": "Glycaemic control improving; continue metformin.",
    },
    "Communication": {
        "status": "completed",
        "subject": PATIENT,
        "sent": WHEN,
        "recipient": [PATIENT],
        "sender": GP,
        "payload": [{"contentString": "Vos résultats sont prêts : HbA1c 6,8 %."}],
    },
    "CommunicationRequest": {
        "status": "active",
        "subject": PATIENT,
        "payload": [{"contentString": "Please book a follow-up in three months."}],
        "requester": GP,
    },
    "Composition": {
        "status": "final",
        "type": concept(LOINC, "11488-4", "Consult note"),
        "subject": PATIENT,
        "date": WHEN,
        "author": [GP],
        "title": "Diabetes consultation",
        "section": [
            {"title": "Assessment", "text": {"status": "generated", "div": "<div>HbA1c 6.8 %</div>"}}
        ],
    },
    "Condition": {
        "clinicalStatus": concept(
            "http://terminology.hl7.org/CodeSystem/condition-clinical", "active", "Active"
        ),
        "verificationStatus": concept(
            "http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed", "Confirmed"
        ),
        "code": DIABETES,
        "subject": PATIENT,
        "onsetDateTime": "2019-05-01",
    },
    "Consent": {
        "status": "active",
        "scope": concept("http://terminology.hl7.org/CodeSystem/consentscope", "patient-privacy", "Privacy"),
        "category": [concept(LOINC, "59284-0", "Patient Consent")],
        "patient": PATIENT,
        "dateTime": "2025-03-14",
        "policyRule": concept("http://terminology.hl7.org/CodeSystem/v3-ActCode", "OPTIN", "opt-in"),
    },
    "Coverage": {
        "status": "active",
        "beneficiary": PATIENT,
        "payor": [INSURER],
        "subscriberId": "SYN-000123",
        "period": {"start": "2025-01-01", "end": "2025-12-31"},
    },
    "CoverageEligibilityRequest": {
        "status": "active",
        "purpose": ["validation"],
        "patient": PATIENT,
        "created": "2025-03-14",
        "insurer": INSURER,
        "insurance": [{"coverage": {"reference": "Coverage/corpus-coverage-1"}}],
    },
    "CoverageEligibilityResponse": {
        "status": "active",
        "purpose": ["validation"],
        "patient": PATIENT,
        "created": "2025-03-14",
        "request": {"reference": "CoverageEligibilityRequest/corpus-eligibility-1"},
        "outcome": "complete",
        "insurer": INSURER,
    },
    "DetectedIssue": {
        "status": "final",
        "code": concept("http://terminology.hl7.org/CodeSystem/v3-ActCode", "DRG", "Drug Interaction Alert"),
        "severity": "moderate",
        "patient": PATIENT,
        "identifiedDateTime": WHEN,
        "detail": "Metformin with iodinated contrast: pause for 48 h.",
    },
    "Device": {
        "status": "active",
        "type": concept(SNOMED, "337414009", "Blood glucose meter"),
        "patient": PATIENT,
        "manufacturer": "Synthetic Devices GmbH",
        "serialNumber": "SYN-GM-0042",
    },
    "DeviceRequest": {
        "status": "active",
        "intent": "order",
        "codeCodeableConcept": concept(SNOMED, "337414009", "Blood glucose meter"),
        "subject": PATIENT,
        "requester": GP,
    },
    "DeviceUseStatement": {
        "status": "active",
        "subject": PATIENT,
        "device": {"reference": "Device/corpus-device-1"},
        "timingDateTime": WHEN,
    },
    "DiagnosticReport": {
        "status": "final",
        "category": [concept("http://terminology.hl7.org/CodeSystem/v2-0074", "LAB", "Laboratory")],
        "code": HBA1C,
        "subject": PATIENT,
        "effectiveDateTime": WHEN,
        "issued": "2025-03-14T12:00:00+01:00",
        "result": [{"reference": "Observation/corpus-observation-1"}],
        "conclusion": "HbA1c 6.8 %, improved from 7.4 %.",
    },
    "DocumentManifest": {
        "status": "current",
        "subject": PATIENT,
        "created": WHEN,
        "description": "Discharge documents",
        "content": [{"reference": "DocumentReference/corpus-document-1"}],
    },
    "DocumentReference": {
        "status": "current",
        "docStatus": "final",
        "type": concept(LOINC, "18842-5", "Discharge summary"),
        "subject": PATIENT,
        "date": "2025-03-14T11:00:00+01:00",
        "content": [
            {
                "attachment": {
                    "contentType": "text/plain; charset=utf-8",
                    "language": "de",
                    "data": "RW50bGFzc3VuZ3NicmllZjogYmVzdGVyIEJsdXR6dWNrZXIu",
                    "title": "Entlassungsbrief",
                }
            }
        ],
    },
    "Encounter": {
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "type": [CONSULT],
        "subject": PATIENT,
        "participant": [{"individual": GP}],
        "period": PERIOD,
        "serviceProvider": CLINIC,
    },
    "EnrollmentRequest": {
        "status": "active",
        "created": "2025-01-02",
        "insurer": INSURER,
        "candidate": PATIENT,
        "coverage": {"reference": "Coverage/corpus-coverage-1"},
    },
    "EnrollmentResponse": {
        "status": "active",
        "request": {"reference": "EnrollmentRequest/corpus-enrollment-1"},
        "outcome": "complete",
        "disposition": "Enrolment accepted.",
        "created": "2025-01-03",
    },
    "EpisodeOfCare": {
        "status": "active",
        "type": [concept(SNOMED, "698360004", "Diabetes self management plan")],
        "patient": PATIENT,
        "managingOrganization": CLINIC,
        "period": {"start": "2019-05-01"},
    },
    "ExplanationOfBenefit": {
        "status": "active",
        "type": CLAIM_TYPE,
        "use": "claim",
        "patient": PATIENT,
        "created": "2025-03-20",
        "insurer": INSURER,
        "provider": CLINIC,
        "outcome": "complete",
        "insurance": [{"focal": True, "coverage": {"reference": "Coverage/corpus-coverage-1"}}],
        "total": [
            {
                "category": concept(
                    "http://terminology.hl7.org/CodeSystem/adjudication", "submitted", "Submitted"
                ),
                "amount": money("135.57"),
            }
        ],
    },
    "FamilyMemberHistory": {
        "status": "completed",
        "patient": PATIENT,
        "relationship": concept("http://terminology.hl7.org/CodeSystem/v3-RoleCode", "FTH", "father"),
        "condition": [
            {"code": DIABETES, "onsetAge": {"value": 52, "unit": "a", "system": UCUM, "code": "a"}}
        ],
    },
    "Flag": {
        "status": "active",
        "code": concept(SNOMED, "91936005", "Allergy to penicillin"),
        "subject": PATIENT,
        "period": {"start": "2025-03-14"},
    },
    "Goal": {
        "lifecycleStatus": "active",
        "description": {"text": "HbA1c below 7.0 %"},
        "subject": PATIENT,
        "target": [
            {
                "measure": HBA1C,
                "detailQuantity": {"value": 7.0, "comparator": "<", "unit": "%", "system": UCUM, "code": "%"},
                "dueDate": "2025-09-30",
            }
        ],
    },
    "GuidanceResponse": {
        "moduleUri": "http://example.org/cds/diabetes-screening",
        "status": "success",
        "subject": PATIENT,
        "occurrenceDateTime": WHEN,
    },
    "ImagingStudy": {
        "status": "available",
        "subject": PATIENT,
        "started": WHEN,
        "numberOfSeries": 1,
        "numberOfInstances": 1,
        "procedureCode": [CT_CHEST],
        "series": [
            {
                "uid": "2.16.124.113543.6003.2588828330.45298.17418.2723805630",
                "modality": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "CT"},
                "numberOfInstances": 1,
                "instance": [
                    {
                        "uid": "2.16.124.113543.6003.189642796.63084.16748.2599092903",
                        "sopClass": {
                            "system": "urn:ietf:rfc:3986",
                            "code": "urn:oid:1.2.840.10008.5.1.4.1.1.2",
                        },
                    }
                ],
            }
        ],
    },
    "Immunization": {
        "status": "completed",
        "vaccineCode": concept(CVX, "140", "Influenza, seasonal, injectable, preservative free"),
        "patient": PATIENT,
        "occurrenceDateTime": "2024-10-15",
        "lotNumber": "SYN-FLU-2024",
        "doseQuantity": {"value": 0.50, "unit": "mL", "system": UCUM, "code": "mL"},
    },
    "ImmunizationEvaluation": {
        "status": "completed",
        "patient": PATIENT,
        "targetDisease": concept(SNOMED, "6142004", "Influenza"),
        "immunizationEvent": {"reference": "Immunization/corpus-immunization-1"},
        "doseStatus": concept(
            "http://terminology.hl7.org/CodeSystem/immunization-evaluation-dose-status", "valid", "Valid"
        ),
    },
    "ImmunizationRecommendation": {
        "patient": PATIENT,
        "date": "2025-03-14",
        "recommendation": [
            {
                "vaccineCode": [concept(CVX, "140", "Influenza, seasonal, injectable")],
                "forecastStatus": concept(
                    "http://terminology.hl7.org/CodeSystem/immunization-recommendation-status", "due", "Due"
                ),
            }
        ],
    },
    "Invoice": {
        "status": "issued",
        "subject": PATIENT,
        "date": "2025-03-15",
        "issuer": CLINIC,
        "totalNet": money("135.57"),
        "totalGross": money("161.33"),
    },
    "List": {
        "status": "current",
        "mode": "snapshot",
        "title": "Current medication",
        "subject": PATIENT,
        "entry": [{"item": {"reference": "MedicationStatement/corpus-medication-statement-1"}}],
    },
    "MeasureReport": {
        "status": "complete",
        "type": "individual",
        "measure": "http://example.org/Measure/diabetes-hba1c-control",
        "subject": PATIENT,
        "period": {"start": "2025-01-01", "end": "2025-12-31"},
    },
    "Media": {
        "status": "completed",
        "type": concept("http://terminology.hl7.org/CodeSystem/media-type", "image", "Image"),
        "subject": PATIENT,
        "createdDateTime": WHEN,
        "content": {"contentType": "image/png", "title": "Foot examination photo", "size": 0},
    },
    "MedicationAdministration": {
        "status": "completed",
        "medicationCodeableConcept": concept(RXNORM, "1191", "Aspirin"),
        "subject": PATIENT,
        "effectiveDateTime": WHEN,
        "dosage": {"dose": {"value": 100, "unit": "mg", "system": UCUM, "code": "mg"}},
    },
    "MedicationDispense": {
        "status": "completed",
        "medicationCodeableConcept": METFORMIN,
        "subject": PATIENT,
        "quantity": {"value": 60, "unit": "tablet"},
        "whenHandedOver": "2025-03-14T16:00:00+01:00",
    },
    "MedicationRequest": {
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": METFORMIN,
        "subject": PATIENT,
        "authoredOn": "2025-03-14",
        "requester": GP,
        "dosageInstruction": [{"text": "500 mg twice daily with meals"}],
    },
    "MedicationStatement": {
        "status": "active",
        "medicationCodeableConcept": METFORMIN,
        "subject": PATIENT,
        "effectiveDateTime": "2025-03-14",
    },
    "MolecularSequence": {
        "type": "dna",
        "coordinateSystem": 0,
        "patient": PATIENT,
        "referenceSeq": {"referenceSeqString": "GATTACA", "windowStart": 0, "windowEnd": 7},
    },
    "NutritionOrder": {
        "status": "active",
        "intent": "order",
        "patient": PATIENT,
        "dateTime": "2025-03-14",
        "oralDiet": {"type": [concept(SNOMED, "160670007", "Diabetic diet")]},
    },
    "Observation": {
        "status": "final",
        "category": [
            concept("http://terminology.hl7.org/CodeSystem/observation-category", "laboratory", "Laboratory")
        ],
        "code": GLUCOSE,
        "subject": PATIENT,
        "encounter": ENCOUNTER,
        "effectiveDateTime": WHEN,
        "valueQuantity": {"value": 6.30, "unit": "mmol/L", "system": UCUM, "code": "mmol/L"},
    },
    "Patient": {
        "identifier": [{"system": "urn:oid:2.16.840.1.113883.2.4.6.3", "value": "SYN-738472983"}],
        "name": [{"family": "Müller-Łukasiewicz", "given": ["Zoë", "Ana"]}],
        "gender": "female",
        "birthDate": "1971-08-23",
        "address": [{"city": "Zürich", "country": "CH"}],
    },
    "Procedure": {
        "status": "completed",
        "code": CT_CHEST,
        "subject": PATIENT,
        "performedDateTime": WHEN,
    },
    "Provenance": {
        "target": [{"reference": "Observation/corpus-observation-1"}],
        "recorded": "2025-03-14T12:00:00+01:00",
        "agent": [{"who": GP}],
    },
    "QuestionnaireResponse": {
        "status": "completed",
        "subject": PATIENT,
        "authored": WHEN,
        "item": [
            {
                "linkId": "1",
                "text": "Wie oft messen Sie Ihren Blutzucker?",
                "answer": [{"valueString": "zweimal täglich"}],
            }
        ],
    },
    "RelatedPerson": {
        "patient": PATIENT,
        "relationship": [concept("http://terminology.hl7.org/CodeSystem/v3-RoleCode", "WIFE", "wife")],
        "name": [{"family": "Synthetic", "given": ["Partner"]}],
        "telecom": [{"system": "phone", "value": "+41 00 000 00 00"}],
    },
    "RequestGroup": {
        "status": "active",
        "intent": "plan",
        "subject": PATIENT,
        "action": [{"title": "Order HbA1c and lipid panel together"}],
    },
    "ResearchSubject": {
        "status": "on-study",
        "study": {"reference": "ResearchStudy/corpus-study-1"},
        "individual": PATIENT,
    },
    "RiskAssessment": {
        "status": "final",
        "subject": PATIENT,
        "occurrenceDateTime": WHEN,
        "prediction": [
            {"outcome": concept(SNOMED, "22298006", "Myocardial infarction"), "probabilityDecimal": 0.0450}
        ],
    },
    "ServiceRequest": {
        "status": "active",
        "intent": "order",
        "code": concept(SNOMED, "183524004", "Referral to ophthalmology service"),
        "subject": PATIENT,
        "authoredOn": "2025-03-14",
        "requester": GP,
        "reasonCode": [DIABETES],
    },
    "Specimen": {
        "status": "available",
        "type": concept(SNOMED, "122555007", "Venous blood specimen"),
        "subject": PATIENT,
        "receivedTime": "2025-03-14T10:00:00+01:00",
    },
    "SupplyDelivery": {
        "status": "completed",
        "patient": PATIENT,
        "suppliedItem": {
            "quantity": {"value": 100},
            "itemCodeableConcept": concept(SNOMED, "337388004", "Lancet"),
        },
        "occurrenceDateTime": "2025-03-16",
    },
    "SupplyRequest": {
        "status": "active",
        "itemCodeableConcept": concept(SNOMED, "337388004", "Lancet"),
        "quantity": {"value": 100},
        "deliverTo": PATIENT,
        "requester": GP,
    },
    "Task": {
        "status": "requested",
        "intent": "order",
        "description": "Call the patient about the HbA1c result",
        "for": PATIENT,
        "authoredOn": WHEN,
        "owner": GP,
    },
    "VisionPrescription": {
        "status": "active",
        "created": "2025-03-14",
        "patient": PATIENT,
        "dateWritten": "2025-03-14",
        "prescriber": GP,
        "lensSpecification": [
            {
                "product": concept(
                    "http://terminology.hl7.org/CodeSystem/ex-visionprescriptionproduct", "lens", "lens"
                ),
                "eye": "right",
                "sphere": -2.00,
                "cylinder": -0.50,
                "axis": 180,
            }
        ],
    },
}

#: Decimals written as a clinic writes them: trailing zeros and digits beyond a float's.
DECIMALS_TEXT: Final = """{
  "resourceType": "Observation",
  "id": "corpus-decimals",
  "status": "final",
  "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0", "display": "Glucose"}]},
  "subject": {"reference": "Patient/corpus-patient-1"},
  "effectiveDateTime": "2025-03-14T09:30:00+01:00",
  "valueQuantity": {"value": 6.30, "unit": "mmol/L", "system": "http://unitsofmeasure.org", "code": "mmol/L"},
  "component": [
    {
      "code": {"text": "Verhältnis (exakt)"},
      "valueQuantity": {"value": 0.1000000000000000000000000000001, "unit": "1"}
    },
    {"code": {"text": "Messwert"}, "valueQuantity": {"value": 12345678901234567890.50, "unit": "1"}}
  ]
}
"""


def _text(resource: dict[str, Any]) -> str:
    # No newline after the value: a file's bytes are exactly the record's JSON text (a reader gets
    # the value back, and whitespace around a value is not part of it).
    return json.dumps(resource, ensure_ascii=False, indent=1)


def _bundle_texts() -> dict[str, str]:
    """Patient bundles from carebundle (seeded), each with its Patient, trimmed to stay small."""
    from carebundle import generate_bundle, to_json  # a generator for this script only

    bundles = {}
    for name, profile, seed, sex in (
        ("bundle-hypertension", "hypertension", 7, "M"),
        ("bundle-healthy", "healthy", 11, "F"),
    ):
        bundle = json.loads(to_json(generate_bundle(profile=profile, seed=seed, sex=sex)))
        bundle["entry"] = bundle["entry"][:24]  # a summary, not a history: a few tens of KB
        bundles[name] = _text(bundle)
    return bundles


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    texts: dict[str, str] = {}
    for record_type, body in RESOURCES.items():
        resource = {"resourceType": record_type, "id": f"corpus-{record_type.lower()}", **body}
        texts[record_type] = _text(resource)
    texts.update(_bundle_texts())
    texts["decimals"] = DECIMALS_TEXT.strip()
    missing = RECORD_TYPES - {"Bundle"} - set(RESOURCES)
    if missing:
        print(f"no corpus resource for: {', '.join(sorted(missing))}", file=sys.stderr)
        return 1
    failed = 0
    for name, text in texts.items():
        try:
            validate_record(text.encode())
        except Exception as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            failed += 1
            continue
        (OUT / f"{name}.json").write_text(text, encoding="utf-8")
    total = sum(p.stat().st_size for p in OUT.glob("*.json"))
    print(f"wrote {len(texts) - failed} files to {OUT} ({total} bytes); {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
