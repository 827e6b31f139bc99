"""Transaction builders for research (issue 13, ADR 0019), beside `health.client`'s.

The research institute registers a study and submits queries, a patient (or representative) joins
and leaves, an asked institution posts its answer. Each builder encodes its body with
`client.build_tx` (the one place a health tx is signed) and returns the `SignedTx`; the tx id of a
registration is the study id, of a query the query id.
"""

from __future__ import annotations

from medledger.crypto import Identity
from medledger.health.client import SignedTx, build_tx
from medledger.health.research_types import (
    PostAnswerBody,
    RegisterStudyBody,
    StudyMembershipBody,
    SubmitQueryBody,
)
from medledger.health.types import (
    KIND_JOIN_STUDY,
    KIND_LEAVE_STUDY,
    KIND_POST_ANSWER,
    KIND_REGISTER_STUDY,
    KIND_SUBMIT_QUERY,
)


def build_register_study(
    institute: Identity,
    body: RegisterStudyBody,
    *,
    chain_id: str,
    nonce: int | None = None,
    timestamp_ms: int | None = None,
) -> SignedTx:
    return build_tx(
        institute, KIND_REGISTER_STUDY, body, chain_id=chain_id, nonce=nonce, timestamp_ms=timestamp_ms
    )


def build_join_study(
    patient: Identity,
    study_id: bytes,
    patient_id: bytes,
    *,
    chain_id: str,
    nonce: int | None = None,
    timestamp_ms: int | None = None,
) -> SignedTx:
    body = StudyMembershipBody(study_id, patient_id)
    return build_tx(patient, KIND_JOIN_STUDY, body, chain_id=chain_id, nonce=nonce, timestamp_ms=timestamp_ms)


def build_leave_study(
    patient: Identity,
    study_id: bytes,
    patient_id: bytes,
    *,
    chain_id: str,
    nonce: int | None = None,
    timestamp_ms: int | None = None,
) -> SignedTx:
    body = StudyMembershipBody(study_id, patient_id)
    return build_tx(
        patient, KIND_LEAVE_STUDY, body, chain_id=chain_id, nonce=nonce, timestamp_ms=timestamp_ms
    )


def build_submit_query(
    institute: Identity,
    body: SubmitQueryBody,
    *,
    chain_id: str,
    nonce: int | None = None,
    timestamp_ms: int | None = None,
) -> SignedTx:
    return build_tx(
        institute, KIND_SUBMIT_QUERY, body, chain_id=chain_id, nonce=nonce, timestamp_ms=timestamp_ms
    )


def build_post_answer(
    institution: Identity,
    body: PostAnswerBody,
    *,
    chain_id: str,
    nonce: int | None = None,
    timestamp_ms: int | None = None,
) -> SignedTx:
    return build_tx(
        institution, KIND_POST_ANSWER, body, chain_id=chain_id, nonce=nonce, timestamp_ms=timestamp_ms
    )
