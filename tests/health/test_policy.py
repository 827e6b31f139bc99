"""The consent policy (`health/policy.py`) on a real in-memory ledger: sealing, read access, who acts
for a patient, and what an institution sees of an audit trail.

Sealing has one rule, asked by the rules (`validate_add_record`) and by the node's API
(`compute_node_record_readers`, what `POST /v1/health/institution/records` seals for). The tests
here show they agree: what a node seals for is accepted by the rules at any block time within the
clock margin, and a reader set the rules refuse is refused by the policy function with the same
typed error (`TxRejectedError`, rule `health.record_readers`), through `Ledger.submit_rejected`,
which also asserts the refused tx changed nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import pytest
from health_testkit import Ledger, make_condition, make_identity, make_observation

from medledger.chain.errors import TxRejectedError
from medledger.crypto import Identity
from medledger.health import client, policy
from medledger.health import state as st
from medledger.health.records import encrypt_record, reseal_record_keys
from medledger.health.types import (
    EVENT_DENY,
    EVENT_GRANT,
    EVENT_INQUIRY,
    EVENT_READ,
    EVENT_REVOKE,
    GrantState,
    Institution,
    PatientState,
    RecordState,
    compute_patient_id,
)

HOUR_MS = 3_600_000
RECORD_READERS_RULE = "health.record_readers"


@dataclasses.dataclass
class World:
    ledger: Ledger
    patient: Identity
    patient_id: bytes
    clinic: Identity
    hospital: Identity
    insurer: Identity
    research: Identity

    @property
    def patient_state(self) -> PatientState:
        patient = st.get_patient(self.ledger.state, self.patient_id)
        assert patient is not None
        return patient

    def institution(self, name: str) -> Institution:
        return self.ledger.institutions[name]


@pytest.fixture
def world() -> World:
    ledger = Ledger()
    patient = make_identity("policy-patient")
    ledger.submit_ok(ledger.sign(client.build_register_patient, patient))
    return World(
        ledger,
        patient,
        compute_patient_id(patient.public.sign_key),
        make_identity("clinic"),
        make_identity("hospital"),
        make_identity("insurer"),
        make_identity("research"),
    )


def add_record(
    w: World, author: Identity, resource: dict[str, object], readers: Iterable[bytes]
) -> RecordState:
    encrypted = encrypt_record(
        resource, patient_id=w.patient_id, author=author.public.sign_key, readers=sorted(set(readers))
    )
    outcome = w.ledger.submit_ok(w.ledger.sign(client.build_add_record, author, w.patient_id, encrypted))
    record = st.get_record(w.ledger.state, outcome.tx_id)
    assert record is not None
    return record


def sign_record(w: World, author: Identity, readers: Iterable[bytes]) -> client.SignedTx:
    encrypted = encrypt_record(
        make_observation(70), patient_id=w.patient_id, author=author.public.sign_key, readers=sorted(readers)
    )
    return w.ledger.sign(client.build_add_record, author, w.patient_id, encrypted)


def request(
    w: World,
    requester: Identity,
    *,
    purpose: str = "TREAT",
    ttl_ms: int = HOUR_MS,
    types: tuple[str, ...] = (),
    from_ms: int = 0,
) -> bytes:
    scope = client.make_scope(record_types=types, from_ms=from_ms)
    signed = w.ledger.sign(
        client.build_request_access,
        requester,
        w.patient_id,
        scope,
        purpose,
        w.ledger.next_time_ms + ttl_ms,
        "synthetic follow-up",
        patient_enc_key=w.patient.public.enc_key,
    )
    return w.ledger.submit_ok(signed).tx_id


def grant(
    w: World, inquiry_id: bytes, grantee: Identity, records: list[RecordState] | None = None
) -> GrantState:
    keys = reseal_record_keys(records or [], w.patient, grantee.public.enc_key)
    grant_id = w.ledger.submit_ok(w.ledger.sign(client.build_grant, w.patient, inquiry_id, keys)).tx_id
    stored = st.get_grant(w.ledger.state, grant_id)
    assert stored is not None
    return stored


def node_readers(w: World, author: str, record_type: str, now_ms: int) -> frozenset[bytes]:
    return policy.compute_node_record_readers(
        w.ledger.state, w.patient_state, w.institution(author), record_type, now_ms
    )


# --- sealing ------------------------------------------------------------------------------------


def test_record_readers_are_patient_author_and_covering_grantees(world: World) -> None:
    w = world
    grant(w, request(w, w.hospital, types=("Observation",)), w.hospital)
    grant(w, request(w, w.insurer, purpose="HPAYMT", types=("Condition",)), w.insurer)
    now = w.ledger.next_time_ms
    base = {w.patient.public.enc_key, w.clinic.public.enc_key}
    assert node_readers(w, "clinic", "Observation", now) == {*base, w.hospital.public.enc_key}
    assert node_readers(w, "clinic", "Condition", now) == {*base, w.insurer.public.enc_key}
    assert node_readers(w, "clinic", "Immunization", now) == base


def test_sealing_margin_leaves_out_a_grant_about_to_expire(world: World) -> None:
    w = world
    short = grant(w, request(w, w.research, purpose="HRESCH", ttl_ms=40_000), w.research)
    now = w.ledger.next_time_ms
    assert short.expires_ms - now < policy.SEAL_MARGIN_MS
    # The rules, at this very block time, would still accept it ...
    at_block = policy.compute_record_readers(
        w.ledger.state,
        w.patient_state,
        w.institution("clinic"),
        "Observation",
        record_id=b"",
        time_ms=now,
    )
    assert w.research.public.enc_key in at_block
    w.ledger.submit_ok(sign_record(w, w.clinic, at_block))
    # ... but a node, whose clock may be a margin off the block's time, does not seal for it.
    assert w.research.public.enc_key not in node_readers(w, "clinic", "Observation", now)


def test_sealing_margin_leaves_out_a_scope_window_not_yet_open(world: World) -> None:
    w = world
    opens_ms = w.ledger.next_time_ms + 10_000
    grant(w, request(w, w.hospital, from_ms=opens_ms), w.hospital)
    assert w.hospital.public.enc_key not in node_readers(w, "clinic", "Observation", opens_ms)
    later = opens_ms + policy.SEAL_MARGIN_MS
    assert w.hospital.public.enc_key in node_readers(w, "clinic", "Observation", later)


@pytest.mark.parametrize("clock_offset_ms", [-policy.SEAL_MARGIN_MS, -1, 0, 1, policy.SEAL_MARGIN_MS])
def test_node_readers_are_accepted_by_the_rules_within_the_margin(world: World, clock_offset_ms: int) -> None:
    """The API's sealing and the rules agree: a node whose clock is up to the margin off the block's
    time seals for a set the rules accept in that block (here: several grants of every kind)."""
    w = world
    grant(w, request(w, w.hospital, ttl_ms=HOUR_MS), w.hospital)
    grant(w, request(w, w.research, purpose="HRESCH", ttl_ms=70_000), w.research)
    grant(w, request(w, w.insurer, purpose="HPAYMT", types=("Condition",)), w.insurer)
    block_ms = w.ledger.next_time_ms
    readers = node_readers(w, "clinic", "Observation", block_ms + clock_offset_ms)
    assert w.hospital.public.enc_key in readers
    assert w.insurer.public.enc_key not in readers
    record = add_record(w, w.clinic, make_observation(71), readers)
    assert set(record.envelope.readers) == readers


def test_invalid_record_sealed_for_a_revoked_grantee(world: World) -> None:
    """A reader set the rules refuse is refused by the policy function both sides call, with the
    same typed error, and the node's own choice never includes that reader."""
    w = world
    revoked = grant(w, request(w, w.hospital), w.hospital)
    w.ledger.submit_ok(w.ledger.sign(client.build_revoke, w.patient, revoked.grant_id))
    now = w.ledger.next_time_ms
    readers = {w.patient.public.enc_key, w.clinic.public.enc_key, w.hospital.public.enc_key}
    with pytest.raises(TxRejectedError) as refused:
        policy.validate_record_readers(
            w.ledger.state,
            w.patient_state,
            w.institution("clinic"),
            "Observation",
            readers,
            record_id=b"",
            time_ms=now,
        )
    assert refused.value.rule == RECORD_READERS_RULE
    w.ledger.submit_rejected(sign_record(w, w.clinic, readers), RECORD_READERS_RULE)
    assert w.hospital.public.enc_key not in node_readers(w, "clinic", "Observation", now)


@pytest.mark.parametrize("left_out", ["patient", "author"])
def test_invalid_record_not_sealed_for_patient_or_author(world: World, left_out: str) -> None:
    w = world
    keep = w.clinic if left_out == "patient" else w.patient
    readers = {keep.public.enc_key, w.hospital.public.enc_key}
    with pytest.raises(TxRejectedError) as refused:
        policy.validate_record_readers(
            w.ledger.state,
            w.patient_state,
            w.institution("clinic"),
            "Observation",
            readers,
            record_id=b"",
            time_ms=w.ledger.next_time_ms,
        )
    assert refused.value.rule == RECORD_READERS_RULE
    w.ledger.submit_rejected(sign_record(w, w.clinic, readers), RECORD_READERS_RULE)


def test_invalid_record_sealed_for_a_grantee_of_another_record_type(world: World) -> None:
    w = world
    grant(w, request(w, w.insurer, purpose="HPAYMT", types=("Condition",)), w.insurer)
    readers = {w.patient.public.enc_key, w.clinic.public.enc_key, w.insurer.public.enc_key}
    with pytest.raises(TxRejectedError) as refused:
        policy.validate_record_readers(
            w.ledger.state,
            w.patient_state,
            w.institution("clinic"),
            "Observation",
            readers,
            record_id=b"",
            time_ms=w.ledger.next_time_ms,
        )
    assert refused.value.rule == RECORD_READERS_RULE
    w.ledger.submit_rejected(sign_record(w, w.clinic, readers), RECORD_READERS_RULE)


def test_author_roles() -> None:
    assert policy.is_author_role("clinic")
    assert policy.is_author_role("hospital")
    assert not policy.is_author_role("insurer")
    assert not policy.is_author_role("research")


# --- reads --------------------------------------------------------------------------------------


def test_read_access_of_author_grantee_and_stranger(world: World) -> None:
    w = world
    base = [w.patient.public.enc_key, w.clinic.public.enc_key]
    record = add_record(w, w.clinic, make_observation(60), base)
    given = grant(w, request(w, w.hospital), w.hospital, [record])
    now = w.ledger.next_time_ms
    state = w.ledger.state
    assert policy.get_read_access(state, w.institution("clinic"), record, now) == policy.ReadAccess(
        policy.RecordAccess.AUTHOR, None
    )
    assert policy.get_read_access(state, w.institution("hospital"), record, now) == policy.ReadAccess(
        policy.RecordAccess.GRANT, given
    )
    assert policy.get_read_access(state, w.institution("research"), record, now) is None
    # Expired: no access, and the read receipt the rules would refuse is never cited.
    assert policy.get_read_access(state, w.institution("hospital"), record, given.expires_ms) is None


def test_read_access_ends_with_revocation(world: World) -> None:
    w = world
    record = add_record(
        w, w.clinic, make_observation(61), [w.patient.public.enc_key, w.clinic.public.enc_key]
    )
    given = grant(w, request(w, w.hospital), w.hospital, [record])
    w.ledger.submit_ok(w.ledger.sign(client.build_revoke, w.patient, given.grant_id))
    assert (
        policy.get_read_access(w.ledger.state, w.institution("hospital"), record, w.ledger.next_time_ms)
        is None
    )


def test_read_grant_is_the_covering_grant_expiring_last(world: World) -> None:
    w = world
    record = add_record(
        w, w.clinic, make_observation(62), [w.patient.public.enc_key, w.clinic.public.enc_key]
    )
    grant(w, request(w, w.hospital, ttl_ms=HOUR_MS), w.hospital, [record])
    longer = grant(w, request(w, w.hospital, ttl_ms=2 * HOUR_MS), w.hospital, [record])
    grant(w, request(w, w.hospital, ttl_ms=3 * HOUR_MS), w.hospital)  # carries no key for it
    now = w.ledger.next_time_ms
    assert policy.get_read_grant(w.ledger.state, w.hospital.public.sign_key, record, now) == longer


def test_a_grant_covers_records_sealed_for_its_grantee(world: World) -> None:
    w = world
    given = grant(w, request(w, w.hospital, types=("Observation",)), w.hospital)
    sealed = add_record(
        w, w.clinic, make_observation(63), node_readers(w, "clinic", "Observation", w.ledger.next_time_ms)
    )
    other = add_record(
        w,
        w.clinic,
        make_condition("synthetic"),
        node_readers(w, "clinic", "Condition", w.ledger.next_time_ms),
    )
    assert policy.is_readable_under_grant(given, sealed)
    assert not policy.is_readable_under_grant(given, other)


# --- who acts for a patient ---------------------------------------------------------------------


def test_patient_signers(world: World) -> None:
    w = world
    rep = make_identity("policy-representative")
    w.ledger.submit_ok(
        w.ledger.sign(client.build_add_representative, w.patient, w.patient_id, rep.public.sign_key)
    )
    state = w.ledger.state
    assert policy.is_patient_signer(state, w.patient.public.sign_key, w.patient_id)
    assert policy.is_patient_signer(state, rep.public.sign_key, w.patient_id)
    assert not policy.is_patient_signer(state, w.clinic.public.sign_key, w.patient_id)
    assert not policy.is_patient_signer(state, w.patient.public.sign_key, bytes(32))
    w.ledger.submit_ok(
        w.ledger.sign(client.build_remove_representative, w.patient, w.patient_id, rep.public.sign_key)
    )
    assert not policy.is_patient_signer(w.ledger.state, rep.public.sign_key, w.patient_id)


# --- audit --------------------------------------------------------------------------------------


def test_institution_audit_shows_its_own_trail_only(world: World) -> None:
    w = world
    record = add_record(
        w, w.clinic, make_observation(64), [w.patient.public.enc_key, w.clinic.public.enc_key]
    )
    by_hospital = request(w, w.hospital)
    by_research = request(w, w.research, purpose="HRESCH")
    given = grant(w, by_hospital, w.hospital, [record])
    w.ledger.submit_ok(w.ledger.sign(client.build_deny, w.patient, by_research))
    w.ledger.submit_ok(
        w.ledger.sign(client.build_read_receipt, w.hospital, given.grant_id, [record.record_id])
    )
    w.ledger.submit_ok(w.ledger.sign(client.build_revoke, w.patient, given.grant_id))
    state = w.ledger.state

    def seen(who: Identity) -> list[tuple[str, bytes]]:
        events = policy.get_institution_audit(state, w.patient_id, who.public.sign_key)
        return [(e.event, e.subject_id) for e in events]

    assert seen(w.hospital) == [
        (EVENT_INQUIRY, by_hospital),
        (EVENT_GRANT, by_hospital),
        (EVENT_READ, given.grant_id),
        (EVENT_REVOKE, given.grant_id),
    ]
    assert seen(w.research) == [(EVENT_INQUIRY, by_research), (EVENT_DENY, by_research)]
    assert seen(w.clinic) == []
    assert len(policy.get_audit_events(state, w.patient_id)) == 6


def test_inquiries_by_requester(world: World) -> None:
    w = world
    first = request(w, w.hospital)
    second = request(w, w.research, purpose="HRESCH")
    state = w.ledger.state
    assert [i.inquiry_id for i in policy.get_inquiries(state, w.patient_id)] == [first, second]
    assert [i.inquiry_id for i in policy.get_inquiries(state, w.patient_id, w.research.public.sign_key)] == [
        second
    ]
    assert policy.get_inquiries(state, w.patient_id, w.clinic.public.sign_key) == []
