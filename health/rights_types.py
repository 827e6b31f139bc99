"""The patient's rights on the ledger: wire bodies, stored values and limits (issue 14, ADR 0014).

Two rights the seeds name, each a small set of transactions whose kinds are in `types.TX_KINDS`:

- **Right of access** (HIPAA 45 CFR 164.524, GDPR art. 15): a patient (or a representative) files
  a *records request* to any registered institution (`health.request_records`: which record types,
  which clinical period); the rules set its deadline to the block time plus
  `RECORDS_REQUEST_DEADLINE_MS` (30 days); the institution uploads what it holds as ordinary
  records and closes the request (`health.close_records_request`, citing the records it added).
  An open request past its deadline is *overdue* (derived, never stored: it depends on "now").
- **Right to amend** (HIPAA 45 CFR 164.526): the patient asks a record's author to correct it
  (`health.request_amendment`, citing the record, with what is wrong sealed for patient and
  author); the author accepts by superseding the record (`health.accept_amendment`, which carries
  the superseding record) or refuses with a sealed reason (`health.refuse_amendment`); after a
  refusal the patient may attach a *statement of disagreement* (`health.disagree`), encrypted
  under a key derived from the record's own record key, so that everyone who can read the record
  (author, patient, today's and tomorrow's grantees) can read the statement, and nobody else.

Free text never travels in the clear: `SealedText` is padded to one size and sealed like an
inquiry's reason; a `Statement` has no wrapped keys at all (its key comes from the record key).
This module declares values only; the rules are `health.rights`, the crypto `health.rights_seal`.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Final

from medledger.chain.codec import Bytes, FieldSpec, FixedBytes, Seq, Struct, Text, UInt, wire_fields
from medledger.crypto.envelope import NONCE_SIZE, TAG_SIZE
from medledger.health.types import (
    HASH,
    KEY,
    KIND_ACCEPT_AMENDMENT,
    KIND_CLOSE_RECORDS_REQUEST,
    KIND_DISAGREE,
    KIND_REFUSE_AMENDMENT,
    KIND_REQUEST_AMENDMENT,
    KIND_REQUEST_RECORDS,
    OPTIONAL_HASH,
    RECORD_TYPES,
    SupersedeRecordBody,
    WrappedKey,
    _SealedEnvelope,
)

# --- limits -------------------------------------------------------------------------------------

#: The legal clock of a records request (HIPAA: 30 days), counted from its block time.
RECORDS_REQUEST_DEADLINE_MS: Final = 30 * 24 * 3600 * 1000
#: Records requests one patient may have open at once (a bound on the per-patient state).
RECORDS_REQUESTS_OPEN_MAX: Final = 64
#: Records a closing may cite (more are uploaded all the same; the closing names these).
RECORDS_REQUEST_RECORDS_MAX: Final = 256
#: Longest free text of an amendment (what is wrong, a refusal's reason, a statement), in characters.
AMENDMENT_TEXT_LENGTH_MAX: Final = 2000
#: ... and in UTF-8 bytes (four per character at most).
AMENDMENT_TEXT_BYTES_MAX: Final = 4 * AMENDMENT_TEXT_LENGTH_MAX
#: Every amendment text is padded to this size before encryption: its ciphertext leaks no length.
AMENDMENT_TEXT_PADDED_BYTES: Final = AMENDMENT_TEXT_BYTES_MAX + 1
#: Readers of a sealed amendment text: the patient and the record's author.
AMENDMENT_TEXT_READERS_MAX: Final = 2
#: Amendment requests one record may ever receive (one open at a time).
AMENDMENTS_PER_RECORD_MAX: Final = 16
#: Amendment requests one patient may have open at once.
AMENDMENTS_OPEN_MAX: Final = 64
#: Record versions an acceptance may walk from the cited record to its latest version.
SUPERSEDE_CHAIN_MAX: Final = 64

# --- code lists ---------------------------------------------------------------------------------

REQUEST_OPEN: Final = "open"
REQUEST_CLOSED: Final = "closed"
REQUEST_STATUSES: Final = frozenset({REQUEST_OPEN, REQUEST_CLOSED})
#: Shown, never stored: an open request whose deadline has passed (by the latest block time).
REQUEST_OVERDUE: Final = "overdue"
REQUEST_VIEW_STATUSES: Final = frozenset({REQUEST_OPEN, REQUEST_CLOSED, REQUEST_OVERDUE})

AMENDMENT_OPEN: Final = "open"
AMENDMENT_ACCEPTED: Final = "accepted"
AMENDMENT_REFUSED: Final = "refused"
AMENDMENT_STATUSES: Final = frozenset({AMENDMENT_OPEN, AMENDMENT_ACCEPTED, AMENDMENT_REFUSED})

# --- domains ------------------------------------------------------------------------------------

#: Prefixes the associated data of a sealed amendment text (then a purpose tag and its binding).
AMENDMENT_TEXT_AD_DOMAIN: Final = b"medledger/health/amendment-text/v1\x00"
#: Keys a statement of disagreement's AEAD key off the record key (keyed BLAKE2b).
STATEMENT_KEY_DOMAIN: Final = b"medledger/health/statement-key/v1\x00"
#: Prefixes a statement's associated data (record id, amendment id, patient id).
STATEMENT_AD_DOMAIN: Final = b"medledger/health/statement/v1\x00"

# --- wire values --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class SealedText(_SealedEnvelope):
    """Amendment free text, padded to one size, its key sealed to the patient and the author."""

    nonce: bytes
    ciphertext: bytes
    wrapped_keys: tuple[WrappedKey, ...]

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        nonce=FixedBytes(NONCE_SIZE),
        ciphertext=FixedBytes(AMENDMENT_TEXT_PADDED_BYTES + TAG_SIZE),
        wrapped_keys=Seq(Struct(WrappedKey), AMENDMENT_TEXT_READERS_MAX),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Statement:
    """A statement of disagreement: padded text under a key derived from the record's record key.

    No wrapped keys: whoever holds the record key (every reader of the record, including grantees
    who get it later) derives the statement key (`rights_seal.compute_statement_key`).
    """

    nonce: bytes
    ciphertext: bytes

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        nonce=FixedBytes(NONCE_SIZE), ciphertext=FixedBytes(AMENDMENT_TEXT_PADDED_BYTES + TAG_SIZE)
    )


# --- transaction bodies -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class RequestRecordsBody:
    """A patient's (or representative's) request to an institution for the records it holds.

    `record_types` (sorted, unique; empty: every type) and the clinical period [from_ms, to_ms]
    say which records; the deadline is set by the rules from the block time.
    """

    patient_id: bytes
    institution: bytes
    record_types: tuple[str, ...]
    from_ms: int
    to_ms: int

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        patient_id=HASH,
        institution=KEY,
        record_types=Seq(Text(allowed=RECORD_TYPES), len(RECORD_TYPES)),
        from_ms=UInt(),
        to_ms=UInt(),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class CloseRecordsRequestBody:
    """The addressed institution closes a request, citing the records it added (sorted, unique)."""

    request_id: bytes
    record_ids: tuple[bytes, ...]

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        request_id=HASH, record_ids=Seq(HASH, RECORDS_REQUEST_RECORDS_MAX)
    )


@dataclasses.dataclass(frozen=True, slots=True)
class RequestAmendmentBody:
    """The patient asks a record's author to correct it; what is wrong is sealed for both."""

    record_id: bytes
    sealed_text: SealedText

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(record_id=HASH, sealed_text=Struct(SealedText))


@dataclasses.dataclass(frozen=True, slots=True)
class AcceptAmendmentBody:
    """The author accepts: the correction supersedes the cited record (or its latest version)."""

    amendment_id: bytes
    correction: SupersedeRecordBody

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        amendment_id=HASH, correction=Struct(SupersedeRecordBody)
    )


@dataclasses.dataclass(frozen=True, slots=True)
class RefuseAmendmentBody:
    """The author refuses, with a reason sealed for the patient and itself."""

    amendment_id: bytes
    sealed_reason: SealedText

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        amendment_id=HASH, sealed_reason=Struct(SealedText)
    )


@dataclasses.dataclass(frozen=True, slots=True)
class DisagreeBody:
    """After a refusal, the patient's statement of disagreement, to travel with the record."""

    amendment_id: bytes
    statement: Statement

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(amendment_id=HASH, statement=Struct(Statement))


RIGHTS_BODY_TYPES: Final[dict[str, type]] = {
    KIND_REQUEST_RECORDS: RequestRecordsBody,
    KIND_CLOSE_RECORDS_REQUEST: CloseRecordsRequestBody,
    KIND_REQUEST_AMENDMENT: RequestAmendmentBody,
    KIND_ACCEPT_AMENDMENT: AcceptAmendmentBody,
    KIND_REFUSE_AMENDMENT: RefuseAmendmentBody,
    KIND_DISAGREE: DisagreeBody,
}

# --- stored values ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class RecordsRequestState:
    """A records request: who asked whom for what, its deadline, and how it was closed.

    `close_id` is the closing tx's id (empty while open); `record_ids` the records it cited.
    """

    request_id: bytes
    patient_id: bytes
    institution: bytes
    requested_by: bytes
    record_types: tuple[str, ...]
    from_ms: int
    to_ms: int
    deadline_ms: int
    status: str
    close_id: bytes
    closed_height: int
    closed_time_ms: int
    record_ids: tuple[bytes, ...]
    height: int
    time_ms: int

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        request_id=HASH,
        patient_id=HASH,
        institution=KEY,
        requested_by=KEY,
        record_types=Seq(Text(allowed=RECORD_TYPES), len(RECORD_TYPES)),
        from_ms=UInt(),
        to_ms=UInt(),
        deadline_ms=UInt(),
        status=Text(allowed=REQUEST_STATUSES),
        close_id=OPTIONAL_HASH,
        closed_height=UInt(),
        closed_time_ms=UInt(),
        record_ids=Seq(HASH, RECORDS_REQUEST_RECORDS_MAX),
        height=UInt(),
        time_ms=UInt(),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class AmendmentState:
    """An amendment request and its answer; `refusal` and `statement` hold 0 or 1 item.

    `answer_id`: the accepting tx (the id of the correcting record) or the refusing tx.
    """

    amendment_id: bytes
    record_id: bytes
    patient_id: bytes
    author: bytes
    requested_by: bytes
    sealed_text: SealedText
    status: str
    answer_id: bytes
    answer_height: int
    answer_time_ms: int
    refusal: tuple[SealedText, ...]
    statement: tuple[Statement, ...]
    statement_by: bytes
    statement_height: int
    statement_time_ms: int
    height: int
    time_ms: int

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        amendment_id=HASH,
        record_id=HASH,
        patient_id=HASH,
        author=KEY,
        requested_by=KEY,
        sealed_text=Struct(SealedText),
        status=Text(allowed=AMENDMENT_STATUSES),
        answer_id=OPTIONAL_HASH,
        answer_height=UInt(),
        answer_time_ms=UInt(),
        refusal=Seq(Struct(SealedText), 1),
        statement=Seq(Struct(Statement), 1),
        statement_by=Bytes(32),
        statement_height=UInt(),
        statement_time_ms=UInt(),
        height=UInt(),
        time_ms=UInt(),
    )


def compute_request_status(request: RecordsRequestState, now_ms: int) -> str:
    """What a records request is at block time `now_ms`: closed, open, or overdue (open, late)."""
    if request.status == REQUEST_CLOSED:
        return REQUEST_CLOSED
    return REQUEST_OVERDUE if now_ms >= request.deadline_ms else REQUEST_OPEN


def is_closed_late(request: RecordsRequestState) -> bool:
    return request.status == REQUEST_CLOSED and request.closed_time_ms > request.deadline_ms
