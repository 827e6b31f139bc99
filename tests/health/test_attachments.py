"""Attachments (ADR 0013) in the health layer: the document rule, the key envelope, placement.

A document is a record plus blob references; its blob keys are sealed under the record key, so the
patient, the author and a grantee (through the record key its grant re-seals) open them, and a key
envelope moved to another record or blob opens nowhere. Chunks decrypt only in order and whole.
Every refusal goes through `Ledger.submit_rejected` (named rule, state unchanged).
"""

from __future__ import annotations

import dataclasses
import secrets

import pytest
from health_testkit import Ledger, make_identity, make_observation

from medledger.crypto import Identity
from medledger.health import client
from medledger.health import state as st
from medledger.health.blobs import (
    PLAIN_CHUNK_BYTES,
    AttachmentError,
    BlobDecryptionError,
    build_blob_refs,
    compute_blob_holders,
    compute_blob_url,
    decrypt_chunk,
    decrypt_chunks,
    encrypt_chunk,
    find_blob_ids,
    generate_blob_key,
    open_blob_key,
)
from medledger.health.records import (
    EncryptedRecord,
    compute_binding_of,
    encrypt_record,
    get_record_key,
    open_record,
    reseal_record_keys,
)
from medledger.health.types import ATTACHMENTS_MAX, BlobRef, RecordState, compute_patient_id


@dataclasses.dataclass
class World:
    ledger: Ledger
    patient: Identity
    patient_id: bytes
    clinic: Identity
    hospital: Identity
    insurer: Identity


@pytest.fixture
def world() -> World:
    ledger = Ledger()
    patient = make_identity("patient-docs")
    ledger.submit_ok(ledger.sign(client.build_register_patient, patient))
    return World(
        ledger,
        patient,
        compute_patient_id(patient.public.sign_key),
        make_identity("clinic"),
        make_identity("hospital"),
        make_identity("insurer"),
    )


def letter(urls: list[str]) -> dict[str, object]:
    return {
        "resourceType": "DocumentReference",
        "status": "current",
        "subject": {"reference": "Patient/synthetic-docs"},
        "content": [{"attachment": {"contentType": "application/pdf", "url": url}} for url in urls],
    }


def encrypt(w: World, author: Identity, resource: dict[str, object]) -> EncryptedRecord:
    readers = [w.patient.public.enc_key, author.public.enc_key]
    return encrypt_record(resource, patient_id=w.patient_id, author=author.public.sign_key, readers=readers)


def blob(count: int = 1) -> list[tuple[bytes, int, bytes]]:
    return [(secrets.token_bytes(32), 1000 + n, generate_blob_key()) for n in range(count)]


def add_document(w: World, blobs: list[tuple[bytes, int, bytes]]) -> RecordState:
    encrypted = encrypt(w, w.clinic, letter([compute_blob_url(b[0]) for b in blobs]))
    refs = build_blob_refs(encrypted, w.patient_id, w.clinic, blobs)
    signed = w.ledger.sign(client.build_add_document, w.clinic, w.patient_id, encrypted, refs)
    record = st.get_record(w.ledger.state, w.ledger.submit_ok(signed).tx_id)
    assert record is not None
    return record


def test_a_document_records_its_attachments_and_their_keys_open_for_its_readers_only(world: World) -> None:
    w = world
    blobs = blob(2)
    record = add_document(w, blobs)
    refs = st.get_record_attachments(w.ledger.state, record.record_id)
    assert [r.blob_id for r in refs] == sorted(b[0] for b in blobs)
    entries = st.list_blob_entries(w.ledger.state)
    assert [(e.blob_id, e.record_id, e.author) for e in entries] == [
        (r.blob_id, record.record_id, w.clinic.public.sign_key) for r in refs
    ]
    keys = {b[0]: b[2] for b in blobs}
    binding = compute_binding_of(record)
    for reader in (w.patient, w.clinic):
        open_record(record, reader)
        for ref in refs:
            assert open_blob_key(get_record_key(record, reader), ref, binding) == keys[ref.blob_id]
    # A grantee opens them through the record key its grant re-seals.
    inquiry = w.ledger.submit_ok(
        w.ledger.sign(
            client.build_request_access,
            w.hospital,
            w.patient_id,
            client.make_scope(record_types=("DocumentReference",)),
            "TREAT",
            w.ledger.next_time_ms + 3_600_000,
            "synthetic follow-up",
            patient_enc_key=w.patient.public.enc_key,
        )
    ).tx_id
    sealed = reseal_record_keys([record], w.patient, w.hospital.public.enc_key)
    grant_id = w.ledger.submit_ok(w.ledger.sign(client.build_grant, w.patient, inquiry, sealed)).tx_id
    grant = st.get_grant(w.ledger.state, grant_id)
    assert grant is not None
    hospital_key = get_record_key(record, w.hospital, grant)
    assert {open_blob_key(hospital_key, ref, binding) for ref in refs} == set(keys.values())
    # Someone else's key opens nothing.
    with pytest.raises(BlobDecryptionError):
        open_blob_key(secrets.token_bytes(32), refs[0], binding)


def test_a_key_envelope_moved_to_another_blob_or_record_opens_nowhere(world: World) -> None:
    w = world
    first = add_document(w, blob())
    second = add_document(w, blob())
    (ref,) = st.get_record_attachments(w.ledger.state, first.record_id)
    (other,) = st.get_record_attachments(w.ledger.state, second.record_id)
    with pytest.raises(BlobDecryptionError):  # the same envelope, named for another blob
        open_blob_key(
            get_record_key(first, w.patient),
            dataclasses.replace(ref, blob_id=other.blob_id),
            compute_binding_of(first),
        )
    with pytest.raises(BlobDecryptionError):  # the envelope copied into another record
        open_blob_key(get_record_key(second, w.patient), ref, compute_binding_of(second))


def test_invalid_documents_are_refused_and_change_nothing(world: World) -> None:
    w = world
    blobs = blob(3)
    encrypted = encrypt(w, w.clinic, letter([compute_blob_url(b[0]) for b in blobs]))
    refs = build_blob_refs(encrypted, w.patient_id, w.clinic, blobs)
    for bad in ((), tuple(reversed(refs)), (refs[0], refs[0])):
        signed = w.ledger.sign(client.build_add_document, w.clinic, w.patient_id, encrypted, bad)
        w.ledger.submit_rejected(signed, "health.attachments")
    # An insurer cannot author a document, attachments or not.
    encrypted = encrypt(w, w.insurer, letter([compute_blob_url(blobs[0][0])]))
    refs = build_blob_refs(encrypted, w.patient_id, w.insurer, blobs[:1])
    signed = w.ledger.sign(client.build_add_document, w.insurer, w.patient_id, encrypted, refs)
    w.ledger.submit_rejected(signed, "health.author_role")
    # An attachment of zero bytes does not decode.
    encrypted = encrypt(w, w.clinic, letter([compute_blob_url(blobs[0][0])]))
    (ref,) = build_blob_refs(encrypted, w.patient_id, w.clinic, blobs[:1])
    signed = w.ledger.sign(
        client.build_add_document, w.clinic, w.patient_id, encrypted, (dataclasses.replace(ref, size=0),)
    )
    w.ledger.submit_rejected(signed, "health.body")
    assert st.get_blob_count(w.ledger.state) == 0


def test_a_document_can_supersede_a_record(world: World) -> None:
    w = world
    old_encrypted = encrypt(w, w.clinic, make_observation(5.0))
    old_id = w.ledger.submit_ok(
        w.ledger.sign(client.build_add_record, w.clinic, w.patient_id, old_encrypted)
    ).tx_id
    blobs = blob()
    readers = [w.patient.public.enc_key, w.clinic.public.enc_key]
    encrypted = encrypt_record(
        letter([compute_blob_url(blobs[0][0])]),
        patient_id=w.patient_id,
        author=w.clinic.public.sign_key,
        readers=readers,
        supersedes=old_id,
    )
    refs = build_blob_refs(encrypted, w.patient_id, w.clinic, blobs)
    new_id = w.ledger.submit_ok(
        w.ledger.sign(client.build_add_document, w.clinic, w.patient_id, encrypted, refs)
    ).tx_id
    old = st.get_record(w.ledger.state, old_id)
    assert old is not None
    assert old.superseded_by == new_id
    assert st.get_record_attachments(w.ledger.state, new_id) == refs


def test_chunks_open_only_in_order_and_whole() -> None:
    key = generate_blob_key()
    plain = [secrets.token_bytes(PLAIN_CHUNK_BYTES), secrets.token_bytes(17)]
    sealed = [encrypt_chunk(key, i, p, last=i == 1) for i, p in enumerate(plain)]
    assert list(decrypt_chunks(key, sealed, 2)) == plain
    with pytest.raises(BlobDecryptionError):  # swapped
        list(decrypt_chunks(key, list(reversed(sealed)), 2))
    with pytest.raises(BlobDecryptionError):  # cut after the first chunk: it is not marked last
        list(decrypt_chunks(key, sealed[:1], 1))
    with pytest.raises(BlobDecryptionError):  # fewer chunks than the manifest lists
        list(decrypt_chunks(key, sealed[:1], 2))
    with pytest.raises(BlobDecryptionError):
        decrypt_chunk(generate_blob_key(), 0, sealed[0], last=False)


def test_placement_is_the_author_and_replicas_others_the_same_everywhere() -> None:
    keys = [secrets.token_bytes(32) for _ in range(6)]
    author = keys[0]
    blob_id = secrets.token_bytes(32)
    holders = compute_blob_holders(blob_id, author, keys, 2)
    assert author in holders
    assert len(holders) == 3
    assert compute_blob_holders(blob_id, author, reversed(keys), 2) == holders  # order-free
    assert compute_blob_holders(blob_id, author, keys[:2], 2) == frozenset(keys[:2])  # fewer: all
    spread = {compute_blob_holders(secrets.token_bytes(32), author, keys, 2) for _ in range(40)}
    assert len(spread) > 1  # different blobs land on different nodes


def test_attachment_urls_are_found_anywhere_and_checked() -> None:
    ids = [secrets.token_bytes(32) for _ in range(2)]
    bundle = {
        "resourceType": "Bundle",
        "entry": [{"resource": letter([compute_blob_url(i)])} for i in (*ids, ids[0])],
    }
    assert find_blob_ids(bundle) == ids
    assert find_blob_ids(make_observation(1.0)) == []
    assert find_blob_ids(letter(["https://example.org/a.pdf"])) == []
    for bad in ("urn:medledger:blob:", "urn:medledger:blob:" + "AB" * 32, "urn:medledger:blob:" + "ab" * 33):
        with pytest.raises(AttachmentError):
            find_blob_ids(letter([bad]))
    too_many = letter([compute_blob_url(secrets.token_bytes(32)) for _ in range(ATTACHMENTS_MAX + 1)])
    with pytest.raises(AttachmentError):
        find_blob_ids(too_many)


def test_blob_ref_envelope_has_the_declared_size(world: World) -> None:
    w = world
    encrypted = encrypt(w, w.clinic, letter([]))
    (ref,) = build_blob_refs(encrypted, w.patient_id, w.clinic, blob())
    assert isinstance(ref, BlobRef)
    assert len(ref.sealed_key) == 72
