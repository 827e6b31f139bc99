"""Client-side record crypto: what an institution's or patient's client does with a record.

Encrypting (author): validate the FHIR record, canonicalise its JSON, draw a random 32-byte salt,
commit to `salt || plaintext`, and seal `salt || plaintext` in an envelope under a fresh content key
wrapped for each reader, with the ciphertext bound to (patient id, record type) as associated data.
The salt travels inside the ciphertext, so every reader can check the commitment; the commitment
on the ledger lets the patient later prove a record's content to anyone they choose, without the
ledger ever holding the plaintext.

Decrypting (reader): open the envelope with one's own identity (patient, author, a grantee sealed
in at creation) or with a content key sealed in a grant, then check the commitment.

These functions run on clients, never inside the rules: they draw randomness.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Mapping, Sequence
from typing import Any, Final

from medledger.crypto import (
    Envelope,
    Identity,
    open_envelope,
    seal_content_key,
    seal_envelope,
    unwrap_content_key,
)
from medledger.health.errors import CommitmentMismatchError
from medledger.health.fhir import ValidatedRecord, parse_record_json, validate_record
from medledger.health.types import (
    EnvelopeWire,
    GrantState,
    RecordKey,
    RecordState,
    compute_commitment,
    compute_record_associated_data,
)

SALT_SIZE: Final = 32


@dataclasses.dataclass(frozen=True, slots=True)
class EncryptedRecord:
    """What goes on the ledger for a record (with its type), and the salt the author may keep."""

    record_type: str
    commitment: bytes
    envelope: EnvelopeWire
    salt: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class DecryptedRecord:
    record_type: str
    salt: bytes
    canonical_json: bytes

    @property
    def resource(self) -> dict[str, Any]:
        return parse_record_json(self.canonical_json)


def encrypt_record(
    record: bytes | str | Mapping[str, Any], *, patient_id: bytes, readers: Sequence[bytes]
) -> EncryptedRecord:
    """Validate and encrypt a FHIR record for `readers` (x25519 keys: patient, author, grantees)."""
    validated: ValidatedRecord = validate_record(record)
    salt = secrets.token_bytes(SALT_SIZE)
    commitment = compute_commitment(salt, validated.canonical_json)
    envelope = seal_envelope(
        salt + validated.canonical_json,
        readers,
        associated_data=compute_record_associated_data(patient_id, validated.record_type),
    )
    return EncryptedRecord(validated.record_type, commitment, EnvelopeWire.from_envelope(envelope), salt)


def _finish(record: RecordState, payload: bytes) -> DecryptedRecord:
    salt, plaintext = payload[:SALT_SIZE], payload[SALT_SIZE:]
    if len(salt) != SALT_SIZE or compute_commitment(salt, plaintext) != record.commitment:
        raise CommitmentMismatchError("the decrypted record does not match its commitment on the ledger")
    return DecryptedRecord(record.record_type, salt, plaintext)


def decrypt_record(record: RecordState, identity: Identity) -> DecryptedRecord:
    """Open a record sealed for `identity` and verify its commitment (`DecryptionError` if not a reader)."""
    payload = open_envelope(
        record.envelope.to_envelope(),
        identity,
        associated_data=compute_record_associated_data(record.patient_id, record.record_type),
    )
    return _finish(record, payload)


def decrypt_record_with_grant(record: RecordState, grant: GrantState, identity: Identity) -> DecryptedRecord:
    """Open a record with the content key a grant re-sealed for `identity` (`DecryptionError` if none)."""
    sealed = grant.get_sealed_key(record.record_id)
    envelope = record.envelope.to_envelope()
    if sealed is None:
        return decrypt_record(record, identity)
    # A one-reader envelope over the same ciphertext lets the crypto layer do the unsealing.
    single = Envelope(envelope.nonce, envelope.ciphertext, ((identity.public.enc_key, sealed),))
    payload = open_envelope(
        single,
        identity,
        associated_data=compute_record_associated_data(record.patient_id, record.record_type),
    )
    return _finish(record, payload)


def verify_commitment(record: RecordState, salt: bytes, canonical_json: bytes) -> bool:
    """Whether a claimed (salt, plaintext) is the one the ledger's commitment was made to."""
    return compute_commitment(salt, canonical_json) == record.commitment


def reseal_record_keys(
    records: Sequence[RecordState], identity: Identity, grantee_enc_key: bytes
) -> tuple[RecordKey, ...]:
    """The patient's client: each record's content key re-sealed for a grantee, sorted by record id."""
    keys = []
    for record in sorted(records, key=lambda r: r.record_id):
        content_key = unwrap_content_key(record.envelope.to_envelope(), identity)
        keys.append(RecordKey(record.record_id, seal_content_key(content_key, grantee_enc_key)))
    return tuple(keys)
