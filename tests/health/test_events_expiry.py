"""Grant expiry events (issue 11, ADR 0015): derived from the blocks and the grant expiry index.

A grant expires in the first block whose time reaches its `expires_ms`; that block yields one
`grant.expired`, after its txs, for the patient and the grantee; a grant revoked before it expired
yields none; the list is the same whenever it is derived (at later heights, after a revocation
that comes too late to matter). Grants in parts are indexed like one-tx grants. A layout-1 chain
(every chain made before the index) writes exactly what it wrote before and derives no expiry.
"""

from __future__ import annotations

import dataclasses

from health_testkit import BLOCK_INTERVAL_MS, DictState, Ledger, make_identity, make_observation

from medledger.chain.app import OverlayState
from medledger.chain.codec import encode
from medledger.crypto import Identity
from medledger.health import client
from medledger.health import state as st
from medledger.health.app import decode_genesis, encode_genesis
from medledger.health.events import (
    EVENT_GRANT_EXPIRED,
    EVENT_GRANT_REVOKED,
    EXPIRY_TX_INDEX_FIRST,
    TX_INDEX_MAX,
    LedgerEvent,
    compute_seq,
)
from medledger.health.records import encrypt_record, reseal_record_keys
from medledger.health.types import (
    STATE_LAYOUT_GRANT_EXPIRY,
    STATE_LAYOUT_LATEST,
    STATE_LAYOUT_V1,
    HealthGenesis,
    HealthGenesisV1,
    compute_patient_id,
)

TTL_MS = 5 * BLOCK_INTERVAL_MS


@dataclasses.dataclass
class Story:
    ledger: Ledger
    patient: Identity
    patient_id: bytes
    clinic: Identity
    hospital: Identity
    record_id: bytes


def start(layout: int = STATE_LAYOUT_LATEST) -> Story:
    ledger = Ledger(layout=layout)
    patient, clinic, hospital = make_identity("patient-x"), make_identity("clinic"), make_identity("hospital")
    ledger.submit_ok(ledger.sign(client.build_register_patient, patient))
    patient_id = compute_patient_id(patient.public.sign_key)
    encrypted = encrypt_record(
        make_observation(70),
        patient_id=patient_id,
        author=clinic.public.sign_key,
        readers=[patient.public.enc_key, clinic.public.enc_key],
    )
    record_id = ledger.submit_ok(ledger.sign(client.build_add_record, clinic, patient_id, encrypted)).tx_id
    return Story(ledger, patient, patient_id, clinic, hospital, record_id)


def inquire(s: Story, ttl_ms: int = TTL_MS) -> tuple[bytes, int]:
    """An inquiry by the hospital, open for `ttl_ms` from the next block; (id, expires_ms)."""
    expires_ms = s.ledger.next_time_ms + ttl_ms
    signed = s.ledger.sign(
        client.build_request_access,
        s.hospital,
        s.patient_id,
        client.make_scope(record_types=("Observation",)),
        "TREAT",
        expires_ms,
        "synthetic check-up",
        patient_enc_key=s.patient.public.enc_key,
    )
    return s.ledger.submit_ok(signed).tx_id, expires_ms


def grant(s: Story, inquiry_id: bytes) -> bytes:
    record = st.get_record(s.ledger.state, s.record_id)
    assert record is not None
    keys = reseal_record_keys([record], s.patient, s.hospital.public.enc_key)
    return s.ledger.submit_ok(s.ledger.sign(client.build_grant, s.patient, inquiry_id, keys)).tx_id


def pass_time(s: Story, until_ms: int) -> None:
    """Commit empty blocks until a block's time has reached `until_ms`."""
    while s.ledger.time_ms < until_ms:
        s.ledger.commit_empty()


def expiries(events: list[LedgerEvent]) -> list[LedgerEvent]:
    return [e for e in events if e.kind == EVENT_GRANT_EXPIRED]


def test_a_grant_expires_once_for_the_patient_and_the_grantee() -> None:
    s = start()
    inquiry_id, expires_ms = inquire(s)
    grant_id = grant(s, inquiry_id)
    assert expiries(s.ledger.list_events()) == []  # not yet: the grant is live
    pass_time(s, expires_ms + 10 * BLOCK_INTERVAL_MS)

    events = s.ledger.list_events()
    (expired,) = expiries(events)
    # The first block whose time reached the expiry, after that block's txs.
    block = next(b for b in s.ledger.blocks if b.time_ms >= expires_ms)
    assert block.parent_time_ms < expires_ms <= block.time_ms
    assert (expired.height, expired.tx_index, expired.event_index) == (block.height, EXPIRY_TX_INDEX_FIRST, 0)
    assert expired.time_ms == block.time_ms
    assert expired.to_payload() == {
        "seq": compute_seq(block.height, EXPIRY_TX_INDEX_FIRST, 0),
        "kind": EVENT_GRANT_EXPIRED,
        "height": block.height,
        "tx_index": EXPIRY_TX_INDEX_FIRST,
        "event_index": 0,
        "tx_id": grant_id.hex(),
        "time_ms": block.time_ms,
        "grant_id": grant_id.hex(),
        "inquiry_id": inquiry_id.hex(),
    }
    # Routed to the patient and to the grantee, and to nobody else.
    assert expired.is_for_patient(s.patient_id)
    assert expired.is_for_institution(s.hospital.public.sign_key)
    assert not expired.is_for_institution(s.clinic.public.sign_key)
    # Numbers still sort in chain order.
    assert [e.seq for e in events] == sorted({e.seq for e in events})

    # A revocation after the expiry changes nothing already derived (its own event comes after).
    s.ledger.submit_ok(s.ledger.sign(client.build_revoke, s.patient, grant_id))
    s.ledger.commit_empty()
    later = s.ledger.list_events()
    assert later[: len(events)] == events
    assert [e.kind for e in later[len(events) :]] == [EVENT_GRANT_REVOKED]


def test_a_grant_revoked_before_its_expiry_does_not_expire() -> None:
    s = start()
    revoked_inquiry, revoked_expires = inquire(s)
    revoked_id = grant(s, revoked_inquiry)
    kept_inquiry, kept_expires = inquire(s)
    kept_id = grant(s, kept_inquiry)
    s.ledger.submit_ok(s.ledger.sign(client.build_revoke, s.patient, revoked_id))
    assert revoked_expires < kept_expires
    pass_time(s, kept_expires + BLOCK_INTERVAL_MS)
    (expired,) = expiries(s.ledger.list_events())
    assert dict(expired.ids)["grant_id"] == kept_id
    assert revoked_id != kept_id


def test_grants_expiring_in_one_block_are_numbered_in_order_of_expiry() -> None:
    s = start()
    first_inquiry, first_expires = inquire(s, TTL_MS + 3 * BLOCK_INTERVAL_MS)
    second_inquiry, second_expires = inquire(s, TTL_MS)
    first_id, second_id = grant(s, first_inquiry), grant(s, second_inquiry)
    # One long gap: both expire in the same block.
    s.ledger.advance(10 * TTL_MS)
    s.ledger.commit_empty()
    both = expiries(s.ledger.list_events())
    assert [dict(e.ids)["grant_id"] for e in both] == [
        gid for _, gid in sorted([(first_expires, first_id), (second_expires, second_id)])
    ]
    assert {e.height for e in both} == {s.ledger.height}
    assert [(e.tx_index, e.event_index) for e in both] == [
        (EXPIRY_TX_INDEX_FIRST, 0),
        (EXPIRY_TX_INDEX_FIRST, 1),
    ]
    assert EXPIRY_TX_INDEX_FIRST <= TX_INDEX_MAX


def test_a_grant_in_parts_expires_like_a_one_tx_grant() -> None:
    s = start()
    inquiry_id, expires_ms = inquire(s)
    record = st.get_record(s.ledger.state, s.record_id)
    assert record is not None
    keys = reseal_record_keys([record], s.patient, s.hospital.public.enc_key)
    manifest, parts = client.build_grant_in_parts(
        s.patient, inquiry_id, keys, chain_id="medledger-health-test", timestamp_ms=s.ledger.next_time_ms
    )
    grant_id = s.ledger.submit_ok(manifest).tx_id
    for part in parts:
        s.ledger.submit_ok(part)
    pass_time(s, expires_ms)
    (expired,) = expiries(s.ledger.list_events())
    assert dict(expired.ids) == {"grant_id": grant_id, "inquiry_id": inquiry_id}
    assert expired.tx_id == grant_id


def test_a_layout_1_chain_writes_and_derives_what_it_did_before() -> None:
    s = start(STATE_LAYOUT_V1)
    inquiry_id, expires_ms = inquire(s)
    grant(s, inquiry_id)
    pass_time(s, expires_ms + BLOCK_INTERVAL_MS)
    # No layout key and no expiry index: the writes (so the roots) of an old chain are unchanged.
    assert not [k for k in s.ledger.state.data if k.startswith((b"h1/layout", b"h1/gexp"))]
    assert expiries(s.ledger.list_events()) == []
    # Its genesis is the pre-layout encoding, byte for byte, and reads back as layout 1.
    institutions = tuple(s.ledger.institutions.values())
    old_bytes = encode(HealthGenesisV1(institutions))
    assert encode_genesis(HealthGenesis(institutions, STATE_LAYOUT_V1)) == old_bytes
    assert decode_genesis(old_bytes) == HealthGenesis(institutions, STATE_LAYOUT_V1)
    assert decode_genesis(b"").layout == STATE_LAYOUT_V1
    # A layout-2 genesis reads back as layout 2 and declares it in the state.
    new_bytes = encode_genesis(HealthGenesis(institutions, STATE_LAYOUT_GRANT_EXPIRY))
    assert new_bytes != old_bytes
    assert decode_genesis(new_bytes).layout == STATE_LAYOUT_GRANT_EXPIRY
    # A new chain is of the latest layout (3: it also writes the expiry index).
    assert decode_genesis(encode_genesis(HealthGenesis(institutions))).layout == STATE_LAYOUT_LATEST
    assert st.get_layout(start(STATE_LAYOUT_LATEST).ledger.state) == STATE_LAYOUT_LATEST
    fresh = start(STATE_LAYOUT_GRANT_EXPIRY)
    assert st.get_layout(fresh.ledger.state) == STATE_LAYOUT_GRANT_EXPIRY
    assert st.get_layout(s.ledger.state) == STATE_LAYOUT_V1


def test_two_nodes_derive_the_same_expiries() -> None:
    """Two ledgers fed the same blocks (node A and node B) derive the same events, at any height."""
    a = start()
    inquiry_id, expires_ms = inquire(a)
    grant(a, inquiry_id)
    pass_time(a, expires_ms + 3 * BLOCK_INTERVAL_MS)
    b = Ledger()
    for block in a.ledger.blocks:
        b.advance(block.time_ms - b.next_time_ms)
        if block.txs:
            ((tx, tx_id, ok),), (raw,) = block.txs, block.raws
            assert b.submit((tx, raw, tx_id)).ok == ok
        else:
            b.commit_empty()
    assert b.state_root == a.ledger.state_root
    assert b.list_events() == a.ledger.list_events()
    assert len(expiries(b.list_events())) == 1


def test_the_expiry_index_window_is_open_below_and_closed_above_across_buckets() -> None:
    state = OverlayState(DictState())
    bucket = st.GRANT_EXPIRY_BUCKET_MS
    expiries_ms = [bucket - 1, bucket, bucket + 1, 3 * bucket, 3 * bucket + 5]
    for index, expires_ms in enumerate(reversed(expiries_ms)):
        st.append_grant_expiry(state, bytes([index]) * 32, expires_ms)
    ids = {expires_ms: bytes([index]) * 32 for index, expires_ms in enumerate(reversed(expiries_ms))}

    def window(after_ms: int, until_ms: int) -> list[int]:
        found = st.list_grant_expiries(state, after_ms, until_ms)
        assert [grant_id for _, grant_id in found] == [ids[t] for t, _ in found]
        return [t for t, _ in found]

    assert window(bucket - 1, bucket) == [bucket]
    assert window(bucket - 2, bucket + 1) == [bucket - 1, bucket, bucket + 1]
    assert window(bucket + 1, 3 * bucket + 4) == [3 * bucket]
    assert window(0, 10 * bucket) == sorted(expiries_ms)
    assert window(3 * bucket + 5, 10 * bucket) == []
    assert window(bucket, bucket) == []
