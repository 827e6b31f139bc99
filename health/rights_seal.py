"""Client-side crypto and builders of the patient-rights transactions (issue 14, ADR 0014).

Amendment texts (what is wrong, a refusal's reason) are free text: padded to one size
(`AMENDMENT_TEXT_PADDED_BYTES`, ISO/IEC 7816-4 padding) and sealed exactly like an inquiry's reason,
for the patient and the record's author only, bound by associated data to what they belong to (a
request to its patient, record and author; a refusal to its amendment), so a text copied elsewhere
does not open.

A statement of disagreement must reach every reader of the record, including grantees who are
granted the record after the statement was written. So it is sealed to no one: it is encrypted
under a key derived from the record's *record key* (`records.compute_record_key`), which every
reader already holds or derives (the envelope's readers from their content key, a grantee from the
key its grant re-sealed). The statement key is `BLAKE2b(STATEMENT_KEY_DOMAIN ‖ amendment id,
key = record key)`, so it never equals the record key and differs per amendment; the associated data
binds the statement to its record, amendment and patient. Only a client holding the record key (the
patient's own device) can write one; the rules only check who signed it and when.

These functions run on clients (randomness, decryption), never inside the rules.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import nacl.bindings
import nacl.encoding
import nacl.exceptions
import nacl.hash
import nacl.utils

from medledger.chain.app import StateReader
from medledger.crypto import CONTENT_KEY_SIZE, DecryptionError, Identity, open_envelope, seal_envelope
from medledger.crypto.envelope import NONCE_SIZE
from medledger.health import rights
from medledger.health.claims_types import LabelledAmendmentBody
from medledger.health.client import SignedTx, build_tx
from medledger.health.errors import HealthError, RecordVerificationError
from medledger.health.policy import get_grant_sealed_key
from medledger.health.records import EncryptedRecord, get_verified_record_key
from medledger.health.rights_types import (
    AMENDMENT_TEXT_AD_DOMAIN,
    AMENDMENT_TEXT_BYTES_MAX,
    AMENDMENT_TEXT_LENGTH_MAX,
    AMENDMENT_TEXT_PADDED_BYTES,
    STATEMENT_AD_DOMAIN,
    STATEMENT_KEY_DOMAIN,
    AcceptAmendmentBody,
    AmendmentState,
    CloseRecordsRequestBody,
    DisagreeBody,
    RefuseAmendmentBody,
    RequestAmendmentBody,
    RequestRecordsBody,
    SealedText,
    Statement,
)
from medledger.health.text import InvalidTextError, normalize_human_text
from medledger.health.types import (
    KIND_ACCEPT_AMENDMENT,
    KIND_ACCEPT_LABELLED_AMENDMENT,
    KIND_CLOSE_RECORDS_REQUEST,
    KIND_DISAGREE,
    KIND_REFUSE_AMENDMENT,
    KIND_REQUEST_AMENDMENT,
    KIND_REQUEST_RECORDS,
    AddRecordBody,
    GrantState,
    RecordState,
    SupersedeRecordBody,
)


class InvalidAmendmentTextError(HealthError):
    """An amendment text cannot be sealed (empty, too long, control characters); names no content."""

    code = "invalid_amendment_text"


class AmendmentTextUnreadableError(HealthError):
    """A sealed amendment text or statement does not open for this key (or is malformed)."""

    code = "amendment_text_unreadable"


def validate_amendment_text(text: object, what: str = "text") -> str:
    """1 to `AMENDMENT_TEXT_LENGTH_MAX` printable characters (line breaks allowed), NFC-normalised."""
    try:
        return normalize_human_text(
            text,
            what=what,
            max_length=AMENDMENT_TEXT_LENGTH_MAX,
            max_bytes=AMENDMENT_TEXT_BYTES_MAX,
            line_breaks=True,
        )
    except InvalidTextError as exc:
        raise InvalidAmendmentTextError(exc.message) from None


def _pad(text: str, what: str) -> bytes:
    return bytes(
        nacl.bindings.sodium_pad(
            validate_amendment_text(text, what).encode("utf-8"), AMENDMENT_TEXT_PADDED_BYTES
        )
    )


def _unpad(padded: bytes, what: str) -> str:
    try:
        text = nacl.bindings.sodium_unpad(padded, AMENDMENT_TEXT_PADDED_BYTES).decode("utf-8")
        return validate_amendment_text(text)
    except (nacl.exceptions.CryptoError, ValueError, UnicodeDecodeError, InvalidAmendmentTextError):
        raise AmendmentTextUnreadableError(f"{what} is not padded text (malformed)") from None


def compute_request_text_ad(patient_id: bytes, record_id: bytes, author: bytes) -> bytes:
    """Associated data of an amendment request's text: this patient, this record, this author."""
    return AMENDMENT_TEXT_AD_DOMAIN + b"request\x00" + patient_id + record_id + author


def compute_refusal_text_ad(amendment_id: bytes) -> bytes:
    """Associated data of a refusal's reason: this amendment request."""
    return AMENDMENT_TEXT_AD_DOMAIN + b"refusal\x00" + amendment_id


def seal_amendment_text(
    text: str, *, associated_data: bytes, patient_enc_key: bytes, author_enc_key: bytes, what: str = "text"
) -> SealedText:
    """Pad and seal `text` for the patient and the author (`InvalidAmendmentTextError`, `CryptoError`)."""
    envelope = seal_envelope(
        _pad(text, what), [patient_enc_key, author_enc_key], associated_data=associated_data
    )
    return SealedText.from_envelope(envelope)


def open_amendment_text(sealed: SealedText, identity: Identity, *, associated_data: bytes) -> str:
    try:
        padded = open_envelope(sealed.to_envelope(), identity, associated_data=associated_data)
    except DecryptionError as exc:
        raise AmendmentTextUnreadableError(f"the text does not open for this key: {exc.message}") from None
    return _unpad(padded, "the text")


def open_request_text(amendment: AmendmentState, identity: Identity) -> str:
    """What the patient said is wrong, as the patient or the author reads it."""
    ad = compute_request_text_ad(amendment.patient_id, amendment.record_id, amendment.author)
    return open_amendment_text(amendment.sealed_text, identity, associated_data=ad)


def open_refusal_reason(amendment: AmendmentState, identity: Identity) -> str | None:
    """The author's reason for refusing (None: not refused)."""
    if not amendment.refusal:
        return None
    ad = compute_refusal_text_ad(amendment.amendment_id)
    return open_amendment_text(amendment.refusal[0], identity, associated_data=ad)


# --- statements of disagreement: under the record key ---------------------------------------------


def compute_statement_key(record_key: bytes, amendment_id: bytes) -> bytes:
    """The AEAD key of a statement: the record key, keyed to the amendment (never the record key)."""
    return bytes(
        nacl.hash.blake2b(
            STATEMENT_KEY_DOMAIN + amendment_id,
            digest_size=CONTENT_KEY_SIZE,
            key=record_key,
            encoder=nacl.encoding.RawEncoder,
        )
    )


def compute_statement_ad(record_id: bytes, amendment_id: bytes, patient_id: bytes) -> bytes:
    return STATEMENT_AD_DOMAIN + record_id + amendment_id + patient_id


def seal_statement(text: str, *, record_key: bytes, amendment: AmendmentState) -> Statement:
    """Encrypt a statement of disagreement for every reader of the amendment's record."""
    key = compute_statement_key(record_key, amendment.amendment_id)
    nonce = nacl.utils.random(NONCE_SIZE)
    ad = compute_statement_ad(amendment.record_id, amendment.amendment_id, amendment.patient_id)
    ciphertext = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        _pad(text, "statement"), ad, nonce, key
    )
    return Statement(nonce, bytes(ciphertext))


def open_statement(amendment: AmendmentState, record_key: bytes) -> str | None:
    """The statement of disagreement, with the record key of the amendment's record (None: none)."""
    if not amendment.statement:
        return None
    statement = amendment.statement[0]
    key = compute_statement_key(record_key, amendment.amendment_id)
    ad = compute_statement_ad(amendment.record_id, amendment.amendment_id, amendment.patient_id)
    try:
        padded = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            statement.ciphertext, ad, statement.nonce, key
        )
    except nacl.exceptions.CryptoError:
        raise AmendmentTextUnreadableError(
            f"the statement on amendment {amendment.amendment_id.hex()} does not open with the record's key"
        ) from None
    return _unpad(bytes(padded), "the statement")


# --- statements travel with the record ----------------------------------------------------------


def record_statements(
    state: StateReader, record: RecordState, identity: Identity, grant: GrantState | None
) -> list[dict[str, Any]]:
    """The statements of disagreement attached to `record`, opened with the reader's record key."""
    amendments = [a for a in rights.get_record_amendments(state, record.record_id) if a.statement]
    if not amendments:
        return []
    try:
        # A grant in parts carries the record key in one of its parts (ADR 0012).
        sealed_key = None if grant is None else get_grant_sealed_key(state, grant, record.record_id)
        record_key = get_verified_record_key(record, identity, grant=grant, sealed_key=sealed_key)
    except (DecryptionError, RecordVerificationError):
        record_key = None
    items: list[dict[str, Any]] = []
    for amendment in amendments:
        text: str | None = None
        if record_key is not None:
            try:
                text = open_statement(amendment, record_key)
            except AmendmentTextUnreadableError:
                text = None
        items.append(
            {
                "amendment_id": amendment.amendment_id.hex(),
                "statement": text,
                "readable": text is not None,
                "height": amendment.statement_height,
                "time_ms": amendment.statement_time_ms,
            }
        )
    return items


# --- builders -----------------------------------------------------------------------------------


def build_request_records(
    signer: Identity,
    patient_id: bytes,
    institution: bytes,
    *,
    record_types: tuple[str, ...] = (),
    from_ms: int = 0,
    to_ms: int = 2**64 - 1,
    chain_id: str,
    nonce: int | None = None,
    timestamp_ms: int | None = None,
) -> SignedTx:
    """A records request (patient or representative); the tx id is the request id."""
    body = RequestRecordsBody(patient_id, institution, tuple(sorted(set(record_types))), from_ms, to_ms)
    return build_tx(
        signer, KIND_REQUEST_RECORDS, body, chain_id=chain_id, nonce=nonce, timestamp_ms=timestamp_ms
    )


def build_close_records_request(
    institution: Identity,
    request_id: bytes,
    record_ids: tuple[bytes, ...] = (),
    *,
    chain_id: str,
    nonce: int | None = None,
    timestamp_ms: int | None = None,
) -> SignedTx:
    body = CloseRecordsRequestBody(request_id, tuple(sorted(set(record_ids))))
    return build_tx(
        institution,
        KIND_CLOSE_RECORDS_REQUEST,
        body,
        chain_id=chain_id,
        nonce=nonce,
        timestamp_ms=timestamp_ms,
    )


def build_request_amendment(
    signer: Identity,
    patient_id: bytes,
    record_id: bytes,
    text: str,
    *,
    author: bytes,
    patient_enc_key: bytes,
    author_enc_key: bytes,
    chain_id: str,
    nonce: int | None = None,
    timestamp_ms: int | None = None,
) -> SignedTx:
    """An amendment request; `text` (what is wrong) is sealed for the patient and the author."""
    sealed = seal_amendment_text(
        text,
        associated_data=compute_request_text_ad(patient_id, record_id, author),
        patient_enc_key=patient_enc_key,
        author_enc_key=author_enc_key,
    )
    return build_tx(
        signer,
        KIND_REQUEST_AMENDMENT,
        RequestAmendmentBody(record_id, sealed),
        chain_id=chain_id,
        nonce=nonce,
        timestamp_ms=timestamp_ms,
    )


def build_accept_amendment(
    author: Identity,
    amendment: AmendmentState,
    supersedes: bytes,
    record: EncryptedRecord,
    *,
    chain_id: str,
    labels: Iterable[str] = (),
    nonce: int | None = None,
    timestamp_ms: int | None = None,
) -> SignedTx:
    """The author's acceptance: `record` (encrypted as a correction of `supersedes`) replaces it.
    With security `labels` (of the correction, issue 12) it is `health.accept_labelled_amendment`."""
    if record.author != author.public.sign_key or record.supersedes != supersedes:
        raise ValueError("the correction was not encrypted by this author as a correction of that record")
    correction = SupersedeRecordBody(
        supersedes,
        AddRecordBody(amendment.patient_id, record.record_type, record.commitment, record.envelope),
    )
    accept = AcceptAmendmentBody(amendment.amendment_id, correction)
    sorted_labels = tuple(sorted(set(labels)))
    if sorted_labels:
        return build_tx(
            author,
            KIND_ACCEPT_LABELLED_AMENDMENT,
            LabelledAmendmentBody(accept, sorted_labels),
            chain_id=chain_id,
            nonce=nonce,
            timestamp_ms=timestamp_ms,
        )
    return build_tx(
        author, KIND_ACCEPT_AMENDMENT, accept, chain_id=chain_id, nonce=nonce, timestamp_ms=timestamp_ms
    )


def build_refuse_amendment(
    author: Identity,
    amendment: AmendmentState,
    reason: str,
    *,
    patient_enc_key: bytes,
    chain_id: str,
    nonce: int | None = None,
    timestamp_ms: int | None = None,
) -> SignedTx:
    sealed = seal_amendment_text(
        reason,
        associated_data=compute_refusal_text_ad(amendment.amendment_id),
        patient_enc_key=patient_enc_key,
        author_enc_key=author.public.enc_key,
        what="reason",
    )
    return build_tx(
        author,
        KIND_REFUSE_AMENDMENT,
        RefuseAmendmentBody(amendment.amendment_id, sealed),
        chain_id=chain_id,
        nonce=nonce,
        timestamp_ms=timestamp_ms,
    )


def build_disagree(
    signer: Identity,
    amendment: AmendmentState,
    statement: Statement,
    *,
    chain_id: str,
    nonce: int | None = None,
    timestamp_ms: int | None = None,
) -> SignedTx:
    """A statement of disagreement (from `seal_statement`) on a refused amendment."""
    return build_tx(
        signer,
        KIND_DISAGREE,
        DisagreeBody(amendment.amendment_id, statement),
        chain_id=chain_id,
        nonce=nonce,
        timestamp_ms=timestamp_ms,
    )
