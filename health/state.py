"""The health application's state: its key layout (versioned, in this one module) and typed access.

The chain gives the application a flat key-value state with point reads only (`StateReader.get`),
so every list the application needs is kept explicitly: a counter and one key per item, under the
owner's id. All keys start with `LAYOUT_PREFIX`; changing the layout means a new prefix and a
migration, never a silent reinterpretation.

    h1/inst/<sign key 32>                  → Institution
    h1/pat/<patient id 32>                 → PatientState
    h1/patkey/<sign key 32>                → patient id (who is a patient, by signing key)
    h1/rec/<record id 32>                  → RecordState (ciphertext, commitment, metadata)
    h1/rnonce/<patient id 32><nonce 24>    → record id (whose ciphertext this is: no copies)
    h1/precn/<patient id 32>               → u64 count of the patient's records
    h1/prec/<patient id 32><u64 index>     → record id, in order of addition
    h1/inq/<inquiry id 32>                 → InquiryState
    h1/grant/<grant id 32>                 → GrantState
    h1/plive/<patient id 32>               → IdList of the patient's grants not yet revoked/expired
    h1/auditn/<patient id 32>              → u64 count of the patient's audit events
    h1/audit/<patient id 32><u64 index>    → AuditEvent, in chain order
    h1/ratt/<record id 32>                 → RecordAttachments (a record's blobs, ADR 0013)
    h1/blobn                               → u64 count of attachments on the ledger
    h1/blob/<u64 index>                    → BlobIndexEntry, in chain order (what nodes replicate)

Integers in keys and counters are 8-byte big-endian, so keys sort in index order.
`get_*` read; `save_*` and `append_*` write through a `StateWriter` (an `OverlayState`).
"""

from __future__ import annotations

from typing import Final, Protocol, TypeVar

from medledger.chain.app import StateReader
from medledger.chain.codec import WireType, decode, encode
from medledger.chain.errors import CodecError
from medledger.health.errors import HealthStateError
from medledger.health.types import (
    EVENT_GRANT,
    STATE_VALUE_BYTES_MAX,
    AuditEvent,
    BlobIndexEntry,
    BlobRef,
    GrantState,
    IdList,
    InquiryState,
    Institution,
    PatientId,
    PatientState,
    RecordAttachments,
    RecordState,
)

LAYOUT_VERSION: Final = 1
LAYOUT_PREFIX: Final = b"h1/"

_INSTITUTION = LAYOUT_PREFIX + b"inst/"
_PATIENT = LAYOUT_PREFIX + b"pat/"
_PATIENT_BY_KEY = LAYOUT_PREFIX + b"patkey/"
_RECORD = LAYOUT_PREFIX + b"rec/"
_RECORD_BY_NONCE = LAYOUT_PREFIX + b"rnonce/"
_PATIENT_RECORD_COUNT = LAYOUT_PREFIX + b"precn/"
_PATIENT_RECORD = LAYOUT_PREFIX + b"prec/"
_INQUIRY = LAYOUT_PREFIX + b"inq/"
_GRANT = LAYOUT_PREFIX + b"grant/"
_PATIENT_LIVE_GRANTS = LAYOUT_PREFIX + b"plive/"
_AUDIT_COUNT = LAYOUT_PREFIX + b"auditn/"
_AUDIT = LAYOUT_PREFIX + b"audit/"

#: Most items one list call returns.
LIST_LIMIT_MAX: Final = 1000

V = TypeVar("V", bound=WireType)


class StateWriter(StateReader, Protocol):
    """A state that also takes writes (`None` deletes): `OverlayState` while executing a block."""

    def put(self, key: bytes, value: bytes | None) -> None: ...


def _u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def _load(cls: type[V], state: StateReader, key: bytes) -> V | None:
    raw = state.get(key)
    if raw is None:
        return None
    try:
        return decode(cls, raw, max_bytes=STATE_VALUE_BYTES_MAX)
    except CodecError as exc:
        raise HealthStateError(
            f"stored {cls.__name__} under {key!r} does not decode: {exc.message}"
        ) from None


def _get_count(state: StateReader, key: bytes) -> int:
    raw = state.get(key)
    if raw is None:
        return 0
    if len(raw) != 8:
        raise HealthStateError(f"counter under {key!r} is not 8 bytes")
    return int.from_bytes(raw, "big")


# --- institutions and patients ------------------------------------------------------------------


def get_institution(state: StateReader, sign_key: bytes) -> Institution | None:
    return _load(Institution, state, _INSTITUTION + sign_key)


def save_institution(state: StateWriter, institution: Institution) -> None:
    state.put(_INSTITUTION + institution.sign_key, encode(institution))


def get_patient(state: StateReader, patient_id: bytes) -> PatientState | None:
    return _load(PatientState, state, _PATIENT + patient_id)


def get_patient_id_by_key(state: StateReader, sign_key: bytes) -> PatientId | None:
    raw = state.get(_PATIENT_BY_KEY + sign_key)
    return None if raw is None else PatientId(raw)


def save_patient(state: StateWriter, patient: PatientState) -> None:
    state.put(_PATIENT + patient.patient_id, encode(patient))
    state.put(_PATIENT_BY_KEY + patient.sign_key, patient.patient_id)


# --- records ------------------------------------------------------------------------------------


def get_record(state: StateReader, record_id: bytes) -> RecordState | None:
    return _load(RecordState, state, _RECORD + record_id)


def get_record_id_by_nonce(state: StateReader, patient_id: bytes, nonce: bytes) -> bytes | None:
    """The patient's record whose ciphertext carries this envelope nonce, if any.

    Per patient, like every rule a patient's tx is judged by: a patient's light client holds only
    that patient's entries (`health.verify`), so an index across patients would let an author make
    the chain and every patient's client judge a record differently. A copy moved to another
    patient gains nothing: the patient id is bound into the ciphertext (`records.open_record`).
    """
    return state.get(_RECORD_BY_NONCE + patient_id + nonce)


def save_record(state: StateWriter, record: RecordState) -> None:
    """Store a record; a new record is also appended to its patient's list and nonce index."""
    key = _RECORD + record.record_id
    if state.get(key) is None:
        count = _get_count(state, _PATIENT_RECORD_COUNT + record.patient_id)
        state.put(_PATIENT_RECORD + record.patient_id + _u64(count), record.record_id)
        state.put(_PATIENT_RECORD_COUNT + record.patient_id, _u64(count + 1))
        state.put(_RECORD_BY_NONCE + record.patient_id + record.envelope.nonce, record.record_id)
    state.put(key, encode(record))


def get_record_count(state: StateReader, patient_id: bytes) -> int:
    return _get_count(state, _PATIENT_RECORD_COUNT + patient_id)


def list_record_ids(
    state: StateReader, patient_id: bytes, *, start: int = 0, limit: int = LIST_LIMIT_MAX
) -> list[bytes]:
    """The patient's record ids in order of addition, from index `start`."""
    end = min(get_record_count(state, patient_id), start + min(limit, LIST_LIMIT_MAX))
    ids: list[bytes] = []
    for index in range(start, end):
        record_id = state.get(_PATIENT_RECORD + patient_id + _u64(index))
        if record_id is None:
            raise HealthStateError(f"record list of a patient has a hole at {index}")
        ids.append(record_id)
    return ids


def list_records(
    state: StateReader, patient_id: bytes, *, start: int = 0, limit: int = LIST_LIMIT_MAX
) -> list[RecordState]:
    records: list[RecordState] = []
    for record_id in list_record_ids(state, patient_id, start=start, limit=limit):
        record = get_record(state, record_id)
        if record is None:
            raise HealthStateError("a listed record is missing")
        records.append(record)
    return records


# --- inquiries and grants -----------------------------------------------------------------------


def get_inquiry(state: StateReader, inquiry_id: bytes) -> InquiryState | None:
    return _load(InquiryState, state, _INQUIRY + inquiry_id)


def save_inquiry(state: StateWriter, inquiry: InquiryState) -> None:
    state.put(_INQUIRY + inquiry.inquiry_id, encode(inquiry))


def get_grant(state: StateReader, grant_id: bytes) -> GrantState | None:
    return _load(GrantState, state, _GRANT + grant_id)


def save_grant(state: StateWriter, grant: GrantState) -> None:
    state.put(_GRANT + grant.grant_id, encode(grant))


def get_live_grant_ids(state: StateReader, patient_id: bytes) -> tuple[bytes, ...]:
    """Ids of the patient's grants not known to be revoked or expired (pruned as blocks pass)."""
    ids = _load(IdList, state, _PATIENT_LIVE_GRANTS + patient_id)
    return () if ids is None else ids.ids


def save_live_grant_ids(state: StateWriter, patient_id: bytes, ids: tuple[bytes, ...]) -> None:
    key = _PATIENT_LIVE_GRANTS + patient_id
    state.put(key, encode(IdList(ids)) if ids else None)


# --- audit --------------------------------------------------------------------------------------


def append_audit_event(state: StateWriter, patient_id: bytes, event: AuditEvent) -> None:
    count = _get_count(state, _AUDIT_COUNT + patient_id)
    state.put(_AUDIT + patient_id + _u64(count), encode(event))
    state.put(_AUDIT_COUNT + patient_id, _u64(count + 1))


def get_audit_event_count(state: StateReader, patient_id: bytes) -> int:
    return _get_count(state, _AUDIT_COUNT + patient_id)


def list_audit_events(
    state: StateReader, patient_id: bytes, *, start: int = 0, limit: int = LIST_LIMIT_MAX
) -> list[AuditEvent]:
    """The patient's audit trail (inquiries, decisions, reads, representative changes) in order."""
    end = min(get_audit_event_count(state, patient_id), start + min(limit, LIST_LIMIT_MAX))
    events: list[AuditEvent] = []
    for index in range(start, end):
        event = _load(AuditEvent, state, _AUDIT + patient_id + _u64(index))
        if event is None:
            raise HealthStateError(f"audit trail of a patient has a hole at {index}")
        events.append(event)
    return events


def list_grants(state: StateReader, patient_id: bytes) -> list[GrantState]:
    """Every grant the patient ever gave (live or not), found through the audit trail."""
    grants: list[GrantState] = []
    start = 0
    while True:
        events = list_audit_events(state, patient_id, start=start)
        for event in events:
            if event.event == EVENT_GRANT:
                grant = get_grant(state, event.event_id)
                if grant is None:
                    raise HealthStateError("an audited grant is missing")
                grants.append(grant)
        if len(events) < LIST_LIMIT_MAX:
            return grants
        start += len(events)


# --- attachments (docs/adr/0013-attachment-blobs.md) ---------------------------------------------

_RECORD_ATTACHMENTS = LAYOUT_PREFIX + b"ratt/"
_BLOB_COUNT = LAYOUT_PREFIX + b"blobn"
_BLOB = LAYOUT_PREFIX + b"blob/"


def get_record_attachments(state: StateReader, record_id: bytes) -> tuple[BlobRef, ...]:
    """A record's attachments (none for a record without)."""
    stored = _load(RecordAttachments, state, _RECORD_ATTACHMENTS + record_id)
    return stored.attachments if stored is not None else ()


def save_record_attachments(
    state: StateWriter, record: RecordState, attachments: tuple[BlobRef, ...]
) -> None:
    """Store a new record's attachments and append each to the ledger-wide blob list."""
    stored = RecordAttachments(record.record_id, attachments)
    state.put(_RECORD_ATTACHMENTS + record.record_id, encode(stored))
    count = _get_count(state, _BLOB_COUNT)
    for offset, ref in enumerate(attachments):
        entry = BlobIndexEntry(ref.blob_id, record.record_id, record.author, ref.size)
        state.put(_BLOB + _u64(count + offset), encode(entry))
    state.put(_BLOB_COUNT, _u64(count + len(attachments)))


def get_blob_count(state: StateReader) -> int:
    return _get_count(state, _BLOB_COUNT)


def list_blob_entries(
    state: StateReader, *, start: int = 0, limit: int = LIST_LIMIT_MAX
) -> list[BlobIndexEntry]:
    """The ledger's attachments in chain order, from index `start`."""
    end = min(get_blob_count(state), start + min(limit, LIST_LIMIT_MAX))
    entries: list[BlobIndexEntry] = []
    for index in range(start, end):
        entry = _load(BlobIndexEntry, state, _BLOB + _u64(index))
        if entry is None:
            raise HealthStateError(f"the blob list has a hole at {index}")
        entries.append(entry)
    return entries
