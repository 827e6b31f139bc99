"""The rules of research on the ledger (issue 13, ADR 0019): studies, opt-ins, queries, answers.

- `health.register_study`: only a registered research institution registers; its templates are
  well formed, its budget within the network's limits, its k at least the network's, its expiry
  ahead and at most five years away. The study id is the tx id.
- `health.join_study` / `health.leave_study`: the patient or a current representative; joining a
  study that has not expired, once while a member; leaving at any time, which stops use from that
  block on (an institution includes a patient only while a member, ADR 0019). Both are audited.
- `health.submit_query`: only the study's institute, for one of its templates with parameters in
  the template's bounds, asking registered author institutions, over a data version that exists.
  The charge is ε × institutions asked (δ likewise), deducted from the study's remaining budget,
  and refused if it would go below zero. A query whose digest (`compute_query_digest`: its whole
  body) was asked before is refused and charges nothing: its answers are already on the ledger.
- `health.post_answer`: only an institution the query asked, once; it has one cell for each label
  of the grouping's closed vocabulary (which cells exist never depends on the data), sorted; a
  suppressed cell carries 0; a count's noise is
  at least what its ε requires of a Laplace count, or for a Gaussian count (δ > 0) a floor no
  (ε, δ)-DP Gaussian count can go below (the ledger cannot check noise it cannot see, but it
  refuses an answer that says it added too little).

Plain functions of (state, ctx, body), like `rules`: no clock, no randomness, no I/O. Checks on
block time come after every time-free check, so that a tx refused at admission is refused by the
same rule in its block.
"""

from __future__ import annotations

import dataclasses

from medledger.chain.app import StateReader
from medledger.chain.codec import encode
from medledger.crypto import digest

# `rules` dispatches to this module and this module uses its checks (as `claims` does).
from medledger.health import rules
from medledger.health import state as st
from medledger.health.errors import HealthStateError, reject
from medledger.health.policy import is_author_role
from medledger.health.research_types import (
    CELL_LABELS_BY_GROUPING,
    CELL_SUPPRESSED,
    COUNT_TEMPLATE_KINDS,
    GROUP_NONE,
    QUERY_DIGEST_DOMAIN,
    RANGED_TEMPLATE_KINDS,
    STUDY_QUERIES_MAX,
    STUDY_TTL_MS_MAX,
    TEMPLATE_HISTOGRAM,
    TEMPLATE_MEAN,
    AnswerCell,
    AnswerState,
    PostAnswerBody,
    QueryState,
    QueryTemplate,
    RegisterStudyBody,
    StudyMembership,
    StudyMembershipBody,
    StudyState,
    SubmitQueryBody,
    is_clinical_code,
)
from medledger.health.types import EVENT_STUDY_JOINED, EVENT_STUDY_LEFT, ROLE_RESEARCH, PatientState

#: ε is counted in millionths; a count's Laplace scale is 1/ε, in thousandths of a patient.
_MICRO: int = 1_000_000
_MILLI: int = 1_000


def compute_query_digest(body: SubmitQueryBody) -> bytes:
    """What makes two queries the same query: everything they ask (study, template, parameters,
    institutions, ε, δ and data version), not who signed them or when."""
    return digest(QUERY_DIGEST_DOMAIN + encode(body))


def compute_query_charge(body: SubmitQueryBody) -> tuple[int, int]:
    """(ε, δ) the study is charged for a query: each asked institution's answer spends the query's
    ε and δ (basic composition: a patient may have records at every one of them)."""
    count = len(body.institutions)
    return body.epsilon_micro * count, body.delta_pico * count


#: Below this ε (in millionths) the Gaussian floor stops growing (see `compute_count_noise_scale_min_milli`).
_GAUSSIAN_FLOOR_EPSILON_MICRO_MIN: int = 100


def compute_count_noise_scale_min_milli(epsilon_micro: int, delta_pico: int = 0) -> int:
    """The smallest noise scale a count (sensitivity 1) asked at this ε and δ may declare, in
    thousandths, rounded down (so an institution that rounds its scale up is never refused).

    δ = 0: the Laplace scale of an ε-DP count, 1/ε. δ > 0 (Gaussian σ): a floor every
    (ε, δ)-DP Gaussian count needs, not the σ it should use: by the analytic Gaussian bound (Balle
    and Wang 2018) σ = 1/ε gives δ > 8·10^-6 for every ε ≥ 10^-4, and σ = 10^4 does for every ε
    below it, so under any δ a study may declare (at most 10^-6) σ must be at least
    min(1/ε, 10^4). Without it an answer could say it added a thousandth of a patient's noise."""
    if delta_pico:
        epsilon_micro = max(epsilon_micro, _GAUSSIAN_FLOOR_EPSILON_MICRO_MIN)
    return (_MILLI * _MICRO) // epsilon_micro


# --- studies ------------------------------------------------------------------------------------


def validate_template(template: QueryTemplate, body: RegisterStudyBody) -> None:
    """A template's lists, range and per-answer budget fit its kind and the study."""
    if not template.codes:
        raise reject("study_templates", f"template {template.name!r} names no code")
    if not (rules._is_strictly_sorted(template.codes) and rules._is_strictly_sorted(template.groupings)):
        raise reject("study_templates", "a template's codes and groupings must be sorted and unique")
    if not all(is_clinical_code(code) for code in template.codes):
        raise reject(
            "study_templates",
            "a template's codes are SNOMED CT, LOINC or ICD-10 codes (sct:, loinc:, icd10:)",
        )
    if (template.kind == TEMPLATE_HISTOGRAM) != bool(template.groupings):
        raise reject("study_templates", "a histogram template names its groupings, any other none")
    if template.kind in RANGED_TEMPLATE_KINDS:
        if template.value_min_milli >= template.value_max_milli:
            raise reject("study_templates", f"template {template.name!r} needs a value range, min < max")
    elif template.value_min_milli or template.value_max_milli:
        raise reject("study_templates", f"a {template.kind} template has no value range (both 0)")
    if template.epsilon_max_micro > body.epsilon_total_micro:
        raise reject("study_templates", "a template may not spend more ε per answer than the study has")
    if template.delta_max_pico > body.delta_total_pico:
        raise reject("study_templates", "a template may not spend more δ per answer than the study has")


def validate_register_study(state: StateReader, ctx: rules.TxContext, body: RegisterStudyBody) -> None:
    institute = rules.validate_institution(state, ctx.sender)
    if institute.role != ROLE_RESEARCH:
        raise reject(
            "study_registrar", f"an institution with role {institute.role!r} cannot register studies"
        )
    if not body.templates:
        raise reject("study_templates", "a study names at least one query template")
    if not rules._is_strictly_sorted(tuple(t.name for t in body.templates)):
        raise reject("study_templates", "a study's templates must be sorted by name and unique")
    for template in body.templates:
        validate_template(template, body)
    k_min = st.get_research_k_min(state)
    if body.k_min < k_min:
        raise reject("study_k", f"the network suppresses cells below {k_min}; a study may not go lower")
    if st.get_study(state, ctx.tx_id) is not None:
        raise reject("study_exists", "a study with this id exists")
    if ctx.time_ms is not None:
        if body.expires_ms <= ctx.time_ms:
            raise reject("expiry", "the study expires before it is recorded")
        if body.expires_ms - ctx.time_ms > STUDY_TTL_MS_MAX:
            raise reject("expiry", f"a study may run at most {STUDY_TTL_MS_MAX} ms")


def process_register_study(state: st.StateWriter, ctx: rules.TxContext, body: RegisterStudyBody) -> None:
    validate_register_study(state, ctx, body)
    study = StudyState(
        study_id=ctx.tx_id,
        institute=ctx.sender,
        title=body.title,
        ethics_ref=body.ethics_ref,
        templates=body.templates,
        epsilon_total_micro=body.epsilon_total_micro,
        delta_total_pico=body.delta_total_pico,
        epsilon_remaining_micro=body.epsilon_total_micro,
        delta_remaining_pico=body.delta_total_pico,
        k_min=body.k_min,
        expires_ms=body.expires_ms,
        member_count=0,
        query_count=0,
        height=ctx.height,
        time_ms=ctx.time_ms or 0,
    )
    st.save_study(state, study)


def validate_study(state: StateReader, study_id: bytes) -> StudyState:
    study = st.get_study(state, study_id)
    if study is None:
        raise reject("study_unknown", "no such study")
    return study


def validate_study_live(study: StudyState, ctx: rules.TxContext) -> None:
    """The study has not expired at the block's time (admission: unknown, so not checked)."""
    if ctx.time_ms is not None and ctx.time_ms >= study.expires_ms:
        raise reject("study_expired", "the study has expired")


# --- opt-in and withdrawal ----------------------------------------------------------------------


def validate_membership_change(
    state: StateReader, ctx: rules.TxContext, body: StudyMembershipBody
) -> tuple[StudyState, PatientState, StudyMembership | None]:
    """The study, the patient (the sender acts for them) and their membership, if any."""
    study = validate_study(state, body.study_id)
    patient = rules.validate_patient(state, body.patient_id)
    rules.validate_acts_for_patient(patient, ctx.sender)
    return study, patient, st.get_membership(state, body.study_id, body.patient_id)


def process_join_study(state: st.StateWriter, ctx: rules.TxContext, body: StudyMembershipBody) -> None:
    study, patient, membership = validate_membership_change(state, ctx, body)
    if membership is not None and membership.is_member:
        raise reject("study_member", "the patient is already a member of this study")
    validate_study_live(study, ctx)
    st.save_membership(state, StudyMembership(study.study_id, patient.patient_id, max(ctx.height, 1), 0))
    st.save_study(state, dataclasses.replace(study, member_count=study.member_count + 1))
    rules.audit(state, ctx, patient.patient_id, EVENT_STUDY_JOINED, study.study_id)


def process_leave_study(state: st.StateWriter, ctx: rules.TxContext, body: StudyMembershipBody) -> None:
    study, patient, membership = validate_membership_change(state, ctx, body)
    if membership is None or not membership.is_member:
        raise reject("not_study_member", "the patient is not a member of this study")
    if study.member_count == 0:
        raise HealthStateError("a study with a member counts none")
    # Height 0 is genesis, where no tx runs, so a left membership always has a non-zero height.
    st.save_membership(state, dataclasses.replace(membership, left_height=max(ctx.height, 1)))
    st.save_study(state, dataclasses.replace(study, member_count=study.member_count - 1))
    rules.audit(state, ctx, patient.patient_id, EVENT_STUDY_LEFT, study.study_id)


# --- queries ------------------------------------------------------------------------------------


def validate_query_params(template: QueryTemplate, body: SubmitQueryBody) -> None:
    """The parameters are ones the template allows, and so is the per-answer ε and δ."""
    params = body.params
    if params.code not in template.codes:
        raise reject("query_parameters", "the code is not one the template allows")
    if template.kind == TEMPLATE_HISTOGRAM:
        if params.grouping not in template.groupings:
            raise reject("query_parameters", "the grouping is not one the template allows")
    elif params.grouping != GROUP_NONE:
        raise reject("query_parameters", f"a {template.kind} query has no grouping")
    if template.kind in RANGED_TEMPLATE_KINDS:
        if not (
            template.value_min_milli
            <= params.value_low_milli
            <= params.value_high_milli
            <= template.value_max_milli
        ):
            raise reject("query_parameters", "the value range is outside the template's bounds")
    elif params.value_low_milli or params.value_high_milli:
        raise reject("query_parameters", f"a {template.kind} query has no value range (both 0)")
    if body.epsilon_micro > template.epsilon_max_micro:
        raise reject("query_parameters", "the query spends more ε per answer than the template allows")
    if body.delta_pico > template.delta_max_pico:
        raise reject("query_parameters", "the query spends more δ per answer than the template allows")


def validate_query_institutions(state: StateReader, institutions: tuple[bytes, ...]) -> None:
    if not institutions:
        raise reject("query_institutions", "a query asks at least one institution")
    if not rules._is_strictly_sorted(institutions):
        raise reject("query_institutions", "the institutions asked must be sorted and unique")
    for key in institutions:
        institution = st.get_institution(state, key)
        if institution is None or not is_author_role(institution.role):
            raise reject("query_institutions", "only registered institutions that hold records are asked")
        if st.is_inactive_institution(state, key):
            raise reject("institution_inactive", "a suspended or removed institution is asked nothing")


def validate_submit_query(
    state: StateReader, ctx: rules.TxContext, body: SubmitQueryBody
) -> tuple[StudyState, bytes]:
    """The study and the query's digest; raises if the query may not run or be charged."""
    study = validate_study(state, body.study_id)
    if ctx.sender != study.institute:
        raise reject("not_study_institute", "only the institute that registered a study queries it")
    template = study.get_template(body.template)
    if template is None:
        raise reject("query_template", "the template is not one of the study's")
    validate_query_params(template, body)
    validate_query_institutions(state, body.institutions)
    query_digest = compute_query_digest(body)
    if st.get_query_id_by_digest(state, query_digest) is not None:
        raise reject("query_repeated", "this query was asked before: its answers are on the ledger")
    if st.get_query(state, ctx.tx_id) is not None:
        raise reject("query_exists", "a query with this id exists")
    if study.query_count >= STUDY_QUERIES_MAX:
        raise reject("study_queries_full", f"a study may run at most {STUDY_QUERIES_MAX} queries")
    epsilon, delta = compute_query_charge(body)
    if epsilon > study.epsilon_remaining_micro or delta > study.delta_remaining_pico:
        raise reject("budget_exhausted", "the query would spend more than the study's remaining budget")
    if body.as_of_height < study.height:
        raise reject("query_as_of", "the data version is older than the study")
    # Block-time checks last (admission has no block): the study's expiry, a data version to come.
    validate_study_live(study, ctx)
    if ctx.time_ms is not None and body.as_of_height > ctx.height:
        raise reject("query_as_of", "the data version is a block not yet committed")
    return study, query_digest


def process_submit_query(state: st.StateWriter, ctx: rules.TxContext, body: SubmitQueryBody) -> None:
    study, query_digest = validate_submit_query(state, ctx, body)
    epsilon, delta = compute_query_charge(body)
    query = QueryState(
        query_id=ctx.tx_id,
        study_id=study.study_id,
        digest=query_digest,
        template=body.template,
        params=body.params,
        institutions=body.institutions,
        epsilon_micro=body.epsilon_micro,
        delta_pico=body.delta_pico,
        as_of_height=body.as_of_height,
        epsilon_charged_micro=epsilon,
        delta_charged_pico=delta,
        answer_count=0,
        height=ctx.height,
        time_ms=ctx.time_ms or 0,
    )
    charged = dataclasses.replace(
        study,
        epsilon_remaining_micro=study.epsilon_remaining_micro - epsilon,
        delta_remaining_pico=study.delta_remaining_pico - delta,
        query_count=study.query_count + 1,
    )
    # A broken invariant is a bug and stops the node, before anything is written (TIGER_STYLE).
    if charged.epsilon_remaining_micro < 0 or charged.delta_remaining_pico < 0:
        raise HealthStateError("a study's remaining budget would go below zero")
    st.save_query(state, query)
    st.save_study(state, charged)


# --- answers ------------------------------------------------------------------------------------


def validate_answer_cells(study: StudyState, query: QueryState, body: PostAnswerBody) -> None:
    """One cell for each label of the grouping's vocabulary, sorted; suppressed cells carry 0; a
    non-histogram has its one total; a mean stays within the range it was asked in."""
    labels = tuple(cell.label for cell in body.cells)
    allowed = CELL_LABELS_BY_GROUPING[query.params.grouping]
    if not body.cells:
        raise reject("answer_cells", "an answer has at least one cell")
    if not rules._is_strictly_sorted(labels):
        raise reject("answer_cells", "an answer's cells must be sorted by label and unique")
    if not set(labels) <= allowed:
        raise reject("answer_cells", f"a cell's label is not a {query.params.grouping} label")
    # Which cells are released must not depend on the data (an absent cell would say "none here"):
    # every label of the grouping has its cell, noised or suppressed.
    if len(labels) != len(allowed):
        raise reject("answer_cells", f"an answer has a cell for every {query.params.grouping} label")
    template = study.get_template(query.template)
    if template is None:
        raise HealthStateError("a charged query's template is not in its study")
    for cell in body.cells:
        validate_answer_cell(template, query, cell)


def validate_answer_cell(template: QueryTemplate, query: QueryState, cell: AnswerCell) -> None:
    if cell.status == CELL_SUPPRESSED and cell.value_milli != 0:
        raise reject("answer_cells", "a suppressed cell carries no value (0)")
    # A mean (of values clamped to the asked range) lies in that range, or is suppressed.
    if (
        template.kind == TEMPLATE_MEAN
        and cell.status != CELL_SUPPRESSED
        and not query.params.value_low_milli <= cell.value_milli <= query.params.value_high_milli
    ):
        raise reject("answer_cells", "a mean lies outside the range it was asked in")


def validate_post_answer(
    state: StateReader, ctx: rules.TxContext, body: PostAnswerBody
) -> tuple[StudyState, QueryState]:
    rules.validate_institution(state, ctx.sender)
    query = st.get_query(state, body.query_id)
    if query is None:
        raise reject("query_unknown", "no such query")
    if ctx.sender not in query.institutions:
        raise reject("not_query_institution", "only an institution the query asked may answer it")
    if st.get_answer(state, query.query_id, ctx.sender) is not None:
        raise reject("answer_exists", "this institution has answered this query")
    study = st.get_study(state, query.study_id)
    if study is None:
        raise HealthStateError("a charged query's study is missing")
    validate_answer_cells(study, query, body)
    template = study.get_template(query.template)
    if (
        template is not None
        and template.kind in COUNT_TEMPLATE_KINDS
        and body.noise_scale_milli
        < compute_count_noise_scale_min_milli(query.epsilon_micro, query.delta_pico)
    ):
        raise reject("answer_noise", "the noise is smaller than the query's ε and δ require of a count")
    return study, query


def process_post_answer(state: st.StateWriter, ctx: rules.TxContext, body: PostAnswerBody) -> None:
    _, query = validate_post_answer(state, ctx, body)
    answer = AnswerState(
        query_id=query.query_id,
        institution=ctx.sender,
        answer_id=ctx.tx_id,
        cells=body.cells,
        noise_scale_milli=body.noise_scale_milli,
        height=ctx.height,
        time_ms=ctx.time_ms or 0,
    )
    st.save_answer(state, answer)
    st.save_query(state, dataclasses.replace(query, answer_count=query.answer_count + 1))


# --- reads: what the network and the parties see ------------------------------------------------


def list_answers(state: StateReader, query: QueryState) -> list[AnswerState]:
    """The answers posted for a query, in the order of its institutions."""
    answers = [st.get_answer(state, query.query_id, key) for key in query.institutions]
    return [a for a in answers if a is not None]


def is_member_at(membership: StudyMembership | None, height: int) -> bool:
    """Whether a query recorded at `height` may cover the patient: a member who joined by then and
    has not left since (leaving stops use from its block on; ADR 0019)."""
    return membership is not None and membership.is_member and membership.joined_height <= height


__all__ = [
    "compute_query_charge",
    "compute_query_digest",
    "is_member_at",
    "list_answers",
    "process_join_study",
    "process_leave_study",
    "process_post_answer",
    "process_register_study",
    "process_submit_query",
]
