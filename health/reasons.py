"""Inquiry reasons: free text sealed for the patient and the requester, never in the clear.

An inquiry's reason ("follow-up after the March visit") is the one free-text field of the health
application. The rules do not need it, so it does not travel in the clear (issue 9, defect 10):
the requester's client pads it to one fixed size (`REASON_PADDED_BYTES`, libsodium's ISO/IEC
7816-4 padding, so the ciphertext leaks no length), encrypts it with XChaCha20-Poly1305 under a
fresh key, and seals that key to the patient's and its own x25519 keys, exactly as a record's
content key is sealed. The associated data binds the ciphertext to the inquiry's patient and
requester, so a reason copied into another institution's inquiry does not open.

The rules check only who the reason is sealed for (the patient and the requester, nobody else:
`health.reason`); as for records, the reader labels are the sealer's word (see `crypto.envelope`).
The patient's client and the requester's node open it with `open_reason`; a representative holds
no reader key and sees no reason.
"""

from __future__ import annotations

import nacl.bindings
import nacl.exceptions

from medledger.crypto import DecryptionError, Identity, open_envelope, seal_envelope
from medledger.health.errors import InvalidReasonError, ReasonUnreadableError
from medledger.health.text import InvalidTextError, normalize_human_text
from medledger.health.types import (
    REASON_BYTES_MAX,
    REASON_LENGTH_MAX,
    REASON_PADDED_BYTES,
    InquiryState,
    SealedReason,
    compute_reason_associated_data,
)


def validate_reason(reason: object) -> str:
    """A reason, in NFC: 1 to `REASON_LENGTH_MAX` printable characters, at most `REASON_BYTES_MAX`
    bytes of UTF-8, in any language (`health.text`; `InvalidReasonError`, never echoing it)."""
    try:
        return normalize_human_text(
            reason, what="reason", max_length=REASON_LENGTH_MAX, max_bytes=REASON_BYTES_MAX
        )
    except InvalidTextError as exc:
        raise InvalidReasonError(exc.message) from None


def seal_reason(
    reason: str, *, patient_id: bytes, requester: bytes, patient_enc_key: bytes, requester_enc_key: bytes
) -> SealedReason:
    """Pad and encrypt `reason` for the patient and the requester (`requester`: its signing key).

    `InvalidReasonError` if the reason is not acceptable; `CryptoError` if a reader key is unusable.
    """
    plaintext = validate_reason(reason).encode("utf-8")
    padded = nacl.bindings.sodium_pad(plaintext, REASON_PADDED_BYTES)
    if len(padded) != REASON_PADDED_BYTES:  # pragma: no cover - REASON_BYTES_MAX < REASON_PADDED_BYTES
        raise InvalidReasonError(f"reason must be at most {REASON_BYTES_MAX} bytes of UTF-8")
    # A reader key that is not a usable x25519 key raises `CryptoError` (the key's fault, not the reason's).
    envelope = seal_envelope(
        padded,
        [patient_enc_key, requester_enc_key],
        associated_data=compute_reason_associated_data(patient_id, requester),
    )
    return SealedReason.from_envelope(envelope)


def open_reason(inquiry: InquiryState, identity: Identity) -> str:
    """The inquiry's reason as `identity` (patient or requester) reads it (`ReasonUnreadableError`)."""
    what = f"the reason of inquiry {inquiry.inquiry_id.hex()}"
    try:
        padded = open_envelope(
            inquiry.sealed_reason.to_envelope(),
            identity,
            associated_data=compute_reason_associated_data(inquiry.patient_id, inquiry.requester),
        )
    except DecryptionError as exc:
        raise ReasonUnreadableError(f"{what} does not open for this key: {exc.message}") from None
    try:
        plaintext = nacl.bindings.sodium_unpad(padded, REASON_PADDED_BYTES)
        reason = plaintext.decode("utf-8")
    except (nacl.exceptions.CryptoError, ValueError, UnicodeDecodeError):
        raise ReasonUnreadableError(f"{what} is not padded text (a malformed reason)") from None
    try:
        return validate_reason(reason)
    except InvalidReasonError:
        raise ReasonUnreadableError(f"{what} is not an acceptable reason (a malformed reason)") from None
