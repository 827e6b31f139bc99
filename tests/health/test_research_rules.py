"""The research rules one by one (issue 13, ADR 0019): studies, opt-ins, queries, answers.

Every tx goes through the real application (`Ledger`: admission, then its own block); each refusal
goes through `Ledger.submit_rejected`, which also asserts that nothing changed. The last test
drives generated sequences of queries and opt-ins and checks the budget's accounts after each.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from health_testkit import BLOCK_INTERVAL_MS, CHAIN_ID, Ledger, make_identity
from hypothesis import given
from hypothesis import strategies as stg

from medledger.chain.codec import Bytes, Seq, Struct, Text, UInt, WireType
from medledger.chain.types import ZERO_HASH, Block, Header
from medledger.chain.validation import compute_tx_root
from medledger.health import client, events, research
from medledger.health import state as st
from medledger.health.client import SignedTx
from medledger.health.research_types import (
    AGE_BANDS,
    CELL_NOISED,
    CELL_SUPPRESSED,
    CELL_TOTAL,
    GROUP_AGE_BAND,
    GROUP_NONE,
    GROUP_SEX,
    STUDY_TTL_MS_MAX,
    TEMPLATE_COUNT,
    TEMPLATE_COUNT_IN_RANGE,
    TEMPLATE_HISTOGRAM,
    TEMPLATE_MEAN,
    AnswerCell,
    AnswerState,
    PostAnswerBody,
    QueryParams,
    QueryState,
    QueryTemplate,
    RegisterStudyBody,
    StudyMembershipBody,
    StudyState,
    SubmitQueryBody,
)
from medledger.health.types import (
    EVENT_STUDY_JOINED,
    EVENT_STUDY_LEFT,
    KIND_JOIN_STUDY,
    KIND_LEAVE_STUDY,
    KIND_POST_ANSWER,
    KIND_REGISTER_STUDY,
    KIND_SUBMIT_QUERY,
    RESEARCH_K_MIN_DEFAULT,
    compute_patient_id,
)

ROLES = {
    "clinic": "clinic",
    "hospital": "hospital",
    "insurer": "insurer",
    "research": "research",
    "research-2": "research",
}
DAY_MS = 24 * 3600 * 1000
EPSILON_TOTAL_MICRO = 1_000_000  # ε = 1
DELTA_TOTAL_PICO = 1_000  # δ = 10^-9
#: The block the test study is registered in (after its two patients): its first data version.
STUDY_HEIGHT = 3

COUNT = QueryTemplate("a-count", TEMPLATE_COUNT, ("sct:38341003", "sct:44054006"), (), 0, 0, 200_000, 0)
IN_RANGE = QueryTemplate(
    "b-range", TEMPLATE_COUNT_IN_RANGE, ("loinc:8867-4",), (), 30_000, 220_000, 200_000, 0
)
HISTOGRAM = QueryTemplate(
    "c-hist", TEMPLATE_HISTOGRAM, ("sct:38341003",), (GROUP_AGE_BAND, GROUP_SEX), 0, 0, 200_000, 0
)
MEAN = QueryTemplate("d-mean", TEMPLATE_MEAN, ("loinc:8867-4",), (), 30_000, 220_000, 100_000, 500)
TEMPLATES = (COUNT, IN_RANGE, HISTOGRAM, MEAN)


def key(name: str) -> bytes:
    return make_identity(name).public.sign_key


def pid(name: str) -> bytes:
    return compute_patient_id(key(name))


def study_body(ledger: Ledger, **changes: Any) -> RegisterStudyBody:
    body = RegisterStudyBody(
        title="Hypertension in adults: a federated cohort",
        ethics_ref="IRB-2026-0113",
        templates=TEMPLATES,
        epsilon_total_micro=EPSILON_TOTAL_MICRO,
        delta_total_pico=DELTA_TOTAL_PICO,
        k_min=RESEARCH_K_MIN_DEFAULT,
        expires_ms=ledger.next_time_ms + 30 * DAY_MS,
    )
    return dataclasses.replace(body, **changes)


def count_query(study: bytes, /, **changes: Any) -> SubmitQueryBody:
    body = SubmitQueryBody(
        study_id=study,
        template=COUNT.name,
        params=QueryParams("sct:38341003", GROUP_NONE, 0, 0),
        institutions=tuple(sorted((key("clinic"), key("hospital")))),
        epsilon_micro=100_000,
        delta_pico=0,
        as_of_height=STUDY_HEIGHT,
    )
    return dataclasses.replace(body, **changes)


def total_answer(query_id: bytes, value_milli: int = 42_000, scale_milli: int = 10_000) -> PostAnswerBody:
    return PostAnswerBody(query_id, (AnswerCell(CELL_TOTAL, CELL_NOISED, value_milli),), scale_milli)


@dataclasses.dataclass
class World:
    ledger: Ledger
    study_id: bytes

    def tx(self, signer: str, kind: str, body: WireType) -> SignedTx:
        return self.ledger.sign(client.build_tx, make_identity(signer), kind, body)

    def ok(self, signer: str, kind: str, body: WireType) -> bytes:
        return self.ledger.submit_ok(self.tx(signer, kind, body)).tx_id

    def rejected(self, signer: str, kind: str, body: WireType, rule: str) -> None:
        self.ledger.submit_rejected(self.tx(signer, kind, body), rule)

    def study(self, study_id: bytes | None = None) -> StudyState:
        study = st.get_study(self.ledger.state, study_id or self.study_id)
        assert study is not None
        return study

    def join(self, patient: str, by: str | None = None) -> bytes:
        return self.ok(by or patient, KIND_JOIN_STUDY, StudyMembershipBody(self.study_id, pid(patient)))

    def leave(self, patient: str, by: str | None = None) -> bytes:
        return self.ok(by or patient, KIND_LEAVE_STUDY, StudyMembershipBody(self.study_id, pid(patient)))

    def query(self, **changes: Any) -> bytes:
        return self.ok("research", KIND_SUBMIT_QUERY, count_query(self.study_id, **changes))


def make_world() -> World:
    ledger = Ledger(ROLES)
    for patient in ("patient", "patient-2"):
        ledger.submit_ok(ledger.sign(client.build_register_patient, make_identity(patient)))
    study_id = ledger.submit_ok(
        ledger.sign(client.build_tx, make_identity("research"), KIND_REGISTER_STUDY, study_body(ledger))
    ).tx_id
    assert ledger.height == STUDY_HEIGHT
    return World(ledger, study_id)


@pytest.fixture
def world() -> World:
    return make_world()


# --- studies ------------------------------------------------------------------------------------


def test_a_research_institute_registers_a_study_with_its_whole_budget(world: World) -> None:
    study = world.study()
    assert study.institute == key("research")
    assert study.templates == TEMPLATES
    assert (study.epsilon_remaining_micro, study.delta_remaining_pico) == (
        EPSILON_TOTAL_MICRO,
        DELTA_TOTAL_PICO,
    )
    assert (study.member_count, study.query_count, study.k_min) == (0, 0, 11)
    assert st.list_study_ids(world.ledger.state) == [world.study_id]


@pytest.mark.parametrize("signer", ["clinic", "hospital", "insurer"])
def test_invalid_study_by_an_institution_that_is_not_a_research_institute(world: World, signer: str) -> None:
    world.rejected(signer, KIND_REGISTER_STUDY, study_body(world.ledger), "health.study_registrar")


def test_invalid_study_by_a_patient(world: World) -> None:
    world.rejected("patient", KIND_REGISTER_STUDY, study_body(world.ledger), "health.not_institution")


def _template(**changes: Any) -> tuple[QueryTemplate, ...]:
    return (dataclasses.replace(COUNT, **changes),)


@pytest.mark.parametrize(
    ("changes", "rule"),
    [
        ({"templates": ()}, "health.study_templates"),
        ({"templates": (IN_RANGE, COUNT)}, "health.study_templates"),  # not sorted by name
        ({"templates": (COUNT, COUNT)}, "health.study_templates"),  # a name twice
        ({"templates": _template(codes=())}, "health.study_templates"),
        ({"templates": _template(codes=("sct:73211009", "sct:38341003"))}, "health.study_templates"),
        ({"templates": _template(codes=("sct:38341003", "x:1"))}, "health.study_templates"),  # system
        ({"templates": _template(codes=("sct:1",))}, "health.study_templates"),  # too short for SNOMED
        ({"templates": _template(codes=("loinc:8867",))}, "health.study_templates"),  # no check digit
        ({"templates": _template(codes=("icd10:e11",))}, "health.study_templates"),
        ({"templates": _template(codes=(f"sct:{pid('patient').hex()[:16]}",))}, "health.study_templates"),
        ({"templates": _template(groupings=(GROUP_SEX,))}, "health.study_templates"),  # count grouped
        ({"templates": _template(value_max_milli=5)}, "health.study_templates"),  # count with a range
        ({"templates": (dataclasses.replace(HISTOGRAM, groupings=()),)}, "health.study_templates"),
        (
            {"templates": (dataclasses.replace(MEAN, value_min_milli=9, value_max_milli=9),)},
            "health.study_templates",
        ),
        ({"templates": _template(epsilon_max_micro=EPSILON_TOTAL_MICRO + 1)}, "health.study_templates"),
        (
            {"templates": (dataclasses.replace(MEAN, delta_max_pico=DELTA_TOTAL_PICO + 1),)},
            "health.study_templates",
        ),
        ({"k_min": RESEARCH_K_MIN_DEFAULT - 1}, "health.study_k"),
        ({"k_min": 1}, "health.study_k"),
    ],
)
def test_invalid_study_shapes(world: World, changes: dict[str, Any], rule: str) -> None:
    world.rejected("research", KIND_REGISTER_STUDY, study_body(world.ledger, **changes), rule)


def test_invalid_study_expiry(world: World) -> None:
    ledger = world.ledger
    world.rejected(
        "research", KIND_REGISTER_STUDY, study_body(ledger, expires_ms=ledger.next_time_ms), "health.expiry"
    )
    far = ledger.next_time_ms + STUDY_TTL_MS_MAX + 1
    world.rejected("research", KIND_REGISTER_STUDY, study_body(ledger, expires_ms=far), "health.expiry")


def test_invalid_study_replayed(world: World) -> None:
    signed = world.tx("research", KIND_REGISTER_STUDY, study_body(world.ledger, title="Once"))
    world.ledger.submit_ok(signed)
    world.ledger.submit_rejected(signed, "health.study_exists")


# --- opt-in and withdrawal ----------------------------------------------------------------------


def test_a_patient_joins_and_leaves_and_the_audit_trail_says_so(world: World) -> None:
    joined = world.join("patient")
    membership = st.get_membership(world.ledger.state, world.study_id, pid("patient"))
    assert membership is not None
    assert membership.is_member
    assert world.study().member_count == 1
    assert research.is_member_at(membership, world.ledger.height)
    left = world.leave("patient")
    membership = st.get_membership(world.ledger.state, world.study_id, pid("patient"))
    assert membership is not None
    assert not membership.is_member
    assert membership.left_height == world.ledger.height
    assert world.study().member_count == 0
    assert not research.is_member_at(membership, world.ledger.height)
    trail = [
        (e.event, e.event_id, e.subject_id) for e in st.list_audit_events(world.ledger.state, pid("patient"))
    ]
    assert trail == [(EVENT_STUDY_JOINED, joined, world.study_id), (EVENT_STUDY_LEFT, left, world.study_id)]
    # Rejoining starts a new membership; the study lists the patient once.
    world.join("patient")
    assert world.study().member_count == 1
    assert st.list_member_ids(world.ledger.state, world.study_id) == [pid("patient")]


def test_a_representative_joins_for_the_patient(world: World) -> None:
    ledger = world.ledger
    patient = make_identity("patient")
    ledger.submit_ok(ledger.sign(client.build_add_representative, patient, pid("patient"), key("guardian")))
    world.join("patient", by="guardian")
    world.leave("patient", by="guardian")


def test_invalid_opt_in_of_a_foreign_patient(world: World) -> None:
    body = StudyMembershipBody(world.study_id, pid("patient"))
    for signer in ("patient-2", "research", "clinic"):
        world.rejected(signer, KIND_JOIN_STUDY, body, "health.not_authorised")
    world.join("patient")
    for signer in ("patient-2", "research"):
        world.rejected(signer, KIND_LEAVE_STUDY, body, "health.not_authorised")


def test_invalid_opt_in_by_a_removed_representative(world: World) -> None:
    ledger = world.ledger
    patient = make_identity("patient")
    ledger.submit_ok(ledger.sign(client.build_add_representative, patient, pid("patient"), key("guardian")))
    ledger.submit_ok(
        ledger.sign(client.build_remove_representative, patient, pid("patient"), key("guardian"))
    )
    body = StudyMembershipBody(world.study_id, pid("patient"))
    world.rejected("guardian", KIND_JOIN_STUDY, body, "health.not_authorised")


def test_invalid_opt_ins(world: World) -> None:
    world.rejected(
        "patient", KIND_JOIN_STUDY, StudyMembershipBody(bytes(32), pid("patient")), "health.study_unknown"
    )
    world.rejected(
        "patient",
        KIND_JOIN_STUDY,
        StudyMembershipBody(world.study_id, pid("nobody")),
        "health.patient_unknown",
    )
    world.rejected(
        "patient",
        KIND_LEAVE_STUDY,
        StudyMembershipBody(world.study_id, pid("patient")),
        "health.not_study_member",
    )
    signed = world.tx("patient", KIND_JOIN_STUDY, StudyMembershipBody(world.study_id, pid("patient")))
    world.ledger.submit_ok(signed)
    world.ledger.submit_rejected(signed, "health.study_member")  # replayed
    world.rejected(
        "patient", KIND_JOIN_STUDY, StudyMembershipBody(world.study_id, pid("patient")), "health.study_member"
    )


def test_invalid_opt_in_after_expiry_but_leaving_still_works(world: World) -> None:
    world.join("patient")
    world.ledger.advance(31 * DAY_MS)
    world.rejected(
        "patient-2",
        KIND_JOIN_STUDY,
        StudyMembershipBody(world.study_id, pid("patient-2")),
        "health.study_expired",
    )
    world.leave("patient")


# --- queries ------------------------------------------------------------------------------------


def test_a_query_is_charged_epsilon_for_each_institution_asked(world: World) -> None:
    query_id = world.query()
    study = world.study()
    assert study.epsilon_remaining_micro == EPSILON_TOTAL_MICRO - 2 * 100_000
    assert study.delta_remaining_pico == DELTA_TOTAL_PICO
    assert study.query_count == 1
    query = st.get_query(world.ledger.state, query_id)
    assert query is not None
    assert (query.epsilon_charged_micro, query.answer_count) == (200_000, 0)
    assert query.digest == research.compute_query_digest(count_query(world.study_id))
    assert st.get_query_id_by_digest(world.ledger.state, query.digest) == query_id
    assert st.list_query_ids(world.ledger.state, world.study_id) == [query_id]


def test_a_gaussian_query_is_charged_delta_too(world: World) -> None:
    world.query(
        template=MEAN.name,
        params=QueryParams("loinc:8867-4", GROUP_NONE, 40_000, 200_000),
        epsilon_micro=100_000,
        delta_pico=500,
        institutions=(key("clinic"),),
    )
    study = world.study()
    assert (study.epsilon_remaining_micro, study.delta_remaining_pico) == (900_000, 500)
    world.rejected(
        "research",
        KIND_SUBMIT_QUERY,
        count_query(
            world.study_id,
            template=MEAN.name,
            params=QueryParams("loinc:8867-4", GROUP_NONE, 50_000, 200_000),
            delta_pico=500,
            institutions=tuple(sorted((key("clinic"), key("hospital")))),
        ),
        "health.budget_exhausted",
    )


def test_invalid_query_past_the_budget(world: World) -> None:
    # ε = 1 in all: five queries of 0.1 each to two institutions spend it exactly.
    for code_index in range(5):
        world.query(as_of_height=STUDY_HEIGHT + code_index)
    assert world.study().epsilon_remaining_micro == 0
    before = world.study()
    world.rejected(
        "research",
        KIND_SUBMIT_QUERY,
        count_query(world.study_id, epsilon_micro=1, as_of_height=STUDY_HEIGHT + 8),
        "health.budget_exhausted",
    )
    assert world.study() == before


def test_invalid_query_one_millionth_past_the_budget(world: World) -> None:
    world.query(epsilon_micro=200_000, as_of_height=STUDY_HEIGHT)  # 0.4 spent
    world.query(epsilon_micro=200_000, as_of_height=STUDY_HEIGHT + 1)  # 0.8 spent
    world.rejected(
        "research",
        KIND_SUBMIT_QUERY,
        count_query(world.study_id, epsilon_micro=100_001, as_of_height=STUDY_HEIGHT + 2),
        "health.budget_exhausted",
    )
    world.query(epsilon_micro=100_000, as_of_height=STUDY_HEIGHT + 2)
    assert world.study().epsilon_remaining_micro == 0


def test_invalid_query_repeated_is_not_charged_again(world: World) -> None:
    world.query()
    before = world.study()
    # The same question, signed again (a new nonce, so a new tx id): refused and not charged.
    world.rejected("research", KIND_SUBMIT_QUERY, count_query(world.study_id), "health.query_repeated")
    assert world.study() == before
    # The same signed tx replayed: refused the same way.
    signed = world.tx(
        "research", KIND_SUBMIT_QUERY, count_query(world.study_id, as_of_height=STUDY_HEIGHT + 1)
    )
    world.ledger.submit_ok(signed)
    world.ledger.submit_rejected(signed, "health.query_repeated")


@pytest.mark.parametrize("signer", ["research-2", "clinic", "patient"])
def test_invalid_query_by_another_than_the_study_institute(world: World, signer: str) -> None:
    world.rejected(signer, KIND_SUBMIT_QUERY, count_query(world.study_id), "health.not_study_institute")


@pytest.mark.parametrize(
    ("changes", "rule"),
    [
        ({"study_id": bytes(32)}, "health.study_unknown"),
        ({"template": "z-none"}, "health.query_template"),
        ({"params": QueryParams("sct:73211009", GROUP_NONE, 0, 0)}, "health.query_parameters"),  # code
        ({"params": QueryParams("sct:38341003", GROUP_SEX, 0, 0)}, "health.query_parameters"),  # grouped
        ({"params": QueryParams("sct:38341003", GROUP_NONE, 1, 5)}, "health.query_parameters"),  # ranged
        (
            {"template": HISTOGRAM.name, "params": QueryParams("sct:38341003", GROUP_NONE, 0, 0)},
            "health.query_parameters",
        ),
        (
            {"template": HISTOGRAM.name, "params": QueryParams("sct:38341003", "year", 0, 0)},
            "health.query_parameters",
        ),
        (
            {"template": IN_RANGE.name, "params": QueryParams("loinc:8867-4", GROUP_NONE, 20_000, 100_000)},
            "health.query_parameters",
        ),
        (
            {"template": IN_RANGE.name, "params": QueryParams("loinc:8867-4", GROUP_NONE, 40_000, 230_000)},
            "health.query_parameters",
        ),
        (
            {"template": IN_RANGE.name, "params": QueryParams("loinc:8867-4", GROUP_NONE, 90_000, 80_000)},
            "health.query_parameters",
        ),
        ({"epsilon_micro": 200_001}, "health.query_parameters"),
        ({"delta_pico": 1}, "health.query_parameters"),
        ({"institutions": ()}, "health.query_institutions"),
        (
            {"institutions": tuple(sorted((key("clinic"), key("hospital")), reverse=True))},
            "health.query_institutions",
        ),
        ({"institutions": (key("clinic"), key("clinic"))}, "health.query_institutions"),
        ({"institutions": (key("insurer"),)}, "health.query_institutions"),
        ({"institutions": (key("research"),)}, "health.query_institutions"),
        ({"institutions": (key("nobody"),)}, "health.query_institutions"),
    ],
)
def test_invalid_query_shapes(world: World, changes: dict[str, Any], rule: str) -> None:
    before = world.study()
    world.rejected("research", KIND_SUBMIT_QUERY, count_query(world.study_id, **changes), rule)
    assert world.study() == before


def test_invalid_query_data_version(world: World) -> None:
    # A data version older than the study, or a block not yet committed.
    world.rejected(
        "research",
        KIND_SUBMIT_QUERY,
        count_query(world.study_id, as_of_height=STUDY_HEIGHT - 1),
        "health.query_as_of",
    )
    future = world.ledger.height + 5
    world.rejected(
        "research", KIND_SUBMIT_QUERY, count_query(world.study_id, as_of_height=future), "health.query_as_of"
    )
    world.query(as_of_height=world.ledger.height)


def test_invalid_query_after_expiry(world: World) -> None:
    world.ledger.advance(31 * DAY_MS)
    world.rejected("research", KIND_SUBMIT_QUERY, count_query(world.study_id), "health.study_expired")
    assert world.study().epsilon_remaining_micro == EPSILON_TOTAL_MICRO


def test_queries_of_histogram_range_and_mean_templates(world: World) -> None:
    world.query(template=HISTOGRAM.name, params=QueryParams("sct:38341003", GROUP_AGE_BAND, 0, 0))
    world.query(template=IN_RANGE.name, params=QueryParams("loinc:8867-4", GROUP_NONE, 30_000, 220_000))
    world.query(
        template=MEAN.name,
        params=QueryParams("loinc:8867-4", GROUP_NONE, 50_000, 120_000),
        epsilon_micro=50_000,
    )
    assert world.study().epsilon_remaining_micro == EPSILON_TOTAL_MICRO - 2 * (100_000 + 100_000 + 50_000)


# --- answers ------------------------------------------------------------------------------------


def test_each_asked_institution_answers_once(world: World) -> None:
    query_id = world.query()
    world.ok("clinic", KIND_POST_ANSWER, total_answer(query_id))
    world.ok("hospital", KIND_POST_ANSWER, total_answer(query_id, 0, 10_000))
    query = st.get_query(world.ledger.state, query_id)
    assert query is not None
    assert query.answer_count == 2
    answers = research.list_answers(world.ledger.state, query)
    assert [a.institution for a in answers] == list(query.institutions)
    assert {a.cells[0].value_milli for a in answers} == {42_000, 0}


def test_invalid_answer_twice_or_replayed(world: World) -> None:
    query_id = world.query()
    signed = world.tx("clinic", KIND_POST_ANSWER, total_answer(query_id))
    world.ledger.submit_ok(signed)
    world.ledger.submit_rejected(signed, "health.answer_exists")
    world.rejected("clinic", KIND_POST_ANSWER, total_answer(query_id, 7_000), "health.answer_exists")


@pytest.mark.parametrize(
    ("signer", "rule"),
    [
        ("insurer", "health.not_query_institution"),
        ("research", "health.not_query_institution"),
        ("patient", "health.not_institution"),
    ],
)
def test_invalid_answer_by_one_not_asked(world: World, signer: str, rule: str) -> None:
    query_id = world.query(institutions=(key("clinic"),))
    world.rejected(signer, KIND_POST_ANSWER, total_answer(query_id), rule)
    world.rejected("hospital", KIND_POST_ANSWER, total_answer(query_id), "health.not_query_institution")


def test_invalid_answer_to_no_query(world: World) -> None:
    world.rejected("clinic", KIND_POST_ANSWER, total_answer(bytes(32)), "health.query_unknown")


def test_invalid_answer_cells(world: World) -> None:
    query_id = world.query()
    hist_id = world.query(template=HISTOGRAM.name, params=QueryParams("sct:38341003", GROUP_SEX, 0, 0))
    age_id = world.query(template=HISTOGRAM.name, params=QueryParams("sct:38341003", GROUP_AGE_BAND, 0, 0))
    mean_id = world.query(
        template=MEAN.name,
        params=QueryParams("loinc:8867-4", GROUP_NONE, 50_000, 120_000),
        epsilon_micro=50_000,
        delta_pico=100,
    )

    def cells(*items: tuple[str, str, int]) -> tuple[AnswerCell, ...]:
        return tuple(AnswerCell(*item) for item in items)

    bad = [
        (query_id, cells()),  # no cell
        (query_id, cells(("female", CELL_NOISED, 1))),  # a histogram label on a count
        (query_id, cells((CELL_TOTAL, CELL_SUPPRESSED, 5))),  # a suppressed cell with a value
        (hist_id, cells((CELL_TOTAL, CELL_NOISED, 5))),  # a count label on a histogram by sex
        (hist_id, cells(("male", CELL_NOISED, 5), ("female", CELL_NOISED, 5))),  # not sorted
        (hist_id, cells(("female", CELL_NOISED, 5), ("female", CELL_NOISED, 5))),  # twice
        (hist_id, cells(("40-49", CELL_NOISED, 5))),  # an age band on a histogram by sex
        (hist_id, cells(("female", CELL_NOISED, 12_000), ("male", CELL_NOISED, 13_000))),  # cells missing
        (age_id, cells(*((band, CELL_NOISED, 5_000) for band in sorted(AGE_BANDS - {"90+"})))),  # no 90+
        (mean_id, cells((CELL_TOTAL, CELL_NOISED, 130_000))),  # a mean outside the asked range
    ]
    for target, answer_cells in bad:
        world.rejected(
            "clinic", KIND_POST_ANSWER, PostAnswerBody(target, answer_cells, 10_000), "health.answer_cells"
        )
    # Every sex has its cell, those under k suppressed.
    by_sex = cells(
        ("female", CELL_NOISED, 12_000),
        ("male", CELL_NOISED, 14_000),
        ("other", CELL_SUPPRESSED, 0),
        ("unknown", CELL_SUPPRESSED, 0),
    )
    world.ok("clinic", KIND_POST_ANSWER, PostAnswerBody(hist_id, by_sex, 10_000))
    by_age = cells(*((band, CELL_SUPPRESSED, 0) for band in sorted(AGE_BANDS)))
    world.ok("clinic", KIND_POST_ANSWER, PostAnswerBody(age_id, by_age, 10_000))
    world.ok(
        "clinic", KIND_POST_ANSWER, PostAnswerBody(mean_id, cells((CELL_TOTAL, CELL_NOISED, 80_500)), 700)
    )


def test_invalid_answer_with_too_little_noise_for_its_epsilon(world: World) -> None:
    query_id = world.query()  # ε = 0.1 a count: Laplace scale at least 10 (10,000 thousandths)
    world.rejected(
        "clinic", KIND_POST_ANSWER, total_answer(query_id, scale_milli=9_999), "health.answer_noise"
    )
    world.ok("clinic", KIND_POST_ANSWER, total_answer(query_id, scale_milli=10_000))


def test_an_answer_is_accepted_after_the_study_expires(world: World) -> None:
    # The budget was spent when the query was charged; refusing a late answer would gain nothing.
    query_id = world.query()
    world.ledger.advance(31 * DAY_MS)
    world.ok("clinic", KIND_POST_ANSWER, total_answer(query_id))


# --- events: kinds and ids only -----------------------------------------------------------------


def test_events_carry_kinds_and_ids_and_reach_the_parties(world: World) -> None:
    world.join("patient")
    query_id = world.query()
    world.ok("clinic", KIND_POST_ANSWER, total_answer(query_id))
    world.leave("patient")
    research_kinds = {
        events.EVENT_STUDY_REGISTERED,
        events.EVENT_STUDY_JOINED,
        events.EVENT_STUDY_LEFT,
        events.EVENT_QUERY_SUBMITTED,
        events.EVENT_ANSWER_POSTED,
    }
    found = [e for e in world.ledger.list_events() if e.kind in research_kinds]
    assert [e.kind for e in found] == [
        events.EVENT_STUDY_REGISTERED,
        events.EVENT_STUDY_JOINED,
        events.EVENT_QUERY_SUBMITTED,
        events.EVENT_ANSWER_POSTED,
        events.EVENT_STUDY_LEFT,
    ]
    registered, joined, submitted, posted, left = found
    assert registered.is_for_institution(key("research"))
    assert registered.patient_id is None
    assert joined.is_for_patient(pid("patient"))
    assert not joined.institutions
    assert left.is_for_patient(pid("patient"))
    assert set(submitted.institutions) == {key("research"), key("clinic"), key("hospital")}
    assert set(posted.institutions) == {key("research"), key("clinic")}
    assert dict(submitted.ids) == {"study_id": world.study_id, "query_id": query_id}
    for event in found:
        payload = event.to_payload()
        assert set(payload) <= {
            "seq",
            "kind",
            "height",
            "tx_index",
            "event_index",
            "tx_id",
            "time_ms",
            "study_id",
            "query_id",
        }
        assert pid("patient").hex() not in str(payload)


# --- the budget, whatever the order of txs ------------------------------------------------------

_ANSWERERS = ["clinic", "hospital", "insurer"]
_ACTIONS = stg.lists(
    stg.one_of(
        stg.tuples(
            stg.just("query"),
            stg.sampled_from([1, 50_000, 100_000, 150_000, 200_000, 250_000]),
            stg.sampled_from([0, 500, 1_000]),
            stg.integers(1, 3),
            stg.sampled_from(["research", "research-2", "clinic"]),
        ),
        stg.tuples(stg.just("join"), stg.sampled_from(["patient", "patient-2"])),
        stg.tuples(stg.just("leave"), stg.sampled_from(["patient", "patient-2"])),
        stg.tuples(stg.just("repeat")),
        stg.tuples(stg.just("answer"), stg.integers(0, 20), stg.sampled_from(_ANSWERERS)),
        stg.tuples(stg.just("wait"), stg.sampled_from([BLOCK_INTERVAL_MS, DAY_MS, 10 * DAY_MS])),
    ),
    max_size=14,
)
_ASKED = (key("clinic"), key("hospital"))


def replay_on_another_node(ledger: Ledger) -> Ledger:
    """Another node: the same genesis and the same committed blocks, its own app and store."""
    other = Ledger(ROLES)
    for block in ledger.blocks:
        header = Header(
            chain_id=CHAIN_ID,
            height=block.height,
            round=0,
            parent_hash=ZERO_HASH,
            time_ms=block.time_ms,
            proposer=other.proposer,
            tx_count=len(block.raws),
            tx_root=compute_tx_root(block.raws),
            state_root=other.state_root,
            validators_hash=other.validators.hash(),
            next_validators_hash=other.validators.hash(),
        )
        txs = tuple(tx for tx, _, _ in block.txs)
        execution = other.app.apply_block(Block(header, block.raws), txs, other.state, other.state_root)
        for state_key, value in execution.writes.items():
            if value is None:
                other.state.data.pop(state_key, None)
            else:
                other.state.data[state_key] = value
        other.state_root = execution.state_root
    return other


@given(actions=_ACTIONS)
def test_the_remaining_budget_is_the_total_less_every_charged_query(actions: list[tuple[Any, ...]]) -> None:
    world = make_world()
    ledger = world.ledger
    charged: list[bytes] = []
    answered: set[tuple[bytes, str]] = set()
    last: SubmitQueryBody | None = None
    for action in actions:
        if action[0] == "query":
            _, epsilon, delta, count, signer = action
            template = MEAN if delta else COUNT
            params = (
                QueryParams("loinc:8867-4", GROUP_NONE, 40_000 + len(charged), 200_000)
                if delta
                else QueryParams("sct:38341003", GROUP_NONE, 0, 0)
            )
            body = count_query(
                world.study_id,
                template=template.name,
                params=params,
                institutions=tuple(sorted(_ASKED[: min(count, 2)])),
                epsilon_micro=epsilon,
                delta_pico=delta,
                as_of_height=ledger.height,
            )
            outcome = ledger.submit(world.tx(signer, KIND_SUBMIT_QUERY, body))
            if outcome.ok:
                charged.append(outcome.tx_id)
                last = body
            else:
                assert outcome.rule in {
                    "health.budget_exhausted",
                    "health.not_study_institute",
                    "health.query_parameters",
                    "health.query_repeated",
                    "health.study_expired",
                }, outcome.rule
        elif action[0] == "repeat" and last is not None:
            outcome = ledger.submit(world.tx("research", KIND_SUBMIT_QUERY, last))
            assert not outcome.ok
            assert outcome.rule == "health.query_repeated"
        elif action[0] in ("join", "leave"):
            kind = KIND_JOIN_STUDY if action[0] == "join" else KIND_LEAVE_STUDY
            ledger.submit(world.tx(action[1], kind, StudyMembershipBody(world.study_id, pid(action[1]))))
        elif action[0] == "answer" and charged:
            _, index, institution = action
            query = st.get_query(ledger.state, charged[index % len(charged)])
            assert query is not None
            # A large enough scale for any ε; a mean's value within its range.
            cell = AnswerCell(CELL_TOTAL, CELL_NOISED, query.params.value_low_milli)
            answer = PostAnswerBody(query.query_id, (cell,), 10**9)
            is_first = (query.query_id, institution) not in answered
            expected = key(institution) in query.institutions and is_first
            outcome = ledger.submit(world.tx(institution, KIND_POST_ANSWER, answer))
            assert outcome.ok == expected, outcome.rule
            if outcome.ok:
                answered.add((query.query_id, institution))
        elif action[0] == "wait":
            ledger.advance(action[1])
        study = world.study()
        queries = [st.get_query(ledger.state, query_id) for query_id in charged]
        assert all(q is not None for q in queries)
        spent_epsilon = sum(q.epsilon_charged_micro for q in queries if q is not None)
        spent_delta = sum(q.delta_charged_pico for q in queries if q is not None)
        assert 0 <= study.epsilon_remaining_micro == EPSILON_TOTAL_MICRO - spent_epsilon
        assert 0 <= study.delta_remaining_pico == DELTA_TOTAL_PICO - spent_delta
        assert study.query_count == len(charged)
        for q in queries:
            assert q is not None
            assert q.answer_count == sum(1 for query_id, _ in answered if query_id == q.query_id)
        assert st.list_query_ids(ledger.state, world.study_id) == charged
        members = [st.get_membership(ledger.state, world.study_id, pid(p)) for p in ("patient", "patient-2")]
        assert study.member_count == sum(1 for m in members if m is not None and m.is_member)
    # Every node charges the same: another node replaying the blocks reaches the same state.
    other = replay_on_another_node(ledger)
    assert other.state_root == ledger.state_root
    assert other.state.data == ledger.state.data


# --- no identifier can reach a query or an answer -----------------------------------------------


def test_invalid_answer_smuggling_an_identifier_in_a_label(world: World) -> None:
    query_id = world.query()
    for label in (pid("patient").hex()[:8], "Smith", "1970-01-01"):
        body = PostAnswerBody(query_id, (AnswerCell(label, CELL_NOISED, 12_000),), 10_000)
        world.rejected("clinic", KIND_POST_ANSWER, body, "health.body")


#: The only ids a research query or answer may hold: ledger objects that are not persons.
_OBJECT_IDS = frozenset({"study_id", "query_id", "digest", "answer_id"})
#: The only keys: institutions (never a patient's key).
_INSTITUTION_KEYS = frozenset({"institutions", "institution"})
#: Free (vocabulary-less) text fields: a template's name and a clinical code, both from the study.
_FREE_TEXT = frozenset({"template", "name", "code"})


def _walk(cls: type[Any], path: str = "") -> list[tuple[str, Any]]:
    fields: list[tuple[str, Any]] = []
    for name, spec in cls.WIRE_FIELDS.items():
        item = spec.item if isinstance(spec, Seq) else spec
        if isinstance(item, Struct):
            fields.extend(_walk(item.cls, f"{path}{name}."))
        else:
            fields.append((f"{path}{name}", item))
    return fields


@pytest.mark.parametrize("cls", [SubmitQueryBody, PostAnswerBody, QueryState, AnswerState])
def test_queries_and_answers_have_no_field_that_could_carry_a_person(cls: type[Any]) -> None:
    for path, spec in _walk(cls):
        name = path.rsplit(".", 1)[-1]
        if isinstance(spec, Bytes):
            assert name in _OBJECT_IDS | _INSTITUTION_KEYS, path
        elif isinstance(spec, Text):
            assert spec.allowed is not None or name in _FREE_TEXT, path
        else:
            assert isinstance(spec, UInt), path
