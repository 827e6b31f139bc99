"""The rules of claims (issue 12, ADR 0017): labelled records, standing consents, claims.

- `health.add_labelled_record`: a record (or a correction) with security labels, ruled exactly as
  `health.add_record` / `health.supersede_record` except that its readers are judged with its
  labels: a grantee is sealed a labelled record only if its grant names every label
  (`policy.is_terms_covering`). The labels are stored beside the record.
  `health.add_labelled_document` and `health.accept_labelled_amendment` are `health.add_document`
  and `health.accept_amendment` with labels, ruled the same way: every path that writes a record
  version can carry the labels of its content.
- `health.grant_consent`: the patient (or a representative) grants an insurer a standing consent
  for payment. It becomes a grant (purpose HPAYMT, its own id as its inquiry's) with `ConsentTerms`;
  from its block on, `policy.compute_record_readers` lets authoring nodes seal every covered new
  record for the insurer (and the rules refuse a record sealed for it that the consent does not
  cover). `health.revoke` revokes it like any grant: from the revoking block on, nothing new may be
  sealed for the insurer under it, and no read under it is receipted.
- `health.consent_manifest`: the consent's signer declares the records already on the ledger that
  the consent covers, whose keys it re-seals for the insurer in `health.grant_part` txs (ADR 0017,
  amendment); each part is checked against the consent's scope and terms (`grant_parts`).
- `health.file_claim` / `health.amend_claim`: only an author institution files, for an Encounter
  record it wrote, to a registered insurer, citing records of the same patient; only the filing
  clinic amends, with the next version, while the claim is not approved. The Claim is sealed for
  exactly the patient, the clinic and the insurer.
- `health.decide_claim`: only the addressed insurer decides, on the current version, once; the
  ClaimResponse is sealed for exactly the patient, the clinic and the insurer.
- `health.claim_read_receipt`: the insurer's receipt for reading some of a claim's current
  supporting records under one of its grants: a read receipt (`rules.validate_read_receipt`) that
  also names the claim, so the patient sees which records each insurer read for which claim.

Plain functions of (state, ctx, body), like `rules`: no clock, no randomness, no I/O.
"""

from __future__ import annotations

import dataclasses

from medledger.chain.app import StateReader
from medledger.crypto import DecryptionError

# `rules` dispatches to this module and this module uses its checks (as `grant_parts` does).
from medledger.health import rights, rules
from medledger.health import state as st
from medledger.health.claims_types import (
    CLAIM_OPEN,
    CONSENT_TTL_MS_MAX,
    OUTCOME_APPROVED,
    AmendClaimBody,
    ClaimDecision,
    ClaimReadReceiptBody,
    ClaimState,
    ConsentManifestBody,
    ConsentTerms,
    DecideClaimBody,
    FileClaimBody,
    GrantConsentBody,
    LabelledAmendmentBody,
    LabelledDocumentBody,
    LabelledRecordBody,
)
from medledger.health.errors import HealthStateError, reject
from medledger.health.policy import get_audit_events, is_author_role
from medledger.health.types import (
    EVENT_CLAIM_AMENDED,
    EVENT_CLAIM_DECIDED,
    EVENT_CLAIM_FILED,
    EVENT_CLAIM_READ,
    EVENT_CONSENT,
    EVENT_READ,
    PATIENT_LIVE_GRANTS_MAX,
    PURPOSE_HPAYMT,
    ROLE_INSURER,
    AuditEvent,
    EnvelopeWire,
    GrantPartsState,
    GrantState,
    PatientState,
    ReadReceiptBody,
    Scope,
    SupersedeRecordBody,
    compute_grant_part_count,
    is_grant_live,
)

#: The record type a claim's encounter must have.
ENCOUNTER_TYPE = "Encounter"

# --- labelled records ---------------------------------------------------------------------------


def validate_labels(labels: tuple[str, ...]) -> None:
    """Labels sorted and unique (one encoding); the codec already allows only known codes."""
    if not rules._is_strictly_sorted(labels):
        raise reject("labels", "security labels must be sorted and without duplicates")


def validate_record_labels(labels: tuple[str, ...]) -> None:
    """A labelled kind's labels: sorted, unique and at least one (else it is the unlabelled kind)."""
    validate_labels(labels)
    if not labels:
        raise reject("labels", "a labelled record names at least one label (else: add a record)")


def process_add_labelled_record(
    state: st.StateWriter, ctx: rules.TxContext, body: LabelledRecordBody
) -> None:
    validate_record_labels(body.labels)
    if body.supersedes:
        rules.process_supersede_record(
            state, ctx, SupersedeRecordBody(body.supersedes, body.record), body.labels
        )
    else:
        rules.process_add_record(state, ctx, body.record, body.labels)


def process_add_labelled_document(
    state: st.StateWriter, ctx: rules.TxContext, body: LabelledDocumentBody
) -> None:
    """`health.add_document` with labels: the record is ruled and stored with them, and its
    attachments (opened with its record key) have exactly its readers."""
    validate_record_labels(body.labels)
    rules.process_add_document(state, ctx, body.document, body.labels)


def process_accept_labelled_amendment(
    state: st.StateWriter, ctx: rules.TxContext, body: LabelledAmendmentBody
) -> None:
    """`health.accept_amendment` whose correction is ruled (and stored) with its labels, together
    with every label of the record it corrects (`policy.compute_correction_labels`)."""
    validate_record_labels(body.labels)

    def supersede(state: st.StateWriter, ctx: rules.TxContext, correction: SupersedeRecordBody) -> None:
        rules.process_supersede_record(state, ctx, correction, body.labels)

    rights.process_accept_amendment(state, ctx, body.accept, supersede)


# --- standing consents --------------------------------------------------------------------------


def validate_grant_consent(
    state: StateReader, ctx: rules.TxContext, body: GrantConsentBody
) -> tuple[PatientState, bytes]:
    """The consent's patient and its grantee's x25519 key."""
    patient = rules.validate_patient(state, body.patient_id)
    rules.validate_acts_for_patient(patient, ctx.sender)
    grantee = st.get_institution(state, body.grantee)
    if grantee is None or grantee.role != ROLE_INSURER:
        raise reject("consent_grantee", "a standing consent for payment is given to a registered insurer")
    if st.is_inactive_institution(state, body.grantee):
        raise reject("institution_inactive", "the insurer is suspended or removed: no consent is given to it")
    if not body.record_types or not body.authors:
        raise reject("consent_scope", "a standing consent names at least one record type and one author")
    if not (
        rules._is_strictly_sorted(body.record_types)
        and rules._is_strictly_sorted(body.authors)
        and rules._is_strictly_sorted(body.labels)
    ):
        raise reject("consent_scope", "a standing consent's lists must be sorted and without duplicates")
    for author in body.authors:
        institution = st.get_institution(state, author)
        if institution is None or not is_author_role(institution.role):
            raise reject("consent_scope", "a standing consent's authors are registered author institutions")
    if body.from_ms > body.to_ms:
        raise reject("consent_scope", "the consent's window ends before it starts")
    if ctx.time_ms is not None:
        if body.expires_ms <= ctx.time_ms:
            raise reject("expiry", "the consent expires before it is recorded")
        if body.expires_ms - ctx.time_ms > CONSENT_TTL_MS_MAX:
            raise reject("expiry", f"a standing consent may stay live at most {CONSENT_TTL_MS_MAX} ms")
    return patient, grantee.enc_key


def process_grant_consent(state: st.StateWriter, ctx: rules.TxContext, body: GrantConsentBody) -> None:
    patient, grantee_enc_key = validate_grant_consent(state, ctx, body)
    live = rules.prune_live_grants(state, patient.patient_id, ctx.time_ms)
    if len(live) >= PATIENT_LIVE_GRANTS_MAX:
        raise reject("too_many_grants", f"a patient may have at most {PATIENT_LIVE_GRANTS_MAX} live grants")
    grant = GrantState(
        grant_id=ctx.tx_id,
        # No inquiry came first: a standing consent is its own inquiry (it names itself).
        inquiry_id=ctx.tx_id,
        patient_id=patient.patient_id,
        grantee=body.grantee,
        grantee_enc_key=grantee_enc_key,
        granted_by=ctx.sender,
        scope=Scope(body.record_types, (), body.from_ms, body.to_ms),
        purpose=PURPOSE_HPAYMT,
        expires_ms=body.expires_ms,
        record_keys=(),
        revoked_height=0,
        revoked_time_ms=0,
        height=ctx.height,
        time_ms=ctx.time_ms or 0,
    )
    st.save_grant(state, grant)
    st.save_consent_terms(state, ConsentTerms(grant.grant_id, body.authors, body.labels))
    st.save_live_grant_ids(state, patient.patient_id, (*(g.grant_id for g in live), grant.grant_id))
    rules.audit(state, ctx, patient.patient_id, EVENT_CONSENT, body.grantee)


def is_standing_consent(state: StateReader, grant: GrantState) -> bool:
    return st.get_consent_terms(state, grant.grant_id) is not None


def validate_consent_manifest(
    state: StateReader, ctx: rules.TxContext, body: ConsentManifestBody
) -> GrantState:
    """A consent's re-sealing manifest: its signer's, on a live consent, once, one digest a part."""
    grant = st.get_grant(state, body.grant_id)
    if grant is None or st.get_consent_terms(state, body.grant_id) is None:
        raise reject("grant_unknown", "no standing consent has this id")
    patient = rules.validate_patient(state, grant.patient_id)
    if ctx.sender != grant.granted_by:
        raise reject("not_authorised", "only the signer of a standing consent re-seals records under it")
    rules.validate_acts_for_patient(patient, ctx.sender)
    if grant.is_revoked:
        raise reject("grant_revoked", "the consent was revoked")
    if not is_grant_live(grant, ctx.time_ms):
        raise reject("grant_expired", "the consent has expired")
    if st.get_grant_parts(state, body.grant_id) is not None:
        raise reject("grant_manifest", "a standing consent declares the records it re-seals once")
    if body.record_count < 1:
        raise reject("grant_manifest", "a consent's manifest declares at least one record")
    if len(body.part_digests) != compute_grant_part_count(body.record_count):
        raise reject(
            "grant_manifest",
            f"{body.record_count} records are {compute_grant_part_count(body.record_count)} part(s), "
            f"the manifest lists {len(body.part_digests)}",
        )
    return grant


def process_consent_manifest(state: st.StateWriter, ctx: rules.TxContext, body: ConsentManifestBody) -> None:
    """The parts that follow (`grant_parts.process_grant_part`) carry the keys, each checked against
    the consent's scope and terms."""
    grant = validate_consent_manifest(state, ctx, body)
    bitmap = bytes(-(-len(body.part_digests) // 8))
    st.save_grant_parts(
        state, GrantPartsState(grant.grant_id, body.record_count, body.part_digests, bitmap, 0)
    )


# --- claims -------------------------------------------------------------------------------------


def validate_claim_envelope(envelope: EnvelopeWire, readers: set[bytes], what: str) -> None:
    """A sealed Claim or ClaimResponse: well formed and sealed for exactly `readers`."""
    try:
        envelope.to_envelope()
    except DecryptionError as exc:
        raise reject("claim_envelope", f"the sealed {what} is malformed: {exc.message}") from None
    if set(envelope.readers) != readers:
        raise reject(
            "claim_envelope", f"the {what} must be sealed for the patient, the clinic and the insurer only"
        )


def validate_claim_records(state: StateReader, patient_id: bytes, record_ids: tuple[bytes, ...]) -> None:
    if not record_ids:
        raise reject("claim_records", "a claim cites at least one supporting record")
    if not rules._is_strictly_sorted(record_ids):
        raise reject("claim_records", "a claim's records must be sorted by id and unique")
    for record_id in record_ids:
        record = st.get_record(state, record_id)
        if record is None or record.patient_id != patient_id:
            raise reject("claim_records", "a supporting record does not exist for this patient")


def _claim_readers(state: StateReader, patient: PatientState, clinic: bytes, insurer: bytes) -> set[bytes]:
    clinic_institution = st.get_institution(state, clinic)
    insurer_institution = st.get_institution(state, insurer)
    if clinic_institution is None or insurer_institution is None:  # checked by every caller first
        raise reject("claim_parties", "a claim's clinic and insurer are registered institutions")
    return {patient.enc_key, clinic_institution.enc_key, insurer_institution.enc_key}


def validate_file_claim(state: StateReader, ctx: rules.TxContext, body: FileClaimBody) -> PatientState:
    clinic = rules.validate_institution(state, ctx.sender)
    if not is_author_role(clinic.role):
        raise reject("claim_filer", f"an institution with role {clinic.role!r} cannot file claims")
    patient = rules.validate_patient(state, body.patient_id)
    insurer = st.get_institution(state, body.insurer)
    if insurer is None or insurer.role != ROLE_INSURER:
        raise reject("claim_insurer", "a claim is addressed to a registered insurer")
    if st.is_inactive_institution(state, body.insurer):
        raise reject("institution_inactive", "the insurer is suspended or removed: no claim is filed to it")
    encounter = st.get_record(state, body.encounter_id)
    if (
        encounter is None
        or encounter.patient_id != body.patient_id
        or encounter.author != ctx.sender
        or encounter.record_type != ENCOUNTER_TYPE
    ):
        raise reject("claim_encounter", "a claim is for an Encounter record of this patient the clinic wrote")
    validate_claim_records(state, body.patient_id, body.record_ids)
    validate_claim_envelope(
        body.sealed_claim, _claim_readers(state, patient, ctx.sender, body.insurer), "claim"
    )
    return patient


def process_file_claim(state: st.StateWriter, ctx: rules.TxContext, body: FileClaimBody) -> None:
    patient = validate_file_claim(state, ctx, body)
    if st.get_claim(state, ctx.tx_id) is not None:
        raise reject("claim_exists", "a claim with this id exists")
    claim = ClaimState(
        claim_id=ctx.tx_id,
        patient_id=patient.patient_id,
        clinic=ctx.sender,
        insurer=body.insurer,
        encounter_id=body.encounter_id,
        version=1,
        record_ids=body.record_ids,
        sealed_claim=body.sealed_claim,
        status=CLAIM_OPEN,
        decided_version=0,
        height=ctx.height,
        time_ms=ctx.time_ms or 0,
    )
    st.save_claim(state, claim)
    rules.audit(state, ctx, patient.patient_id, EVENT_CLAIM_FILED, ctx.tx_id, body.record_ids)


def validate_claim(state: StateReader, claim_id: bytes) -> tuple[ClaimState, PatientState]:
    claim = st.get_claim(state, claim_id)
    if claim is None:
        raise reject("claim_unknown", "no such claim")
    return claim, rules.validate_patient(state, claim.patient_id)


def validate_amend_claim(state: StateReader, ctx: rules.TxContext, body: AmendClaimBody) -> ClaimState:
    claim, patient = validate_claim(state, body.claim_id)
    if ctx.sender != claim.clinic:
        raise reject("not_claim_filer", "only the clinic that filed a claim may amend it")
    if claim.status == OUTCOME_APPROVED:
        raise reject("claim_closed", "an approved claim cannot be amended")
    if body.version != claim.version + 1:
        raise reject("claim_version", f"the claim's next version is {claim.version + 1}, not {body.version}")
    validate_claim_records(state, claim.patient_id, body.record_ids)
    validate_claim_envelope(
        body.sealed_claim, _claim_readers(state, patient, claim.clinic, claim.insurer), "claim"
    )
    return claim


def process_amend_claim(state: st.StateWriter, ctx: rules.TxContext, body: AmendClaimBody) -> None:
    claim = validate_amend_claim(state, ctx, body)
    amended = dataclasses.replace(
        claim,
        version=body.version,
        record_ids=body.record_ids,
        sealed_claim=body.sealed_claim,
        status=CLAIM_OPEN,
    )
    st.save_claim(state, amended)
    rules.audit(state, ctx, claim.patient_id, EVENT_CLAIM_AMENDED, claim.claim_id, body.record_ids)


def validate_decide_claim(state: StateReader, ctx: rules.TxContext, body: DecideClaimBody) -> ClaimState:
    claim, patient = validate_claim(state, body.claim_id)
    if ctx.sender != claim.insurer:
        raise reject("not_claim_insurer", "only the insurer a claim is addressed to may decide it")
    if body.version != claim.version:
        raise reject("claim_version", f"the claim's current version is {claim.version}, not {body.version}")
    if claim.decided_version == claim.version:
        raise reject("claim_decided", "this version of the claim is already decided")
    validate_claim_envelope(
        body.sealed_response, _claim_readers(state, patient, claim.clinic, claim.insurer), "claim response"
    )
    return claim


def process_decide_claim(state: st.StateWriter, ctx: rules.TxContext, body: DecideClaimBody) -> None:
    claim = validate_decide_claim(state, ctx, body)
    decision = ClaimDecision(
        claim_id=claim.claim_id,
        version=body.version,
        decision_id=ctx.tx_id,
        insurer=ctx.sender,
        outcome=body.outcome,
        sealed_response=body.sealed_response,
        height=ctx.height,
        time_ms=ctx.time_ms or 0,
    )
    st.save_claim_decision(state, decision)
    st.save_claim(state, dataclasses.replace(claim, status=body.outcome, decided_version=body.version))
    rules.audit(state, ctx, claim.patient_id, EVENT_CLAIM_DECIDED, claim.claim_id)


# --- reads for a claim --------------------------------------------------------------------------


def validate_claim_read_receipt(
    state: StateReader, ctx: rules.TxContext, body: ClaimReadReceiptBody
) -> tuple[ClaimState, GrantState]:
    claim, _ = validate_claim(state, body.claim_id)
    if ctx.sender != claim.insurer:
        raise reject("not_claim_insurer", "only the insurer a claim is addressed to reads for it")
    grant = rules.validate_read_receipt(state, ctx, ReadReceiptBody(body.grant_id, body.record_ids))
    if grant.patient_id != claim.patient_id:
        raise reject("receipt_records", "the grant is not the claim's patient's")
    if not set(body.record_ids) <= set(claim.record_ids):
        raise reject("receipt_records", "a read record is not one of the claim's supporting records")
    return claim, grant


def process_claim_read_receipt(
    state: st.StateWriter, ctx: rules.TxContext, body: ClaimReadReceiptBody
) -> None:
    claim, grant = validate_claim_read_receipt(state, ctx, body)
    # Two entries: the read under its grant (as every read) and the same read for its claim.
    rules.audit(state, ctx, grant.patient_id, EVENT_READ, grant.grant_id, body.record_ids)
    rules.audit(state, ctx, grant.patient_id, EVENT_CLAIM_READ, claim.claim_id, body.record_ids)


# --- reads: what the patient and the parties see -------------------------------------------------


def get_patient_claims(state: StateReader, patient_id: bytes) -> list[ClaimState]:
    """The patient's claims in order of filing (found through the audit trail)."""
    claims: list[ClaimState] = []
    for event in get_audit_events(state, patient_id):
        if event.event == EVENT_CLAIM_FILED:
            claim = st.get_claim(state, event.event_id)
            if claim is None:
                raise HealthStateError("an audited claim is missing")
            claims.append(claim)
    return claims


def get_claim_decisions(state: StateReader, claim: ClaimState) -> list[ClaimDecision]:
    """Every decision on the claim, one a decided version, in version order."""
    decisions = [st.get_claim_decision(state, claim.claim_id, v) for v in range(1, claim.version + 1)]
    return [d for d in decisions if d is not None]


def get_claim_reads(events: list[AuditEvent], claim_id: bytes) -> list[AuditEvent]:
    """The reads receipted for a claim (who read which records when), in chain order."""
    return [e for e in events if e.event == EVENT_CLAIM_READ and e.subject_id == claim_id]


def list_institution_claims(state: StateReader, institution: bytes) -> list[ClaimState]:
    """Claims addressed to `institution` (an insurer) or filed by it (a clinic), in filing order."""
    ids = [*st.list_insurer_claim_ids(state, institution), *st.list_clinic_claim_ids(state, institution)]
    claims = [st.get_claim(state, claim_id) for claim_id in ids]
    if any(c is None for c in claims):
        raise HealthStateError("a listed claim is missing")
    return sorted((c for c in claims if c is not None), key=lambda c: (c.height, c.claim_id))


__all__ = [
    "is_standing_consent",
    "process_add_labelled_record",
    "process_amend_claim",
    "process_claim_read_receipt",
    "process_decide_claim",
    "process_file_claim",
    "process_grant_consent",
]
