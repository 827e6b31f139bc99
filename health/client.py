"""Transaction builders for every health tx kind (tests now; the patient and institution SDK later).

Each `build_*` encodes its body as the kind's canonical wire type and signs the tx with the given
identity, returning the `Tx`, its canonical bytes and its id. The id names what the tx creates
(record, inquiry, grant), so a client knows it before the tx is committed. `nonce` and
`timestamp_ms` default as in `sign_tx` (random nonce, wall clock): pass them for reproducibility.
"""

from __future__ import annotations

from collections.abc import Iterable

from medledger.chain.codec import WireType, encode
from medledger.chain.txbuilder import sign_tx
from medledger.chain.types import Tx, TxId
from medledger.crypto import Identity
from medledger.health.errors import RecordBindingError
from medledger.health.reasons import seal_reason
from medledger.health.records import EncryptedRecord
from medledger.health.types import (
    KIND_ADD_DOCUMENT,
    KIND_ADD_RECORD,
    KIND_ADD_REPRESENTATIVE,
    KIND_DENY,
    KIND_GRANT,
    KIND_READ_RECEIPT,
    KIND_REGISTER_PATIENT,
    KIND_REMOVE_REPRESENTATIVE,
    KIND_REQUEST_ACCESS,
    KIND_REVOKE,
    KIND_SUPERSEDE_RECORD,
    AddDocumentBody,
    AddRecordBody,
    BlobRef,
    DenyBody,
    GrantBody,
    ReadReceiptBody,
    RecordKey,
    RegisterPatientBody,
    RepresentativeBody,
    RequestAccessBody,
    RevokeBody,
    Scope,
    SupersedeRecordBody,
)

SignedTx = tuple[Tx, bytes, TxId]


def build_tx(
    identity: Identity,
    kind: str,
    body: WireType,
    *,
    chain_id: str,
    nonce: int | None = None,
    timestamp_ms: int | None = None,
) -> SignedTx:
    return sign_tx(
        identity, chain_id=chain_id, kind=kind, body=encode(body), nonce=nonce, timestamp_ms=timestamp_ms
    )


def make_scope(
    *,
    record_types: Iterable[str] = (),
    record_ids: Iterable[bytes] = (),
    from_ms: int = 0,
    to_ms: int = 2**64 - 1,
) -> Scope:
    """A scope in canonical form (lists sorted, duplicates dropped); the default window is all time."""
    return Scope(tuple(sorted(set(record_types))), tuple(sorted(set(record_ids))), from_ms, to_ms)


def build_register_patient(
    patient: Identity, *, chain_id: str, nonce: int | None = None, timestamp_ms: int | None = None
) -> SignedTx:
    body = RegisterPatientBody(patient.public.enc_key)
    return build_tx(
        patient, KIND_REGISTER_PATIENT, body, chain_id=chain_id, nonce=nonce, timestamp_ms=timestamp_ms
    )


def build_add_representative(
    patient: Identity,
    patient_id: bytes,
    representative: bytes,
    *,
    chain_id: str,
    nonce: int | None = None,
    timestamp_ms: int | None = None,
) -> SignedTx:
    body = RepresentativeBody(patient_id, representative)
    return build_tx(
        patient, KIND_ADD_REPRESENTATIVE, body, chain_id=chain_id, nonce=nonce, timestamp_ms=timestamp_ms
    )


def build_remove_representative(
    patient: Identity,
    patient_id: bytes,
    representative: bytes,
    *,
    chain_id: str,
    nonce: int | None = None,
    timestamp_ms: int | None = None,
) -> SignedTx:
    body = RepresentativeBody(patient_id, representative)
    return build_tx(
        patient, KIND_REMOVE_REPRESENTATIVE, body, chain_id=chain_id, nonce=nonce, timestamp_ms=timestamp_ms
    )


def _check_binding(author: Identity, record: EncryptedRecord, supersedes: bytes) -> None:
    """A record is submitted exactly as it was bound: by its author, correcting its record."""
    if record.author != author.public.sign_key:
        raise RecordBindingError("the record was encrypted for another author than the signer")
    if record.supersedes != supersedes:
        raise RecordBindingError("the record was encrypted as a correction of another record")


def build_add_record(
    author: Identity,
    patient_id: bytes,
    record: EncryptedRecord,
    *,
    chain_id: str,
    nonce: int | None = None,
    timestamp_ms: int | None = None,
) -> SignedTx:
    """Add a record encrypted with `records.encrypt_record`; the tx id is the record id."""
    _check_binding(author, record, b"")
    body = AddRecordBody(patient_id, record.record_type, record.commitment, record.envelope)
    return build_tx(author, KIND_ADD_RECORD, body, chain_id=chain_id, nonce=nonce, timestamp_ms=timestamp_ms)


def build_supersede_record(
    author: Identity,
    patient_id: bytes,
    supersedes: bytes,
    record: EncryptedRecord,
    *,
    chain_id: str,
    nonce: int | None = None,
    timestamp_ms: int | None = None,
) -> SignedTx:
    _check_binding(author, record, supersedes)
    body = SupersedeRecordBody(
        supersedes, AddRecordBody(patient_id, record.record_type, record.commitment, record.envelope)
    )
    return build_tx(
        author, KIND_SUPERSEDE_RECORD, body, chain_id=chain_id, nonce=nonce, timestamp_ms=timestamp_ms
    )


def build_request_access(
    requester: Identity,
    patient_id: bytes,
    scope: Scope,
    purpose: str,
    expires_ms: int,
    reason: str,
    *,
    patient_enc_key: bytes,
    chain_id: str,
    nonce: int | None = None,
    timestamp_ms: int | None = None,
) -> SignedTx:
    """An inquiry; the tx id is the inquiry id. `reason` is sealed for the patient and the requester."""
    sealed_reason = seal_reason(
        reason,
        patient_id=patient_id,
        requester=requester.public.sign_key,
        patient_enc_key=patient_enc_key,
        requester_enc_key=requester.public.enc_key,
    )
    body = RequestAccessBody(patient_id, scope, purpose, expires_ms, sealed_reason)
    return build_tx(
        requester, KIND_REQUEST_ACCESS, body, chain_id=chain_id, nonce=nonce, timestamp_ms=timestamp_ms
    )


def build_grant(
    signer: Identity,
    inquiry_id: bytes,
    record_keys: Iterable[RecordKey],
    *,
    chain_id: str,
    nonce: int | None = None,
    timestamp_ms: int | None = None,
) -> SignedTx:
    """A grant (patient or representative); record keys from `records.reseal_record_keys`."""
    body = GrantBody(inquiry_id, tuple(sorted(record_keys, key=lambda rk: rk.record_id)))
    return build_tx(signer, KIND_GRANT, body, chain_id=chain_id, nonce=nonce, timestamp_ms=timestamp_ms)


def build_deny(
    signer: Identity,
    inquiry_id: bytes,
    *,
    chain_id: str,
    nonce: int | None = None,
    timestamp_ms: int | None = None,
) -> SignedTx:
    return build_tx(
        signer, KIND_DENY, DenyBody(inquiry_id), chain_id=chain_id, nonce=nonce, timestamp_ms=timestamp_ms
    )


def build_revoke(
    signer: Identity,
    grant_id: bytes,
    *,
    chain_id: str,
    nonce: int | None = None,
    timestamp_ms: int | None = None,
) -> SignedTx:
    return build_tx(
        signer, KIND_REVOKE, RevokeBody(grant_id), chain_id=chain_id, nonce=nonce, timestamp_ms=timestamp_ms
    )


def build_read_receipt(
    reader: Identity,
    grant_id: bytes,
    record_ids: Iterable[bytes],
    *,
    chain_id: str,
    nonce: int | None = None,
    timestamp_ms: int | None = None,
) -> SignedTx:
    body = ReadReceiptBody(grant_id, tuple(sorted(set(record_ids))))
    return build_tx(
        reader, KIND_READ_RECEIPT, body, chain_id=chain_id, nonce=nonce, timestamp_ms=timestamp_ms
    )


def build_add_document(
    author: Identity,
    patient_id: bytes,
    record: EncryptedRecord,
    attachments: tuple[BlobRef, ...],
    *,
    chain_id: str,
    nonce: int | None = None,
    timestamp_ms: int | None = None,
) -> SignedTx:
    """A record with attachments (`health/blobs.build_blob_refs`), new or superseding
    `record.supersedes`; the tx id is the record id (docs/adr/0013-attachment-blobs.md)."""
    _check_binding(author, record, record.supersedes)
    body = AddDocumentBody(
        record.supersedes,
        AddRecordBody(patient_id, record.record_type, record.commitment, record.envelope),
        attachments,
    )
    return build_tx(
        author, KIND_ADD_DOCUMENT, body, chain_id=chain_id, nonce=nonce, timestamp_ms=timestamp_ms
    )
