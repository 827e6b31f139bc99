"""The health consent policy: who a record is sealed for, which grant a read uses, who acts for a
patient, and what an institution may see of a patient's audit trail.

These are decisions, not parsing or rendering, so they live here and not in the HTTP layer: the
REST API (`node/health_api.py`) asks these functions and renders their answers, and the ledger
rules (`health/rules.py`) ask the same functions when they judge a transaction. In particular
there is one rule for sealing (`compute_record_readers`): the node seals a new record for exactly
the readers the rules will accept in its block, give or take `SEAL_MARGIN_MS` of clock difference
(the node's clock is not the block's time), never for one they refuse. And there is one label
decision (`compute_version_labels`) for every path that writes a record version.

Plain synchronous functions over the health state and typed values: no clock (time is an
argument), no randomness, no I/O beyond reading the state. Refusals are the rules' typed
`TxRejectedError` naming the rule, so a caller never parses a message.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping
from enum import StrEnum
from typing import Any, Final

from medledger.chain.app import StateReader
from medledger.health import state as st
from medledger.health.claims_types import ConsentTerms
from medledger.health.errors import HealthStateError, reject
from medledger.health.labels import compute_security_labels
from medledger.health.rights_types import SUPERSEDE_CHAIN_MAX
from medledger.health.types import (
    AUTHOR_ROLES,
    EVENT_CONSENT,
    EVENT_DENY,
    EVENT_GRANT,
    EVENT_GRANT_PART,
    EVENT_INQUIRY,
    EVENT_REVOKE,
    INQUIRY_TTL_MS_MAX,
    STATE_LAYOUT_CONSENT_SEALING,
    AuditEvent,
    GrantState,
    InquiryState,
    Institution,
    PatientState,
    RecordState,
    is_covered,
    is_grant_live,
)

#: A node seals a new record for a grantee only if the grant stays live and covering for this long
#: on either side of the node's clock: the record's block time differs from that clock, and a
#: record sealed for a reader the rules no longer allow at its block time is refused whole.
SEAL_MARGIN_MS: Final = 60_000
#: The rules require a record to be sealed for a standing consent's insurer when the consent is
#: live and covering throughout this long on either side of the record's block time (ADR 0017,
#: amendment 2). Twice `SEAL_MARGIN_MS`: a node seals for a consent covering throughout
#: [now - SEAL_MARGIN_MS, now + SEAL_MARGIN_MS] of its clock `now`, and the block time lies within
#: `SEAL_MARGIN_MS` of that clock, so whatever the rules require an honest node has sealed. Near a
#: consent's window edges or expiry (inside this margin) sealing for it is allowed, not required.
CONSENT_SEAL_MARGIN_MS: Final = 2 * SEAL_MARGIN_MS
#: Shortest time to live an institution may ask for an inquiry.
INQUIRY_TTL_MS_MIN: Final = 1_000
#: Time to live of an inquiry when the institution names none: thirty days.
INQUIRY_TTL_MS_DEFAULT: Final = 30 * 24 * 3600 * 1000
#: Longest time to live a node files an inquiry with: the rules' bound, less the clock margin, so
#: the inquiry is not refused for a block time slightly before the node's clock.
INQUIRY_TTL_MS_REQUEST_MAX: Final = INQUIRY_TTL_MS_MAX - SEAL_MARGIN_MS


class RecordAccess(StrEnum):
    """Why an institution may decrypt a record."""

    AUTHOR = "author"  # it wrote the record
    GRANT = "grant"  # a live grant of the patient covers the record


@dataclasses.dataclass(frozen=True, slots=True)
class ReadAccess:
    """An institution's access to one record; `grant` is the grant a read cites (None: author)."""

    access: RecordAccess
    grant: GrantState | None


# --- who acts for a patient, who authors --------------------------------------------------------


def is_acting_for_patient(patient: PatientState, signer: bytes) -> bool:
    """Whether `signer` is the patient's own signing key or a current representative's."""
    return signer == patient.sign_key or signer in patient.representatives


def is_patient_signer(state: StateReader, signer: bytes, patient_id: bytes) -> bool:
    """Whether `signer` may act for `patient_id`: a registered patient's key or a representative's."""
    patient = st.get_patient(state, patient_id)
    return patient is not None and is_acting_for_patient(patient, signer)


def is_author_role(role: str) -> bool:
    """Whether institutions of `role` write clinical records (clinics and hospitals do)."""
    return role in AUTHOR_ROLES


# --- sealing: the one rule ----------------------------------------------------------------------


def get_live_grants(state: StateReader, patient_id: bytes, time_ms: int | None) -> list[GrantState]:
    """The patient's grants live at `time_ms` (None: admission, only revocation counts)."""
    grants: list[GrantState] = []
    for grant_id in st.get_live_grant_ids(state, patient_id):
        grant = st.get_grant(state, grant_id)
        if grant is None:
            raise HealthStateError("a live grant is missing")
        if is_grant_live(grant, time_ms):
            grants.append(grant)
    return grants


def is_grant_sealable(
    grant: GrantState, record_id: bytes, record_type: str, time_ms: int | None, margin_ms: int = 0
) -> bool:
    """Whether a new record may be sealed for `grant`'s grantee.

    The grant must be live and its scope cover the record throughout [time_ms - margin_ms,
    time_ms + margin_ms] (the scope's window is an interval, so both ends suffice). The rules ask
    with no margin at the block's time (None at admission: windows unknown); a node asks with
    `SEAL_MARGIN_MS` around its own clock, which makes its answer one the rules accept.
    """
    if time_ms is None:
        return is_grant_live(grant, None) and is_covered(grant.scope, record_id, record_type, None)
    return (
        is_grant_live(grant, time_ms + margin_ms)
        and is_covered(grant.scope, record_id, record_type, time_ms - margin_ms)
        and is_covered(grant.scope, record_id, record_type, time_ms + margin_ms)
    )


def is_terms_covering(terms: ConsentTerms | None, author: bytes, labels: Collection[str]) -> bool:
    """Whether a grant's terms let a record by `author` with security `labels` be sealed for its
    grantee: a standing consent names the author and every label (an unlabelled record needs
    none); a grant answering an inquiry (`terms` None) names no label, so it is never sealed a
    labelled record at write time (the patient may still re-seal one to it, explicitly)."""
    if terms is None:
        return not labels
    return author in terms.authors and set(labels) <= set(terms.labels)


def compute_correction_labels(
    state: StateReader, supersedes: bytes, labels: Collection[str]
) -> tuple[str, ...]:
    """The labels a record version carries on the ledger: its own `labels` and, for a correction
    of `supersedes` (b"": a new record), every label of the record it corrects (a correction never
    sheds a label, so it is never sealed wider than the original). The rules store these."""
    inherited = st.get_record_labels(state, supersedes) if supersedes else ()
    return tuple(sorted(set(labels) | set(inherited)))


def get_current_labels(state: StateReader, record: RecordState) -> tuple[str, ...] | None:
    """The labels of `record`'s latest version: a version superseded by a labelled correction is
    the same record before correction, so a consent re-seals it only as it would the corrected one
    (a correction keeps every earlier label, so the latest version's are all the chain's). None if
    more than `SUPERSEDE_CHAIN_MAX` corrections follow it (a caller then shares nothing: fail closed)."""
    for _ in range(SUPERSEDE_CHAIN_MAX + 1):
        if not record.superseded_by:
            return st.get_record_labels(state, record.record_id)
        later = st.get_record(state, record.superseded_by)
        if later is None:
            raise HealthStateError("a record's correction is missing")
        record = later
    return None


def is_consent_covering(state: StateReader, terms: ConsentTerms, record: RecordState) -> bool:
    """Whether a standing consent's terms cover re-sealing `record` (ADR 0017, amendment): a named
    author, and no label of its latest version (`get_current_labels`) that the consent does not
    name. The rules judge a consent's parts by it and the patient's client previews by it."""
    labels = get_current_labels(state, record)
    return labels is not None and is_terms_covering(terms, record.author, labels)


def compute_version_labels(
    state: StateReader, resource: Mapping[str, Any], supersedes: bytes = b""
) -> tuple[str, ...]:
    """The security labels of a new record version written from `resource`: those of its content
    (`labels.compute_security_labels`: `meta.security` and the default condition mapping) and,
    for a correction, those of the record it corrects (`compute_correction_labels`).

    The one label decision of every path that writes a record version (a record, a document, a
    correction answering an amendment): a node seals by these labels and puts them in the tx, so a
    correction that adds e.g. an HIV diagnosis is sealed for no consent that does not name HIV."""
    return compute_correction_labels(state, supersedes, compute_security_labels(resource))


def compute_record_readers(
    state: StateReader,
    patient: PatientState,
    author: Institution,
    record_type: str,
    *,
    record_id: bytes,
    time_ms: int | None,
    margin_ms: int = 0,
    labels: Collection[str] = (),
) -> frozenset[bytes]:
    """The x25519 keys a new record may be sealed for: the patient, its author, covering grantees.

    `record_id` is the record's id when known (the rules: the tx id); a node about to sign the
    record does not know it yet and passes b"", which no scope names. `labels` are the record's
    security labels (issue 12): a grantee gets a labelled record only if its grant names them all.
    """
    readers = {patient.enc_key, author.enc_key}
    for grant in get_live_grants(state, patient.patient_id, time_ms):
        if st.is_inactive_institution(state, grant.grantee):
            continue  # nothing new is sealed for a suspended or removed institution (ADR 0020)
        if is_grant_sealable(grant, record_id, record_type, time_ms, margin_ms) and is_terms_covering(
            st.get_consent_terms(state, grant.grant_id), author.sign_key, labels
        ):
            readers.add(grant.grantee_enc_key)
    return frozenset(readers)


def compute_consent_readers(
    state: StateReader,
    patient: PatientState,
    author: Institution,
    record_type: str,
    *,
    record_id: bytes,
    time_ms: int,
    labels: Collection[str] = (),
) -> frozenset[bytes]:
    """The insurers (x25519 keys) a new record version must be sealed for at block time `time_ms`:
    the grantee of every standing consent of the patient that is live and covers the record (its
    type, window, author and labels) throughout `CONSENT_SEAL_MARGIN_MS` around `time_ms` (issue
    12: "every new record it covers is sealed for the insurer"; ADR 0017, amendment 2). A subset
    of `compute_record_readers` (the margin only narrows), and of what a node seals for
    (`compute_node_record_readers`) when its clock is within `SEAL_MARGIN_MS` of the block's.
    A grant answering an inquiry is never required: its grantee is sealed for when the node
    knows of it, as before."""
    required: set[bytes] = set()
    for grant in get_live_grants(state, patient.patient_id, time_ms):
        if st.is_inactive_institution(state, grant.grantee):
            continue  # a suspended or removed insurer is not required, nor allowed (ADR 0020)
        terms = st.get_consent_terms(state, grant.grant_id)
        if (
            terms is not None
            and is_grant_sealable(grant, record_id, record_type, time_ms, CONSENT_SEAL_MARGIN_MS)
            and is_terms_covering(terms, author.sign_key, labels)
        ):
            required.add(grant.grantee_enc_key)
    return frozenset(required)


def validate_record_readers(
    state: StateReader,
    patient: PatientState,
    author: Institution,
    record_type: str,
    readers: Collection[bytes],
    *,
    record_id: bytes,
    time_ms: int | None,
    labels: Collection[str] = (),
) -> None:
    """A record's key is sealed for the patient, its author, and nobody the patient has not
    authorised now through a live covering grant (revocation stops future sharing; a labelled
    record only for grants naming its labels); and, in a block of a layout-4 chain, sealed for the
    insurer of every live standing consent covering it (`compute_consent_readers`).

    Raises `TxRejectedError` with rule `health.record_readers` (a reader too many) or
    `health.record_consent_unsealed` (a consent's insurer missing: the state changed after the
    author sealed it; the author's node seals it again, `node.health_api`).
    """
    sealed_for = set(readers)
    if patient.enc_key not in sealed_for:
        raise reject("record_readers", "the record's key is not sealed for the patient")
    if author.enc_key not in sealed_for:
        raise reject("record_readers", "the record's key is not sealed for its author")
    allowed = compute_record_readers(
        state, patient, author, record_type, record_id=record_id, time_ms=time_ms, labels=labels
    )
    unauthorised = sealed_for - allowed
    if unauthorised:
        raise reject(
            "record_readers",
            f"the record's key is sealed for {len(unauthorised)} reader(s) without a live covering grant",
        )
    if time_ms is not None and st.get_layout(state) >= STATE_LAYOUT_CONSENT_SEALING:
        missing = (
            compute_consent_readers(
                state, patient, author, record_type, record_id=record_id, time_ms=time_ms, labels=labels
            )
            - sealed_for
        )
        if missing:
            raise reject(
                "record_consent_unsealed",
                f"the record's key is not sealed for {len(missing)} insurer(s) whose live standing "
                "consent covers it; seal it again for the readers of this block's state",
            )


def compute_node_record_readers(
    state: StateReader,
    patient: PatientState,
    author: Institution,
    record_type: str,
    now_ms: int,
    labels: Collection[str] = (),
) -> frozenset[bytes]:
    """Who a node seals a new record for at its clock `now_ms`: `compute_record_readers` with
    `SEAL_MARGIN_MS`, then checked by `validate_record_readers` as the rules will check it, so a
    node never signs a record its block would refuse (raises the same `TxRejectedError` if it would).
    The record's id is not known before it is signed (b"": no scope names it)."""
    readers = compute_record_readers(
        state,
        patient,
        author,
        record_type,
        record_id=b"",
        time_ms=now_ms,
        margin_ms=SEAL_MARGIN_MS,
        labels=labels,
    )
    validate_record_readers(
        state, patient, author, record_type, readers, record_id=b"", time_ms=now_ms, labels=labels
    )
    return readers


def compute_node_version_sealing(
    state: StateReader,
    patient: PatientState,
    author: Institution,
    record_type: str,
    resource: Mapping[str, Any],
    now_ms: int,
    *,
    supersedes: bytes = b"",
) -> tuple[tuple[str, ...], frozenset[bytes]]:
    """What a node writes a new record version with: its labels (`compute_version_labels`) and
    the readers it seals it for (`compute_node_record_readers` with those labels). Every route
    that writes a version (a record or document, a correction answering an amendment) asks this,
    so none decides labels or readers its own way."""
    labels = compute_version_labels(state, resource, supersedes)
    return labels, compute_node_record_readers(state, patient, author, record_type, now_ms, labels)


# --- reads --------------------------------------------------------------------------------------


def get_grant_sealed_key(state: StateReader | None, grant: GrantState, record_id: bytes) -> bytes | None:
    """The record key `grant` re-sealed for its grantee for `record_id`: carried by a one-tx grant,
    or by a part of a grant in parts (ADR 0012; needs `state`, without it none is found)."""
    sealed = grant.get_sealed_key(record_id)
    if sealed is None and state is not None:
        sealed = st.get_grant_key(state, grant.grant_id, record_id)
    return sealed


def is_readable_under_grant(grant: GrantState, record: RecordState, state: StateReader | None = None) -> bool:
    """A grant covers reading a record it carries a key for, or one sealed for its grantee that
    its scope (and a standing consent's terms: authors, labels) covers.

    `state` finds the keys of a grant in parts and a standing consent's terms and a record's labels
    (without it only a one-tx grant's keys and its scope count)."""
    if record.patient_id != grant.patient_id:
        return False
    if get_grant_sealed_key(state, grant, record.record_id) is not None:
        return True
    if grant.grantee_enc_key not in record.envelope.readers or not is_covered(
        grant.scope, record.record_id, record.record_type, record.time_ms
    ):
        return False
    if state is None:
        return True
    terms = st.get_consent_terms(state, grant.grant_id)
    return is_terms_covering(terms, record.author, st.get_record_labels(state, record.record_id))


def get_read_grant(state: StateReader, reader: bytes, record: RecordState, time_ms: int) -> GrantState | None:
    """The live grant to `reader` (a signing key) that a read of `record` cites: of those that
    cover it, the one expiring last (it stays valid longest while the read receipt commits)."""
    candidates = [
        g
        for g in st.list_grants(state, record.patient_id)
        if g.grantee == reader and is_grant_live(g, time_ms) and is_readable_under_grant(g, record, state)
    ]
    return max(candidates, key=lambda g: g.expires_ms, default=None)


def get_read_access(
    state: StateReader, reader: Institution, record: RecordState, time_ms: int
) -> ReadAccess | None:
    """Whether `reader` may decrypt `record` now and why (None: it may not; file an inquiry)."""
    if record.author == reader.sign_key:
        return ReadAccess(RecordAccess.AUTHOR, None)
    grant = get_read_grant(state, reader.sign_key, record, time_ms)
    return ReadAccess(RecordAccess.GRANT, grant) if grant is not None else None


def get_read_accesses(
    state: StateReader, reader: Institution, patient_id: bytes, records: Iterable[RecordState], time_ms: int
) -> list[ReadAccess | None]:
    """`get_read_access` for many records of one patient, finding the patient's grants once (a
    bulk read of a whole history must not walk the audit trail once a record)."""
    grants = [
        g
        for g in st.list_grants(state, patient_id)
        if g.grantee == reader.sign_key and is_grant_live(g, time_ms)
    ]
    accesses: list[ReadAccess | None] = []
    for record in records:
        if record.patient_id != patient_id:
            accesses.append(None)
        elif record.author == reader.sign_key:
            accesses.append(ReadAccess(RecordAccess.AUTHOR, None))
        else:
            covering = [g for g in grants if is_readable_under_grant(g, record, state)]
            grant = max(covering, key=lambda g: g.expires_ms, default=None)
            accesses.append(ReadAccess(RecordAccess.GRANT, grant) if grant is not None else None)
    return accesses


# --- audit --------------------------------------------------------------------------------------


def get_audit_events(state: StateReader, patient_id: bytes) -> list[AuditEvent]:
    """The patient's whole audit trail, in chain order (every page of the stored list)."""
    events: list[AuditEvent] = []
    while True:
        page = st.list_audit_events(state, patient_id, start=len(events))
        events.extend(page)
        if len(page) < st.LIST_LIMIT_MAX:
            return events


def get_inquiries(
    state: StateReader, patient_id: bytes, requester: bytes | None = None
) -> list[InquiryState]:
    """Inquiries about the patient in chain order; with `requester`, only those it filed."""
    inquiries: list[InquiryState] = []
    for event in get_audit_events(state, patient_id):
        if event.event != EVENT_INQUIRY or (requester is not None and event.actor != requester):
            continue
        inquiry = st.get_inquiry(state, event.event_id)
        if inquiry is None:
            raise HealthStateError("an audited inquiry is missing")
        inquiries.append(inquiry)
    return inquiries


def compute_institution_audit(events: Iterable[AuditEvent], institution: bytes) -> list[AuditEvent]:
    """What an institution (its signing key) may see of a patient's audit trail, in chain order:
    what it did itself, the patient's decisions on its inquiries, standing consents given to it,
    and revocations of its grants.
    Other institutions' inquiries, grants and reads stay hidden from it."""
    my_inquiries: set[bytes] = set()
    my_grants: set[bytes] = set()
    visible: list[AuditEvent] = []
    for event in events:
        if event.event == EVENT_INQUIRY and event.actor == institution:
            my_inquiries.add(event.event_id)
        if event.event == EVENT_GRANT and event.subject_id in my_inquiries:
            my_grants.add(event.event_id)
        if event.event == EVENT_CONSENT and event.subject_id == institution:
            my_grants.add(event.event_id)
        if (
            event.actor == institution
            or (event.event in (EVENT_GRANT, EVENT_DENY) and event.subject_id in my_inquiries)
            or (event.event == EVENT_CONSENT and event.subject_id == institution)
            or (event.event in (EVENT_REVOKE, EVENT_GRANT_PART) and event.subject_id in my_grants)
        ):
            visible.append(event)
    return visible


def get_institution_audit(state: StateReader, patient_id: bytes, institution: bytes) -> list[AuditEvent]:
    """The part of the patient's audit trail that concerns `institution` (`compute_institution_audit`)."""
    return compute_institution_audit(get_audit_events(state, patient_id), institution)
