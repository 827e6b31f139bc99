"""The rules of the health application: who may sign what, and what each transaction changes.

Each kind has a `validate_*` that raises `TxRejectedError(message, rule="health.<rule>")` and a
`process_*` that validates and then writes. `process_tx` decodes and dispatches. They are plain
functions of (state, tx, context): no clock, no randomness, no I/O. Time is the block header's
`time_ms`; at admission (`check_tx`) there is no block yet, so `time_ms` is None and only the
time-free rules apply (a tx admitted then may still fail in its block, never the other way round).

A rejected tx must change nothing: callers run `process_tx` on a scratch overlay and keep its
writes only if it returns; every check here comes before the first write of its kind.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import TypeVar

from medledger.chain.app import StateReader
from medledger.chain.codec import decode
from medledger.chain.errors import CodecError
from medledger.chain.types import Tx
from medledger.crypto import DecryptionError, is_usable_enc_key
from medledger.health import (
    claims,
    claims_types,
    grant_parts,
    membership,
    research,
    research_types,
    rights,
    rights_types,
)
from medledger.health import state as st
from medledger.health.errors import HealthStateError, reject
from medledger.health.membership_types import MEMBERSHIP_KINDS
from medledger.health.policy import (
    compute_correction_labels,
    get_live_grants,
    is_acting_for_patient,
    is_author_role,
    is_readable_under_grant,
    validate_record_readers,
)
from medledger.health.types import (
    BODY_TYPES,
    EVENT_DENY,
    EVENT_GRANT,
    EVENT_INQUIRY,
    EVENT_READ,
    EVENT_REPRESENTATIVE_ADDED,
    EVENT_REPRESENTATIVE_REMOVED,
    EVENT_REVOKE,
    INQUIRY_DENIED,
    INQUIRY_GRANTED,
    INQUIRY_OPEN,
    INQUIRY_TTL_MS_MAX,
    KIND_ADD_RECORD,
    KIND_ADD_REPRESENTATIVE,
    KIND_DENY,
    KIND_GRANT,
    KIND_GRANT_MANIFEST,
    KIND_GRANT_PART,
    KIND_JOIN_STUDY,
    KIND_READ_RECEIPT,
    KIND_REGISTER_PATIENT,
    KIND_REMOVE_REPRESENTATIVE,
    KIND_REQUEST_ACCESS,
    KIND_REVOKE,
    KIND_SUPERSEDE_RECORD,
    PATIENT_LIVE_GRANTS_MAX,
    PURPOSES_BY_ROLE,
    REPRESENTATIVES_MAX,
    STATE_LAYOUT_ENC_KEY_CHECK,
    STATE_LAYOUT_GRANT_EXPIRY,
    AddDocumentBody,
    AddRecordBody,
    AuditEvent,
    DenyBody,
    GrantBody,
    GrantManifestBody,
    GrantPartBody,
    GrantState,
    GrantTerms,
    InquiryState,
    Institution,
    NarrowedGrantBody,
    NarrowedGrantManifestBody,
    PatientState,
    ReadReceiptBody,
    RecordKey,
    RecordState,
    RegisterPatientBody,
    RepresentativeBody,
    RequestAccessBody,
    RevokeBody,
    Scope,
    SupersedeRecordBody,
    compute_patient_id,
    is_covered,
)

_Sortable = TypeVar("_Sortable", bytes, str)


@dataclasses.dataclass(frozen=True, slots=True)
class TxContext:
    """Where a tx executes: its id and sender, the block height and block time (None: admission),
    and the validator set of that height."""

    tx_id: bytes
    sender: bytes
    height: int
    time_ms: int | None
    #: The signing keys of the validators of this height (institution membership: ADR 0020);
    #: empty where the app runs without the chain's governance (then no approval is accepted).
    validators: frozenset[bytes] = frozenset()


def _is_strictly_sorted(items: tuple[_Sortable, ...]) -> bool:
    return all(a < b for a, b in itertools.pairwise(items))


def decode_body(tx: Tx) -> object:
    """The tx's body as its kind's wire type (`health.kind` / `health.body` on failure)."""
    body_type = (
        BODY_TYPES.get(tx.kind)
        or rights_types.RIGHTS_BODY_TYPES.get(tx.kind)
        or claims_types.CLAIMS_BODY_TYPES.get(tx.kind)
        or research_types.RESEARCH_BODY_TYPES.get(tx.kind)
    )
    if body_type is None:
        raise reject("kind", f"unknown transaction kind {tx.kind!r}")
    try:
        body: object = decode(body_type, tx.body, max_bytes=len(tx.body))
    except CodecError as exc:
        raise reject("body", f"malformed {tx.kind} body: {exc.message}") from None
    return body


# --- shared checks ------------------------------------------------------------------------------


def validate_patient(state: StateReader, patient_id: bytes) -> PatientState:
    patient = st.get_patient(state, patient_id)
    if patient is None:
        raise reject("patient_unknown", "no patient is registered under this id")
    return patient


def validate_institution(state: StateReader, sign_key: bytes) -> Institution:
    institution = st.get_institution(state, sign_key)
    if institution is None:
        raise reject("not_institution", "the sender is not a registered institution")
    return institution


def validate_acts_for_patient(patient: PatientState, sender: bytes) -> None:
    """The sender is the patient or one of their current representatives."""
    if not is_acting_for_patient(patient, sender):
        raise reject("not_authorised", "only the patient or a current representative may do this")


def prune_live_grants(state: st.StateWriter, patient_id: bytes, time_ms: int | None) -> list[GrantState]:
    """The patient's live grants, dropping expired/revoked ones from the index (bounded list)."""
    live = get_live_grants(state, patient_id, time_ms)
    ids = tuple(g.grant_id for g in live)
    if ids != st.get_live_grant_ids(state, patient_id):
        st.save_live_grant_ids(state, patient_id, ids)
    return live


def audit(
    state: st.StateWriter,
    ctx: TxContext,
    patient_id: bytes,
    event: str,
    subject_id: bytes,
    record_ids: tuple[bytes, ...] = (),
) -> None:
    st.append_audit_event(
        state,
        patient_id,
        AuditEvent(event, ctx.tx_id, ctx.sender, subject_id, record_ids, ctx.height, ctx.time_ms or 0),
    )


# --- patients and representatives ---------------------------------------------------------------


def validate_register_patient(state: StateReader, ctx: TxContext, body: RegisterPatientBody) -> None:
    if st.get_patient(state, compute_patient_id(ctx.sender)) is not None:
        raise reject("patient_exists", "this signing key is already a registered patient")
    if st.get_institution(state, ctx.sender) is not None:
        raise reject("role_conflict", "an institution's key cannot register as a patient")
    # A low-order key agrees the all-zero secret with everyone: nothing can be sealed to it, no
    # event topic derived from it (layout 3 on: an older chain accepted it, and replays so).
    if st.get_layout(state) >= STATE_LAYOUT_ENC_KEY_CHECK and not is_usable_enc_key(body.enc_key):
        raise reject(
            "enc_key_unusable",
            "the encryption key is a low-order x25519 point; no secret can be agreed with it",
        )


def process_register_patient(state: st.StateWriter, ctx: TxContext, body: RegisterPatientBody) -> None:
    validate_register_patient(state, ctx, body)
    patient_id = compute_patient_id(ctx.sender)
    st.save_patient(
        state, PatientState(patient_id, ctx.sender, body.enc_key, (), ctx.height, ctx.time_ms or 0)
    )


def validate_add_representative(state: StateReader, ctx: TxContext, body: RepresentativeBody) -> PatientState:
    patient = validate_patient(state, body.patient_id)
    if ctx.sender != patient.sign_key:
        raise reject("not_patient", "only the patient may name representatives")
    if body.representative == patient.sign_key:
        raise reject("representative_self", "a patient cannot be their own representative")
    if body.representative in patient.representatives:
        raise reject("representative_exists", "already a representative of this patient")
    if len(patient.representatives) >= REPRESENTATIVES_MAX:
        raise reject("representatives_full", f"a patient may name at most {REPRESENTATIVES_MAX}")
    return patient


def process_add_representative(state: st.StateWriter, ctx: TxContext, body: RepresentativeBody) -> None:
    patient = validate_add_representative(state, ctx, body)
    representatives = tuple(sorted((*patient.representatives, body.representative)))
    st.save_patient(state, dataclasses.replace(patient, representatives=representatives))
    audit(state, ctx, patient.patient_id, EVENT_REPRESENTATIVE_ADDED, body.representative)


def validate_remove_representative(
    state: StateReader, ctx: TxContext, body: RepresentativeBody
) -> PatientState:
    patient = validate_patient(state, body.patient_id)
    if ctx.sender != patient.sign_key:
        raise reject("not_patient", "only the patient may remove representatives")
    if body.representative not in patient.representatives:
        raise reject("representative_unknown", "not a representative of this patient")
    return patient


def process_remove_representative(state: st.StateWriter, ctx: TxContext, body: RepresentativeBody) -> None:
    patient = validate_remove_representative(state, ctx, body)
    representatives = tuple(r for r in patient.representatives if r != body.representative)
    st.save_patient(state, dataclasses.replace(patient, representatives=representatives))
    audit(state, ctx, patient.patient_id, EVENT_REPRESENTATIVE_REMOVED, body.representative)


# --- records ------------------------------------------------------------------------------------


def validate_add_record(
    state: StateReader, ctx: TxContext, body: AddRecordBody, labels: tuple[str, ...] = ()
) -> tuple[PatientState, Institution]:
    """A new record's author, patient, envelope and readers (`labels`: its security labels)."""
    author = validate_institution(state, ctx.sender)
    if not is_author_role(author.role):
        raise reject("author_role", f"an institution with role {author.role!r} cannot author records")
    patient = validate_patient(state, body.patient_id)
    try:
        body.envelope.to_envelope()
    except DecryptionError as exc:
        raise reject("envelope", exc.message) from None
    # A ciphertext can only be carried by one record. Its nonce is drawn at random for every
    # encryption and cannot change without breaking the ciphertext, so an institution that
    # re-publishes another's ciphertext as its own record (it cannot re-encrypt what it cannot read)
    # is refused here; readers refuse any variant by the record's binding (`records.open_record`).
    # The index is the patient's own (see `get_record_id_by_nonce`): the patient's client must be
    # able to judge the record exactly as the chain does.
    if st.get_record_id_by_nonce(state, body.patient_id, body.envelope.nonce) is not None:
        raise reject("record_duplicate", "this ciphertext is already on the ledger as another record")
    # Revocation stops future sharing: the one sealing rule, which the API also seals by.
    validate_record_readers(
        state,
        patient,
        author,
        body.record_type,
        body.envelope.readers,
        record_id=ctx.tx_id,
        time_ms=ctx.time_ms,
        labels=labels,
    )
    return patient, author


def _new_record(ctx: TxContext, body: AddRecordBody, supersedes: bytes) -> RecordState:
    return RecordState(
        record_id=ctx.tx_id,
        patient_id=body.patient_id,
        author=ctx.sender,
        record_type=body.record_type,
        commitment=body.commitment,
        envelope=body.envelope,
        supersedes=supersedes,
        superseded_by=b"",
        height=ctx.height,
        time_ms=ctx.time_ms or 0,
    )


def process_add_record(
    state: st.StateWriter, ctx: TxContext, body: AddRecordBody, labels: tuple[str, ...] = ()
) -> None:
    validate_add_record(state, ctx, body, labels)
    if st.get_record(state, ctx.tx_id) is not None:
        raise reject("record_exists", "a record with this id exists")
    st.save_record(state, _new_record(ctx, body, b""))
    if labels:
        st.save_record_labels(state, ctx.tx_id, labels)


def validate_supersede_record(
    state: StateReader, ctx: TxContext, body: SupersedeRecordBody, labels: tuple[str, ...] = ()
) -> RecordState:
    validate_add_record(state, ctx, body.record, compute_correction_labels(state, body.supersedes, labels))
    old = st.get_record(state, body.supersedes)
    if old is None:
        raise reject("record_unknown", "the superseded record does not exist")
    if old.patient_id != body.record.patient_id:
        raise reject("supersede", "a correction must concern the same patient")
    if old.author != ctx.sender:
        raise reject("supersede", "only a record's author may supersede it")
    if old.superseded_by:
        raise reject("supersede", "the record is already superseded; correct the latest version")
    return old


def process_supersede_record(
    state: st.StateWriter, ctx: TxContext, body: SupersedeRecordBody, labels: tuple[str, ...] = ()
) -> None:
    old = validate_supersede_record(state, ctx, body, labels)
    if st.get_record(state, ctx.tx_id) is not None:
        raise reject("record_exists", "a record with this id exists")
    st.save_record(state, _new_record(ctx, body.record, old.record_id))
    st.save_record(state, dataclasses.replace(old, superseded_by=ctx.tx_id))
    corrected_labels = compute_correction_labels(state, old.record_id, labels)
    if corrected_labels:
        st.save_record_labels(state, ctx.tx_id, corrected_labels)


# --- inquiries and decisions --------------------------------------------------------------------


def validate_scope(scope: Scope) -> None:
    if not _is_strictly_sorted(scope.record_types) or not _is_strictly_sorted(scope.record_ids):
        raise reject("scope", "scope lists must be sorted and without duplicates")
    if scope.from_ms > scope.to_ms:
        raise reject("scope", "the scope's time window ends before it starts")


def validate_sealed_reason(patient: PatientState, requester: Institution, body: RequestAccessBody) -> None:
    """The reason is sealed for the patient and the requester and for nobody else (by label)."""
    try:
        body.sealed_reason.to_envelope()
    except DecryptionError as exc:
        raise reject("reason", f"the sealed reason is malformed: {exc.message}") from None
    if set(body.sealed_reason.readers) != {patient.enc_key, requester.enc_key}:
        raise reject("reason", "the reason must be sealed for the patient and the requester only")


def validate_request_access(state: StateReader, ctx: TxContext, body: RequestAccessBody) -> None:
    requester = validate_institution(state, ctx.sender)
    patient = validate_patient(state, body.patient_id)
    validate_scope(body.scope)
    validate_sealed_reason(patient, requester, body)
    if body.purpose not in PURPOSES_BY_ROLE[requester.role]:
        raise reject("purpose", f"an institution with role {requester.role!r} cannot ask for {body.purpose}")
    if ctx.time_ms is not None:
        if body.expires_ms <= ctx.time_ms:
            raise reject("expiry", "the inquiry expires before it is recorded")
        if body.expires_ms - ctx.time_ms > INQUIRY_TTL_MS_MAX:
            raise reject("expiry", f"an inquiry may stay open at most {INQUIRY_TTL_MS_MAX} ms")


def process_request_access(state: st.StateWriter, ctx: TxContext, body: RequestAccessBody) -> None:
    validate_request_access(state, ctx, body)
    inquiry = InquiryState(
        inquiry_id=ctx.tx_id,
        patient_id=body.patient_id,
        requester=ctx.sender,
        scope=body.scope,
        purpose=body.purpose,
        expires_ms=body.expires_ms,
        sealed_reason=body.sealed_reason,
        status=INQUIRY_OPEN,
        decision_id=b"",
        height=ctx.height,
        time_ms=ctx.time_ms or 0,
    )
    st.save_inquiry(state, inquiry)
    audit(state, ctx, body.patient_id, EVENT_INQUIRY, ctx.tx_id)


def validate_open_inquiry(
    state: StateReader, ctx: TxContext, inquiry_id: bytes
) -> tuple[InquiryState, PatientState]:
    """An inquiry the sender may decide: exists, open, unexpired, sender acts for its patient."""
    inquiry = st.get_inquiry(state, inquiry_id)
    if inquiry is None:
        raise reject("inquiry_unknown", "no such inquiry")
    patient = validate_patient(state, inquiry.patient_id)
    validate_acts_for_patient(patient, ctx.sender)
    if inquiry.status != INQUIRY_OPEN:
        raise reject("inquiry_closed", f"the inquiry is already {inquiry.status}")
    if ctx.time_ms is not None and ctx.time_ms >= inquiry.expires_ms:
        raise reject("inquiry_expired", "the inquiry has expired")
    return inquiry, patient


def validate_grant(
    state: StateReader, ctx: TxContext, body: GrantBody, terms: GrantTerms | None = None
) -> tuple[InquiryState, Institution]:
    """A grant's decision on its open inquiry: every record it shares exists, is the patient's and
    lies in the grant's scope (its inquiry's, or the narrower `terms`' when it has them)."""
    inquiry, patient = validate_open_inquiry(state, ctx, body.inquiry_id)
    grantee = st.get_institution(state, inquiry.requester)
    if grantee is None:
        raise HealthStateError("an inquiry's requester is not an institution")
    if terms is not None:
        validate_grant_terms(state, ctx, inquiry, terms)
    scope = inquiry.scope if terms is None else terms.scope
    record_ids = tuple(rk.record_id for rk in body.record_keys)
    if not _is_strictly_sorted(record_ids):
        raise reject("grant_records", "granted records must be sorted by id and unique")
    for record_id in record_ids:
        record = st.get_record(state, record_id)
        if record is None or record.patient_id != patient.patient_id:
            raise reject("grant_records", "a granted record does not exist for this patient")
        if not is_covered(scope, record.record_id, record.record_type, record.time_ms):
            raise reject("grant_records", "a granted record is outside the grant's scope")
    return inquiry, grantee


def validate_grant_terms(
    state: StateReader, ctx: TxContext, inquiry: InquiryState, terms: GrantTerms
) -> None:
    """A narrowed grant's terms lie within its inquiry's: every record the narrowed scope covers,
    the inquiry's covers too, and the grant ends no later than the inquiry would have let it."""
    scope, asked = terms.scope, inquiry.scope
    validate_scope(scope)
    if not asked.from_ms <= scope.from_ms or not scope.to_ms <= asked.to_ms:
        raise reject("grant_terms", "a narrowed grant's time window must lie within its inquiry's")
    if terms.expires_ms > inquiry.expires_ms:
        raise reject("grant_terms", "a narrowed grant cannot last longer than its inquiry asked")
    if ctx.time_ms is not None and terms.expires_ms <= ctx.time_ms:
        raise reject("grant_terms", "a narrowed grant's expiry has already passed")
    if not asked.record_types and not asked.record_ids:
        return  # the inquiry asked for everything in its window: any narrower list lies within it
    if not scope.record_types and not scope.record_ids:
        raise reject("grant_terms", "a narrowed grant names types or records when its inquiry does")
    if not set(scope.record_types) <= set(asked.record_types):
        raise reject("grant_terms", "a narrowed grant's record types must be among its inquiry's")
    for record_id in scope.record_ids:
        if record_id in asked.record_ids:
            continue
        record = st.get_record(state, record_id)
        if (
            record is None
            or record.patient_id != inquiry.patient_id
            or record.record_type not in asked.record_types
        ):
            raise reject("grant_terms", "a narrowed grant names a record its inquiry does not ask for")


def create_grant(
    state: st.StateWriter,
    ctx: TxContext,
    inquiry: InquiryState,
    grantee: Institution,
    record_keys: tuple[RecordKey, ...],
    terms: GrantTerms | None = None,
) -> GrantState:
    """The grant a decision `ctx` makes on `inquiry` (one tx's, or a manifest's whose keys come in
    parts: then `record_keys` is empty), on the inquiry's terms or the narrower `terms` (checked by
    the caller); it closes the inquiry and joins the patient's live grants."""
    if st.is_inactive_institution(state, inquiry.requester):
        # Its open inquiries are refused lazily, here (ADR 0020): closing them eagerly would need
        # an index of inquiries by requester that older chains do not have.
        raise reject(
            "institution_inactive", "the requester is suspended or removed: nothing is granted to it"
        )
    live = prune_live_grants(state, inquiry.patient_id, ctx.time_ms)
    if len(live) >= PATIENT_LIVE_GRANTS_MAX:
        raise reject("too_many_grants", f"a patient may have at most {PATIENT_LIVE_GRANTS_MAX} live grants")
    grant = GrantState(
        grant_id=ctx.tx_id,
        inquiry_id=inquiry.inquiry_id,
        patient_id=inquiry.patient_id,
        grantee=inquiry.requester,
        grantee_enc_key=grantee.enc_key,
        granted_by=ctx.sender,
        scope=inquiry.scope if terms is None else terms.scope,
        purpose=inquiry.purpose,
        expires_ms=inquiry.expires_ms if terms is None else terms.expires_ms,
        record_keys=record_keys,
        revoked_height=0,
        revoked_time_ms=0,
        height=ctx.height,
        time_ms=ctx.time_ms or 0,
    )
    st.save_grant(state, grant)
    st.save_live_grant_ids(state, inquiry.patient_id, (*(g.grant_id for g in live), grant.grant_id))
    # Where `health.events` finds the block this grant expires in (layout 2; a layout-1 chain
    # replays with the writes it was certified with). Never read by a rule.
    if st.get_layout(state) >= STATE_LAYOUT_GRANT_EXPIRY:
        st.append_grant_expiry(state, grant.grant_id, grant.expires_ms)
    st.save_inquiry(state, dataclasses.replace(inquiry, status=INQUIRY_GRANTED, decision_id=ctx.tx_id))
    return grant


def process_grant(
    state: st.StateWriter, ctx: TxContext, body: GrantBody, terms: GrantTerms | None = None
) -> None:
    inquiry, grantee = validate_grant(state, ctx, body, terms)
    create_grant(state, ctx, inquiry, grantee, body.record_keys, terms)
    record_ids = tuple(rk.record_id for rk in body.record_keys)
    audit(state, ctx, inquiry.patient_id, EVENT_GRANT, inquiry.inquiry_id, record_ids)


def process_deny(state: st.StateWriter, ctx: TxContext, body: DenyBody) -> None:
    inquiry, _ = validate_open_inquiry(state, ctx, body.inquiry_id)
    st.save_inquiry(state, dataclasses.replace(inquiry, status=INQUIRY_DENIED, decision_id=ctx.tx_id))
    audit(state, ctx, inquiry.patient_id, EVENT_DENY, inquiry.inquiry_id)


def validate_revoke(state: StateReader, ctx: TxContext, body: RevokeBody) -> GrantState:
    grant = st.get_grant(state, body.grant_id)
    if grant is None:
        raise reject("grant_unknown", "no such grant")
    patient = validate_patient(state, grant.patient_id)
    validate_acts_for_patient(patient, ctx.sender)
    if grant.is_revoked:
        raise reject("grant_revoked", "the grant is already revoked")
    return grant


def process_revoke(state: st.StateWriter, ctx: TxContext, body: RevokeBody) -> None:
    grant = validate_revoke(state, ctx, body)
    # Height 0 is genesis, where no tx runs, so a revoked grant always has a non-zero height.
    revoked = dataclasses.replace(grant, revoked_height=max(ctx.height, 1), revoked_time_ms=ctx.time_ms or 0)
    st.save_grant(state, revoked)
    prune_live_grants(state, grant.patient_id, ctx.time_ms)
    audit(state, ctx, grant.patient_id, EVENT_REVOKE, grant.grant_id)


# --- reads --------------------------------------------------------------------------------------


def validate_read_receipt(state: StateReader, ctx: TxContext, body: ReadReceiptBody) -> GrantState:
    validate_institution(state, ctx.sender)
    grant = st.get_grant(state, body.grant_id)
    if grant is None:
        raise reject("grant_unknown", "no such grant")
    if grant.grantee != ctx.sender:
        raise reject("not_grantee", "a read receipt must be signed by the grant's grantee")
    if grant.is_revoked:
        raise reject("grant_revoked", "the grant was revoked: reads under it are refused")
    if ctx.time_ms is not None and ctx.time_ms >= grant.expires_ms:
        raise reject("grant_expired", "the grant has expired: reads under it are refused")
    if not body.record_ids:
        raise reject("receipt_records", "a read receipt names at least one record")
    if not _is_strictly_sorted(body.record_ids):
        raise reject("receipt_records", "read record ids must be sorted and unique")
    for record_id in body.record_ids:
        record = st.get_record(state, record_id)
        if record is None or not is_readable_under_grant(grant, record, state):
            raise reject("receipt_records", "a read record is not covered by the grant")
    return grant


def process_read_receipt(state: st.StateWriter, ctx: TxContext, body: ReadReceiptBody) -> None:
    grant = validate_read_receipt(state, ctx, body)
    audit(state, ctx, grant.patient_id, EVENT_READ, grant.grant_id, body.record_ids)


# --- documents (records with attachments, docs/adr/0013-attachment-blobs.md) ---------------------


def validate_attachments(body: AddDocumentBody) -> None:
    """At least one attachment, sorted and unique by blob id (sizes and keys: by the codec)."""
    if not body.attachments:
        raise reject("attachments", "a document names at least one attachment (else: add a record)")
    if not _is_strictly_sorted(tuple(a.blob_id for a in body.attachments)):
        raise reject("attachments", "attachments must be sorted by blob id and unique")


def process_add_document(
    state: st.StateWriter, ctx: TxContext, body: AddDocumentBody, labels: tuple[str, ...] = ()
) -> None:
    """A document's record (new or a correction, with its security `labels`: issue 12) and its
    attachments; its attachments are opened with its record key, so they have its readers."""
    validate_attachments(body)
    if body.supersedes:
        process_supersede_record(state, ctx, SupersedeRecordBody(body.supersedes, body.record), labels)
    else:
        process_add_record(state, ctx, body.record, labels)
    record = st.get_record(state, ctx.tx_id)
    if record is None:  # pragma: no cover - just written above
        raise AssertionError("a document's record is missing right after it was written")
    st.save_record_attachments(state, record, body.attachments)


# --- dispatch -----------------------------------------------------------------------------------


def process_tx(state: st.StateWriter, tx: Tx, ctx: TxContext) -> None:
    """Apply one tx's rules and effects to `state`, or raise `TxRejectedError`."""
    # A suspended or removed institution authors nothing from its block on (ADR 0020); one read,
    # absent on every chain that never used membership governance.
    if st.is_inactive_institution(state, ctx.sender):
        raise reject("institution_inactive", "the sender is a suspended or removed institution")
    if tx.kind in MEMBERSHIP_KINDS:
        membership.process_membership(
            state,
            tx,
            sender=ctx.sender,
            height=ctx.height,
            in_block=ctx.time_ms is not None,
            validators=ctx.validators,
        )
        return
    body = decode_body(tx)
    if isinstance(body, RegisterPatientBody):
        process_register_patient(state, ctx, body)
    elif isinstance(body, RepresentativeBody):
        if tx.kind == KIND_ADD_REPRESENTATIVE:
            process_add_representative(state, ctx, body)
        else:
            process_remove_representative(state, ctx, body)
    elif isinstance(body, AddRecordBody):
        process_add_record(state, ctx, body)
    elif isinstance(body, SupersedeRecordBody):
        process_supersede_record(state, ctx, body)
    elif isinstance(body, RequestAccessBody):
        process_request_access(state, ctx, body)
    elif isinstance(body, GrantBody):
        process_grant(state, ctx, body)
    elif isinstance(body, DenyBody):
        process_deny(state, ctx, body)
    elif isinstance(body, RevokeBody):
        process_revoke(state, ctx, body)
    elif isinstance(body, ReadReceiptBody):
        process_read_receipt(state, ctx, body)
    elif isinstance(body, GrantManifestBody):
        grant_parts.process_grant_manifest(state, ctx, body)
    elif isinstance(body, GrantPartBody):
        grant_parts.process_grant_part(state, ctx, body)
    elif isinstance(body, NarrowedGrantBody):
        process_grant(state, ctx, body.grant, body.terms)
    elif isinstance(body, NarrowedGrantManifestBody):
        grant_parts.process_grant_manifest(state, ctx, body.manifest, body.terms)
    # Patient rights (issue 14): records requests and amendments, ruled in `health.rights`.
    elif isinstance(body, rights_types.RequestRecordsBody):
        rights.process_request_records(state, ctx, body)
    elif isinstance(body, rights_types.CloseRecordsRequestBody):
        rights.process_close_records_request(state, ctx, body)
    elif isinstance(body, rights_types.RequestAmendmentBody):
        rights.process_request_amendment(state, ctx, body)
    elif isinstance(body, rights_types.AcceptAmendmentBody):
        rights.process_accept_amendment(state, ctx, body, process_supersede_record)
    elif isinstance(body, rights_types.RefuseAmendmentBody):
        rights.process_refuse_amendment(state, ctx, body)
    elif isinstance(body, rights_types.DisagreeBody):
        rights.process_disagree(state, ctx, body)
    elif isinstance(body, AddDocumentBody):
        process_add_document(state, ctx, body)
    # Claims (issue 12): labelled records, standing consents and claims, ruled in `health.claims`.
    elif isinstance(body, claims_types.LabelledRecordBody):
        claims.process_add_labelled_record(state, ctx, body)
    elif isinstance(body, claims_types.LabelledDocumentBody):
        claims.process_add_labelled_document(state, ctx, body)
    elif isinstance(body, claims_types.LabelledAmendmentBody):
        claims.process_accept_labelled_amendment(state, ctx, body)
    elif isinstance(body, claims_types.GrantConsentBody):
        claims.process_grant_consent(state, ctx, body)
    elif isinstance(body, claims_types.ConsentManifestBody):
        claims.process_consent_manifest(state, ctx, body)
    elif isinstance(body, claims_types.FileClaimBody):
        claims.process_file_claim(state, ctx, body)
    elif isinstance(body, claims_types.AmendClaimBody):
        claims.process_amend_claim(state, ctx, body)
    elif isinstance(body, claims_types.DecideClaimBody):
        claims.process_decide_claim(state, ctx, body)
    elif isinstance(body, claims_types.ClaimReadReceiptBody):
        claims.process_claim_read_receipt(state, ctx, body)
    # Research (issue 13): studies, opt-ins, queries and answers, ruled in `health.research`.
    elif isinstance(body, research_types.RegisterStudyBody):
        research.process_register_study(state, ctx, body)
    elif isinstance(body, research_types.StudyMembershipBody):
        if tx.kind == KIND_JOIN_STUDY:
            research.process_join_study(state, ctx, body)
        else:
            research.process_leave_study(state, ctx, body)
    elif isinstance(body, research_types.SubmitQueryBody):
        research.process_submit_query(state, ctx, body)
    elif isinstance(body, research_types.PostAnswerBody):
        research.process_post_answer(state, ctx, body)
    else:  # pragma: no cover - BODY_TYPES and this dispatch are kept in step
        raise AssertionError(f"no processor for {type(body).__name__}")


__all__ = [
    "KIND_ADD_RECORD",
    "KIND_DENY",
    "KIND_GRANT",
    "KIND_GRANT_MANIFEST",
    "KIND_GRANT_PART",
    "KIND_READ_RECEIPT",
    "KIND_REGISTER_PATIENT",
    "KIND_REMOVE_REPRESENTATIVE",
    "KIND_REQUEST_ACCESS",
    "KIND_REVOKE",
    "KIND_SUPERSEDE_RECORD",
    "TxContext",
    "process_tx",
    "reject",
]
