"""Attacks on what issue 14 added, judged in process: hostile JSON text, and grants in parts.

Each test is an attack a hostile institution, patient client or representative could make; it
asserts the attack fails (a typed refusal, nothing changed) on the code as it is now. Three of them
succeeded before their fix:

- a record nested a few hundred levels deep made the strict JSON checker recurse past the
  interpreter's limit (`RecursionError`: a 500 on `POST /v1/health/institution/records`),
- a hostile author's record nesting 450 or 900 levels (its node skipped validation) crashed or
  was shown by every reader, the patient's device included: readers now refuse it as the author's
  node would have (`parse_record_json` applies the depth bound), and
- an integer literal too large for a double (e.g. 400 digits) passed the "no number that
  overflows a float" rule, which only looked at literals with a fraction or an exponent; a reader
  holding numbers as doubles (the patient's web app) would show infinity.

The grants-in-parts attacks complement `test_grant_parts.py`: another patient's record declared in
a manifest, a part from someone other than the manifest's signer (or a signer who no longer acts
for the patient), a part after expiry, and a manifest whose parts never came (it opens nothing).
"""

from __future__ import annotations

import dataclasses
import secrets

import pytest
from health_testkit import Ledger, make_condition, make_identity, make_observation

from medledger.crypto import Identity, seal_envelope
from medledger.crypto.envelope import SEALED_KEY_SIZE
from medledger.health import client, policy
from medledger.health import state as st
from medledger.health.errors import InvalidRecordError, RecordBindingError
from medledger.health.fhir import validate_record
from medledger.health.json_text import JsonTextError, parse_json, split_members
from medledger.health.records import (
    SALT_SIZE,
    EncryptedRecord,
    compute_record_key,
    encrypt_record,
    open_record,
    open_verified_record,
    reseal_record_keys,
)
from medledger.health.types import (
    EnvelopeWire,
    RecordKey,
    RecordState,
    compute_commitment,
    compute_patient_id,
    compute_record_associated_data,
    compute_record_binding,
)

HOUR_MS = 3_600_000
#: Depths around every limit on the way: the record's (32), and the interpreter's recursion limit
#: (1,000 frames, of which the parser uses one a level and a recursive walk two or more).
DEPTHS = (33, 200, 350, 400, 500, 700, 900, 990, 1000, 1100, 20_000)


def _observation_text(extra: str) -> bytes:
    return (
        '{"resourceType": "Observation", "status": "final", "code": {"text": "synthetic"}, ' + extra + "}"
    ).encode()


# --- hostile JSON text ----------------------------------------------------------------------------


@pytest.mark.parametrize("depth", DEPTHS)
def test_invalid_deeply_nested_record_is_an_invalid_record_at_any_depth(depth: int) -> None:
    for nested in ("[" * depth + "]" * depth, '{"a": ' * depth + "1" + "}" * depth):
        with pytest.raises(InvalidRecordError):
            validate_record(_observation_text(f'"extension": {nested}'))


@pytest.mark.parametrize("depth", DEPTHS)
def test_deeply_nested_json_text_is_parsed_or_refused_never_a_crash(depth: int) -> None:
    text = "[" * depth + '"\\ud800"' + "]" * depth  # a lone surrogate at the very bottom
    with pytest.raises(JsonTextError):
        parse_json(text)
    members = None
    try:
        members = split_members('{"resource": ' + "[" * depth + "]" * depth + "}")
    except JsonTextError:
        assert depth > 500  # only nesting near the interpreter's limit is refused as text
    if members is not None:
        assert members["resource"][1] == "[" * depth + "]" * depth


def test_invalid_integers_beyond_a_double_are_refused_as_text_and_as_records() -> None:
    largest = str(int(1.7976931348623157e308))  # the largest double, written as an integer
    assert parse_json(largest) == int(largest)
    assert parse_json("-" + largest) == -int(largest)
    for number in (largest + "0", "-" + largest + "0", "9" * 400, "1" + "0" * 4000):
        with pytest.raises(JsonTextError, match="too large"):
            parse_json(f"[{number}]")
        with pytest.raises(InvalidRecordError):
            validate_record(_observation_text(f'"valueQuantity": {{"value": {number}}}'))
    with pytest.raises(JsonTextError):  # beyond the interpreter's own limit on digits
        parse_json("9" * 5000)
    ok = validate_record(_observation_text('"valueQuantity": {"value": 6.30}'))
    assert b"6.30" in ok.plaintext  # what is refused is only what no reader can hold


def _encrypt_unvalidated(
    plaintext: bytes, record_type: str, *, patient_id: bytes, author: Identity, readers: list[bytes]
) -> EncryptedRecord:
    """What a hostile author's own client can put on the ledger: `encrypt_record` without the
    validation (the rules never see the plaintext)."""
    salt = secrets.token_bytes(SALT_SIZE)
    binding = compute_record_binding(patient_id, author.public.sign_key, record_type, b"")
    envelope = seal_envelope(
        salt + plaintext,
        readers,
        associated_data=compute_record_associated_data(binding),
        derive_key=lambda content_key: compute_record_key(content_key, binding),
    )
    return EncryptedRecord(
        record_type,
        compute_commitment(binding, salt, plaintext),
        EnvelopeWire.from_envelope(envelope),
        salt,
        author.public.sign_key,
        b"",
    )


@pytest.mark.parametrize("depth", [450, 900])
def test_invalid_deeply_nested_record_from_a_hostile_author_is_not_shown_and_breaks_no_reader(
    depth: int,
) -> None:
    """A hostile author bypasses its node's validation and puts a record nesting `depth` levels
    on the ledger (the rules cannot look inside). Every reader, the patient's device first, must
    refuse it as unverifiable, not crash on it. Before the fixes each reader either raised
    RecursionError (900 levels: one such record broke the patient's record list and grant preview,
    and a grantee's read) or showed it (450 levels: readers did not apply the depth bound the
    author's node applies, so the next program walking the record would break)."""
    ledger = Ledger()
    patient, clinic = make_identity("patient-poisoned"), make_identity("clinic")
    patient_id = compute_patient_id(patient.public.sign_key)
    ledger.submit_ok(ledger.sign(client.build_register_patient, patient))
    poisoned = _encrypt_unvalidated(
        _observation_text('"extension": ' + "[" * depth + "]" * depth),
        "Observation",
        patient_id=patient_id,
        author=clinic,
        readers=sorted([patient.public.enc_key, clinic.public.enc_key]),
    )
    tx_id = ledger.submit_ok(ledger.sign(client.build_add_record, clinic, patient_id, poisoned)).tx_id
    record = st.get_record(ledger.state, tx_id)
    assert record is not None
    for reader in (patient, clinic):
        with pytest.raises(RecordBindingError):
            open_record(record, reader)
    assert open_verified_record(record, patient) is None


# --- grants in parts --------------------------------------------------------------------------------


@dataclasses.dataclass
class World:
    ledger: Ledger
    patient: Identity
    representative: Identity
    clinic: Identity
    hospital: Identity
    patient_id: bytes
    observations: list[RecordState]
    stranger_record: RecordState  # another patient's Observation, by the same clinic

    def inquire(self) -> bytes:
        return self.ledger.submit_ok(
            self.ledger.sign(
                client.build_request_access,
                self.hospital,
                self.patient_id,
                client.make_scope(record_types=("Observation",)),
                "TREAT",
                self.ledger.next_time_ms + 24 * HOUR_MS,
                "synthetic follow-up",
                patient_enc_key=self.patient.public.enc_key,
            )
        ).tx_id

    def keys(self, records: list[RecordState]) -> tuple[RecordKey, ...]:
        resealed = reseal_record_keys(records, self.patient, self.hospital.public.enc_key)
        return tuple(sorted(resealed, key=lambda rk: rk.record_id))

    def manifest(self, signer: Identity, inquiry_id: bytes, keys: tuple[RecordKey, ...]) -> bytes:
        body = client.compute_grant_manifest(inquiry_id, keys)
        return self.ledger.submit_ok(self.ledger.sign(client.build_grant_manifest, signer, body)).tx_id


def _add_records(
    ledger: Ledger, clinic: Identity, patient: Identity, resources: list[dict[str, object]]
) -> list[RecordState]:
    patient_id = compute_patient_id(patient.public.sign_key)
    readers = sorted([patient.public.enc_key, clinic.public.enc_key])
    records = []
    for resource in resources:
        encrypted = encrypt_record(
            resource, patient_id=patient_id, author=clinic.public.sign_key, readers=readers
        )
        tx_id = ledger.submit_ok(ledger.sign(client.build_add_record, clinic, patient_id, encrypted)).tx_id
        record = st.get_record(ledger.state, tx_id)
        assert record is not None
        records.append(record)
    return records


@pytest.fixture
def world() -> World:
    ledger = Ledger()
    patient, other, representative = (
        make_identity("patient-attack"),
        make_identity("patient-other"),
        make_identity("representative-attack"),
    )
    clinic, hospital = make_identity("clinic"), make_identity("hospital")
    patient_id = compute_patient_id(patient.public.sign_key)
    for who in (patient, other):
        ledger.submit_ok(ledger.sign(client.build_register_patient, who))
    ledger.submit_ok(
        ledger.sign(client.build_add_representative, patient, patient_id, representative.public.sign_key)
    )
    observations = _add_records(ledger, clinic, patient, [make_observation(50 + n) for n in range(5)])
    _add_records(ledger, clinic, patient, [make_condition("synthetic")])
    (stranger,) = _add_records(ledger, clinic, other, [make_observation(99)])
    return World(ledger, patient, representative, clinic, hospital, patient_id, observations, stranger)


def test_invalid_part_delivering_a_key_for_another_patients_record(world: World) -> None:
    """A hostile patient client declares another patient's record (its id is public) among its own:
    the manifest passes (it names digests only), the part never does."""
    inquiry_id = world.inquire()
    forged = RecordKey(world.stranger_record.record_id, secrets.token_bytes(SEALED_KEY_SIZE))
    keys = tuple(sorted((*world.keys(world.observations[:2]), forged), key=lambda rk: rk.record_id))
    grant_id = world.manifest(world.patient, inquiry_id, keys)
    world.ledger.submit_rejected(
        world.ledger.sign(client.build_grant_part, world.patient, grant_id, 0, keys), "health.grant_records"
    )
    assert st.get_grant_key(world.ledger.state, grant_id, world.stranger_record.record_id) is None
    grant = st.get_grant(world.ledger.state, grant_id)
    assert grant is not None
    assert not policy.is_readable_under_grant(grant, world.stranger_record, world.ledger.state)


def test_invalid_parts_from_anyone_but_a_signer_still_acting_for_the_patient(world: World) -> None:
    """Parts come from the manifest's signer only: not the patient when a representative signed
    it, and not the representative once the patient removed them."""
    inquiry_id = world.inquire()
    keys = world.keys(world.observations)
    grant_id = world.manifest(world.representative, inquiry_id, keys)
    world.ledger.submit_rejected(
        world.ledger.sign(client.build_grant_part, world.patient, grant_id, 0, keys), "health.not_authorised"
    )
    world.ledger.submit_ok(
        world.ledger.sign(
            client.build_remove_representative,
            world.patient,
            world.patient_id,
            world.representative.public.sign_key,
        )
    )
    world.ledger.submit_rejected(
        world.ledger.sign(client.build_grant_part, world.representative, grant_id, 0, keys),
        "health.not_authorised",
    )
    parts = st.get_grant_parts(world.ledger.state, grant_id)
    assert parts is not None
    assert parts.keys_received == 0


def test_invalid_part_after_the_grant_expired(world: World) -> None:
    inquiry_id = world.inquire()
    keys = world.keys(world.observations)
    grant_id = world.manifest(world.patient, inquiry_id, keys)
    world.ledger.advance(25 * HOUR_MS)  # past the inquiry's (hence the grant's) expiry
    world.ledger.submit_rejected(
        world.ledger.sign(client.build_grant_part, world.patient, grant_id, 0, keys), "health.grant_expired"
    )


def test_invalid_reads_under_a_manifest_whose_parts_never_came(world: World) -> None:
    """The manifest is the decision, not the keys: until a part delivers a record's key, the
    grantee can neither read nor receipt that record (its honest node asks the same policy)."""
    inquiry_id = world.inquire()
    keys = world.keys(world.observations)
    grant_id = world.manifest(world.patient, inquiry_id, keys)
    state = world.ledger.state
    hospital = world.ledger.institutions["hospital"]
    now_ms = world.ledger.next_time_ms
    assert policy.get_read_accesses(state, hospital, world.patient_id, world.observations, now_ms) == [
        None
    ] * len(world.observations)
    first = world.observations[0].record_id
    world.ledger.submit_rejected(
        world.ledger.sign(client.build_read_receipt, world.hospital, grant_id, [first]),
        "health.receipt_records",
    )
    world.ledger.submit_ok(world.ledger.sign(client.build_grant_part, world.patient, grant_id, 0, keys))
    accesses = policy.get_read_accesses(
        world.ledger.state, hospital, world.patient_id, world.observations, now_ms
    )
    assert all(a is not None and a.grant is not None and a.grant.grant_id == grant_id for a in accesses)
    world.ledger.submit_ok(world.ledger.sign(client.build_read_receipt, world.hospital, grant_id, [first]))
