"""Client-side record crypto: what an institution's or patient's client does with a record.

Encrypting (author): validate the FHIR record, canonicalise its JSON, draw a random 32-byte salt,
and compute the record's *binding* (`types.compute_record_binding`): the patient id, the author's
signing key, the record it supersedes and its record type, i.e. everything on the ledger the rules
key the record on. The binding goes into the commitment (`H(domain ‖ binding ‖ salt ‖ plaintext)`)
and, as associated data, into the XChaCha20-Poly1305 ciphertext of `salt ‖ plaintext`. A fresh
content key is sealed for each reader; the ciphertext is encrypted under the *record key*, the
content key keyed to the binding (`compute_record_key`), and a grant re-seals the record key, never
the content key. So an author that re-uses a content key it read from another record (a hospital
sealed into a clinic's Condition, publishing a harmless Immunization under the same key) gains
nothing: a grant of its record hands out a key that opens that record only. The salt travels
inside the ciphertext, so every reader can check the commitment; the commitment on the ledger lets
the patient later prove a record's content to anyone they choose, without the ledger ever holding
the plaintext.

Opening (every reader: the patient's client, the author, a grantee's node): `open_record` is the
one place a record is opened. It recomputes the binding from what the ledger says about the record,
so a ciphertext and commitment re-published by another institution as its own record (or moved to
another patient, type, or superseded record) is refused with `RecordBindingError`, and a plaintext
that does not match its commitment with `CommitmentMismatchError` (issue 9, defect 6). Only a
verified record is shown, and `reseal_record_keys` re-seals a record key for a grantee only after
the record verified: a patient never hands out the key of a record they cannot vouch for.

These functions run on clients, never inside the rules: they draw randomness and decrypt.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Mapping, Sequence
from typing import Any, Final

import nacl.encoding
import nacl.hash

from medledger.crypto import (
    CONTENT_KEY_SIZE,
    DecryptionError,
    Envelope,
    Identity,
    decrypt_with_content_key,
    seal_content_key,
    seal_envelope,
    unwrap_content_key,
)
from medledger.health.errors import CommitmentMismatchError, InvalidRecordError, RecordBindingError
from medledger.health.fhir import ValidatedRecord, parse_record_json, validate_content_types, validate_record
from medledger.health.types import (
    RECORD_KEY_DOMAIN,
    EnvelopeWire,
    GrantState,
    RecordKey,
    RecordState,
    compute_commitment,
    compute_record_associated_data,
    compute_record_binding,
)

SALT_SIZE: Final = 32


@dataclasses.dataclass(frozen=True, slots=True)
class EncryptedRecord:
    """What goes on the ledger for a record (with its type), and the salt the author may keep.

    `author` and `supersedes` are the binding the ciphertext and commitment were made for: the
    record must be submitted by that author, as a correction of that record (empty: a new record).
    """

    record_type: str
    commitment: bytes
    envelope: EnvelopeWire
    salt: bytes
    author: bytes
    supersedes: bytes = b""


@dataclasses.dataclass(frozen=True, slots=True)
class DecryptedRecord:
    record_type: str
    salt: bytes
    canonical_json: bytes

    @property
    def resource(self) -> dict[str, Any]:
        return parse_record_json(self.canonical_json)


def compute_binding_of(record: RecordState) -> bytes:
    """The binding of a record as the ledger describes it (what its author must have encrypted for).

    A record a node serves is outside input: metadata no rule would store (a superseded id that
    is neither empty nor 32 bytes) is a `RecordBindingError`, never an untyped failure.
    """
    try:
        return compute_record_binding(record.patient_id, record.author, record.record_type, record.supersedes)
    except ValueError:
        raise RecordBindingError(
            f"record {record.record_id.hex()} carries metadata no ledger stores", record_id=record.record_id
        ) from None


def encrypt_record(
    record: bytes | str | Mapping[str, Any] | ValidatedRecord,
    *,
    patient_id: bytes,
    author: bytes,
    readers: Sequence[bytes],
    supersedes: bytes = b"",
) -> EncryptedRecord:
    """Validate and encrypt a FHIR record for `readers` (x25519 keys: patient, author, grantees).

    `author` is the author's signing key (the tx sender), `supersedes` the id of the record this
    one corrects (empty: a new record); both are bound into the ciphertext and the commitment.
    A `ValidatedRecord` (what `validate_record` returned to the caller) is not validated again.
    """
    validated = record if isinstance(record, ValidatedRecord) else validate_record(record)
    salt = secrets.token_bytes(SALT_SIZE)
    binding = compute_record_binding(patient_id, author, validated.record_type, supersedes)
    # The record's JSON as submitted, not a re-serialisation (issue 14, defect 4; ADR 0011).
    commitment = compute_commitment(binding, salt, validated.plaintext)
    envelope = seal_envelope(
        salt + validated.plaintext,
        readers,
        associated_data=compute_record_associated_data(binding),
        derive_key=lambda content_key: compute_record_key(content_key, binding),
    )
    return EncryptedRecord(
        validated.record_type,
        commitment,
        EnvelopeWire.from_envelope(envelope),
        salt,
        author,
        supersedes,
    )


def compute_record_key(content_key: bytes, binding: bytes) -> bytes:
    """The key a record's ciphertext is encrypted under: its content key, keyed to its binding.

    The envelope seals the content key; a grant re-seals this record key. A content key an author
    re-used from another record (one it was a reader of) therefore yields a different record key
    for each binding, and a grant of one record never hands out a key that opens another.
    """
    return nacl.hash.blake2b(
        RECORD_KEY_DOMAIN + binding,
        digest_size=CONTENT_KEY_SIZE,
        key=content_key,
        encoder=nacl.encoding.RawEncoder,
    )


def _get_record_key(
    record: RecordState, identity: Identity, grant: GrantState | None, sealed_key: bytes | None = None
) -> bytes:
    """The record key `identity` holds: `sealed_key` (re-sealed by a grant part), re-sealed in
    `grant`, or derived from its envelope's content key."""
    envelope = record.envelope.to_envelope()
    sealed = sealed_key
    if sealed is None and grant is not None:
        sealed = grant.get_sealed_key(record.record_id)
    if sealed is not None:
        # A one-reader envelope over the same ciphertext lets the crypto layer do the unsealing.
        one_reader = Envelope(envelope.nonce, envelope.ciphertext, ((identity.public.enc_key, sealed),))
        return unwrap_content_key(one_reader, identity)
    content_key = unwrap_content_key(envelope, identity)
    return compute_record_key(content_key, compute_binding_of(record))


def open_record(
    record: RecordState,
    identity: Identity,
    *,
    grant: GrantState | None = None,
    sealed_key: bytes | None = None,
) -> DecryptedRecord:
    """Open and verify a record as `identity`: the one way any reader gets at a record's content.

    The record key is derived from the content key the envelope seals for `identity`, or is the
    one `grant` re-sealed for it (`compute_record_key`), or `sealed_key`: the one a part of a grant
    in parts re-sealed for it (`policy.get_grant_sealed_key`). Raises `DecryptionError` if `identity`
    holds no key for the record (or the key does not unseal), `RecordBindingError` if the
    ciphertext is not bound to the record's author, patient, type and superseded record
    (re-published, altered, or a key granted for another record) or its content is not a
    resource of the record's type, `CommitmentMismatchError` if the plaintext does not match the
    commitment. Messages name the record id, never its content.
    """
    binding = compute_binding_of(record)
    record_key = _get_record_key(record, identity, grant, sealed_key)
    try:
        payload = decrypt_with_content_key(
            record.envelope.to_envelope(), record_key, associated_data=compute_record_associated_data(binding)
        )
    except DecryptionError:
        raise RecordBindingError(
            f"record {record.record_id.hex()} does not authenticate as its author's record of type "
            f"{record.record_type} for this patient: re-published under another name, or altered",
            record_id=record.record_id,
        ) from None
    salt, plaintext = payload[:SALT_SIZE], payload[SALT_SIZE:]
    if len(salt) != SALT_SIZE or compute_commitment(binding, salt, plaintext) != record.commitment:
        raise CommitmentMismatchError(
            f"record {record.record_id.hex()} does not match its commitment on the ledger",
            record_id=record.record_id,
        )
    decrypted = DecryptedRecord(record.record_type, salt, plaintext)
    # The ledger's record type is what grants are scoped by and what the patient is shown: content
    # of another type under that label (a Condition called an Immunization) is never shown or shared.
    try:
        resource: dict[str, Any] | None = decrypted.resource  # parsed once, checked twice below
    except InvalidRecordError:
        resource = None
    content_type = resource.get("resourceType") if resource is not None else None
    if content_type != record.record_type:
        raise RecordBindingError(
            f"record {record.record_id.hex()} is labelled {record.record_type} on the ledger but its "
            "content is not a resource of that type",
            record_id=record.record_id,
        )
    # Nor may it carry, inside, a clinical resource of another type (a Condition `contained` in an
    # Immunization): what a type-scoped grant shares must be what its label says.
    try:
        validate_content_types(resource or {}, record.record_type)
    except InvalidRecordError:
        raise RecordBindingError(
            f"record {record.record_id.hex()} is labelled {record.record_type} on the ledger but "
            "carries a resource of another type inside it",
            record_id=record.record_id,
        ) from None
    return decrypted


def verify_commitment(record: RecordState, salt: bytes, canonical_json: bytes) -> bool:
    """Whether a claimed (salt, plaintext) is the one the ledger's commitment was made to."""
    try:
        binding = compute_binding_of(record)
    except RecordBindingError:
        return False
    return compute_commitment(binding, salt, canonical_json) == record.commitment


def open_verified_record(record: RecordState, identity: Identity) -> DecryptedRecord | None:
    """`record` opened and verified for `identity`, or None if it does not open or verify (then
    it is neither shown nor re-sealed)."""
    try:
        return open_record(record, identity)
    except (DecryptionError, RecordBindingError, CommitmentMismatchError):
        return None


def is_record_verified(record: RecordState, identity: Identity) -> bool:
    """Whether `record` opens for `identity` and verifies (binding and commitment)."""
    return open_verified_record(record, identity) is not None


def reseal_record_keys(
    records: Sequence[RecordState], identity: Identity, grantee_enc_key: bytes
) -> tuple[RecordKey, ...]:
    """The patient's client: each record's content key re-sealed for a grantee, sorted by record id.

    Each record is opened and verified first: the key of a record that does not verify is never
    handed out (`RecordBindingError` / `CommitmentMismatchError` naming it), because a record
    re-published under another name carries the *original's* content key.
    """
    keys = []
    for record in sorted(records, key=lambda r: r.record_id):
        open_record(record, identity)
        record_key = _get_record_key(record, identity, None)
        keys.append(RecordKey(record.record_id, seal_content_key(record_key, grantee_enc_key)))
    return tuple(keys)


def get_verified_record_key(
    record: RecordState,
    identity: Identity,
    *,
    grant: GrantState | None = None,
    sealed_key: bytes | None = None,
) -> bytes:
    """The record key `identity` holds for `record` (through its envelope, `grant` or a grant
    part's `sealed_key`), only once the record opened and verified (`open_record`'s errors
    otherwise). Keys derived from it, such as a statement of disagreement's
    (`health.rights_seal`), reach exactly the record's readers."""
    open_record(record, identity, grant=grant, sealed_key=sealed_key)
    return _get_record_key(record, identity, grant, sealed_key)


def get_record_key(
    record: RecordState,
    identity: Identity,
    grant: GrantState | None = None,
    sealed_key: bytes | None = None,
) -> bytes:
    """The record key `identity` holds for `record` (from its envelope, re-sealed in `grant`, or
    by a grant part: `sealed_key`, `policy.get_grant_sealed_key`).

    Attachments are sealed under it (`health/blobs.py`); call it only after `open_record`
    verified the record. Raises `DecryptionError` if `identity` holds no key for the record.
    """
    return _get_record_key(record, identity, grant, sealed_key)
