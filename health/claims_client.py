"""Transaction builders for the claims kinds (issue 12): labelled records, standing consents,
claims, decisions and claim read receipts. Like `health.client`: each `build_*` encodes its
body canonically and signs it; the tx id names what it creates (record, grant, claim)."""

from __future__ import annotations

from collections.abc import Iterable

from medledger.crypto import Identity
from medledger.health.claims_types import (
    AmendClaimBody,
    ClaimReadReceiptBody,
    ConsentManifestBody,
    DecideClaimBody,
    FileClaimBody,
    GrantConsentBody,
    LabelledRecordBody,
)
from medledger.health.client import (
    SignedTx,
    _check_binding,
    build_grant_part,
    build_tx,
    compute_grant_manifest,
    split_grant_parts,
)
from medledger.health.records import EncryptedRecord
from medledger.health.types import (
    KIND_ADD_LABELLED_RECORD,
    KIND_AMEND_CLAIM,
    KIND_CLAIM_READ_RECEIPT,
    KIND_CONSENT_MANIFEST,
    KIND_DECIDE_CLAIM,
    KIND_FILE_CLAIM,
    KIND_GRANT_CONSENT,
    AddRecordBody,
    EnvelopeWire,
    RecordKey,
)


def _sorted(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(items)))


def _sorted_ids(items: Iterable[bytes]) -> tuple[bytes, ...]:
    return tuple(sorted(set(items)))


def build_add_labelled_record(
    author: Identity,
    patient_id: bytes,
    record: EncryptedRecord,
    labels: Iterable[str],
    *,
    chain_id: str,
    nonce: int | None = None,
    timestamp_ms: int | None = None,
) -> SignedTx:
    """A record with security labels, new or superseding `record.supersedes`; tx id = record id."""
    _check_binding(author, record, record.supersedes)
    body = LabelledRecordBody(
        record.supersedes,
        AddRecordBody(patient_id, record.record_type, record.commitment, record.envelope),
        _sorted(labels),
    )
    return build_tx(
        author, KIND_ADD_LABELLED_RECORD, body, chain_id=chain_id, nonce=nonce, timestamp_ms=timestamp_ms
    )


def make_consent(
    patient_id: bytes,
    grantee: bytes,
    *,
    record_types: Iterable[str],
    authors: Iterable[bytes],
    labels: Iterable[str] = (),
    from_ms: int = 0,
    to_ms: int = 2**64 - 1,
    expires_ms: int,
) -> GrantConsentBody:
    """A standing consent's body in canonical form (lists sorted, duplicates dropped)."""
    return GrantConsentBody(
        patient_id,
        grantee,
        _sorted(record_types),
        _sorted_ids(authors),
        _sorted(labels),
        from_ms,
        to_ms,
        expires_ms,
    )


def build_grant_consent(
    signer: Identity,
    consent: GrantConsentBody,
    *,
    chain_id: str,
    nonce: int | None = None,
    timestamp_ms: int | None = None,
) -> SignedTx:
    """The patient's (or a representative's) standing consent; the tx id is the grant id."""
    return build_tx(
        signer, KIND_GRANT_CONSENT, consent, chain_id=chain_id, nonce=nonce, timestamp_ms=timestamp_ms
    )


def build_file_claim(
    clinic: Identity,
    patient_id: bytes,
    insurer: bytes,
    encounter_id: bytes,
    record_ids: Iterable[bytes],
    sealed_claim: EnvelopeWire,
    *,
    chain_id: str,
    nonce: int | None = None,
    timestamp_ms: int | None = None,
) -> SignedTx:
    """A claim (`claim_seal.seal_claim`, version 1); the tx id is the claim id."""
    body = FileClaimBody(patient_id, insurer, encounter_id, _sorted_ids(record_ids), sealed_claim)
    return build_tx(clinic, KIND_FILE_CLAIM, body, chain_id=chain_id, nonce=nonce, timestamp_ms=timestamp_ms)


def build_amend_claim(
    clinic: Identity,
    claim_id: bytes,
    version: int,
    record_ids: Iterable[bytes],
    sealed_claim: EnvelopeWire,
    *,
    chain_id: str,
    nonce: int | None = None,
    timestamp_ms: int | None = None,
) -> SignedTx:
    body = AmendClaimBody(claim_id, version, _sorted_ids(record_ids), sealed_claim)
    return build_tx(clinic, KIND_AMEND_CLAIM, body, chain_id=chain_id, nonce=nonce, timestamp_ms=timestamp_ms)


def build_decide_claim(
    insurer: Identity,
    claim_id: bytes,
    version: int,
    outcome: str,
    sealed_response: EnvelopeWire,
    *,
    chain_id: str,
    nonce: int | None = None,
    timestamp_ms: int | None = None,
) -> SignedTx:
    body = DecideClaimBody(claim_id, version, outcome, sealed_response)
    return build_tx(
        insurer, KIND_DECIDE_CLAIM, body, chain_id=chain_id, nonce=nonce, timestamp_ms=timestamp_ms
    )


def build_claim_read_receipt(
    insurer: Identity,
    claim_id: bytes,
    grant_id: bytes,
    record_ids: Iterable[bytes],
    *,
    chain_id: str,
    nonce: int | None = None,
    timestamp_ms: int | None = None,
) -> SignedTx:
    body = ClaimReadReceiptBody(claim_id, grant_id, _sorted_ids(record_ids))
    return build_tx(
        insurer, KIND_CLAIM_READ_RECEIPT, body, chain_id=chain_id, nonce=nonce, timestamp_ms=timestamp_ms
    )


def build_consent_in_parts(
    signer: Identity,
    grant_id: bytes,
    record_keys: Iterable[RecordKey],
    *,
    chain_id: str,
    nonce: int | None = None,
    timestamp_ms: int | None = None,
) -> tuple[SignedTx, list[SignedTx]]:
    """The re-sealing of records already in a committed consent's scope (ADR 0017, amendment): its
    manifest (`health.consent_manifest`, the records declared part by part, bound to the consent's
    id) and, once that is committed, one `health.grant_part` a part."""
    keys = tuple(record_keys)
    declared = compute_grant_manifest(grant_id, keys)  # a consent is its own inquiry: same digests
    body = ConsentManifestBody(grant_id, declared.record_count, declared.part_digests)
    manifest = build_tx(
        signer, KIND_CONSENT_MANIFEST, body, chain_id=chain_id, nonce=nonce, timestamp_ms=timestamp_ms
    )
    parts = [
        build_grant_part(signer, grant_id, index, part, chain_id=chain_id, timestamp_ms=timestamp_ms)
        for index, part in enumerate(split_grant_parts(keys))
    ]
    return manifest, parts
