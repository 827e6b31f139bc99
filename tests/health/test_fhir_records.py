"""FHIR R4 validation of records and the client-side record crypto (encrypt, decrypt, commitment).

The fixtures under `fixtures/` are synthetic: invented references, public code systems, no persons.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import nacl.utils
import pytest
from health_testkit import make_identity

from medledger.crypto import DecryptionError, unwrap_content_key
from medledger.health import records
from medledger.health.client import make_scope
from medledger.health.errors import CommitmentMismatchError, InvalidRecordError, RecordBindingError
from medledger.health.fhir import (
    BUNDLE_ENTRIES_MAX,
    UNKNOWN_ELEMENT,
    ValidatedRecord,
    compute_canonical_json,
    validate_record,
)
from medledger.health.records import (
    EncryptedRecord,
    encrypt_record,
    is_record_verified,
    open_record,
    reseal_record_keys,
    verify_commitment,
)
from medledger.health.types import GrantState, RecordKey, RecordState, WrappedKey, compute_patient_id

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
    assert_invalid({"resourceType": "Group", "type": "person", "actual": True}, path="record.resourceType")
    assert_invalid({"status": "final"}, path="record.resourceType")


def test_invalid_missing_required_element() -> None:
    record = load("observation")
    del record["code"]
    error = assert_invalid(record, path="Observation.code is required")
    assert error.paths == ("Observation.code",)


def test_invalid_unknown_element() -> None:
    record = load("immunization")
    record["favouriteColour"] = "blue"
    error = assert_invalid(record, path=f"Immunization.{UNKNOWN_ELEMENT} is not an element")
    assert error.paths == (f"Immunization.{UNKNOWN_ELEMENT}",)
    assert "favouriteColour" not in error.message


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


def stored(
    encrypted: EncryptedRecord, patient_id: bytes, author: bytes, record_id: bytes = bytes(32)
) -> RecordState:
    """The record as the ledger would store it under `author`."""
    return RecordState(
        record_id,
        patient_id,
        author,
        encrypted.record_type,
        encrypted.commitment,
        encrypted.envelope,
        encrypted.supersedes,
        b"",
        1,
        1,
    )


def test_encrypt_decrypt_and_commitment() -> None:
    patient, clinic, other = make_identity("p"), make_identity("c"), make_identity("o")
    patient_id = compute_patient_id(patient.public.sign_key)
    encrypted = encrypt_record(
        load("bundle"),
        patient_id=patient_id,
        author=clinic.public.sign_key,
        readers=[patient.public.enc_key, clinic.public.enc_key],
    )
    assert encrypted.record_type == "Bundle"
    record = stored(encrypted, patient_id, clinic.public.sign_key)
    opened = open_record(record, patient)
    assert opened.resource == json.loads(compute_canonical_json(load("bundle")))
    assert opened.salt == encrypted.salt
    assert verify_commitment(record, opened.salt, opened.canonical_json)
    assert not verify_commitment(record, bytes(32), opened.canonical_json)
    assert open_record(record, clinic).canonical_json == opened.canonical_json
    with pytest.raises(DecryptionError):
        open_record(record, other)
    # Bound to patient, type and superseded record: moved or relabelled, it no longer opens.
    for moved in (
        dataclasses.replace(record, patient_id=bytes(32)),
        dataclasses.replace(record, record_type="Observation"),
        dataclasses.replace(record, supersedes=bytes(range(32))),
    ):
        with pytest.raises(RecordBindingError):
            open_record(moved, patient)
    with pytest.raises(CommitmentMismatchError):
        open_record(dataclasses.replace(record, commitment=bytes(32)), patient)
    # Metadata no rule stores (a lying node's answer) is refused typed, too.
    malformed = dataclasses.replace(record, supersedes=b"short")
    with pytest.raises(RecordBindingError):
        open_record(malformed, patient)
    assert not verify_commitment(malformed, opened.salt, opened.canonical_json)


def test_trust_6_republished_record_is_refused_by_every_reader() -> None:
    """Issue 9, defect 6: a hospital re-publishing a clinic's ciphertext and commitment as its own."""
    patient, clinic, hospital = make_identity("p"), make_identity("c"), make_identity("h")
    insurer = make_identity("i")
    patient_id = compute_patient_id(patient.public.sign_key)
    readers = [patient.public.enc_key, clinic.public.enc_key, hospital.public.enc_key]
    encrypted = encrypt_record(
        load("condition"), patient_id=patient_id, author=clinic.public.sign_key, readers=readers
    )
    original = stored(encrypted, patient_id, clinic.public.sign_key, bytes([1]) * 32)
    copy_as_hospital = stored(encrypted, patient_id, hospital.public.sign_key, bytes([2]) * 32)
    assert open_record(original, patient).record_type == "Condition"
    # Every reader refuses the copy, typed, naming the record and not its content.
    for reader in (patient, clinic, hospital):
        with pytest.raises(RecordBindingError) as info:
            open_record(copy_as_hospital, reader)
        assert info.value.record_id == copy_as_hospital.record_id
        assert copy_as_hospital.record_id.hex() in info.value.message
    # The commitment does not verify under the hospital's name, even with the true salt and plaintext.
    plaintext = open_record(original, patient)
    assert not verify_commitment(copy_as_hospital, plaintext.salt, plaintext.canonical_json)
    # And the patient's client never re-seals the copy's key (it is the original's) for a grantee.
    with pytest.raises(RecordBindingError):
        reseal_record_keys([copy_as_hospital], patient, insurer.public.enc_key)
    assert len(reseal_record_keys([original], patient, insurer.public.enc_key)) == 1


def test_trust_6_commitment_binds_the_author() -> None:
    """The same plaintext and salt commit differently under another author, patient or type."""
    patient, clinic, hospital = make_identity("p"), make_identity("c"), make_identity("h")
    patient_id = compute_patient_id(patient.public.sign_key)
    encrypted = encrypt_record(
        load("observation"),
        patient_id=patient_id,
        author=clinic.public.sign_key,
        readers=[patient.public.enc_key, clinic.public.enc_key],
    )
    record = stored(encrypted, patient_id, clinic.public.sign_key)
    opened = open_record(record, patient)
    assert verify_commitment(record, opened.salt, opened.canonical_json)
    for other in (
        dataclasses.replace(record, author=hospital.public.sign_key),
        dataclasses.replace(record, patient_id=bytes(32)),
        dataclasses.replace(record, record_type="Condition"),
    ):
        assert not verify_commitment(other, opened.salt, opened.canonical_json)


def test_invalid_record_is_never_encrypted() -> None:
    patient = make_identity("p")
    record = load("observation")
    record["status"] = "bogus"
    with pytest.raises(InvalidRecordError):
        encrypt_record(
            record, patient_id=bytes(32), author=patient.public.sign_key, readers=[patient.public.enc_key]
        )


#: Identifiers a client might put anywhere in a record: none may come back in an error.
PHI = ("Jane Doe", "1980-01-02", "MRN-4417", "HIV+")


def test_trust_8_validation_errors_never_echo_names_or_values() -> None:
    """Issue 9, defect 8: element names, values and ids a client chose never appear in errors."""
    phi_key = "Jane Doe DOB 1980-01-02 MRN-4417 HIV+"
    observation, condition = load("observation"), load("condition")
    bad: list[dict[str, Any]] = [
        {**condition, phi_key: "x"},  # an unknown element named by the PHI
        {**condition, "recordedDate": phi_key},  # a PHI value of the wrong format
        {**condition, "id": phi_key},  # an id
        {**condition, "clinicalStatus": {"coding": [{phi_key: 1}]}},  # nested unknown element
        {**observation, "status": phi_key},  # a value outside a code list
        {**observation, "subject": {"reference": 7, phi_key: phi_key}},
        {**observation, "contained": [{"resourceType": "Patient", "name": [{phi_key: 1}]}]},
        {**observation, "contained": [{"resourceType": phi_key}]},
        {"resourceType": phi_key},
        {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {**condition, phi_key: 1}}]},
        {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"resourceType": phi_key}}]},
        {"resourceType": "Bundle", "type": "collection", "entry": [{phi_key: 1, "resource": observation}]},
    ]
    for record in bad:
        error = assert_invalid(record)
        shown = error.message + " ".join(error.paths)
        for identifier in PHI:
            assert identifier not in shown, (identifier, shown)
    # The path shape is still there: rule and position.
    error = assert_invalid({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": bad[0]}]})
    assert error.paths == (f"Bundle.entry[0].resource.{UNKNOWN_ELEMENT}",)
    assert "is not an element" in error.message


def test_trust_6_a_grant_never_hands_out_another_records_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 9, defect 6, the key variant: a hospital sealed into a clinic's record re-uses the
    clinic's content key for a harmless record of its own. A grant of that record must not hand
    the grantee a key that opens the clinic's record (consent for an Immunization is not consent
    for a Condition)."""
    patient, clinic, hospital, insurer = (make_identity(n) for n in ("p", "c", "h", "i"))
    patient_id = compute_patient_id(patient.public.sign_key)
    condition = encrypt_record(
        load("condition"),
        patient_id=patient_id,
        author=clinic.public.sign_key,
        readers=[patient.public.enc_key, clinic.public.enc_key, hospital.public.enc_key],
    )
    original = stored(condition, patient_id, clinic.public.sign_key, bytes([1]) * 32)
    stolen = unwrap_content_key(original.envelope.to_envelope(), hospital)
    # The hospital runs the honest client, except that its content key is the clinic's.
    draw = nacl.utils.random
    monkeypatch.setattr(nacl.utils, "random", lambda size: stolen if size == len(stolen) else draw(size))
    decoy = encrypt_record(
        load("immunization"),
        patient_id=patient_id,
        author=hospital.public.sign_key,
        readers=[patient.public.enc_key, hospital.public.enc_key],
    )
    monkeypatch.undo()
    copy_record = stored(decoy, patient_id, hospital.public.sign_key, bytes([2]) * 32)
    assert open_record(copy_record, patient).record_type == "Immunization"  # the hospital's own record
    # The patient grants the insurer the Immunization, and only it.
    (granted,) = reseal_record_keys([copy_record], patient, insurer.public.enc_key)
    assert granted.record_id == copy_record.record_id
    # Whatever the insurer does with that key, the clinic's Condition does not open.
    as_grant_key = RecordKey(original.record_id, granted.sealed_key)
    forged_grant = GrantState(
        bytes(32), bytes(32), patient_id, insurer.public.sign_key, insurer.public.enc_key,
        patient.public.sign_key, make_scope(), "TREAT", 2, (as_grant_key,), 0, 0, 1, 1,
    )  # fmt: skip
    with pytest.raises(RecordBindingError):
        open_record(original, insurer, grant=forged_grant)
    as_envelope_key = dataclasses.replace(
        original.envelope,
        wrapped_keys=(WrappedKey(insurer.public.enc_key, granted.sealed_key),),
    )
    with pytest.raises(RecordBindingError):
        open_record(dataclasses.replace(original, envelope=as_envelope_key), insurer)
    # The grant still opens the record it was made for.
    honest_grant = dataclasses.replace(forged_grant, record_keys=(granted,))
    assert open_record(copy_record, insurer, grant=honest_grant).record_type == "Immunization"


def test_trust_8_text_that_is_not_unicode_is_an_invalid_record() -> None:
    """An escaped unpaired surrogate or 1e400 parses as JSON but is not JSON text: a typed refusal
    (as bytes from a file or as a mapping from the API), never an untyped error quoting it."""
    observation = compute_canonical_json(load("observation")).decode()
    for extra in (
        '"fhir_comments":["Jane Doe \\udfff"]',  # the model accepts it: only the encoder refuses
        '"\\ud800 Jane Doe":1',
        '"valueQuantity":{"value":1e400}',
    ):
        text = observation[:-1] + "," + extra + "}"  # the last of duplicate keys wins
        for record in (text.encode(), json.loads(text)):
            error = assert_invalid(record)
            assert "Jane Doe" not in error.message
            assert "surrogate" not in error.message


def test_trust_6_record_whose_content_is_another_type_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A record labelled (and bound as) an Immunization whose content is a Condition: the label is
    what grants are scoped by, so no reader may show it and the patient never re-seals its key."""
    patient, clinic, insurer = make_identity("p"), make_identity("c"), make_identity("i")
    patient_id = compute_patient_id(patient.public.sign_key)
    condition = validate_record(load("condition"))
    # The author runs the honest client, except that it calls its Condition an Immunization.
    monkeypatch.setattr(
        records, "validate_record", lambda _: dataclasses.replace(condition, record_type="Immunization")
    )
    mislabelled = encrypt_record(
        load("condition"),
        patient_id=patient_id,
        author=clinic.public.sign_key,
        readers=[patient.public.enc_key, clinic.public.enc_key],
    )
    monkeypatch.undo()
    record = stored(mislabelled, patient_id, clinic.public.sign_key)
    assert record.record_type == "Immunization"
    for reader in (patient, clinic):
        with pytest.raises(RecordBindingError) as info:
            open_record(record, reader)
        assert "Jane" not in info.value.message
    with pytest.raises(RecordBindingError):
        reseal_record_keys([record], patient, insurer.public.enc_key)


def test_trust_8_bundle_entry_code_of_the_wrong_type_is_invalid() -> None:
    """A coded element of a Bundle entry that is a list or an object (checked against its code
    list before the model runs): an `InvalidRecordError` naming the path, not a TypeError (500)."""
    condition_status = "http://terminology.hl7.org/CodeSystem/condition-clinical"
    for inner, path in (
        ({**load("observation"), "status": ["Jane Doe"]}, "Bundle.entry[0].resource.status"),
        ({**load("observation"), "status": {"Jane Doe": 1}}, "Bundle.entry[0].resource.status"),
        (
            {
                **load("condition"),
                "clinicalStatus": {"coding": [{"system": condition_status, "code": ["Jane"]}]},
            },
            "Bundle.entry[0].resource.clinicalStatus.coding[0].code",
        ),
    ):
        error = assert_invalid(
            {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": inner}]}
        )
        assert error.paths == (path,)
        assert "Jane" not in error.message


def _with_contained(resource: dict[str, Any], *contained: dict[str, Any]) -> dict[str, Any]:
    return {**resource, "contained": [{**inner, "id": f"c{i}"} for i, inner in enumerate(contained)]}


def test_trust_6_contained_resource_of_another_type_is_invalid() -> None:
    """An Immunization carrying a Condition in `contained` would be shared, diagnosis and all, by a
    grant the patient was shown as "vaccinations": a record carries context resources
    (practitioner, organization, medication) and resources of its own type, nothing else."""
    condition = load("condition")
    error = assert_invalid(
        _with_contained(load("immunization"), condition), path="Immunization.contained[0].resourceType"
    )
    assert "Hypertension" not in error.message
    bundle = load("bundle")
    entry = {"resource": _with_contained(load("observation"), condition)}
    assert_invalid({**bundle, "entry": [entry]}, path="Bundle.entry[0].resource.contained[0].resourceType")
    practitioner = {"resourceType": "Practitioner", "name": [{"family": "Synthetic"}]}
    assert validate_record(_with_contained(load("immunization"), practitioner)).record_type == "Immunization"
    assert validate_record(_with_contained(load("condition"), condition)).record_type == "Condition"


def test_trust_6_record_carrying_a_contained_resource_of_another_type_is_refused_by_readers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The author check bypassed (a hostile author's own client): every reader refuses the record
    and the patient never re-seals its key under the Immunization label."""
    patient, clinic, insurer = make_identity("p"), make_identity("c"), make_identity("i")
    patient_id = compute_patient_id(patient.public.sign_key)
    resource = _with_contained(load("immunization"), load("condition"))
    smuggled = ValidatedRecord("Immunization", resource, compute_canonical_json(resource))
    monkeypatch.setattr(records, "validate_record", lambda _: smuggled)
    encrypted = encrypt_record(
        resource,
        patient_id=patient_id,
        author=clinic.public.sign_key,
        readers=[patient.public.enc_key, clinic.public.enc_key],
    )
    monkeypatch.undo()
    record = stored(encrypted, patient_id, clinic.public.sign_key)
    for reader in (patient, clinic):
        with pytest.raises(RecordBindingError) as info:
            open_record(record, reader)
        assert "Hypertension" not in info.value.message
    assert not is_record_verified(record, patient)
    with pytest.raises(RecordBindingError):
        reseal_record_keys([record], patient, insurer.public.enc_key)
