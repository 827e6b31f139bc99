"""The patient's own copy of their facts, rebuilt from certified blocks by the health rules.

A patient's client believes no node (DESIGN.md §7, ADR 0008). The light client
(`medledger.chain.lightclient`) hands it blocks whose commit certificates and tx roots verified
against the pinned genesis; `PatientLedger` picks out every transaction that concerns one patient
and runs it through the same `rules.process_tx` every node runs, on a state that holds only the
genesis (the institutions, with their encryption keys) and this patient's facts.

Why that state is enough: every rule a patient's tx is judged by reads only the genesis
institutions and that patient's own entries (their registration, representatives, records,
inquiries, grants, live-grant list and audit trail; for a study join or leave, also the study's
registration, which is followed for every study), and tx ids are unique, so a tx that concerns
the patient passes here exactly when it passed on the chain, and leaves the same values. The
result is the patient's records, inquiries, grants and audit trail as the chain holds them,
proven: nothing in it came from a node's word. (A header does not commit to tx results, so
re-executing is also how the client learns which txs took effect.)

No I/O, no clock. Errors are `LedgerVerificationError`; the SDK adds the node's URL.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Final

from medledger.chain.app import OverlayState
from medledger.chain.errors import BadSignatureError, InvalidTxError, TxRejectedError, WrongChainError
from medledger.chain.lightclient import CertifiedBlock
from medledger.chain.types import Genesis, Tx, TxId, ValidatorSet
from medledger.chain.validation import decode_tx, validate_tx_envelope
from medledger.health import claims, claims_types, policy, rights
from medledger.health import state as st
from medledger.health.app import HealthApp, decode_genesis
from medledger.health.claims_types import ClaimDecision, ClaimState, ConsentTerms
from medledger.health.errors import HealthError
from medledger.health.membership_types import MEMBERSHIP_KINDS
from medledger.health.research_types import (
    QueryState,
    RegisterStudyBody,
    StudyMembership,
    StudyMembershipBody,
    StudyState,
    SubmitQueryBody,
)
from medledger.health.rights_types import AmendmentState, RecordsRequestState
from medledger.health.rules import TxContext, decode_body, process_tx
from medledger.health.types import (
    EVENT_INQUIRY,
    EVENT_STUDY_JOINED,
    EVENT_STUDY_LEFT,
    TX_KINDS,
    AddDocumentBody,
    AddRecordBody,
    AuditEvent,
    BlobRef,
    DenyBody,
    GrantBody,
    GrantManifestBody,
    GrantPartBody,
    GrantPartsState,
    GrantState,
    InquiryState,
    Institution,
    NarrowedGrantBody,
    NarrowedGrantManifestBody,
    PatientId,
    PatientState,
    ReadReceiptBody,
    RecordState,
    RegisterPatientBody,
    RepresentativeBody,
    RequestAccessBody,
    RevokeBody,
    SupersedeRecordBody,
    compute_patient_id,
)

#: Items read from the local state per call (the state module's own page bound).
_PAGE: Final = st.LIST_LIMIT_MAX


class LedgerVerificationError(HealthError):
    """A certified block holds something no honest chain would (e.g. a tx with a bad signature)."""

    code = "ledger_unverified"


class _EmptyState:
    def get(self, key: bytes) -> bytes | None:
        return None


@dataclasses.dataclass(frozen=True, slots=True)
class TxFact:
    """Where one of the patient's txs is on the chain, and whether it took effect."""

    tx_id: TxId
    kind: str
    height: int
    index: int
    time_ms: int
    ok: bool
    rule: str


def _added_keys(writes: Mapping[bytes, bytes | None]) -> set[bytes]:
    """The signing keys of institutions a membership tx's writes registered."""
    prefix = st.INSTITUTION_KEY_PREFIX
    return {k[len(prefix) :] for k, v in writes.items() if k.startswith(prefix) and v is not None}


#: The end of a membership that has not ended.
_NO_END: Final = 2**64


class PatientLedger:
    """One patient's facts, from the genesis and the certified blocks fed in height order."""

    def __init__(self, genesis: Genesis, patient_id: bytes) -> None:
        self.chain_id = genesis.chain_id
        self.patient_id = PatientId(patient_id)
        self.institutions: dict[bytes, Institution] = {
            i.sign_key: i for i in decode_genesis(genesis.app_state).institutions
        }
        self._state = OverlayState(_EmptyState())
        for key, value in HealthApp().init_state(genesis).writes.items():
            self._state.put(key, value)
        self.height = 0
        self.time_ms = genesis.genesis_time_ms
        #: The patient's txs in chain order, with their outcome.
        self.txs: dict[bytes, TxFact] = {}
        self.blocks_checked = 0
        self.txs_checked = 0

    # -- feeding ---------------------------------------------------------------------------

    def apply_block(self, certified: CertifiedBlock, validators: ValidatorSet | None = None) -> int:
        """Apply the patient's txs of the next certified block; returns how many concerned them.

        `validators`: the set that certified it (the light client's trusted set for its height),
        whose votes on institution membership (ADR 0020) every patient's ledger follows: who is an
        institution, and whether it may still act, is part of judging the patient's own txs.
        """
        voters = (
            frozenset(v.sign_key for v in validators.validators) if validators is not None else frozenset()
        )
        header = certified.block.header
        if header.height != self.height + 1:
            raise LedgerVerificationError(f"expected block {self.height + 1}, got {header.height}")
        applied = 0
        for index, (raw, tx_id) in enumerate(zip(certified.block.txs, certified.tx_ids, strict=True)):
            try:
                tx, _ = decode_tx(raw, tx_id=tx_id)
            except InvalidTxError:
                continue  # not a tx any rule would apply: it concerns nobody
            is_membership = tx.kind in MEMBERSHIP_KINDS
            if not is_membership and (tx.kind not in TX_KINDS or not self._concerns(tx)):
                continue
            try:
                validate_tx_envelope(tx, chain_id=self.chain_id)
            except (BadSignatureError, WrongChainError) as exc:
                raise LedgerVerificationError(
                    f"block {header.height} holds a tx concerning this patient that fails its "
                    f"checks: {exc.message}"
                ) from None
            ctx = TxContext(
                tx_id=tx_id, sender=tx.sender, height=header.height, time_ms=header.time_ms, validators=voters
            )
            scratch = OverlayState(self._state)
            ok, rule = True, "ok"
            try:
                process_tx(scratch, tx, ctx)
            except TxRejectedError as exc:
                ok, rule = False, exc.rule
            if ok:
                for key, value in scratch.writes.items():
                    self._state.put(key, value)
            if is_membership:
                if ok:  # an institution added by the vote is known from its block on
                    self.institutions.update(
                        (k, i)
                        for k in self.institutions.keys() | _added_keys(scratch.writes)
                        if (i := st.get_institution(self._state, k)) is not None
                    )
                continue  # not the patient's own tx: no fact of theirs
            self.txs[tx_id] = TxFact(tx_id, tx.kind, header.height, index, header.time_ms, ok, rule)
            applied += 1
        self.height = header.height
        self.time_ms = header.time_ms
        self.blocks_checked += 1
        self.txs_checked += len(certified.block.txs)
        return applied

    def _concerns(self, tx: Tx) -> bool:
        """Whether a tx names this patient, or one of their inquiries or grants."""
        try:
            body = decode_body(tx)
        except TxRejectedError:
            return False  # malformed: the chain rejects it too, and it can name nobody
        if isinstance(body, RegisterPatientBody):
            return compute_patient_id(tx.sender) == self.patient_id
        # Research (ADR 0019): the patient's joins and leaves, every study's registration (a join
        # is judged against its study) and every query (judged by its study's budget and the
        # queries asked before, which are then the chain's). A study's member count differs here
        # from the chain's (other patients' joins are not followed); no rule of these reads it.
        if isinstance(body, StudyMembershipBody):
            return body.patient_id == self.patient_id
        if isinstance(body, RegisterStudyBody | SubmitQueryBody):
            return True  # every query too: what the patient's data could have entered, and budgets
        if isinstance(body, RepresentativeBody | AddRecordBody | RequestAccessBody):
            return body.patient_id == self.patient_id
        if isinstance(body, SupersedeRecordBody | AddDocumentBody):
            return body.record.patient_id == self.patient_id
        if isinstance(body, GrantBody | DenyBody):
            return st.get_inquiry(self._state, body.inquiry_id) is not None
        if isinstance(body, RevokeBody | ReadReceiptBody | GrantPartBody):
            return st.get_grant(self._state, body.grant_id) is not None
        if isinstance(body, GrantManifestBody):
            return st.get_inquiry(self._state, body.inquiry_id) is not None
        if isinstance(body, NarrowedGrantBody):
            return st.get_inquiry(self._state, body.grant.inquiry_id) is not None
        if isinstance(body, NarrowedGrantManifestBody):
            return st.get_inquiry(self._state, body.manifest.inquiry_id) is not None
        if isinstance(body, claims_types.LabelledRecordBody):
            return body.record.patient_id == self.patient_id
        if isinstance(body, claims_types.LabelledDocumentBody):
            return body.document.record.patient_id == self.patient_id
        if isinstance(body, claims_types.LabelledAmendmentBody):
            return rights.concerns_patient(self._state, self.patient_id, body.accept) is True
        if isinstance(body, claims_types.ConsentManifestBody):
            return st.get_grant(self._state, body.grant_id) is not None
        if isinstance(body, claims_types.GrantConsentBody | claims_types.FileClaimBody):
            return body.patient_id == self.patient_id
        if isinstance(
            body,
            claims_types.AmendClaimBody | claims_types.DecideClaimBody | claims_types.ClaimReadReceiptBody,
        ):
            return st.get_claim(self._state, body.claim_id) is not None
        return rights.concerns_patient(self._state, self.patient_id, body) is True

    # -- reads (the verified facts) --------------------------------------------------------

    def get_patient(self) -> PatientState | None:
        return st.get_patient(self._state, self.patient_id)

    def get_record(self, record_id: bytes) -> RecordState | None:
        record = st.get_record(self._state, record_id)
        return record if record is not None and record.patient_id == self.patient_id else None

    def get_record_attachments(self, record_id: bytes) -> tuple[BlobRef, ...]:
        """A verified record's attachments (blob ids, sizes, key envelopes), as the chain says."""
        return st.get_record_attachments(self._state, record_id) if self.get_record(record_id) else ()

    def list_records(self) -> list[RecordState]:
        records: list[RecordState] = []
        while True:
            page = st.list_records(self._state, self.patient_id, start=len(records), limit=_PAGE)
            records.extend(page)
            if len(page) < _PAGE:
                return records

    def list_audit_events(self) -> list[AuditEvent]:
        events: list[AuditEvent] = []
        while True:
            page = st.list_audit_events(self._state, self.patient_id, start=len(events), limit=_PAGE)
            events.extend(page)
            if len(page) < _PAGE:
                return events

    def list_studies(self) -> list[tuple[StudyState, StudyMembership | None]]:
        """Every study registered on the chain, with this patient's membership (None: never
        joined). A study's accounts (budget, member count) are not the chain's here: only what
        was registered, and the membership, are proven."""
        studies = [st.get_study(self._state, i) for i in st.list_study_ids(self._state)]
        return [
            (s, st.get_membership(self._state, s.study_id, self.patient_id)) for s in studies if s is not None
        ]

    def list_study_queries(self, study_id: bytes) -> list[QueryState]:
        ids = st.list_query_ids(self._state, study_id)
        return [q for q in (st.get_query(self._state, i) for i in ids) if q is not None]

    def list_queries_covering(self) -> list[QueryState]:
        """The queries this patient's data could have entered: recorded while they were a member
        of the query's study (from the trail's joins and leaves, rejoins included). Whether an
        institution counted them depends on records it holds; the answers say nothing about whom."""
        spans: dict[bytes, list[list[int]]] = {}
        for event in self.list_audit_events():
            if event.event == EVENT_STUDY_JOINED:
                spans.setdefault(event.subject_id, []).append([event.height, _NO_END])
            elif event.event == EVENT_STUDY_LEFT and spans.get(event.subject_id):
                spans[event.subject_id][-1][1] = event.height
        return [
            query
            for study_id, periods in spans.items()
            for query in self.list_study_queries(study_id)
            if any(start <= query.height < end for start, end in periods)
        ]

    def list_inquiries(self) -> list[InquiryState]:
        """Every inquiry about the patient, in the order they were filed."""
        inquiries = []
        for event in self.list_audit_events():
            if event.event == EVENT_INQUIRY:
                inquiry = st.get_inquiry(self._state, event.event_id)
                if inquiry is None:
                    raise LedgerVerificationError("an audited inquiry is missing from the patient's state")
                inquiries.append(inquiry)
        return inquiries

    def get_inquiry(self, inquiry_id: bytes) -> InquiryState | None:
        inquiry = st.get_inquiry(self._state, inquiry_id)
        return inquiry if inquiry is not None and inquiry.patient_id == self.patient_id else None

    def list_grants(self) -> list[GrantState]:
        return st.list_grants(self._state, self.patient_id)

    def get_grant_parts(self, grant_id: bytes) -> GrantPartsState | None:
        """A grant in parts' manifest and progress (ADR 0012; None: a one-tx grant, or none)."""
        grant = st.get_grant(self._state, grant_id)
        if grant is None or grant.patient_id != self.patient_id:
            return None
        return st.get_grant_parts(self._state, grant_id)

    # Patient rights (issue 14): records requests and amendment requests, as the chain holds them.
    def list_records_requests(self) -> list[RecordsRequestState]:
        return rights.get_patient_records_requests(self._state, self.patient_id)

    def list_amendments(self) -> list[AmendmentState]:
        return rights.get_patient_amendments(self._state, self.patient_id)

    # Claims (issue 12): the patient's claims and their decisions, as the chain holds them.
    def list_claims(self) -> list[ClaimState]:
        return claims.get_patient_claims(self._state, self.patient_id)

    def get_claim_decisions(self, claim: ClaimState) -> list[ClaimDecision]:
        return claims.get_claim_decisions(self._state, claim)

    def get_record_labels(self, record_id: bytes) -> tuple[str, ...]:
        """A record's security labels (none for an unlabelled record, or another patient's)."""
        return st.get_record_labels(self._state, record_id) if self.get_record(record_id) else ()

    def is_consent_covering(self, terms: ConsentTerms, record: RecordState) -> bool:
        """Whether the rules would let a consent with `terms` re-seal `record`
        (`policy.is_consent_covering`, judged on this verified state)."""
        return record.patient_id == self.patient_id and policy.is_consent_covering(self._state, terms, record)

    def get_consent_terms(self, grant_id: bytes) -> ConsentTerms | None:
        """A standing consent's authors and labels (None: not one of the patient's consents)."""
        grant = st.get_grant(self._state, grant_id)
        if grant is None or grant.patient_id != self.patient_id:
            return None
        return st.get_consent_terms(self._state, grant_id)


__all__ = ["LedgerVerificationError", "PatientLedger", "TxFact"]
