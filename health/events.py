"""Ledger events: what each committed transaction did, as typed events (DESIGN.md §8, ADR 0015).

An event is derived from a committed tx that passed its rules, its place in the chain and facts
of the state that never change once written (an inquiry's patient and requester, a grant's patient
and grantee, a record's patient and author, a request's institution, an amendment's author). So
every node, at any later height, derives the same events from the same blocks, and a subscriber
that lost some resumes exactly from the ledger by number.

Numbering: `(height, tx index, event index)`, packed into one integer `seq` (`compute_seq`) so that
`after=N` and SSE's `Last-Event-ID` are a single number that sorts in chain order.

Payloads (`LedgerEvent.to_payload`) carry a kind, the chain position, the tx id and the ids of the
ledger objects concerned (inquiry, grant, record, request, amendment): never a patient id, a key, a
name, a purpose, a scope or any text. Who an event concerns (`patient_id`, `institutions`) is kept
beside the payload to route it, and never leaves in it.

Grant expiry happens with no tx: a grant expires in the first block whose time reaches its
`expires_ms`. `compute_block_events` derives it from the grant expiry index the granting tx wrote
(`state.list_grant_expiries`, layout 2): block `h` yields `grant.expired` for each grant with
`time(h-1) < expires_ms <= time(h)` not revoked in a block before `h`. Those facts never change once
written (a grant made at `h` or later expires after `time(h)`: block times strictly increase and a
grant outlives its block), so every node derives the same list at any later height. They come after
the block's txs, at pseudo tx indices from `EXPIRY_TX_INDEX_FIRST` (a block holds at most
`BLOCK_TXS_MAX` txs, so no tx has one), 256 a pseudo index, in order of (expires_ms, grant id).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Final

from medledger.chain.app import StateReader
from medledger.chain.errors import TxRejectedError
from medledger.chain.limits import BLOCK_TXS_MAX
from medledger.chain.types import Tx
from medledger.health import claims_types, research_types, rights_types
from medledger.health import state as st
from medledger.health.errors import HealthStateError
from medledger.health.rules import decode_body
from medledger.health.types import (
    KIND_ADD_REPRESENTATIVE,
    KIND_JOIN_STUDY,
    AddDocumentBody,
    AddRecordBody,
    DenyBody,
    GrantBody,
    GrantManifestBody,
    GrantPartBody,
    NarrowedGrantBody,
    NarrowedGrantManifestBody,
    PatientId,
    ReadReceiptBody,
    RegisterPatientBody,
    RepresentativeBody,
    RequestAccessBody,
    RevokeBody,
    SupersedeRecordBody,
    compute_patient_id,
)

# --- event kinds (payload `kind`) ---------------------------------------------------------------

EVENT_PATIENT_REGISTERED: Final = "patient.registered"
EVENT_REPRESENTATIVE_ADDED: Final = "representative.added"
EVENT_REPRESENTATIVE_REMOVED: Final = "representative.removed"
EVENT_RECORD_ADDED: Final = "record.added"
EVENT_RECORD_SUPERSEDED: Final = "record.superseded"
EVENT_RECORD_READ: Final = "record.read"
EVENT_INQUIRY_FILED: Final = "inquiry.filed"
EVENT_INQUIRY_GRANTED: Final = "inquiry.granted"
EVENT_INQUIRY_DENIED: Final = "inquiry.denied"
EVENT_GRANT_PART_ADDED: Final = "grant.part_added"
EVENT_GRANT_REVOKED: Final = "grant.revoked"
EVENT_GRANT_EXPIRED: Final = "grant.expired"
EVENT_RECORDS_REQUEST_FILED: Final = "records_request.filed"
EVENT_RECORDS_REQUEST_CLOSED: Final = "records_request.closed"
EVENT_AMENDMENT_REQUESTED: Final = "amendment.requested"
EVENT_AMENDMENT_ACCEPTED: Final = "amendment.accepted"
EVENT_AMENDMENT_REFUSED: Final = "amendment.refused"
EVENT_STATEMENT_ATTACHED: Final = "amendment.statement_attached"
# Claims (issue 12): standing consents and claims. A labelled record is a `record.added`.
EVENT_CONSENT_GRANTED: Final = "consent.granted"
EVENT_CONSENT_REVOKED: Final = "consent.revoked"
EVENT_CLAIM_FILED: Final = "claim.filed"
EVENT_CLAIM_AMENDED: Final = "claim.amended"
EVENT_CLAIM_DECIDED: Final = "claim.decided"
EVENT_CLAIM_READ: Final = "claim.read"
# Research (issue 13): studies, opt-ins, queries and answers.
EVENT_STUDY_REGISTERED: Final = "study.registered"
EVENT_STUDY_JOINED: Final = "study.joined"
EVENT_STUDY_LEFT: Final = "study.left"
EVENT_QUERY_SUBMITTED: Final = "query.submitted"
EVENT_ANSWER_POSTED: Final = "answer.posted"
EVENT_KINDS: Final = frozenset(
    {
        EVENT_PATIENT_REGISTERED,
        EVENT_REPRESENTATIVE_ADDED,
        EVENT_REPRESENTATIVE_REMOVED,
        EVENT_RECORD_ADDED,
        EVENT_RECORD_SUPERSEDED,
        EVENT_RECORD_READ,
        EVENT_INQUIRY_FILED,
        EVENT_INQUIRY_GRANTED,
        EVENT_INQUIRY_DENIED,
        EVENT_GRANT_PART_ADDED,
        EVENT_GRANT_REVOKED,
        EVENT_GRANT_EXPIRED,
        EVENT_RECORDS_REQUEST_FILED,
        EVENT_RECORDS_REQUEST_CLOSED,
        EVENT_AMENDMENT_REQUESTED,
        EVENT_AMENDMENT_ACCEPTED,
        EVENT_AMENDMENT_REFUSED,
        EVENT_STATEMENT_ATTACHED,
        EVENT_CONSENT_GRANTED,
        EVENT_CONSENT_REVOKED,
        EVENT_CLAIM_FILED,
        EVENT_CLAIM_AMENDED,
        EVENT_CLAIM_DECIDED,
        EVENT_CLAIM_READ,
        EVENT_STUDY_REGISTERED,
        EVENT_STUDY_JOINED,
        EVENT_STUDY_LEFT,
        EVENT_QUERY_SUBMITTED,
        EVENT_ANSWER_POSTED,
    }
)

# --- numbering ----------------------------------------------------------------------------------

#: Bits of `seq` for the tx index and the event index (a block holds < 2^16 txs, a tx < 2^8 events).
TX_INDEX_BITS: Final = 16
EVENT_INDEX_BITS: Final = 8
TX_INDEX_MAX: Final = (1 << TX_INDEX_BITS) - 1
EVENT_INDEX_MAX: Final = (1 << EVENT_INDEX_BITS) - 1
#: The largest `seq` a client may send (a height up to 2^40).
SEQ_MAX: Final = (1 << (40 + TX_INDEX_BITS + EVENT_INDEX_BITS)) - 1
#: The first pseudo tx index of a block's grant expiries: after every tx a block may hold.
EXPIRY_TX_INDEX_FIRST: Final = BLOCK_TXS_MAX
#: Most grant expiries one block can number (the pseudo tx indices left, 256 events each).
GRANT_EXPIRIES_PER_BLOCK_MAX: Final = (TX_INDEX_MAX + 1 - EXPIRY_TX_INDEX_FIRST) << EVENT_INDEX_BITS
if EXPIRY_TX_INDEX_FIRST > TX_INDEX_MAX:  # pragma: no cover - a limit changed without this module
    raise AssertionError("a block's tx indices leave no pseudo index for grant expiries")


def compute_seq(height: int, tx_index: int, event_index: int) -> int:
    """One integer ordering events in the chain: height, then tx index, then event index."""
    if not (0 <= tx_index <= TX_INDEX_MAX and 0 <= event_index <= EVENT_INDEX_MAX and height >= 0):
        raise ValueError("event position out of range")
    return (height << (TX_INDEX_BITS + EVENT_INDEX_BITS)) | (tx_index << EVENT_INDEX_BITS) | event_index


def get_seq_height(seq: int) -> int:
    """The height of the block an event number falls in."""
    return seq >> (TX_INDEX_BITS + EVENT_INDEX_BITS)


# --- events -------------------------------------------------------------------------------------

#: Names of the id fields a payload may carry (all 32-byte ledger ids, hex in the payload).
ID_FIELDS: Final = (
    "record_id",
    "supersedes",
    "inquiry_id",
    "grant_id",
    "request_id",
    "amendment_id",
    "claim_id",
    "study_id",
    "query_id",
)


@dataclasses.dataclass(frozen=True, slots=True)
class LedgerEvent:
    """One effect of one committed tx; `patient_id` and `institutions` route it, never leave in it."""

    height: int
    tx_index: int
    event_index: int
    kind: str
    tx_id: bytes
    time_ms: int
    ids: tuple[tuple[str, bytes], ...]
    patient_id: PatientId | None
    institutions: tuple[bytes, ...]

    @property
    def seq(self) -> int:
        return compute_seq(self.height, self.tx_index, self.event_index)

    def is_for_patient(self, patient_id: bytes) -> bool:
        return self.patient_id is not None and self.patient_id == patient_id

    def is_for_institution(self, sign_key: bytes) -> bool:
        return sign_key in self.institutions

    def to_payload(self) -> dict[str, object]:
        """The event as it is sent: kinds, chain position and ledger ids only."""
        payload: dict[str, object] = {
            "seq": self.seq,
            "kind": self.kind,
            "height": self.height,
            "tx_index": self.tx_index,
            "event_index": self.event_index,
            "tx_id": self.tx_id.hex(),
            "time_ms": self.time_ms,
        }
        for name, value in self.ids:
            payload[name] = value.hex()
        return payload


@dataclasses.dataclass(frozen=True, slots=True)
class _Effect:
    kind: str
    ids: tuple[tuple[str, bytes], ...]
    patient_id: PatientId | None
    institutions: tuple[bytes, ...]


def _unique(*keys: bytes) -> tuple[bytes, ...]:
    return tuple(dict.fromkeys(k for k in keys if k))


def _record_effect(sender: bytes, tx_id: bytes, record: AddRecordBody, supersedes: bytes) -> _Effect:
    patient = PatientId(record.patient_id)
    if supersedes:
        return _Effect(
            EVENT_RECORD_SUPERSEDED,
            (("record_id", tx_id), ("supersedes", supersedes)),
            patient,
            _unique(sender),
        )
    return _Effect(EVENT_RECORD_ADDED, (("record_id", tx_id),), patient, _unique(sender))


def _inquiry_decision(state: StateReader, kind: str, inquiry_id: bytes, grant_id: bytes) -> _Effect | None:
    inquiry = st.get_inquiry(state, inquiry_id)
    if inquiry is None:
        return None
    ids = (("inquiry_id", inquiry_id), ("grant_id", grant_id)) if grant_id else (("inquiry_id", inquiry_id),)
    return _Effect(kind, ids, PatientId(inquiry.patient_id), _unique(inquiry.requester))


def _amendment_effect(state: StateReader, kind: str, amendment_id: bytes, record_id: bytes) -> _Effect | None:
    amendment = st.get_amendment(state, amendment_id)
    if amendment is None:
        return None
    ids: tuple[tuple[str, bytes], ...] = (("amendment_id", amendment_id),)
    if record_id:
        ids += (("record_id", record_id),)
    return _Effect(kind, ids, PatientId(amendment.patient_id), _unique(amendment.author))


def compute_tx_effects(state: StateReader, tx: Tx, tx_id: bytes) -> list[_Effect]:
    """The effects of one committed, accepted tx, from its body and the state's fixed facts."""
    try:
        body = decode_body(tx)
    except TxRejectedError:
        return []
    sender = tx.sender
    effects: list[_Effect | None] = []
    if isinstance(body, RegisterPatientBody):
        effects.append(_Effect(EVENT_PATIENT_REGISTERED, (), compute_patient_id(sender), ()))
    elif isinstance(body, RepresentativeBody):
        kind = (
            EVENT_REPRESENTATIVE_ADDED if tx.kind == KIND_ADD_REPRESENTATIVE else EVENT_REPRESENTATIVE_REMOVED
        )
        effects.append(_Effect(kind, (), PatientId(body.patient_id), ()))
    elif isinstance(body, AddRecordBody):
        effects.append(_record_effect(sender, tx_id, body, b""))
    elif isinstance(body, (SupersedeRecordBody, AddDocumentBody)):
        effects.append(_record_effect(sender, tx_id, body.record, body.supersedes))
    elif isinstance(body, RequestAccessBody):
        effects.append(
            _Effect(
                EVENT_INQUIRY_FILED, (("inquiry_id", tx_id),), PatientId(body.patient_id), _unique(sender)
            )
        )
    elif isinstance(body, (GrantBody, GrantManifestBody)):
        effects.append(_inquiry_decision(state, EVENT_INQUIRY_GRANTED, body.inquiry_id, tx_id))
    elif isinstance(body, NarrowedGrantBody):
        effects.append(_inquiry_decision(state, EVENT_INQUIRY_GRANTED, body.grant.inquiry_id, tx_id))
    elif isinstance(body, NarrowedGrantManifestBody):
        effects.append(_inquiry_decision(state, EVENT_INQUIRY_GRANTED, body.manifest.inquiry_id, tx_id))
    elif isinstance(body, DenyBody):
        effects.append(_inquiry_decision(state, EVENT_INQUIRY_DENIED, body.inquiry_id, b""))
    elif isinstance(body, RevokeBody) and st.get_consent_terms(state, body.grant_id) is not None:
        grant = st.get_grant(state, body.grant_id)
        if grant is not None:
            effects.append(
                _Effect(
                    EVENT_CONSENT_REVOKED,
                    (("grant_id", grant.grant_id),),
                    PatientId(grant.patient_id),
                    _unique(grant.grantee),
                )
            )
    elif isinstance(body, GrantPartBody | RevokeBody | ReadReceiptBody):
        grant = st.get_grant(state, body.grant_id)
        if grant is not None:
            kind = (
                EVENT_GRANT_PART_ADDED
                if isinstance(body, GrantPartBody)
                else EVENT_GRANT_REVOKED
                if isinstance(body, RevokeBody)
                else EVENT_RECORD_READ
            )
            ids: tuple[tuple[str, bytes], ...] = (
                ("grant_id", grant.grant_id),
                ("inquiry_id", grant.inquiry_id),
            )
            effects.append(_Effect(kind, ids, PatientId(grant.patient_id), _unique(grant.grantee)))
    elif isinstance(body, rights_types.RequestRecordsBody):
        effects.append(
            _Effect(
                EVENT_RECORDS_REQUEST_FILED,
                (("request_id", tx_id),),
                PatientId(body.patient_id),
                _unique(body.institution),
            )
        )
    elif isinstance(body, rights_types.CloseRecordsRequestBody):
        request = st.get_records_request(state, body.request_id)
        if request is not None:
            effects.append(
                _Effect(
                    EVENT_RECORDS_REQUEST_CLOSED,
                    (("request_id", body.request_id),),
                    PatientId(request.patient_id),
                    _unique(request.institution),
                )
            )
    elif isinstance(body, rights_types.RequestAmendmentBody):
        effects.append(_amendment_effect(state, EVENT_AMENDMENT_REQUESTED, tx_id, body.record_id))
    elif isinstance(body, rights_types.AcceptAmendmentBody):
        effects.extend(_accept_amendment_effects(state, sender, tx_id, body))
    elif isinstance(body, rights_types.RefuseAmendmentBody):
        effects.append(_amendment_effect(state, EVENT_AMENDMENT_REFUSED, body.amendment_id, b""))
    elif isinstance(body, rights_types.DisagreeBody):
        effects.append(_amendment_effect(state, EVENT_STATEMENT_ATTACHED, body.amendment_id, b""))
    else:
        effects.extend(_claims_effects(state, sender, tx_id, body))
        effects.extend(_research_effects(state, tx.kind, sender, tx_id, body))
    return [e for e in effects if e is not None]


def _accept_amendment_effects(
    state: StateReader, sender: bytes, tx_id: bytes, body: rights_types.AcceptAmendmentBody
) -> list[_Effect | None]:
    correction = body.correction
    return [
        _amendment_effect(state, EVENT_AMENDMENT_ACCEPTED, body.amendment_id, b""),
        _record_effect(sender, tx_id, correction.record, correction.supersedes),
    ]


def compute_grant_expiries(
    state: StateReader, height: int, time_ms: int, parent_time_ms: int
) -> list[LedgerEvent]:
    """The `grant.expired` events of block `height` (time `time_ms`, its parent's `parent_time_ms`)."""
    events: list[LedgerEvent] = []
    for _, grant_id in st.list_grant_expiries(state, parent_time_ms, time_ms):
        grant = st.get_grant(state, grant_id)
        if grant is None:
            raise HealthStateError("an indexed grant is missing")
        if grant.is_revoked and grant.revoked_height < height:
            continue  # revoked before it could expire: its end was `grant.revoked`
        position = len(events)
        if position >= GRANT_EXPIRIES_PER_BLOCK_MAX:
            raise HealthStateError(f"more than {GRANT_EXPIRIES_PER_BLOCK_MAX} grants expire in one block")
        events.append(
            LedgerEvent(
                height=height,
                tx_index=EXPIRY_TX_INDEX_FIRST + (position >> EVENT_INDEX_BITS),
                event_index=position & EVENT_INDEX_MAX,
                kind=EVENT_GRANT_EXPIRED,
                # The tx whose effect ends here: the grant's own (an expiry has no tx of its own).
                tx_id=grant.grant_id,
                time_ms=time_ms,
                ids=(("grant_id", grant.grant_id), ("inquiry_id", grant.inquiry_id)),
                patient_id=PatientId(grant.patient_id),
                institutions=_unique(grant.grantee),
            )
        )
    return events


def _claim_effect(state: StateReader, kind: str, claim_id: bytes, grant_id: bytes = b"") -> _Effect | None:
    """An event of a claim. Its audience (docs/health.md, "Who sees which event"): the patient, and
    the claim's two parties for what they did to it (filed, amended, decided); a read under the
    patient's consent (`grant_id`) is the patient's and the reader's business only, so the filing
    clinic does not see the insurer's reads of its claim, nor the grant they cite."""
    claim = st.get_claim(state, claim_id)
    if claim is None:
        return None
    ids: tuple[tuple[str, bytes], ...] = (("claim_id", claim_id),)
    if grant_id:
        ids += (("grant_id", grant_id),)
        return _Effect(kind, ids, PatientId(claim.patient_id), _unique(claim.insurer))
    return _Effect(kind, ids, PatientId(claim.patient_id), _unique(claim.clinic, claim.insurer))


def _claims_effects(state: StateReader, sender: bytes, tx_id: bytes, body: object) -> list[_Effect | None]:
    """Effects of the claims kinds (issue 12): consents, labelled records, claims and their reads."""
    if isinstance(body, claims_types.LabelledRecordBody):
        return [_record_effect(sender, tx_id, body.record, body.supersedes)]
    if isinstance(body, claims_types.LabelledDocumentBody):
        return [_record_effect(sender, tx_id, body.document.record, body.document.supersedes)]
    if isinstance(body, claims_types.LabelledAmendmentBody):
        return _accept_amendment_effects(state, sender, tx_id, body.accept)
    if isinstance(body, claims_types.GrantConsentBody):
        return [
            _Effect(
                EVENT_CONSENT_GRANTED,
                (("grant_id", tx_id),),
                PatientId(body.patient_id),
                _unique(body.grantee),
            )
        ]
    if isinstance(body, claims_types.FileClaimBody):
        return [
            _Effect(
                EVENT_CLAIM_FILED,
                (("claim_id", tx_id), ("record_id", body.encounter_id)),
                PatientId(body.patient_id),
                _unique(sender, body.insurer),
            )
        ]
    if isinstance(body, claims_types.AmendClaimBody):
        return [_claim_effect(state, EVENT_CLAIM_AMENDED, body.claim_id)]
    if isinstance(body, claims_types.DecideClaimBody):
        return [_claim_effect(state, EVENT_CLAIM_DECIDED, body.claim_id)]
    if isinstance(body, claims_types.ClaimReadReceiptBody):
        return [
            _claim_effect(state, EVENT_RECORD_READ, body.claim_id, body.grant_id),
            _claim_effect(state, EVENT_CLAIM_READ, body.claim_id, body.grant_id),
        ]
    return []


def _research_effects(
    state: StateReader, kind: str, sender: bytes, tx_id: bytes, body: object
) -> list[_Effect | None]:
    """Effects of the research kinds (issue 13). A study's registration goes to its institute; an
    opt-in or withdrawal to the patient alone; a query to its institute and every institution it
    asks (they answer it); an answer to the institute and the answering institution."""
    if isinstance(body, research_types.RegisterStudyBody):
        return [_Effect(EVENT_STUDY_REGISTERED, (("study_id", tx_id),), None, _unique(sender))]
    if isinstance(body, research_types.StudyMembershipBody):
        event = EVENT_STUDY_JOINED if kind == KIND_JOIN_STUDY else EVENT_STUDY_LEFT
        return [_Effect(event, (("study_id", body.study_id),), PatientId(body.patient_id), ())]
    if isinstance(body, research_types.SubmitQueryBody):
        study = st.get_study(state, body.study_id)
        if study is None:
            return []
        return [
            _Effect(
                EVENT_QUERY_SUBMITTED,
                (("study_id", body.study_id), ("query_id", tx_id)),
                None,
                _unique(study.institute, *body.institutions),
            )
        ]
    if isinstance(body, research_types.PostAnswerBody):
        query = st.get_query(state, body.query_id)
        study = None if query is None else st.get_study(state, query.study_id)
        if query is None or study is None:
            return []
        return [
            _Effect(
                EVENT_ANSWER_POSTED,
                (("study_id", query.study_id), ("query_id", query.query_id)),
                None,
                _unique(study.institute, sender),
            )
        ]
    return []


def compute_block_events(
    state: StateReader,
    height: int,
    time_ms: int,
    txs: Sequence[tuple[Tx, bytes, bool]],
    *,
    parent_time_ms: int,
) -> list[LedgerEvent]:
    """The events of one committed block: `txs` is each tx, its id and whether its rules passed;
    `parent_time_ms` is the parent block's time (the genesis time under block 1). The block's
    grant expiries follow its txs' events."""
    events: list[LedgerEvent] = []
    for tx_index, (tx, tx_id, ok) in enumerate(txs):
        if not ok:
            continue
        for event_index, effect in enumerate(compute_tx_effects(state, tx, tx_id)):
            events.append(
                LedgerEvent(
                    height=height,
                    tx_index=tx_index,
                    event_index=event_index,
                    kind=effect.kind,
                    tx_id=tx_id,
                    time_ms=time_ms,
                    ids=effect.ids,
                    patient_id=effect.patient_id,
                    institutions=effect.institutions,
                )
            )
    events.extend(compute_grant_expiries(state, height, time_ms, parent_time_ms))
    return events
