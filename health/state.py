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
    h1/gparts/<grant id 32>                → GrantPartsState of a grant in parts (ADR 0012)
    h1/gkey/<grant id 32><record id 32>    → a record key sealed to the grantee, by a grant part
    h1/rreq/<request id 32>                → RecordsRequestState (patient rights, issue 14)
    h1/rreqopen/<patient id 32>            → u64 count of the patient's open records requests
    h1/ireqn/<institution key 32>          → u64 count of records requests addressed to it
    h1/ireq/<institution key 32><u64>      → request id, in order of filing
    h1/amd/<amendment id 32>               → AmendmentState
    h1/ramd/<record id 32>                 → IdList of the record's amendment requests
    h1/amdopen/<patient id 32>             → u64 count of the patient's open amendment requests
    h1/aamdn/<author key 32>               → u64 count of amendment requests addressed to it
    h1/aamd/<author key 32><u64>           → amendment id, in order of filing
    h1/ratt/<record id 32>                 → RecordAttachments (a record's blobs, ADR 0013)
    h1/blobn                               → u64 count of attachments on the ledger
    h1/blob/<u64 index>                    → BlobIndexEntry, in chain order (what nodes replicate)
    h1/layout                              → u64 state layout (absent: 1; written at genesis)
    h1/gexpn/<u64 expiry bucket>           → u64 count of grants expiring in that 10 s (layout 2)
    h1/gexp/<u64 expiry bucket><u64 index> → grant id 32 ‖ u64 expires_ms, in order of granting
    h1/rlab/<record id 32>                 → RecordLabels (a labelled record's labels, issue 12)
    h1/consent/<grant id 32>               → ConsentTerms of a standing consent (its GrantState beside)
    h1/claim/<claim id 32>                 → ClaimState
    h1/cdec/<claim id 32><u8 version>      → ClaimDecision, one a decided version
    h1/iclmn/<insurer key 32>              → u64 count of claims addressed to the insurer
    h1/iclm/<insurer key 32><u64>          → claim id, in order of filing
    h1/fclmn/<clinic key 32>               → u64 count of claims the clinic filed
    h1/fclm/<clinic key 32><u64>           → claim id, in order of filing
    h1/study/<study id 32>                 → StudyState (research, issue 13: budget, counts)
    h1/studyn                              → u64 count of studies on the ledger
    h1/studies/<u64>                       → study id, in order of registration
    h1/smem/<study id 32><patient id 32>   → StudyMembership (current or last membership)
    h1/smemn/<study id 32>                 → u64 count of patients who ever joined the study
    h1/smeml/<study id 32><u64>            → patient id, in order of first joining
    h1/sqry/<query id 32>                  → QueryState (charged)
    h1/sqdig/<query digest 32>             → query id (one query per digest: no repeats)
    h1/sqryn/<study id 32>                 → u64 count of the study's queries
    h1/sqryl/<study id 32><u64>            → query id, in order of submission
    h1/sans/<query id 32><institution 32>  → AnswerState, one an asked institution
    h1/rkmin                               → u64 the network's small-cell k (absent: 11)
    h1/mem/<sign key 32>                   → MembershipState (absent: active; issue 16, ADR 0020)
    h1/mchg/<change id 32>                 → MembershipChange (pending or decided)
    h1/mchgn                               → u64 count of membership changes ever proposed
    h1/mchgl/<u64>                         → change id, in order of first approval

The grant expiry index (layout 2, `STATE_LAYOUT_GRANT_EXPIRY`) is written once by the tx that
creates a grant (`rules.create_grant`: one-tx grants and manifests of grants in parts alike) and
never changed, so it reads the same at every later height: `health.events` finds the grants that
expire in a block by reading the 10-second buckets its time window spans. A layout-1 chain has no index and
no `h1/layout` key: its writes, and so its state roots, are exactly what they were certified with.

Integers in keys and counters are 8-byte big-endian, so keys sort in index order.
`get_*` read; `save_*` and `append_*` write through a `StateWriter` (an `OverlayState`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final, Protocol, TypeVar

from medledger.chain.app import StateReader
from medledger.chain.codec import WireType, decode, encode
from medledger.chain.errors import CodecError
from medledger.health.claims_types import ClaimDecision, ClaimState, ConsentTerms, RecordLabels
from medledger.health.errors import HealthStateError
from medledger.health.membership_types import STATUS_ACTIVE, MembershipChange, MembershipState
from medledger.health.research_types import (
    AnswerState,
    QueryState,
    StudyMembership,
    StudyState,
)
from medledger.health.rights_types import AmendmentState, RecordsRequestState
from medledger.health.types import (
    EVENT_CONSENT,
    EVENT_GRANT,
    RESEARCH_K_MIN_DEFAULT,
    STATE_LAYOUT_V1,
    STATE_VALUE_BYTES_MAX,
    AuditEvent,
    BlobIndexEntry,
    BlobRef,
    GrantPartsState,
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
#: The prefix of institutions' keys (prefix + signing key): for a replay that follows joins.
INSTITUTION_KEY_PREFIX: Final = _INSTITUTION
_PATIENT = LAYOUT_PREFIX + b"pat/"
_PATIENT_BY_KEY = LAYOUT_PREFIX + b"patkey/"
_RECORD = LAYOUT_PREFIX + b"rec/"
#: The prefix of the records' keys (prefix + record id): for a node that scans its own store.
RECORD_KEY_PREFIX: Final = _RECORD
_RECORD_BY_NONCE = LAYOUT_PREFIX + b"rnonce/"
_PATIENT_RECORD_COUNT = LAYOUT_PREFIX + b"precn/"
_PATIENT_RECORD = LAYOUT_PREFIX + b"prec/"
_INQUIRY = LAYOUT_PREFIX + b"inq/"
_GRANT = LAYOUT_PREFIX + b"grant/"
_PATIENT_LIVE_GRANTS = LAYOUT_PREFIX + b"plive/"
_AUDIT_COUNT = LAYOUT_PREFIX + b"auditn/"
_AUDIT = LAYOUT_PREFIX + b"audit/"
_GRANT_PARTS = LAYOUT_PREFIX + b"gparts/"
_GRANT_KEY = LAYOUT_PREFIX + b"gkey/"

_INSTITUTION_STATUS = LAYOUT_PREFIX + b"mem/"
_MEMBERSHIP_CHANGE = LAYOUT_PREFIX + b"mchg/"
_MEMBERSHIP_CHANGE_COUNT = LAYOUT_PREFIX + b"mchgn"
_MEMBERSHIP_CHANGE_LIST = LAYOUT_PREFIX + b"mchgl/"

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


class StateScanner(Protocol):
    """A committed state that can be walked by key prefix (`BlockStore.iter_app`)."""

    def iter_app(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]: ...


def iter_patients(state: StateScanner) -> Iterator[PatientState]:
    """Every registered patient, in id order (a scan: for tools such as the broker's ACL, not rules)."""
    for key, raw in state.iter_app(_PATIENT):
        try:
            yield decode(PatientState, raw, max_bytes=STATE_VALUE_BYTES_MAX)
        except CodecError as exc:
            raise HealthStateError(
                f"stored PatientState under {key!r} does not decode: {exc.message}"
            ) from None


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
    """Every grant the patient ever gave (live or not, standing consents too), found through the
    audit trail."""
    grants: list[GrantState] = []
    start = 0
    while True:
        events = list_audit_events(state, patient_id, start=start)
        for event in events:
            if event.event in (EVENT_GRANT, EVENT_CONSENT):
                grant = get_grant(state, event.event_id)
                if grant is None:
                    raise HealthStateError("an audited grant is missing")
                grants.append(grant)
        if len(events) < LIST_LIMIT_MAX:
            return grants
        start += len(events)


# --- grants in parts (ADR 0012) -----------------------------------------------------------------


def get_grant_parts(state: StateReader, grant_id: bytes) -> GrantPartsState | None:
    """The manifest and progress of a grant in parts (None: a one-tx grant, or no grant)."""
    return _load(GrantPartsState, state, _GRANT_PARTS + grant_id)


def save_grant_parts(state: StateWriter, parts: GrantPartsState) -> None:
    state.put(_GRANT_PARTS + parts.grant_id, encode(parts))


def get_grant_key(state: StateReader, grant_id: bytes, record_id: bytes) -> bytes | None:
    """The record key a part of grant `grant_id` sealed to its grantee for `record_id`, if any."""
    return state.get(_GRANT_KEY + grant_id + record_id)


def save_grant_key(state: StateWriter, grant_id: bytes, record_id: bytes, sealed_key: bytes) -> None:
    state.put(_GRANT_KEY + grant_id + record_id, sealed_key)


# --- patient rights: records requests and amendments (issue 14, `health.rights`) -----------------

_RECORDS_REQUEST = LAYOUT_PREFIX + b"rreq/"
_PATIENT_OPEN_REQUESTS = LAYOUT_PREFIX + b"rreqopen/"
_INSTITUTION_REQUEST_COUNT = LAYOUT_PREFIX + b"ireqn/"
_INSTITUTION_REQUEST = LAYOUT_PREFIX + b"ireq/"
_AMENDMENT = LAYOUT_PREFIX + b"amd/"
_RECORD_AMENDMENTS = LAYOUT_PREFIX + b"ramd/"
_PATIENT_OPEN_AMENDMENTS = LAYOUT_PREFIX + b"amdopen/"
_AUTHOR_AMENDMENT_COUNT = LAYOUT_PREFIX + b"aamdn/"
_AUTHOR_AMENDMENT = LAYOUT_PREFIX + b"aamd/"


def _list_indexed(
    state: StateReader, count_key: bytes, item_prefix: bytes, start: int, limit: int
) -> list[bytes]:
    end = min(_get_count(state, count_key), start + min(limit, LIST_LIMIT_MAX))
    ids: list[bytes] = []
    for index in range(start, end):
        item = state.get(item_prefix + _u64(index))
        if item is None:
            raise HealthStateError(f"an index list has a hole at {index}")
        ids.append(item)
    return ids


def _append_indexed(state: StateWriter, count_key: bytes, item_prefix: bytes, item: bytes) -> None:
    count = _get_count(state, count_key)
    state.put(item_prefix + _u64(count), item)
    state.put(count_key, _u64(count + 1))


def get_records_request(state: StateReader, request_id: bytes) -> RecordsRequestState | None:
    return _load(RecordsRequestState, state, _RECORDS_REQUEST + request_id)


def save_records_request(state: StateWriter, request: RecordsRequestState) -> None:
    """Store a request; a new one is also indexed under the institution it is addressed to."""
    key = _RECORDS_REQUEST + request.request_id
    if state.get(key) is None:
        institution = request.institution
        _append_indexed(
            state,
            _INSTITUTION_REQUEST_COUNT + institution,
            _INSTITUTION_REQUEST + institution,
            request.request_id,
        )
    state.put(key, encode(request))


def list_institution_request_ids(
    state: StateReader, institution: bytes, *, start: int = 0, limit: int = LIST_LIMIT_MAX
) -> list[bytes]:
    """Records requests addressed to `institution`, in order of filing."""
    return _list_indexed(
        state, _INSTITUTION_REQUEST_COUNT + institution, _INSTITUTION_REQUEST + institution, start, limit
    )


def get_institution_request_count(state: StateReader, institution: bytes) -> int:
    return _get_count(state, _INSTITUTION_REQUEST_COUNT + institution)


def get_open_request_count(state: StateReader, patient_id: bytes) -> int:
    return _get_count(state, _PATIENT_OPEN_REQUESTS + patient_id)


def save_open_request_count(state: StateWriter, patient_id: bytes, count: int) -> None:
    state.put(_PATIENT_OPEN_REQUESTS + patient_id, _u64(count) if count else None)


def get_amendment(state: StateReader, amendment_id: bytes) -> AmendmentState | None:
    return _load(AmendmentState, state, _AMENDMENT + amendment_id)


def save_amendment(state: StateWriter, amendment: AmendmentState) -> None:
    """Store an amendment; a new one is also listed under its record and its author."""
    key = _AMENDMENT + amendment.amendment_id
    if state.get(key) is None:
        ids = get_record_amendment_ids(state, amendment.record_id)
        state.put(_RECORD_AMENDMENTS + amendment.record_id, encode(IdList((*ids, amendment.amendment_id))))
        _append_indexed(
            state,
            _AUTHOR_AMENDMENT_COUNT + amendment.author,
            _AUTHOR_AMENDMENT + amendment.author,
            amendment.amendment_id,
        )
    state.put(key, encode(amendment))


def get_record_amendment_ids(state: StateReader, record_id: bytes) -> tuple[bytes, ...]:
    """The amendment requests a record received, in order."""
    ids = _load(IdList, state, _RECORD_AMENDMENTS + record_id)
    return () if ids is None else ids.ids


def list_author_amendment_ids(
    state: StateReader, author: bytes, *, start: int = 0, limit: int = LIST_LIMIT_MAX
) -> list[bytes]:
    """Amendment requests addressed to `author` (records it wrote), in order of filing."""
    return _list_indexed(state, _AUTHOR_AMENDMENT_COUNT + author, _AUTHOR_AMENDMENT + author, start, limit)


def get_author_amendment_count(state: StateReader, author: bytes) -> int:
    return _get_count(state, _AUTHOR_AMENDMENT_COUNT + author)


def get_open_amendment_count(state: StateReader, patient_id: bytes) -> int:
    return _get_count(state, _PATIENT_OPEN_AMENDMENTS + patient_id)


def save_open_amendment_count(state: StateWriter, patient_id: bytes, count: int) -> None:
    state.put(_PATIENT_OPEN_AMENDMENTS + patient_id, _u64(count) if count else None)


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


# --- state layout and the grant expiry index (layout 2) ------------------------------------------

_LAYOUT = LAYOUT_PREFIX + b"layout"
_GRANT_EXPIRY_COUNT = LAYOUT_PREFIX + b"gexpn/"
_GRANT_EXPIRY = LAYOUT_PREFIX + b"gexp/"

#: Width of one bucket of the grant expiry index, in ms (part of layout 2). A block reads every
#: bucket its window spans, with all the entries of each: narrower buckets mean fewer entries read
#: again by each block of a busy second, more empty buckets read after a halt (a day: 8,640).
GRANT_EXPIRY_BUCKET_MS: Final = 10_000
_GRANT_EXPIRY_ENTRY_BYTES: Final = 32 + 8


def get_layout(state: StateReader) -> int:
    """The state layout the chain's genesis declared (1 when it declared none)."""
    raw = state.get(_LAYOUT)
    if raw is None:
        return STATE_LAYOUT_V1
    if len(raw) != 8:
        raise HealthStateError("the state layout is not 8 bytes")
    return int.from_bytes(raw, "big")


def save_layout(state: StateWriter, layout: int) -> None:
    """Declare the state layout (genesis only: a chain keeps its layout for life)."""
    state.put(_LAYOUT, _u64(layout))


def append_grant_expiry(state: StateWriter, grant_id: bytes, expires_ms: int) -> None:
    """Index a new grant under the bucket it expires in (written once, by the granting tx)."""
    bucket = _u64(expires_ms // GRANT_EXPIRY_BUCKET_MS)
    _append_indexed(state, _GRANT_EXPIRY_COUNT + bucket, _GRANT_EXPIRY + bucket, grant_id + _u64(expires_ms))


def list_grant_expiries(state: StateReader, after_ms: int, until_ms: int) -> list[tuple[int, bytes]]:
    """(expires_ms, grant id) of every indexed grant with `after_ms < expires_ms <= until_ms`,
    sorted. Reads one count per bucket of the window, and that bucket's entries."""
    found: list[tuple[int, bytes]] = []
    if until_ms <= after_ms:
        return found
    for number in range((after_ms + 1) // GRANT_EXPIRY_BUCKET_MS, until_ms // GRANT_EXPIRY_BUCKET_MS + 1):
        bucket = _u64(number)
        count = _get_count(state, _GRANT_EXPIRY_COUNT + bucket)
        for index in range(count):
            entry = state.get(_GRANT_EXPIRY + bucket + _u64(index))
            if entry is None or len(entry) != _GRANT_EXPIRY_ENTRY_BYTES:
                raise HealthStateError(f"the grant expiry index has a bad entry at {index}")
            expires_ms = int.from_bytes(entry[32:], "big")
            if after_ms < expires_ms <= until_ms:
                found.append((expires_ms, entry[:32]))
    found.sort()
    return found


# --- claims: labels, standing consents, claims (issue 12, `health.claims`) ----------------------

_RECORD_LABELS = LAYOUT_PREFIX + b"rlab/"
_CONSENT = LAYOUT_PREFIX + b"consent/"
_CLAIM = LAYOUT_PREFIX + b"claim/"
_CLAIM_DECISION = LAYOUT_PREFIX + b"cdec/"
_INSURER_CLAIM_COUNT = LAYOUT_PREFIX + b"iclmn/"
_INSURER_CLAIM = LAYOUT_PREFIX + b"iclm/"
_CLINIC_CLAIM_COUNT = LAYOUT_PREFIX + b"fclmn/"
_CLINIC_CLAIM = LAYOUT_PREFIX + b"fclm/"


def get_record_labels(state: StateReader, record_id: bytes) -> tuple[str, ...]:
    """A record's security labels (none for an unlabelled record)."""
    stored = _load(RecordLabels, state, _RECORD_LABELS + record_id)
    return stored.labels if stored is not None else ()


def save_record_labels(state: StateWriter, record_id: bytes, labels: tuple[str, ...]) -> None:
    state.put(_RECORD_LABELS + record_id, encode(RecordLabels(record_id, labels)))


def get_consent_terms(state: StateReader, grant_id: bytes) -> ConsentTerms | None:
    """The terms of a standing consent (None: the grant answered an inquiry, or no grant)."""
    return _load(ConsentTerms, state, _CONSENT + grant_id)


def save_consent_terms(state: StateWriter, terms: ConsentTerms) -> None:
    state.put(_CONSENT + terms.grant_id, encode(terms))


def get_claim(state: StateReader, claim_id: bytes) -> ClaimState | None:
    return _load(ClaimState, state, _CLAIM + claim_id)


def save_claim(state: StateWriter, claim: ClaimState) -> None:
    """Store a claim; a new one is also listed under its insurer and its clinic."""
    key = _CLAIM + claim.claim_id
    if state.get(key) is None:
        _append_indexed(
            state, _INSURER_CLAIM_COUNT + claim.insurer, _INSURER_CLAIM + claim.insurer, claim.claim_id
        )
        _append_indexed(
            state, _CLINIC_CLAIM_COUNT + claim.clinic, _CLINIC_CLAIM + claim.clinic, claim.claim_id
        )
    state.put(key, encode(claim))


def get_claim_decision(state: StateReader, claim_id: bytes, version: int) -> ClaimDecision | None:
    return _load(ClaimDecision, state, _CLAIM_DECISION + claim_id + bytes([version]))


def save_claim_decision(state: StateWriter, decision: ClaimDecision) -> None:
    state.put(_CLAIM_DECISION + decision.claim_id + bytes([decision.version]), encode(decision))


def list_insurer_claim_ids(
    state: StateReader, insurer: bytes, *, start: int = 0, limit: int = LIST_LIMIT_MAX
) -> list[bytes]:
    """Claims addressed to `insurer`, in order of filing."""
    return _list_indexed(state, _INSURER_CLAIM_COUNT + insurer, _INSURER_CLAIM + insurer, start, limit)


def list_clinic_claim_ids(
    state: StateReader, clinic: bytes, *, start: int = 0, limit: int = LIST_LIMIT_MAX
) -> list[bytes]:
    """Claims `clinic` filed, in order of filing."""
    return _list_indexed(state, _CLINIC_CLAIM_COUNT + clinic, _CLINIC_CLAIM + clinic, start, limit)


# --- research: studies, memberships, queries, answers (issue 13, `health.research`) -------------

_STUDY = LAYOUT_PREFIX + b"study/"
_STUDY_COUNT = LAYOUT_PREFIX + b"studyn"
_STUDY_LIST = LAYOUT_PREFIX + b"studies/"
_MEMBERSHIP = LAYOUT_PREFIX + b"smem/"
_MEMBER_COUNT = LAYOUT_PREFIX + b"smemn/"
_MEMBER_LIST = LAYOUT_PREFIX + b"smeml/"
_QUERY = LAYOUT_PREFIX + b"sqry/"
_QUERY_BY_DIGEST = LAYOUT_PREFIX + b"sqdig/"
_STUDY_QUERY_COUNT = LAYOUT_PREFIX + b"sqryn/"
_STUDY_QUERY_LIST = LAYOUT_PREFIX + b"sqryl/"
_ANSWER = LAYOUT_PREFIX + b"sans/"
_RESEARCH_K_MIN = LAYOUT_PREFIX + b"rkmin"


def get_study(state: StateReader, study_id: bytes) -> StudyState | None:
    return _load(StudyState, state, _STUDY + study_id)


def save_study(state: StateWriter, study: StudyState) -> None:
    """Store a study; a new one is also appended to the ledger-wide list of studies."""
    key = _STUDY + study.study_id
    if state.get(key) is None:
        _append_indexed(state, _STUDY_COUNT, _STUDY_LIST, study.study_id)
    state.put(key, encode(study))


def list_study_ids(state: StateReader, *, start: int = 0, limit: int = LIST_LIMIT_MAX) -> list[bytes]:
    """Every study on the ledger, in order of registration."""
    return _list_indexed(state, _STUDY_COUNT, _STUDY_LIST, start, limit)


def get_membership(state: StateReader, study_id: bytes, patient_id: bytes) -> StudyMembership | None:
    return _load(StudyMembership, state, _MEMBERSHIP + study_id + patient_id)


def save_membership(state: StateWriter, membership: StudyMembership) -> None:
    """Store a membership; a patient's first is also appended to the study's list of patients."""
    key = _MEMBERSHIP + membership.study_id + membership.patient_id
    if state.get(key) is None:
        study_id = membership.study_id
        _append_indexed(state, _MEMBER_COUNT + study_id, _MEMBER_LIST + study_id, membership.patient_id)
    state.put(key, encode(membership))


def list_member_ids(
    state: StateReader, study_id: bytes, *, start: int = 0, limit: int = LIST_LIMIT_MAX
) -> list[bytes]:
    """Patients who ever joined the study, in order of first joining (their membership says whether
    they are members now)."""
    return _list_indexed(state, _MEMBER_COUNT + study_id, _MEMBER_LIST + study_id, start, limit)


def get_query(state: StateReader, query_id: bytes) -> QueryState | None:
    return _load(QueryState, state, _QUERY + query_id)


def get_query_id_by_digest(state: StateReader, digest: bytes) -> bytes | None:
    return state.get(_QUERY_BY_DIGEST + digest)


def save_query(state: StateWriter, query: QueryState) -> None:
    """Store a query; a new one is also indexed by its digest and listed under its study."""
    key = _QUERY + query.query_id
    if state.get(key) is None:
        state.put(_QUERY_BY_DIGEST + query.digest, query.query_id)
        study_id = query.study_id
        _append_indexed(state, _STUDY_QUERY_COUNT + study_id, _STUDY_QUERY_LIST + study_id, query.query_id)
    state.put(key, encode(query))


def list_query_ids(
    state: StateReader, study_id: bytes, *, start: int = 0, limit: int = LIST_LIMIT_MAX
) -> list[bytes]:
    """The study's queries, in order of submission."""
    return _list_indexed(state, _STUDY_QUERY_COUNT + study_id, _STUDY_QUERY_LIST + study_id, start, limit)


def get_answer(state: StateReader, query_id: bytes, institution: bytes) -> AnswerState | None:
    return _load(AnswerState, state, _ANSWER + query_id + institution)


def save_answer(state: StateWriter, answer: AnswerState) -> None:
    state.put(_ANSWER + answer.query_id + answer.institution, encode(answer))


def save_research_k_min(state: StateWriter, k_min: int) -> None:
    """The network's small-cell threshold, set by its genesis (`health.app`)."""
    state.put(_RESEARCH_K_MIN, _u64(k_min))


def get_research_k_min(state: StateReader) -> int:
    """The network's small-cell threshold: no study may release a cell smaller (ADR 0019)."""
    return _get_count(state, _RESEARCH_K_MIN) or RESEARCH_K_MIN_DEFAULT


# --- institution membership (issue 16, ADR 0020) ------------------------------------------------


def get_institution_status(state: StateReader, sign_key: bytes) -> MembershipState | None:
    """An institution's membership status; None for a genesis institution never changed (active)."""
    return _load(MembershipState, state, _INSTITUTION_STATUS + sign_key)


def save_institution_status(state: StateWriter, sign_key: bytes, membership: MembershipState) -> None:
    state.put(_INSTITUTION_STATUS + sign_key, encode(membership))


def is_active_institution(state: StateReader, sign_key: bytes) -> bool:
    """Whether `sign_key` is a registered institution whose status is active."""
    if get_institution(state, sign_key) is None:
        return False
    membership = get_institution_status(state, sign_key)
    return membership is None or membership.status == STATUS_ACTIVE


def is_inactive_institution(state: StateReader, sign_key: bytes) -> bool:
    """Whether `sign_key` is an institution suspended or removed (one read for everyone else)."""
    membership = get_institution_status(state, sign_key)
    return membership is not None and membership.status != STATUS_ACTIVE


def get_membership_change(state: StateReader, change_id: bytes) -> MembershipChange | None:
    return _load(MembershipChange, state, _MEMBERSHIP_CHANGE + change_id)


def save_membership_change(state: StateWriter, change: MembershipChange) -> None:
    """Store a change; a new one is also listed, in order of its first approval."""
    key = _MEMBERSHIP_CHANGE + change.change_id
    if state.get(key) is None:
        _append_indexed(state, _MEMBERSHIP_CHANGE_COUNT, _MEMBERSHIP_CHANGE_LIST, change.change_id)
    state.put(key, encode(change))


def list_membership_change_ids(
    state: StateReader, *, start: int = 0, limit: int = LIST_LIMIT_MAX
) -> list[bytes]:
    return _list_indexed(state, _MEMBERSHIP_CHANGE_COUNT, _MEMBERSHIP_CHANGE_LIST, start, limit)


def get_membership_change_count(state: StateReader) -> int:
    return _get_count(state, _MEMBERSHIP_CHANGE_COUNT)


def iter_institutions(state: StateScanner) -> Iterator[Institution]:
    """Every registered institution (of any status), in key order (a scan: for a node, not rules)."""
    for key, raw in state.iter_app(_INSTITUTION):
        try:
            yield decode(Institution, raw, max_bytes=STATE_VALUE_BYTES_MAX)
        except CodecError as exc:
            raise HealthStateError(
                f"stored Institution under {key!r} does not decode: {exc.message}"
            ) from None


#: The prefixes whose writes change who is a member (`node.membership` re-reads on them).
MEMBERSHIP_KEY_PREFIXES: Final = (_INSTITUTION, _INSTITUTION_STATUS, _MEMBERSHIP_CHANGE)
