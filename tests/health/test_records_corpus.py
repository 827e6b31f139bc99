"""Issue 14 [RECORDS], the record layer: every care type accepted, the submitted bytes kept, text in
any language. The API side (real nodes) is tests/health_api/test_records_api.py.

The corpus (tests/health/fixtures/corpus/, written once by scripts/make_fhir_corpus.py) holds one
realistic resource per record type, carebundle patient bundles with their Patient, and an
Observation whose decimals carry trailing zeros and more digits than a float.
"""

from __future__ import annotations

import dataclasses
import json
import pkgutil
import re
import unicodedata
from pathlib import Path
from typing import Final

import fhir.resources.R4B
import pytest

from medledger.chain.codec import decode, encode
from medledger.chain.errors import CodecError
from medledger.crypto import Identity
from medledger.health.errors import InvalidReasonError, InvalidRecordError, RecordBindingError
from medledger.health.fhir import validate_record
from medledger.health.json_text import JsonTextError, parse_json, split_members
from medledger.health.reasons import validate_reason
from medledger.health.record_types import CONTEXT_TYPES, RECORD_TYPE_WORDS, REFUSED_TYPES
from medledger.health.records import encrypt_record, open_record, verify_commitment
from medledger.health.types import (
    INSTITUTION_NAME_LENGTH_MAX,
    REASON_BYTES_MAX,
    REASON_LENGTH_MAX,
    RECORD_TYPES,
    Institution,
    RecordState,
    compute_patient_id,
)

CORPUS: Final = Path(__file__).parent / "fixtures" / "corpus"
RESOURCE_CLASS: Final = re.compile(
    r"^class (\w+)\((?:domainresource\.DomainResource|resource\.Resource)\):", re.M
)


def corpus() -> dict[str, bytes]:
    return {path.stem: path.read_bytes() for path in sorted(CORPUS.glob("*.json"))}


def r4b_resource_types() -> set[str]:
    """Every resource type the fhir.resources R4B models define: each module `x.py` whose class `X`
    derives from `Resource` or `DomainResource` (read from the source: importing all is slow)."""
    names = set()
    for module in pkgutil.iter_modules(fhir.resources.R4B.__path__):
        source = Path(fhir.resources.R4B.__path__[0], f"{module.name}.py")
        if not source.exists():
            continue
        for name in RESOURCE_CLASS.findall(source.read_text(encoding="utf-8")):
            if name.lower() == module.name:
                names.add(name)
    return names - {"DomainResource"}  # the base of most, no resource type of its own


def test_records_2_every_r4b_type_is_a_record_type_context_or_refused_for_a_reason() -> None:
    all_types = r4b_resource_types()
    assert len(all_types) > 140
    accepted, context, refused = set(RECORD_TYPE_WORDS), set(CONTEXT_TYPES), set(REFUSED_TYPES)
    assert accepted | context | refused == all_types
    assert not accepted & context
    assert not accepted & refused
    assert not context & refused
    assert accepted == RECORD_TYPES
    # What the issue found refused and belongs to a patient's care.
    assert {
        "MedicationAdministration",
        "CarePlan",
        "ImagingStudy",
        "ServiceRequest",
        "Claim",
        "ExplanationOfBenefit",
        "Coverage",
        "Goal",
        "CareTeam",
        "Provenance",
        "Device",
        "Patient",
    } <= RECORD_TYPES
    assert all(reason for reason in REFUSED_TYPES.values())


def test_records_2_the_corpus_covers_every_record_type_and_validates() -> None:
    files = corpus()
    covered = set()
    for name, text in files.items():
        validated = validate_record(text)
        covered.add(validated.record_type)
        if validated.record_type == "Bundle":
            inner = {e["resource"]["resourceType"] for e in validated.resource["entry"]}
            assert "Patient" in inner, name  # a patient summary, as clinics send it
            covered |= inner & RECORD_TYPES
    assert covered == RECORD_TYPES
    assert sum(len(t) for t in files.values()) < 400_000  # small: a few hundred KB at most


@pytest.mark.parametrize("refused", [*sorted(REFUSED_TYPES)[:: len(REFUSED_TYPES) // 12], "Group", "Binary"])
def test_records_2_invalid_refused_type(refused: str) -> None:
    with pytest.raises(InvalidRecordError) as info:
        validate_record({"resourceType": refused})
    assert info.value.paths == ("record.resourceType",)


def test_records_2_invalid_context_types_alone_or_patient_contained() -> None:
    for context in sorted(CONTEXT_TYPES):
        with pytest.raises(InvalidRecordError):
            validate_record({"resourceType": context})
    observation = json.loads(corpus()["Observation"])
    # Demographics inside a lab value would travel with an Observation-only grant: refused.
    contained = {**observation, "contained": [{"resourceType": "Patient", "id": "p"}]}
    with pytest.raises(InvalidRecordError):
        validate_record(contained)
    # A Bundle may not hold a refused type, nor another Bundle.
    for inner in ({"resourceType": "Group", "type": "person", "actual": True}, {"resourceType": "Bundle"}):
        bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": inner}]}
        with pytest.raises(InvalidRecordError):
            validate_record(bundle)


def _record(text: bytes, patient: Identity, author: Identity) -> RecordState:
    patient_id = compute_patient_id(patient.public.sign_key)
    encrypted = encrypt_record(
        text,
        patient_id=patient_id,
        author=author.public.sign_key,
        readers=[patient.public.enc_key, author.public.enc_key],
    )
    return RecordState(
        record_id=bytes(range(32)),
        patient_id=patient_id,
        author=author.public.sign_key,
        record_type=encrypted.record_type,
        commitment=encrypted.commitment,
        envelope=encrypted.envelope,
        supersedes=b"",
        superseded_by=b"",
        height=1,
        time_ms=1,
    )


def test_records_4_the_submitted_bytes_are_what_is_encrypted_and_committed() -> None:
    text = corpus()["decimals"]
    assert b"6.30" in text
    assert b"0.1000000000000000000000000000001" in text
    patient, clinic = Identity.generate(), Identity.generate()
    record = _record(text, patient, clinic)
    for reader in (patient, clinic):
        opened = open_record(record, reader)
        assert opened.canonical_json == text  # byte for byte: whitespace, order, 6.30, every digit
        assert verify_commitment(record, opened.salt, text)
    # The commitment covers those bytes, not a re-serialisation of them.
    assert not verify_commitment(
        record, open_record(record, patient).salt, validate_record(text).canonical_json
    )


def test_records_4_invalid_json_that_parsers_read_differently() -> None:
    observation = corpus()["Observation"].decode()
    repeated = observation.replace('"status": "final"', '"status": "final", "status": "cancelled"')
    nested = observation.replace('"unit": "mmol/L"', '"unit": "mmol/L", "unit": "mg/dL"')
    assert repeated != observation
    assert nested != observation
    for text in (
        repeated.encode(),  # which status is it? one parser says final, another cancelled
        nested.encode(),
        observation.encode("utf-16"),  # the JSON spec's other encodings: not what a reader gets
        b"\xef\xbb\xbf" + observation.encode(),  # a byte-order mark
        observation.encode() + b" {}",  # a second value
        observation.replace("6.3", "1e400").encode(),  # a float overflow
    ):
        with pytest.raises(InvalidRecordError):
            validate_record(text)


def test_records_4_split_members_gives_each_members_exact_text() -> None:
    body = b'{ "patient_id" : "ab",\n "resource":{"a": 6.30 , "b":[1.0e+2, "\\u00e9"]} }'
    members = split_members(body)
    assert members["resource"][1] == '{"a": 6.30 , "b":[1.0e+2, "\\u00e9"]}'
    assert members["patient_id"] == ("ab", '"ab"')
    assert members["resource"][0]["b"][1] == "é"
    for bad in (b'{"a":1,"a":2}', b'{"a":1', b'{"a":1}x', b"[1]", b'{"\\udc00":1}', b""):
        with pytest.raises(JsonTextError):
            split_members(bad)
    assert parse_json(b' {"x": [true, null]} ') == {"x": [True, None]}
    # A member's value is as parsed: its reader judges it (a record's text is parsed again, strictly).
    assert split_members(b'{"a":"\\ud800"}')["a"] == ("\ud800", '"\\ud800"')
    with pytest.raises(JsonTextError):
        parse_json(b'{"a":"\\ud800"}')


def test_records_5_reasons_in_any_language_kept_in_nfc() -> None:
    for reason in (
        "Nachsorge nach der Untersuchung im März",
        "Suivi après l'hospitalisation à Genève",
        "Контрольный осмотр",
        "術後の経過観察",
        "🩺 follow-up",
    ):
        assert validate_reason(reason) == reason
    decomposed = unicodedata.normalize("NFD", "Nachsorge im März, Genève")
    assert decomposed != unicodedata.normalize("NFC", decomposed)
    assert validate_reason(decomposed) == unicodedata.normalize("NFC", decomposed)
    assert len(validate_reason("é" * REASON_LENGTH_MAX).encode()) <= REASON_BYTES_MAX
    for bad in (
        "",
        "x" * (REASON_LENGTH_MAX + 1),
        "line\nbreak",
        "bell\x07",
        "a\ud800",
        "\u202eevil",
        7,
        None,
    ):
        with pytest.raises(InvalidReasonError) as info:
            validate_reason(bad)
        assert "evil" not in info.value.message


def test_records_5_institution_names_are_unicode_in_nfc_on_the_wire() -> None:
    key = Identity.generate().public
    name = "Hôpital Saint-Louis — Zürich"
    institution = Institution(name, "hospital", key.sign_key, key.enc_key)
    assert decode(Institution, encode(institution), max_bytes=4096).name == name
    for bad in (
        unicodedata.normalize("NFD", name),  # one name, one byte form: NFC only
        "x" * (INSTITUTION_NAME_LENGTH_MAX + 1),
        "tab\there",
        "",
    ):
        with pytest.raises(CodecError):
            decode(
                Institution, encode(Institution(bad, "hospital", key.sign_key, key.enc_key)), max_bytes=4096
            )


def test_records_4_invalid_a_hostile_authors_ambiguous_text_is_never_shown() -> None:
    """A client that skips validation encrypts text with a repeated member: readers refuse it."""
    from medledger.crypto import seal_envelope
    from medledger.health.records import SALT_SIZE, compute_record_key
    from medledger.health.types import (
        EnvelopeWire,
        compute_commitment,
        compute_record_associated_data,
        compute_record_binding,
    )

    patient, author = Identity.generate(), Identity.generate()
    honest = _record(corpus()["Observation"], patient, author)
    binding = compute_record_binding(honest.patient_id, author.public.sign_key, "Observation", b"")

    def forge(text: bytes) -> RecordState:
        """`text` encrypted and committed exactly as `encrypt_record` would, without its validation."""
        salt = bytes(SALT_SIZE)
        envelope = seal_envelope(
            salt + text,
            [patient.public.enc_key],
            associated_data=compute_record_associated_data(binding),
            derive_key=lambda key: compute_record_key(key, binding),
        )
        commitment = compute_commitment(binding, salt, text)
        return dataclasses.replace(
            honest, commitment=commitment, envelope=EnvelopeWire.from_envelope(envelope)
        )

    text = corpus()["Observation"]
    assert open_record(forge(text), patient).canonical_json == text  # the forgery itself is sound
    ambiguous = text.replace(b'"status": "final"', b'"status": "final", "status": "cancelled"')
    assert ambiguous != text
    with pytest.raises(RecordBindingError):
        open_record(forge(ambiguous), patient)


def test_records_4_invalid_deep_nesting_is_refused_not_a_crash() -> None:
    for text in (b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000):
        with pytest.raises(JsonTextError):
            parse_json(text)
        with pytest.raises(JsonTextError):
            split_members(b'{"resource":' + text + b"}")


def test_records_2_docs_list_every_record_context_and_refused_type() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "health.md").read_text(encoding="utf-8")
    section = docs.split("## Record types", 1)[1].split("\n## ", 1)[0]
    for name in (*RECORD_TYPE_WORDS, *CONTEXT_TYPES, *REFUSED_TYPES):
        assert f"`{name}`" in section, name
    for reason in set(REFUSED_TYPES.values()):
        assert reason in section, reason
    assert f"**Record types** ({len(RECORD_TYPE_WORDS)})" in section
