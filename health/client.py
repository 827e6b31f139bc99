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
from medledger.health.claims_types import LabelledDocumentBody
from medledger.health.errors import RecordBindingError
from medledger.health.membership_types import KIND_INSTITUTION_ADD, STATUS_KINDS, MembershipKeyBody
from medledger.health.reasons import seal_reason
from medledger.health.records import EncryptedRecord
from medledger.health.types import (
    GRANT_PART_RECORDS_MAX,
    KIND_ADD_DOCUMENT,
    KIND_ADD_LABELLED_DOCUMENT,
    KIND_ADD_RECORD,
    KIND_ADD_REPRESENTATIVE,
    KIND_DENY,
    KIND_GRANT,
    KIND_GRANT_MANIFEST,
    KIND_GRANT_MANIFEST_NARROWED,
    KIND_GRANT_NARROWED,
    KIND_GRANT_PART,
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
    GrantManifestBody,
    GrantPartBody,
    GrantTerms,
    Institution,
    NarrowedGrantBody,
    NarrowedGrantManifestBody,
    ReadReceiptBody,
    RecordKey,
    RegisterPatientBody,
    RepresentativeBody,
    RequestAccessBody,
    RevokeBody,
    Scope,
    SupersedeRecordBody,
    compute_grant_part_count,
    compute_grant_part_digest,
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
    terms: GrantTerms | None = None,
    nonce: int | None = None,
    timestamp_ms: int | None = None,
) -> SignedTx:
    """A grant (patient or representative); record keys from `records.reseal_record_keys`. With
    `terms` (`compute_grant_terms`) it is `health.grant_narrowed`: narrower than its inquiry."""
    body = GrantBody(inquiry_id, tuple(sorted(record_keys, key=lambda rk: rk.record_id)))
    if terms is not None:
        narrowed = NarrowedGrantBody(body, terms)
        return build_tx(
            signer, KIND_GRANT_NARROWED, narrowed, chain_id=chain_id, nonce=nonce, timestamp_ms=timestamp_ms
        )
    return build_tx(signer, KIND_GRANT, body, chain_id=chain_id, nonce=nonce, timestamp_ms=timestamp_ms)


def compute_grant_terms(
    inquiry_scope: Scope,
    inquiry_expires_ms: int,
    *,
    record_types: Iterable[str] | None = None,
    from_ms: int | None = None,
    to_ms: int | None = None,
    expires_ms: int | None = None,
) -> GrantTerms | None:
    """The terms of a grant narrowed from its inquiry's (None where nothing is narrowed): fewer
    record types, a shorter window, an earlier expiry. The rules check they lie within the inquiry's."""
    if record_types is None and from_ms is None and to_ms is None and expires_ms is None:
        return None
    types = inquiry_scope.record_types if record_types is None else tuple(sorted(set(record_types)))
    # Naming the types keeps none of the inquiry's individually named records: the patient chose by type.
    ids = inquiry_scope.record_ids if record_types is None else ()
    scope = Scope(
        types,
        ids,
        inquiry_scope.from_ms if from_ms is None else from_ms,
        inquiry_scope.to_ms if to_ms is None else to_ms,
    )
    return GrantTerms(scope, inquiry_expires_ms if expires_ms is None else expires_ms)


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
    labels: Iterable[str] = (),
    nonce: int | None = None,
    timestamp_ms: int | None = None,
) -> SignedTx:
    """A record with attachments (`health/blobs.build_blob_refs`), new or superseding
    `record.supersedes`; the tx id is the record id (docs/adr/0013-attachment-blobs.md). With
    security `labels` it is `health.add_labelled_document` (issue 12), else `health.add_document`."""
    _check_binding(author, record, record.supersedes)
    body = AddDocumentBody(
        record.supersedes,
        AddRecordBody(patient_id, record.record_type, record.commitment, record.envelope),
        attachments,
    )
    sorted_labels = tuple(sorted(set(labels)))
    if sorted_labels:
        return build_tx(
            author,
            KIND_ADD_LABELLED_DOCUMENT,
            LabelledDocumentBody(body, sorted_labels),
            chain_id=chain_id,
            nonce=nonce,
            timestamp_ms=timestamp_ms,
        )
    return build_tx(
        author, KIND_ADD_DOCUMENT, body, chain_id=chain_id, nonce=nonce, timestamp_ms=timestamp_ms
    )


# --- grants in parts (ADR 0012) -----------------------------------------------------------------


def split_grant_parts(record_keys: Iterable[RecordKey]) -> list[tuple[RecordKey, ...]]:
    """The parts of a grant in parts: its keys sorted by record id, `GRANT_PART_RECORDS_MAX` a part."""
    ordered = tuple(sorted(record_keys, key=lambda rk: rk.record_id))
    return [
        ordered[i * GRANT_PART_RECORDS_MAX : (i + 1) * GRANT_PART_RECORDS_MAX]
        for i in range(compute_grant_part_count(len(ordered)))
    ]


def compute_grant_manifest(inquiry_id: bytes, record_keys: Iterable[RecordKey]) -> GrantManifestBody:
    """The manifest declaring exactly these records (their ids, part by part) for `inquiry_id`."""
    parts = split_grant_parts(record_keys)
    digests = tuple(
        compute_grant_part_digest(inquiry_id, index, tuple(rk.record_id for rk in part))
        for index, part in enumerate(parts)
    )
    return GrantManifestBody(inquiry_id, sum(len(p) for p in parts), digests)


def build_grant_manifest(
    signer: Identity,
    manifest: GrantManifestBody,
    *,
    chain_id: str,
    terms: GrantTerms | None = None,
    nonce: int | None = None,
    timestamp_ms: int | None = None,
) -> SignedTx:
    """The decision of a grant in parts; the tx id is the grant id its parts name. With `terms`
    it is `health.grant_manifest_narrowed`."""
    if terms is not None:
        narrowed = NarrowedGrantManifestBody(manifest, terms)
        return build_tx(
            signer,
            KIND_GRANT_MANIFEST_NARROWED,
            narrowed,
            chain_id=chain_id,
            nonce=nonce,
            timestamp_ms=timestamp_ms,
        )
    return build_tx(
        signer, KIND_GRANT_MANIFEST, manifest, chain_id=chain_id, nonce=nonce, timestamp_ms=timestamp_ms
    )


def build_grant_part(
    signer: Identity,
    grant_id: bytes,
    part: int,
    record_keys: Iterable[RecordKey],
    *,
    chain_id: str,
    nonce: int | None = None,
    timestamp_ms: int | None = None,
) -> SignedTx:
    body = GrantPartBody(grant_id, part, tuple(sorted(record_keys, key=lambda rk: rk.record_id)))
    return build_tx(signer, KIND_GRANT_PART, body, chain_id=chain_id, nonce=nonce, timestamp_ms=timestamp_ms)


def build_grant_in_parts(
    signer: Identity,
    inquiry_id: bytes,
    record_keys: Iterable[RecordKey],
    *,
    chain_id: str,
    terms: GrantTerms | None = None,
    timestamp_ms: int | None = None,
) -> tuple[SignedTx, list[SignedTx]]:
    """A grant of any number of records: its manifest and, after it, one tx per part."""
    keys = tuple(record_keys)
    manifest = build_grant_manifest(
        signer,
        compute_grant_manifest(inquiry_id, keys),
        chain_id=chain_id,
        terms=terms,
        timestamp_ms=timestamp_ms,
    )
    grant_id = manifest[2]
    parts = [
        build_grant_part(signer, grant_id, index, part, chain_id=chain_id, timestamp_ms=timestamp_ms)
        for index, part in enumerate(split_grant_parts(keys))
    ]
    return manifest, parts


# --- institution membership (issue 16, ADR 0020) ------------------------------------------------


def build_institution_add(
    validator: Identity,
    institution: Institution,
    *,
    chain_id: str,
    nonce: int | None = None,
    timestamp_ms: int | None = None,
) -> SignedTx:
    """A validator's approval of registering `institution`."""
    return build_tx(
        validator,
        KIND_INSTITUTION_ADD,
        institution,
        chain_id=chain_id,
        nonce=nonce,
        timestamp_ms=timestamp_ms,
    )


def build_institution_status(
    validator: Identity,
    kind: str,
    sign_key: bytes,
    *,
    chain_id: str,
    nonce: int | None = None,
    timestamp_ms: int | None = None,
) -> SignedTx:
    """A validator's approval of suspending, reinstating or removing the institution `sign_key`
    (`kind`: one of `membership_types.STATUS_KINDS`)."""
    if kind not in STATUS_KINDS:
        raise ValueError(f"{kind!r} is not a membership status kind")
    return build_tx(
        validator,
        kind,
        MembershipKeyBody(sign_key),
        chain_id=chain_id,
        nonce=nonce,
        timestamp_ms=timestamp_ms,
    )
