"""The rules of grants in parts (ADR 0012): a grant of any number of records, in bounded txs.

A one-tx grant (`health.grant`) carries at most `GRANT_RECORDS_MAX` re-sealed record keys. A real
history is longer, so a larger grant is a *manifest* and its *parts*:

- `health.grant_manifest` is the decision. Signed by the patient (or a representative) on an open
  inquiry, it declares exactly what is shared: `record_count` records, sorted by id, cut into parts
  of `GRANT_PART_RECORDS_MAX` (the last one shorter), each pinned by
  `compute_grant_part_digest(inquiry, index, ids)`. It creates the grant at once (live, with the
  inquiry's scope, purpose and expiry, exactly as a one-tx grant) and closes the inquiry.
- `health.grant_part` carries one part's re-sealed keys. It is accepted only from the manifest's
  signer (still acting for the patient), for a live grant, once per part, with exactly the records
  its digest names, each one of the patient's records inside the inquiry's scope. Parts may come
  in any order and in any block after the manifest's: each is judged on its own, so a node admits
  them all at once.

What the manifest declared can therefore never be exceeded (a part must match its digest), nor
can a part open a record outside the scope (every record is checked, as in a one-tx grant), nor be
replayed (a part arrives once; a part of another grant fails that grant's digests, which bind the
inquiry). Revoking the grant stops the parts not yet delivered. Each part is one audit event
listing its records, so the audit trail names every record shared.

Plain functions of (state, ctx, body) like `rules`: no clock, no randomness, no I/O.
"""

from __future__ import annotations

from medledger.chain.app import StateReader

# `rules` dispatches to this module and this module uses its checks: the two import each other
# as modules, and names are looked up when a tx is processed (both are loaded by then).
from medledger.health import rules
from medledger.health import state as st
from medledger.health.errors import HealthStateError, reject
from medledger.health.policy import is_consent_covering
from medledger.health.types import (
    EVENT_GRANT,
    EVENT_GRANT_PART,
    GrantManifestBody,
    GrantPartBody,
    GrantPartsState,
    GrantState,
    GrantTerms,
    InquiryState,
    Institution,
    compute_grant_part_count,
    compute_grant_part_digest,
    compute_grant_part_size,
    is_covered,
    is_grant_live,
)


def validate_grant_manifest(
    state: StateReader, ctx: rules.TxContext, body: GrantManifestBody, terms: GrantTerms | None = None
) -> tuple[InquiryState, Institution]:
    inquiry, _ = rules.validate_open_inquiry(state, ctx, body.inquiry_id)
    grantee = st.get_institution(state, inquiry.requester)
    if grantee is None:
        raise HealthStateError("an inquiry's requester is not an institution")
    if terms is not None:  # its parts are then judged by the grant's narrower scope
        rules.validate_grant_terms(state, ctx, inquiry, terms)
    if len(body.part_digests) != compute_grant_part_count(body.record_count):
        raise reject(
            "grant_manifest",
            f"a grant of {body.record_count} records has {compute_grant_part_count(body.record_count)} "
            f"part(s), the manifest lists {len(body.part_digests)}",
        )
    return inquiry, grantee


def process_grant_manifest(
    state: st.StateWriter, ctx: rules.TxContext, body: GrantManifestBody, terms: GrantTerms | None = None
) -> None:
    inquiry, grantee = validate_grant_manifest(state, ctx, body, terms)
    # Each part's keys are stored apart (`state.save_grant_key`), so the grant itself carries none.
    grant = rules.create_grant(state, ctx, inquiry, grantee, (), terms)
    bitmap = bytes(-(-len(body.part_digests) // 8))
    st.save_grant_parts(
        state, GrantPartsState(grant.grant_id, body.record_count, body.part_digests, bitmap, 0)
    )
    rules.audit(state, ctx, inquiry.patient_id, EVENT_GRANT, inquiry.inquiry_id)


def validate_grant_part(
    state: StateReader, ctx: rules.TxContext, body: GrantPartBody
) -> tuple[GrantState, GrantPartsState]:
    grant = st.get_grant(state, body.grant_id)
    parts = st.get_grant_parts(state, body.grant_id)
    if grant is None or parts is None:
        raise reject("grant_unknown", "no grant in parts has this id")
    patient = rules.validate_patient(state, grant.patient_id)
    if ctx.sender != grant.granted_by:
        raise reject("not_authorised", "only the signer of a grant's manifest may send its parts")
    rules.validate_acts_for_patient(patient, ctx.sender)
    if grant.is_revoked:
        raise reject("grant_revoked", "the grant was revoked: no more of its parts are accepted")
    if not is_grant_live(grant, ctx.time_ms):
        raise reject("grant_expired", "the grant has expired: no more of its parts are accepted")
    if body.part >= len(parts.part_digests):
        raise reject("grant_part", f"the grant has {len(parts.part_digests)} part(s), not part {body.part}")
    if parts.is_part_received(body.part):
        raise reject("grant_part_duplicate", f"part {body.part} of this grant has already arrived")
    record_ids = tuple(rk.record_id for rk in body.record_keys)
    if len(record_ids) != compute_grant_part_size(parts.record_count, body.part):
        raise reject(
            "grant_part",
            f"part {body.part} carries {compute_grant_part_size(parts.record_count, body.part)} "
            f"records, not {len(record_ids)}",
        )
    if not rules._is_strictly_sorted(record_ids):
        raise reject("grant_records", "granted records must be sorted by id and unique")
    if compute_grant_part_digest(grant.inquiry_id, body.part, record_ids) != parts.part_digests[body.part]:
        raise reject("grant_part_digest", "the part's records are not the ones its manifest declared")
    # A standing consent's parts (ADR 0017, amendment) re-seal only what its terms cover too: its
    # named authors, and a labelled record only if the consent names every label (of the record's
    # latest version: an earlier version of a record corrected into HIV is not re-sealed either).
    terms = st.get_consent_terms(state, grant.grant_id)
    for record_id in record_ids:
        record = st.get_record(state, record_id)
        if record is None or record.patient_id != grant.patient_id:
            raise reject("grant_records", "a granted record does not exist for this patient")
        if not is_covered(grant.scope, record.record_id, record.record_type, record.time_ms):
            raise reject("grant_records", "a granted record is outside the inquiry's scope")
        if terms is not None and not is_consent_covering(state, terms, record):
            raise reject("grant_records", "a record the standing consent does not cover (author or labels)")
    return grant, parts


def process_grant_part(state: st.StateWriter, ctx: rules.TxContext, body: GrantPartBody) -> None:
    grant, parts = validate_grant_part(state, ctx, body)
    for record_key in body.record_keys:
        st.save_grant_key(state, grant.grant_id, record_key.record_id, record_key.sealed_key)
    st.save_grant_parts(state, parts.with_part_received(body.part, len(body.record_keys)))
    record_ids = tuple(rk.record_id for rk in body.record_keys)
    rules.audit(state, ctx, grant.patient_id, EVENT_GRANT_PART, grant.grant_id, record_ids)


__all__ = [
    "process_grant_manifest",
    "process_grant_part",
    "validate_grant_manifest",
    "validate_grant_part",
]
