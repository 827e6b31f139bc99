"""FHIR R4 validation of records and the client-side record crypto (encrypt, decrypt, commitment).

The fixtures under `fixtures/` are synthetic: invented references, public code systems, no persons.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from health_testkit import make_identity

from medledger.crypto import DecryptionError
from medledger.health.errors import CommitmentMismatchError, InvalidRecordError
from medledger.health.fhir import BUNDLE_ENTRIES_MAX, compute_canonical_json, validate_record
from medledger.health.records import decrypt_record, encrypt_record, verify_commitment
from medledger.health.types import RecordState, compute_patient_id

FIXTURES = Path(__file__).resolve().parent / "fixtures"
EXPECTED_TYPES = {
    "bundle": "Bundle",
    "condition": "Condition",
    "diagnostic_report": "DiagnosticReport",
    "document_reference": "DocumentReference",
    "encounter": "Encounter",
    "immunization": "Immunization",
    "observation": "Observation",
}


def load(name: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return value


@pytest.mark.parametrize("name", sorted(EXPECTED_TYPES))
def test_valid_fixtures_pass(name: str) -> None:
    raw = (FIXTURES / f"{name}.json").read_bytes()
    validated = validate_record(raw)
    assert validated.record_type == EXPECTED_TYPES[name]
    assert validated.canonical_json == compute_canonical_json(json.loads(raw))
    assert validate_record(load(name)).canonical_json == validated.canonical_json


def assert_invalid(record: bytes | str | dict[str, Any], *, path: str | None = None) -> InvalidRecordError:
    with pytest.raises(InvalidRecordError) as info:
        validate_record(record)
    if path is not None:
        assert path in info.value.message
    return info.value


def test_invalid_json() -> None:
    assert_invalid(b"{not json")
    assert_invalid(b'{"resourceType": "Observation", "valueQuantity": {"value": NaN}}')
    assert_invalid(b"[1, 2]")


def test_invalid_unsupported_resource_type() -> None:
    assert_invalid({"resourceType": "Patient", "name": [{"family": "Synthetic"}]}, path="record.resourceType")
    assert_invalid({"status": "final"}, path="record.resourceType")


def test_invalid_missing_required_element() -> None:
    record = load("observation")
    del record["code"]
    error = assert_invalid(record, path="Observation.code is required")
    assert error.paths == ("Observation.code",)


def test_invalid_unknown_element() -> None:
    record = load("immunization")
    record["favouriteColour"] = "blue"
    assert_invalid(record, path="Immunization.favouriteColour")


def test_invalid_status_code() -> None:
    for name, element in (
        ("observation", "status"),
        ("immunization", "status"),
        ("diagnostic_report", "status"),
        ("encounter", "status"),
        ("document_reference", "docStatus"),
    ):
        record = load(name)
        record[element] = "bogus"
        assert_invalid(record, path=f"{EXPECTED_TYPES[name]}.{element}")


def test_invalid_condition_clinical_status() -> None:
    record = load("condition")
    record["clinicalStatus"]["coding"][0]["code"] = "sort-of"
    assert_invalid(record, path="Condition.clinicalStatus.coding[0].code")


def test_invalid_bad_date_does_not_echo_value() -> None:
    record = load("observation")
    record["effectiveDateTime"] = "SECRET-PHI-yesterday"
    error = assert_invalid(record, path="Observation.effectiveDateTime")
    assert "SECRET" not in error.message


def test_invalid_bundle_entry() -> None:
    record = load("bundle")
    bad = copy.deepcopy(record)
    bad["entry"][0]["resource"]["status"] = "bogus"
    assert_invalid(bad, path="Bundle.entry[0].resource.status")
    bad = copy.deepcopy(record)
    bad["entry"][1]["resource"] = {"resourceType": "NoSuchThing"}
    assert_invalid(bad, path="Bundle.entry[1].resource.resourceType")
    bad = copy.deepcopy(record)
    del bad["entry"][2]["resource"]["subject"]
    bad["entry"][2]["resource"]["code"] = 7
    assert_invalid(bad, path="Bundle")
    bad = copy.deepcopy(record)
    bad["type"] = "pile"
    assert_invalid(bad, path="Bundle.type")
    bad = copy.deepcopy(record)
    bad["entry"] = [record["entry"][0]] * (BUNDLE_ENTRIES_MAX + 1)
    assert_invalid(bad)


def test_invalid_too_deep_or_too_large() -> None:
    record = load("observation")
    nested: dict[str, Any] = {}
    cursor = nested
    for _ in range(40):
        cursor["x"] = {}
        cursor = cursor["x"]
    record["extension"] = [nested]
    assert_invalid(record)
    assert_invalid(b" " * (200 * 1024) + b"{}")


def test_encrypt_decrypt_and_commitment() -> None:
    patient, clinic, other = make_identity("p"), make_identity("c"), make_identity("o")
    patient_id = compute_patient_id(patient.public.sign_key)
    encrypted = encrypt_record(
        load("bundle"), patient_id=patient_id, readers=[patient.public.enc_key, clinic.public.enc_key]
    )
    assert encrypted.record_type == "Bundle"
    record = RecordState(
        bytes(32),
        patient_id,
        clinic.public.sign_key,
        encrypted.record_type,
        encrypted.commitment,
        encrypted.envelope,
        b"",
        b"",
        1,
        1,
    )
    opened = decrypt_record(record, patient)
    assert opened.resource == json.loads(compute_canonical_json(load("bundle")))
    assert opened.salt == encrypted.salt
    assert verify_commitment(record, opened.salt, opened.canonical_json)
    assert not verify_commitment(record, bytes(32), opened.canonical_json)
    assert decrypt_record(record, clinic).canonical_json == opened.canonical_json
    with pytest.raises(DecryptionError):
        decrypt_record(record, other)
    # Bound to patient and type: moved to another patient or relabelled, it no longer opens.
    with pytest.raises(DecryptionError):
        decrypt_record(dataclasses.replace(record, patient_id=bytes(32)), patient)
    with pytest.raises(DecryptionError):
        decrypt_record(dataclasses.replace(record, record_type="Observation"), patient)
    with pytest.raises(CommitmentMismatchError):
        decrypt_record(dataclasses.replace(record, commitment=bytes(32)), patient)


def test_invalid_record_is_never_encrypted() -> None:
    patient = make_identity("p")
    record = load("observation")
    record["status"] = "bogus"
    with pytest.raises(InvalidRecordError):
        encrypt_record(record, patient_id=bytes(32), readers=[patient.public.enc_key])
