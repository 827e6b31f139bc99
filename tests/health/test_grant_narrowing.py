"""A patient narrows an inquiry before granting it (issue 15: "fewer record types, a shorter window,
an earlier expiry"): `health.grant_narrowed` and `health.grant_manifest_narrowed`.

The narrowed terms are the grant's own: they rule which records the grant may carry now, which new
records authoring nodes may seal for the grantee later, which reads it covers and when it expires.
Terms that reach beyond the inquiry are refused, each by its rule, and change nothing.
"""

from __future__ import annotations

import pytest
import test_rules
from health_testkit import make_condition, make_observation
from test_rules import HOUR_MS, World, add_record, request

from medledger.crypto import DecryptionError
from medledger.health import client, policy
from medledger.health import state as st
from medledger.health.records import encrypt_record, open_record, reseal_record_keys
from medledger.health.types import (
    INQUIRY_GRANTED,
    KIND_GRANT_MANIFEST_NARROWED,
    KIND_GRANT_NARROWED,
    GrantTerms,
    InquiryState,
    RecordState,
    Scope,
)

world = test_rules.world  # the rules' own tests' fixture: a registered patient and the institutions


def _inquiry(w: World, inquiry_id: bytes) -> InquiryState:
    inquiry = st.get_inquiry(w.ledger.state, inquiry_id)
    assert inquiry is not None
    return inquiry


def _grant_narrowed(w: World, inquiry_id: bytes, records: list[RecordState], terms: GrantTerms) -> bytes:
    keys = reseal_record_keys(records, w.patient, w.hospital.public.enc_key)
    signed = w.ledger.sign(client.build_grant, w.patient, inquiry_id, keys, terms=terms)
    assert signed[0].kind == KIND_GRANT_NARROWED
    return w.ledger.submit_ok(signed).tx_id


def test_a_grant_narrowed_to_fewer_types_opens_only_those_now_and_later(world: World) -> None:
    w = world
    observation = add_record(w, w.clinic, make_observation(5.4))
    add_record(w, w.clinic, make_condition("asked for, not shared"))
    inquiry_id = request(w, w.hospital, types=("Condition", "Observation"))
    inquiry = _inquiry(w, inquiry_id)
    terms = client.compute_grant_terms(inquiry.scope, inquiry.expires_ms, record_types=["Observation"])
    assert terms is not None
    grant_id = _grant_narrowed(w, inquiry_id, [observation], terms)

    grant = st.get_grant(w.ledger.state, grant_id)
    assert grant is not None
    assert grant.scope.record_types == ("Observation",)
    assert _inquiry(w, inquiry_id).status == INQUIRY_GRANTED
    assert open_record(observation, w.hospital, grant=grant).record_type == "Observation"

    # Later: a new Observation may be sealed for the hospital, a new Condition may not, and the
    # node's own sealing decision agrees (it never seals what its block would refuse).
    patient = st.get_patient(w.ledger.state, w.patient_id)
    clinic = st.get_institution(w.ledger.state, w.clinic.public.sign_key)
    assert patient is not None
    assert clinic is not None
    now = w.ledger.next_time_ms
    assert w.hospital.public.enc_key in policy.compute_record_readers(
        w.ledger.state, patient, clinic, "Observation", record_id=b"", time_ms=now
    )
    assert w.hospital.public.enc_key not in policy.compute_record_readers(
        w.ledger.state, patient, clinic, "Condition", record_id=b"", time_ms=now
    )
    add_record(w, w.clinic, make_observation(6.1), w.hospital)
    sealed_condition = encrypt_record(
        make_condition("not for the hospital"),
        patient_id=w.patient_id,
        author=w.clinic.public.sign_key,
        readers=[w.patient.public.enc_key, w.clinic.public.enc_key, w.hospital.public.enc_key],
    )
    w.ledger.submit_rejected(
        w.ledger.sign(client.build_add_record, w.clinic, w.patient_id, sealed_condition),
        "health.record_readers",
    )


def test_a_grant_carrying_a_record_outside_its_narrowed_scope_is_refused(world: World) -> None:
    w = world
    condition = add_record(w, w.clinic, make_condition("outside the narrowing"))
    inquiry_id = request(w, w.hospital, types=("Condition", "Observation"))
    inquiry = _inquiry(w, inquiry_id)
    terms = client.compute_grant_terms(inquiry.scope, inquiry.expires_ms, record_types=["Observation"])
    keys = reseal_record_keys([condition], w.patient, w.hospital.public.enc_key)
    w.ledger.submit_rejected(
        w.ledger.sign(client.build_grant, w.patient, inquiry_id, keys, terms=terms), "health.grant_records"
    )
    with pytest.raises(DecryptionError):
        open_record(condition, w.hospital)


def test_an_earlier_expiry_ends_the_grant_then(world: World) -> None:
    w = world
    record = add_record(w, w.clinic, make_observation(7.0))
    inquiry_id = request(w, w.hospital, ttl_ms=10 * HOUR_MS)
    inquiry = _inquiry(w, inquiry_id)
    ends = w.ledger.next_time_ms + HOUR_MS
    terms = client.compute_grant_terms(inquiry.scope, inquiry.expires_ms, expires_ms=ends)
    assert terms is not None
    grant_id = _grant_narrowed(w, inquiry_id, [record], terms)
    grant = st.get_grant(w.ledger.state, grant_id)
    assert grant is not None
    assert grant.expires_ms == ends < inquiry.expires_ms
    w.ledger.submit_ok(w.ledger.sign(client.build_read_receipt, w.hospital, grant_id, [record.record_id]))
    w.ledger.advance(HOUR_MS)  # past the narrowed expiry, long before the inquiry's
    w.ledger.submit_rejected(
        w.ledger.sign(client.build_read_receipt, w.hospital, grant_id, [record.record_id]),
        "health.grant_expired",
    )


def _request_window(w: World, from_ms: int, to_ms: int) -> bytes:
    """The hospital asks for Observations written in [from_ms, to_ms], for ten hours."""
    signed = w.ledger.sign(
        client.build_request_access,
        w.hospital,
        w.patient_id,
        client.make_scope(record_types=("Observation",), from_ms=from_ms, to_ms=to_ms),
        "TREAT",
        w.ledger.next_time_ms + 10 * HOUR_MS,
        "synthetic follow-up",
        patient_enc_key=w.patient.public.enc_key,
    )
    return w.ledger.submit_ok(signed).tx_id


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        ("later_expiry", "health.grant_terms"),
        ("past_expiry", "health.grant_terms"),
        ("earlier_window_start", "health.grant_terms"),
        ("later_window_end", "health.grant_terms"),
        ("type_not_asked", "health.grant_terms"),
        ("everything_when_types_asked", "health.grant_terms"),
        ("record_not_asked", "health.grant_terms"),
        ("unsorted_types", "health.scope"),
        ("window_backwards", "health.scope"),
    ],
)
def test_invalid_terms_beyond_the_inquiry_are_refused_and_change_nothing(
    world: World, change: str, rule: str
) -> None:
    w = world
    other = add_record(w, w.clinic, make_condition("a Condition the inquiry does not ask for"))
    add_record(w, w.clinic, make_observation(5.0))
    now = w.ledger.next_time_ms
    inquiry_id = _request_window(w, now - 10 * HOUR_MS, now + 10 * HOUR_MS)
    inquiry = _inquiry(w, inquiry_id)
    asked = inquiry.scope
    types, ids, start, end = asked.record_types, asked.record_ids, asked.from_ms, asked.to_ms
    expires = inquiry.expires_ms
    if change == "later_expiry":
        expires += 1
    elif change == "past_expiry":
        expires = now - 1
    elif change == "earlier_window_start":
        start -= 1
    elif change == "later_window_end":
        end += 1
    elif change == "type_not_asked":
        types = ("Condition", "Observation")
    elif change == "everything_when_types_asked":
        types = ()
    elif change == "record_not_asked":
        ids = (other.record_id,)
    elif change == "unsorted_types":
        types = ("Observation", "Condition")
    elif change == "window_backwards":
        start, end = end, start
    terms = GrantTerms(Scope(types, ids, start, end), expires)
    w.ledger.submit_rejected(w.ledger.sign(client.build_grant, w.patient, inquiry_id, [], terms=terms), rule)
    assert _inquiry(w, inquiry_id).status != INQUIRY_GRANTED


def test_a_narrowed_grant_in_parts_judges_its_parts_by_the_narrowed_scope(world: World) -> None:
    w = world
    observation = add_record(w, w.clinic, make_observation(5.5))
    condition = add_record(w, w.clinic, make_condition("asked for, left out"))
    inquiry_id = request(w, w.hospital, types=("Condition", "Observation"))
    inquiry = _inquiry(w, inquiry_id)
    terms = client.compute_grant_terms(inquiry.scope, inquiry.expires_ms, record_types=["Observation"])
    assert terms is not None
    # A manifest declaring the Condition too: its part is refused by the grant's narrower scope.
    keys = reseal_record_keys([observation, condition], w.patient, w.hospital.public.enc_key)
    manifest = w.ledger.sign(
        client.build_grant_manifest, w.patient, client.compute_grant_manifest(inquiry_id, keys), terms=terms
    )
    assert manifest[0].kind == KIND_GRANT_MANIFEST_NARROWED
    grant_id = w.ledger.submit_ok(manifest).tx_id
    grant = st.get_grant(w.ledger.state, grant_id)
    assert grant is not None
    assert grant.scope == terms.scope
    assert grant.expires_ms == terms.expires_ms
    w.ledger.submit_rejected(
        w.ledger.sign(client.build_grant_part, w.patient, grant_id, 0, keys), "health.grant_records"
    )
