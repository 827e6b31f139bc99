"""The health rules, example by example: the happy path end to end, and each rule's refusals.

Every refusal goes through `Ledger.submit_rejected`, which asserts the named rule and that the full
state is unchanged (and, through `Ledger.submit`, that admission and execution agree).
"""

from __future__ import annotations

import dataclasses

import pytest
from health_testkit import CHAIN_ID, GENESIS_TIME_MS, Ledger, make_condition, make_identity, make_observation

from medledger.chain.codec import encode
from medledger.chain.txbuilder import sign_tx
from medledger.crypto import DecryptionError, Identity, is_usable_enc_key, seal_envelope
from medledger.health import client
from medledger.health import state as st
from medledger.health.app import HealthApp, decode_genesis
from medledger.health.errors import (
    InvalidGenesisError,
    InvalidReasonError,
    ReasonUnreadableError,
    RecordBindingError,
)
from medledger.health.reasons import open_reason, validate_reason
from medledger.health.records import (
    EncryptedRecord,
    encrypt_record,
    open_record,
    reseal_record_keys,
)
from medledger.health.types import (
    EVENT_GRANT,
    EVENT_INQUIRY,
    EVENT_READ,
    EVENT_REVOKE,
    INQUIRY_GRANTED,
    KIND_ADD_RECORD,
    KIND_GRANT,
    KIND_REGISTER_PATIENT,
    KIND_REQUEST_ACCESS,
    KIND_SUPERSEDE_RECORD,
    REASON_PADDED_BYTES,
    STATE_LAYOUT_GRANT_EXPIRY,
    AddRecordBody,
    RecordState,
    RegisterPatientBody,
    RequestAccessBody,
    SealedReason,
    SupersedeRecordBody,
    compute_patient_id,
    compute_reason_associated_data,
)

HOUR_MS = 3_600_000


@dataclasses.dataclass
class World:
    ledger: Ledger
    patient: Identity
    patient_id: bytes
    clinic: Identity
    hospital: Identity
    insurer: Identity
    research: Identity
    stranger: Identity


@pytest.fixture
def world() -> World:
    ledger = Ledger()
    patient = make_identity("patient-a")
    ledger.submit_ok(ledger.sign(client.build_register_patient, patient))
    return World(
        ledger,
        patient,
        compute_patient_id(patient.public.sign_key),
        make_identity("clinic"),
        make_identity("hospital"),
        make_identity("insurer"),
        make_identity("research"),
        make_identity("stranger"),
    )


def add_record(w: World, author: Identity, resource: dict[str, object], *extra: Identity) -> RecordState:
    readers = [w.patient.public.enc_key, author.public.enc_key, *(e.public.enc_key for e in extra)]
    encrypted = encrypt_record(
        resource, patient_id=w.patient_id, author=author.public.sign_key, readers=readers
    )
    outcome = w.ledger.submit_ok(w.ledger.sign(client.build_add_record, author, w.patient_id, encrypted))
    record = st.get_record(w.ledger.state, outcome.tx_id)
    assert record is not None
    return record


def request(
    w: World,
    requester: Identity,
    *,
    purpose: str = "TREAT",
    ttl_ms: int = HOUR_MS,
    types: tuple[str, ...] = (),
) -> bytes:
    signed = w.ledger.sign(
        client.build_request_access,
        requester,
        w.patient_id,
        client.make_scope(record_types=types),
        purpose,
        w.ledger.next_time_ms + ttl_ms,
        "synthetic follow-up",
        patient_enc_key=w.patient.public.enc_key,
    )
    return w.ledger.submit_ok(signed).tx_id


def grant(w: World, inquiry_id: bytes, records: list[RecordState], grantee: Identity) -> bytes:
    keys = reseal_record_keys(records, w.patient, grantee.public.enc_key)
    return w.ledger.submit_ok(w.ledger.sign(client.build_grant, w.patient, inquiry_id, keys)).tx_id


def test_flow_record_inquiry_grant_read_revoke(world: World) -> None:
    w = world
    record = add_record(w, w.clinic, make_observation(72))
    assert open_record(record, w.patient).resource["valueQuantity"]["value"] == 72
    assert open_record(record, w.clinic).record_type == "Observation"
    with pytest.raises(DecryptionError):
        open_record(record, w.hospital)

    inquiry_id = request(w, w.hospital)
    grant_id = grant(w, inquiry_id, [record], w.hospital)
    inquiry = st.get_inquiry(w.ledger.state, inquiry_id)
    assert inquiry is not None
    assert inquiry.status == INQUIRY_GRANTED
    assert inquiry.decision_id == grant_id
    stored_grant = st.get_grant(w.ledger.state, grant_id)
    assert stored_grant is not None
    assert open_record(record, w.hospital, grant=stored_grant).canonical_json == (
        open_record(record, w.patient).canonical_json
    )
    w.ledger.submit_ok(w.ledger.sign(client.build_read_receipt, w.hospital, grant_id, [record.record_id]))

    # A later record covered by the live grant may be sealed for the grantee too.
    later = add_record(w, w.clinic, make_observation(80), w.hospital)
    w.ledger.submit_ok(w.ledger.sign(client.build_read_receipt, w.hospital, grant_id, [later.record_id]))

    w.ledger.submit_ok(w.ledger.sign(client.build_revoke, w.patient, grant_id))
    # Revocation stops future sharing: no new record may be sealed for the former grantee ...
    encrypted = encrypt_record(
        make_observation(90),
        patient_id=w.patient_id,
        author=w.clinic.public.sign_key,
        readers=[w.patient.public.enc_key, w.clinic.public.enc_key, w.hospital.public.enc_key],
    )
    w.ledger.submit_rejected(
        w.ledger.sign(client.build_add_record, w.clinic, w.patient_id, encrypted), "health.record_readers"
    )
    # ... and reads under the grant are refused.
    w.ledger.submit_rejected(
        w.ledger.sign(client.build_read_receipt, w.hospital, grant_id, [record.record_id]),
        "health.grant_revoked",
    )
    events = [e.event for e in st.list_audit_events(w.ledger.state, w.patient_id)]
    assert events == [EVENT_INQUIRY, EVENT_GRANT, EVENT_READ, EVENT_READ, EVENT_REVOKE]
    assert [r.record_id for r in st.list_records(w.ledger.state, w.patient_id)] == [
        record.record_id,
        later.record_id,
    ]


def test_supersede_keeps_both_versions(world: World) -> None:
    w = world
    old = add_record(w, w.clinic, make_condition("first"))

    def correction(author: Identity, supersedes: bytes) -> EncryptedRecord:
        return encrypt_record(
            make_condition("corrected"),
            patient_id=w.patient_id,
            author=author.public.sign_key,
            readers=[w.patient.public.enc_key, w.clinic.public.enc_key],
            supersedes=supersedes,
        )

    encrypted = correction(w.clinic, old.record_id)
    new_id = w.ledger.submit_ok(
        w.ledger.sign(client.build_supersede_record, w.clinic, w.patient_id, old.record_id, encrypted)
    ).tx_id
    stored_old = st.get_record(w.ledger.state, old.record_id)
    stored_new = st.get_record(w.ledger.state, new_id)
    assert stored_old is not None
    assert stored_new is not None
    assert stored_old.superseded_by == new_id
    assert stored_new.supersedes == old.record_id
    assert stored_old.envelope == old.envelope
    again = correction(w.clinic, old.record_id)
    w.ledger.submit_rejected(
        w.ledger.sign(client.build_supersede_record, w.clinic, w.patient_id, old.record_id, again),
        "health.supersede",
    )
    by_hospital = correction(w.hospital, new_id)
    w.ledger.submit_rejected(
        w.ledger.sign(client.build_supersede_record, w.hospital, w.patient_id, new_id, by_hospital),
        "health.record_readers",
    )
    # The same ciphertext a second time is refused, whoever sends it.
    w.ledger.submit_rejected(
        w.ledger.sign(client.build_supersede_record, w.clinic, w.patient_id, old.record_id, encrypted),
        "health.record_duplicate",
    )


def test_representative_may_decide_until_removed(world: World) -> None:
    w = world
    rep = make_identity("rep")
    w.ledger.submit_ok(
        w.ledger.sign(client.build_add_representative, w.patient, w.patient_id, rep.public.sign_key)
    )
    first = request(w, w.hospital)
    w.ledger.submit_ok(w.ledger.sign(client.build_deny, rep, first))
    w.ledger.submit_ok(
        w.ledger.sign(client.build_remove_representative, w.patient, w.patient_id, rep.public.sign_key)
    )
    second = request(w, w.hospital)
    w.ledger.submit_rejected(w.ledger.sign(client.build_deny, rep, second), "health.not_authorised")


def test_invalid_unknown_kind(world: World) -> None:
    signed = sign_tx(world.clinic, chain_id=CHAIN_ID, kind="health.nope", body=b"\x80", nonce=1)
    world.ledger.submit_rejected(signed, "health.kind")


def test_invalid_malformed_body(world: World) -> None:
    signed = sign_tx(world.patient, chain_id=CHAIN_ID, kind=KIND_GRANT, body=b"\x81\xa1x\x01", nonce=1)
    world.ledger.submit_rejected(signed, "health.body")


def test_invalid_register_patient_twice(world: World) -> None:
    w = world
    w.ledger.submit_rejected(w.ledger.sign(client.build_register_patient, w.patient), "health.patient_exists")


def test_invalid_institution_registers_as_patient(world: World) -> None:
    w = world
    w.ledger.submit_rejected(w.ledger.sign(client.build_register_patient, w.clinic), "health.role_conflict")


#: x25519 public keys of low order: the points of order dividing 8 (0, 1, the order-8 pair, and
#: p-1), non-canonical encodings of them (p, p+1),
#: and the high bit set (which X25519 ignores).
_P = 2**255 - 19
LOW_ORDER_ENC_KEYS = [
    (0).to_bytes(32, "little"),
    (1).to_bytes(32, "little"),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    (_P - 1).to_bytes(32, "little"),
    (_P).to_bytes(32, "little"),
    (_P + 1).to_bytes(32, "little"),
    (1 | 1 << 255).to_bytes(32, "little"),
]


def _register_with(ledger: Ledger, identity: Identity, enc_key: bytes) -> client.SignedTx:
    """A patient's registration naming `enc_key` (not their identity's) as their x25519 key."""
    body = encode(RegisterPatientBody(enc_key))
    return sign_tx(
        identity,
        chain_id=CHAIN_ID,
        kind=KIND_REGISTER_PATIENT,
        body=body,
        nonce=ledger.nonce(),
        timestamp_ms=ledger.next_time_ms,
    )


@pytest.mark.parametrize("enc_key", LOW_ORDER_ENC_KEYS, ids=lambda k: k.hex()[:8])
def test_invalid_register_patient_with_a_low_order_enc_key(world: World, enc_key: bytes) -> None:
    assert not is_usable_enc_key(enc_key)
    mallory = make_identity("mallory")
    world.ledger.submit_rejected(_register_with(world.ledger, mallory, enc_key), "health.enc_key_unusable")
    # A usable key still registers, whatever its high bit (X25519 ignores it).
    fine = bytes(mallory.public.enc_key[:31]) + bytes([mallory.public.enc_key[31] | 0x80])
    assert is_usable_enc_key(fine)
    world.ledger.submit_ok(_register_with(world.ledger, mallory, fine))


def test_a_layout_2_chain_still_accepts_a_low_order_enc_key_as_it_did() -> None:
    # Its replay must give the roots it was certified with.
    ledger = Ledger(layout=STATE_LAYOUT_GRANT_EXPIRY)
    mallory = make_identity("mallory")
    ledger.submit_ok(_register_with(ledger, mallory, bytes(32)))
    patient = st.get_patient(ledger.state, compute_patient_id(mallory.public.sign_key))
    assert patient is not None
    assert patient.enc_key == bytes(32)


def test_invalid_record_by_unregistered_author(world: World) -> None:
    w = world
    encrypted = encrypt_record(
        make_observation(1),
        patient_id=w.patient_id,
        author=w.stranger.public.sign_key,
        readers=[w.patient.public.enc_key, w.stranger.public.enc_key],
    )
    w.ledger.submit_rejected(
        w.ledger.sign(client.build_add_record, w.stranger, w.patient_id, encrypted), "health.not_institution"
    )


def test_invalid_record_by_insurer(world: World) -> None:
    w = world
    encrypted = encrypt_record(
        make_observation(1),
        patient_id=w.patient_id,
        author=w.insurer.public.sign_key,
        readers=[w.patient.public.enc_key, w.insurer.public.enc_key],
    )
    w.ledger.submit_rejected(
        w.ledger.sign(client.build_add_record, w.insurer, w.patient_id, encrypted), "health.author_role"
    )


def test_invalid_record_for_unregistered_patient(world: World) -> None:
    w = world
    other = make_identity("patient-unregistered")
    other_id = compute_patient_id(other.public.sign_key)
    encrypted = encrypt_record(
        make_observation(1),
        patient_id=other_id,
        author=w.clinic.public.sign_key,
        readers=[other.public.enc_key, w.clinic.public.enc_key],
    )
    w.ledger.submit_rejected(
        w.ledger.sign(client.build_add_record, w.clinic, other_id, encrypted), "health.patient_unknown"
    )


def test_invalid_record_not_sealed_for_patient(world: World) -> None:
    w = world
    encrypted = encrypt_record(
        make_observation(1),
        patient_id=w.patient_id,
        author=w.clinic.public.sign_key,
        readers=[w.clinic.public.enc_key],
    )
    w.ledger.submit_rejected(
        w.ledger.sign(client.build_add_record, w.clinic, w.patient_id, encrypted), "health.record_readers"
    )


def test_invalid_grant_by_stranger(world: World) -> None:
    w = world
    inquiry_id = request(w, w.hospital)
    w.ledger.submit_rejected(
        w.ledger.sign(client.build_grant, w.stranger, inquiry_id, []), "health.not_authorised"
    )


def test_invalid_grant_of_record_outside_scope(world: World) -> None:
    w = world
    record = add_record(w, w.clinic, make_observation(1))
    inquiry_id = request(w, w.hospital, types=("Immunization",))
    keys = reseal_record_keys([record], w.patient, w.hospital.public.enc_key)
    w.ledger.submit_rejected(
        w.ledger.sign(client.build_grant, w.patient, inquiry_id, keys), "health.grant_records"
    )


def test_invalid_grant_of_expired_inquiry(world: World) -> None:
    w = world
    inquiry_id = request(w, w.hospital, ttl_ms=5_000)
    w.ledger.advance(10_000)
    w.ledger.submit_rejected(
        w.ledger.sign(client.build_grant, w.patient, inquiry_id, []), "health.inquiry_expired"
    )


def test_invalid_second_decision(world: World) -> None:
    w = world
    inquiry_id = request(w, w.hospital)
    w.ledger.submit_ok(w.ledger.sign(client.build_deny, w.patient, inquiry_id))
    w.ledger.submit_rejected(
        w.ledger.sign(client.build_grant, w.patient, inquiry_id, []), "health.inquiry_closed"
    )


def test_invalid_purpose_for_role(world: World) -> None:
    w = world
    signed = w.ledger.sign(
        client.build_request_access,
        w.insurer,
        w.patient_id,
        client.make_scope(),
        "TREAT",
        w.ledger.next_time_ms + HOUR_MS,
        "claim",
        patient_enc_key=w.patient.public.enc_key,
    )
    w.ledger.submit_rejected(signed, "health.purpose")


def test_invalid_inquiry_expiring_in_the_past(world: World) -> None:
    w = world
    signed = w.ledger.sign(
        client.build_request_access,
        w.hospital,
        w.patient_id,
        client.make_scope(),
        "TREAT",
        GENESIS_TIME_MS,
        "x",
        patient_enc_key=w.patient.public.enc_key,
    )
    w.ledger.submit_rejected(signed, "health.expiry")


def test_invalid_read_receipt_without_live_grant(world: World) -> None:
    w = world
    record = add_record(w, w.clinic, make_observation(1))
    inquiry_id = request(w, w.hospital, ttl_ms=5_000)
    grant_id = grant(w, inquiry_id, [record], w.hospital)
    w.ledger.submit_rejected(
        w.ledger.sign(client.build_read_receipt, w.research, grant_id, [record.record_id]),
        "health.not_grantee",
    )
    w.ledger.advance(10_000)
    w.ledger.submit_rejected(
        w.ledger.sign(client.build_read_receipt, w.hospital, grant_id, [record.record_id]),
        "health.grant_expired",
    )


def test_invalid_read_receipt_for_uncovered_record(world: World) -> None:
    w = world
    granted = add_record(w, w.clinic, make_observation(1))
    other = add_record(w, w.clinic, make_observation(2))
    grant_id = grant(w, request(w, w.hospital), [granted], w.hospital)
    w.ledger.submit_rejected(
        w.ledger.sign(client.build_read_receipt, w.hospital, grant_id, [other.record_id]),
        "health.receipt_records",
    )


def test_invalid_representative_added_by_other(world: World) -> None:
    w = world
    rep = make_identity("rep")
    w.ledger.submit_rejected(
        w.ledger.sign(client.build_add_representative, rep, w.patient_id, rep.public.sign_key),
        "health.not_patient",
    )


def test_genesis_round_trip_and_determinism() -> None:
    a, b = Ledger(), Ledger()
    assert a.state_root == b.state_root
    assert a.state.data == b.state.data
    assert decode_genesis(b"").institutions == ()
    with pytest.raises(InvalidGenesisError):
        decode_genesis(b"\x80")
    patient = make_identity("patient-z")
    signed = a.sign(client.build_register_patient, patient)
    a.submit_ok(signed)
    b.sign(client.build_register_patient, patient)  # keep nonces in step
    b.submit_ok(signed)
    assert a.state_root == b.state_root
    assert HealthApp.get_patient_by_key(a.state, patient.public.sign_key) is not None


# --- issue 9 [TRUST] ----------------------------------------------------------------------------


def test_trust_6_republished_ciphertext_is_refused_by_the_rules(world: World) -> None:
    """A hospital sealed into a clinic's record re-publishes its ciphertext and commitment as its own.

    It keeps only the wrapped keys the rules allow it (the patient's and its own): on the old rules
    the copy was accepted and opened for the patient, commitment and all, under the hospital's name.
    """
    w = world
    grant_id = grant(w, request(w, w.hospital, types=("Observation",)), [], w.hospital)
    assert st.get_grant(w.ledger.state, grant_id) is not None
    original = add_record(w, w.clinic, make_observation(64), w.hospital)
    kept = tuple(wk for wk in original.envelope.wrapped_keys if wk.reader != w.clinic.public.enc_key)
    envelope = dataclasses.replace(original.envelope, wrapped_keys=kept)
    body = AddRecordBody(w.patient_id, original.record_type, original.commitment, envelope)
    copy = w.ledger.sign(client.build_tx, w.hospital, KIND_ADD_RECORD, body)
    w.ledger.submit_rejected(copy, "health.record_duplicate")
    # Supersession is no way around it: the hospital "correcting" its own record with the copy.
    own = add_record(w, w.hospital, make_observation(65))
    superseding = SupersedeRecordBody(own.record_id, body)
    w.ledger.submit_rejected(
        w.ledger.sign(client.build_tx, w.hospital, KIND_SUPERSEDE_RECORD, superseding),
        "health.record_duplicate",
    )
    # Had it been accepted (as on the old rules), no reader would open it: see
    # test_fhir_records.test_trust_6_republished_record_is_refused_by_every_reader.
    as_hospitals = dataclasses.replace(original, author=w.hospital.public.sign_key, envelope=envelope)
    with pytest.raises(RecordBindingError):
        open_record(as_hospitals, w.patient)


REASON_PHI = "Jane Doe DOB 1980-01-02 MRN-4417: HIV+ follow-up"


def test_trust_10_reason_is_sealed_for_patient_and_requester_only(world: World) -> None:
    w = world
    signed = w.ledger.sign(
        client.build_request_access,
        w.hospital,
        w.patient_id,
        client.make_scope(),
        "TREAT",
        w.ledger.next_time_ms + HOUR_MS,
        REASON_PHI,
        patient_enc_key=w.patient.public.enc_key,
    )
    tx, raw, inquiry_id = signed
    w.ledger.submit_ok(signed)
    # Nowhere in the clear: not in the tx, not in any state value any node stores.
    secret = REASON_PHI.encode()
    assert secret not in raw
    assert b"Jane Doe" not in raw
    assert all(b"Jane Doe" not in value for value in w.ledger.state.data.values())
    inquiry = st.get_inquiry(w.ledger.state, inquiry_id)
    assert inquiry is not None
    # The patient and the requester read it; nobody else does.
    assert open_reason(inquiry, w.patient) == REASON_PHI
    assert open_reason(inquiry, w.hospital) == REASON_PHI
    for outsider in (w.clinic, w.insurer, w.stranger):
        with pytest.raises(ReasonUnreadableError):
            open_reason(inquiry, outsider)
    # Its ciphertext has one size whatever the reason, so not even the length shows.
    short = client.build_request_access(
        w.hospital,
        w.patient_id,
        client.make_scope(),
        "TREAT",
        w.ledger.next_time_ms + HOUR_MS,
        "x",
        patient_enc_key=w.patient.public.enc_key,
        chain_id=CHAIN_ID,
    )
    assert len(short[0].body) == len(tx.body)
    # Copied into another institution's inquiry, it does not open (bound to patient and requester).
    moved = dataclasses.replace(inquiry, requester=w.clinic.public.sign_key)
    with pytest.raises(ReasonUnreadableError):
        open_reason(moved, w.patient)


def _inquiry_with_reason_readers(w: World, readers: list[bytes]) -> RequestAccessBody:
    envelope = seal_envelope(
        bytes(REASON_PADDED_BYTES),
        readers,
        associated_data=compute_reason_associated_data(w.patient_id, w.hospital.public.sign_key),
    )
    return RequestAccessBody(
        w.patient_id,
        client.make_scope(),
        "TREAT",
        w.ledger.next_time_ms + HOUR_MS,
        SealedReason.from_envelope(envelope),
    )


@pytest.mark.parametrize(
    ("readers", "rule"),
    [
        # A third reader: a reason names at most two, so the body does not even decode.
        (("patient", "hospital", "insurer"), "health.body"),
        (("hospital",), "health.reason"),
        (("insurer", "hospital"), "health.reason"),
        (("patient", "insurer"), "health.reason"),
    ],
)
def test_trust_10_invalid_reason_sealed_for_others(world: World, readers: tuple[str, ...], rule: str) -> None:
    w = world
    keys = {
        "patient": w.patient.public.enc_key,
        "hospital": w.hospital.public.enc_key,
        "insurer": w.insurer.public.enc_key,
    }
    body = _inquiry_with_reason_readers(w, [keys[r] for r in readers])
    w.ledger.submit_rejected(w.ledger.sign(client.build_tx, w.hospital, KIND_REQUEST_ACCESS, body), rule)


def test_trust_10_invalid_reason_is_refused_before_sealing() -> None:
    for reason in ("", "x" * 201, "line\nbreak"):
        with pytest.raises(InvalidReasonError):
            validate_reason(reason)
    assert validate_reason("Überweisung zur Kontrolle") == "Überweisung zur Kontrolle"
