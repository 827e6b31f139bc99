"""Research on the ledger: studies, opt-ins, queries and answers (issue 13, ADR 0019).

The ledger's half of federated research (DESIGN.md §11); the local computation at institutions
comes later. Four things, each a tx kind in `types.TX_KINDS` (rules in `health.research`):

- **Studies** (`health.register_study`): a research institute's study: title, the ethics approval
  it cites, the query templates it may run with their parameters' bounds, its total privacy budget
  (ε, δ), the small-cell threshold k its answers suppress below, and an expiry. Its remaining budget
  is part of its state, public to the network.
- **Opt-ins** (`health.join_study`, `health.leave_study`): the patient (or a representative) joins
  or leaves a study. The membership (pseudonymous patient id, study id, heights) is in the clear:
  the answering institutions must know whom a query may cover (ADR 0019 says why that is
  acceptable and what it reveals). Leaving stops use from that block on.
- **Queries** (`health.submit_query`): the study's institute names a template, its parameters, the
  institutions asked, the ε (and δ) each answer spends and the data version (`as_of_height`). The
  rules charge ε × institutions asked (δ likewise) to the study, deterministically, on every node,
  and refuse a query past the remaining budget; a query identical to one already asked (same
  digest) is refused without charge: its answers are on the ledger already.
- **Answers** (`health.post_answer`): each asked institution's noised, suppressed aggregate, once
  per (query, institution): labelled cells of numbers from closed vocabularies, never an id.

Privacy numbers are fixed point so that every node computes the same charge: ε in millionths
(`*_micro`), δ in 10^-12 (`*_pico`), values in thousandths of their unit (`*_milli`).
"""

from __future__ import annotations

import dataclasses
import re
from typing import ClassVar, Final

from medledger.chain.codec import FieldSpec, HumanText, Seq, Struct, Text, UInt, wire_fields
from medledger.health.types import (
    HASH,
    KEY,
    KIND_JOIN_STUDY,
    KIND_LEAVE_STUDY,
    KIND_POST_ANSWER,
    KIND_REGISTER_STUDY,
    KIND_SUBMIT_QUERY,
    RESEARCH_K_MAX,
)

# --- template kinds and groupings ---------------------------------------------------------------

#: Patients with a condition code (one cell, "total").
TEMPLATE_COUNT: Final = "count"
#: Patients with an observation code whose value lies in [value_low, value_high] (one cell).
TEMPLATE_COUNT_IN_RANGE: Final = "count_in_range"
#: Patients with a code, counted per age band, sex or year (one cell per group).
TEMPLATE_HISTOGRAM: Final = "histogram"
#: Mean of an observation's values clamped to [value_low, value_high] (one cell).
TEMPLATE_MEAN: Final = "mean"
TEMPLATE_KINDS: Final = frozenset(
    {TEMPLATE_COUNT, TEMPLATE_COUNT_IN_RANGE, TEMPLATE_HISTOGRAM, TEMPLATE_MEAN}
)
#: Kinds whose parameters carry a value range (bounded by the template's).
RANGED_TEMPLATE_KINDS: Final = frozenset({TEMPLATE_COUNT_IN_RANGE, TEMPLATE_MEAN})
#: Kinds whose answer is a count of patients (sensitivity 1 per cell under adding or removing one).
COUNT_TEMPLATE_KINDS: Final = frozenset({TEMPLATE_COUNT, TEMPLATE_COUNT_IN_RANGE, TEMPLATE_HISTOGRAM})

GROUP_NONE: Final = "none"
GROUP_AGE_BAND: Final = "age_band"
GROUP_SEX: Final = "sex"
GROUP_YEAR: Final = "year"
GROUPINGS: Final = frozenset({GROUP_AGE_BAND, GROUP_SEX, GROUP_YEAR})

#: HIPAA Safe Harbor: ages in ten-year bands, everyone 90 or older in one group.
AGE_BANDS: Final = frozenset({f"{low}-{low + 9}" for low in range(0, 90, 10)} | {"90+"})
#: FHIR AdministrativeGender.
SEXES: Final = frozenset({"female", "male", "other", "unknown"})
#: Safe Harbor keeps dates to the year; a histogram by year spans these.
YEAR_FIRST: Final = 1900
YEAR_LAST: Final = 2100
YEARS: Final = frozenset(str(year) for year in range(YEAR_FIRST, YEAR_LAST + 1))
#: The one cell of an answer that is not a histogram.
CELL_TOTAL: Final = "total"
#: The cell labels each grouping allows: closed vocabularies, so no answer can carry an id or text.
CELL_LABELS_BY_GROUPING: Final[dict[str, frozenset[str]]] = {
    GROUP_NONE: frozenset({CELL_TOTAL}),
    GROUP_AGE_BAND: AGE_BANDS,
    GROUP_SEX: SEXES,
    GROUP_YEAR: YEARS,
}
CELL_LABELS: Final = frozenset().union(*CELL_LABELS_BY_GROUPING.values())

CELL_NOISED: Final = "noised"
#: A cell below the study's k (or complementarily suppressed): its value is 0 and means nothing.
CELL_SUPPRESSED: Final = "suppressed"
CELL_STATUSES: Final = frozenset({CELL_NOISED, CELL_SUPPRESSED})

# --- limits -------------------------------------------------------------------------------------

STUDY_TITLE_LENGTH_MAX: Final = 120
STUDY_TITLE_BYTES_MAX: Final = 4 * STUDY_TITLE_LENGTH_MAX
#: An ethics approval's reference (e.g. "IRB-2026-0113"), printable ASCII.
ETHICS_REF_LENGTH_MAX: Final = 64
TEMPLATE_NAME_LENGTH_MAX: Final = 32
#: A clinical code as "<system>:<code>" (e.g. "sct:38341003", "loinc:8867-4").
CODE_LENGTH_MAX: Final = 64
STUDY_TEMPLATES_MAX: Final = 16
TEMPLATE_CODES_MAX: Final = 64
#: Largest value bound or answer value, in thousandths (10^9 units).
VALUE_MILLI_MAX: Final = 10**12
#: Largest total ε a study may declare (ε = 20: beyond it DP protects little), in millionths.
EPSILON_TOTAL_MICRO_MAX: Final = 20_000_000
#: Largest total δ a study may declare (10^-6), in 10^-12.
DELTA_TOTAL_PICO_MAX: Final = 1_000_000
#: Longest a study may run: five years.
STUDY_TTL_MS_MAX: Final = 5 * 366 * 24 * 3600 * 1000
#: Institutions one query may ask.
QUERY_INSTITUTIONS_MAX: Final = 64
#: Cells one answer may carry: a histogram by year has one for every year of the span.
ANSWER_CELLS_MAX: Final = len(YEARS)
#: Queries one study may run (each is charged; the budget ends them sooner in practice).
STUDY_QUERIES_MAX: Final = 100_000

#: Prefixes the digest of a query's body (what makes two queries "the same query").
QUERY_DIGEST_DOMAIN: Final = b"medledger/health/research-query/v1\x00"

#: The code systems a template may name, by their prefix, and the shape of a code in each: a
#: template's codes are public vocabulary, never free text (so never a person's id either).
CODE_PATTERNS: Final[dict[str, re.Pattern[str]]] = {
    "sct": re.compile(r"[1-9][0-9]{5,17}"),  # SNOMED CT concept id
    "loinc": re.compile(r"[1-9][0-9]{0,6}-[0-9]"),  # LOINC code with its check digit
    "icd10": re.compile(r"[A-Z][0-9]{2}(\.[0-9A-Z]{1,4})?"),  # ICD-10(-CM) code
}


def is_clinical_code(code: str) -> bool:
    """Whether `code` is "<system>:<code>" in one of `CODE_PATTERNS`' systems and shapes."""
    system, sep, value = code.partition(":")
    pattern = CODE_PATTERNS.get(system)
    return bool(sep) and pattern is not None and pattern.fullmatch(value) is not None


CODE = Text(max_length=CODE_LENGTH_MAX)
TEMPLATE_NAME = Text(max_length=TEMPLATE_NAME_LENGTH_MAX)
VALUE_MILLI = UInt(VALUE_MILLI_MAX)

# --- bodies -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class QueryTemplate:
    """A query a study may run: its kind, the codes it may name, the groupings a histogram may use,
    the range its values may be asked in, and the most ε (and δ) one answer to it may spend.

    Lists sorted and unique. A count or histogram has no value range (both bounds 0); a ranged kind
    has `value_min_milli < value_max_milli`; only a histogram has groupings (at least one).
    """

    name: str
    kind: str
    codes: tuple[str, ...]
    groupings: tuple[str, ...]
    value_min_milli: int
    value_max_milli: int
    epsilon_max_micro: int
    delta_max_pico: int

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        name=TEMPLATE_NAME,
        kind=Text(allowed=TEMPLATE_KINDS),
        codes=Seq(CODE, TEMPLATE_CODES_MAX),
        groupings=Seq(Text(allowed=GROUPINGS), len(GROUPINGS)),
        value_min_milli=VALUE_MILLI,
        value_max_milli=VALUE_MILLI,
        epsilon_max_micro=UInt(EPSILON_TOTAL_MICRO_MAX, 1),
        delta_max_pico=UInt(DELTA_TOTAL_PICO_MAX),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class RegisterStudyBody:
    """A research institute's study (the sender is the institute; the tx id is the study id).

    Templates sorted by name and unique. `k_min` is the smallest cell an answer may release
    un-suppressed: at least the network's (`RESEARCH_K_MIN_DEFAULT` unless its genesis sets one).
    """

    title: str
    ethics_ref: str
    templates: tuple[QueryTemplate, ...]
    epsilon_total_micro: int
    delta_total_pico: int
    k_min: int
    expires_ms: int

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        title=HumanText(max_length=STUDY_TITLE_LENGTH_MAX, max_bytes=STUDY_TITLE_BYTES_MAX),
        ethics_ref=Text(max_length=ETHICS_REF_LENGTH_MAX),
        templates=Seq(Struct(QueryTemplate), STUDY_TEMPLATES_MAX),
        epsilon_total_micro=UInt(EPSILON_TOTAL_MICRO_MAX, 1),
        delta_total_pico=UInt(DELTA_TOTAL_PICO_MAX),
        k_min=UInt(RESEARCH_K_MAX, 1),
        expires_ms=UInt(),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class StudyMembershipBody:
    """Join or leave a study (`health.join_study` / `health.leave_study`), by the patient or a
    current representative."""

    study_id: bytes
    patient_id: bytes

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(study_id=HASH, patient_id=HASH)


@dataclasses.dataclass(frozen=True, slots=True)
class QueryParams:
    """A template's parameters: the code, the grouping (`none` unless a histogram), and the value
    range (both 0 unless a ranged kind; then within the template's range, low ≤ high)."""

    code: str
    grouping: str
    value_low_milli: int
    value_high_milli: int

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        code=CODE,
        grouping=Text(allowed=GROUPINGS | {GROUP_NONE}),
        value_low_milli=VALUE_MILLI,
        value_high_milli=VALUE_MILLI,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class SubmitQueryBody:
    """The study's institute asks `institutions` (sorted, unique) one templated question over the
    ledger as of block `as_of_height` (the data version); each answer spends `epsilon_micro` (and
    `delta_pico`), so the study is charged that many times the number of institutions asked."""

    study_id: bytes
    template: str
    params: QueryParams
    institutions: tuple[bytes, ...]
    epsilon_micro: int
    delta_pico: int
    as_of_height: int

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        study_id=HASH,
        template=TEMPLATE_NAME,
        params=Struct(QueryParams),
        institutions=Seq(KEY, QUERY_INSTITUTIONS_MAX),
        epsilon_micro=UInt(EPSILON_TOTAL_MICRO_MAX, 1),
        delta_pico=UInt(DELTA_TOTAL_PICO_MAX),
        as_of_height=UInt(),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class AnswerCell:
    """One cell of an answer: a label from the query's grouping's vocabulary, noised or suppressed
    (then its value is 0). Values are clamped at 0 (post-processing: it costs no privacy)."""

    label: str
    status: str
    value_milli: int

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        label=Text(max_length=8, allowed=CELL_LABELS),
        status=Text(allowed=CELL_STATUSES),
        value_milli=VALUE_MILLI,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class PostAnswerBody:
    """An asked institution's answer to a query: its cells sorted by label and unique, and the
    scale of the noise it added (Laplace b or Gaussian σ, in the values' unit) so that a combined
    result can state its error."""

    query_id: bytes
    cells: tuple[AnswerCell, ...]
    noise_scale_milli: int

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        query_id=HASH,
        cells=Seq(Struct(AnswerCell), ANSWER_CELLS_MAX),
        noise_scale_milli=UInt(VALUE_MILLI_MAX, 1),
    )


RESEARCH_BODY_TYPES: Final[dict[str, type]] = {
    KIND_REGISTER_STUDY: RegisterStudyBody,
    KIND_JOIN_STUDY: StudyMembershipBody,
    KIND_LEAVE_STUDY: StudyMembershipBody,
    KIND_SUBMIT_QUERY: SubmitQueryBody,
    KIND_POST_ANSWER: PostAnswerBody,
}

# --- stored values ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class StudyState:
    """A study as stored (`h1/study/<study id>`): what it registered, and its public accounts.

    `epsilon_remaining_micro` / `delta_remaining_pico` are the totals less every charged query;
    `member_count` the patients who are members now; `query_count` the queries charged.
    """

    study_id: bytes
    institute: bytes
    title: str
    ethics_ref: str
    templates: tuple[QueryTemplate, ...]
    epsilon_total_micro: int
    delta_total_pico: int
    epsilon_remaining_micro: int
    delta_remaining_pico: int
    k_min: int
    expires_ms: int
    member_count: int
    query_count: int
    height: int
    time_ms: int

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        study_id=HASH,
        institute=KEY,
        title=HumanText(max_length=STUDY_TITLE_LENGTH_MAX, max_bytes=STUDY_TITLE_BYTES_MAX),
        ethics_ref=Text(max_length=ETHICS_REF_LENGTH_MAX),
        templates=Seq(Struct(QueryTemplate), STUDY_TEMPLATES_MAX),
        epsilon_total_micro=UInt(EPSILON_TOTAL_MICRO_MAX, 1),
        delta_total_pico=UInt(DELTA_TOTAL_PICO_MAX),
        epsilon_remaining_micro=UInt(EPSILON_TOTAL_MICRO_MAX),
        delta_remaining_pico=UInt(DELTA_TOTAL_PICO_MAX),
        k_min=UInt(RESEARCH_K_MAX, 1),
        expires_ms=UInt(),
        member_count=UInt(),
        query_count=UInt(STUDY_QUERIES_MAX),
        height=UInt(),
        time_ms=UInt(),
    )

    def get_template(self, name: str) -> QueryTemplate | None:
        return next((t for t in self.templates if t.name == name), None)


@dataclasses.dataclass(frozen=True, slots=True)
class StudyMembership:
    """A patient's membership of a study (`h1/smem/<study id><patient id>`): member from
    `joined_height` while `left_height` is 0. Rejoining starts a new membership at its block."""

    study_id: bytes
    patient_id: bytes
    joined_height: int
    left_height: int

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        study_id=HASH, patient_id=HASH, joined_height=UInt(), left_height=UInt()
    )

    @property
    def is_member(self) -> bool:
        return self.left_height == 0


@dataclasses.dataclass(frozen=True, slots=True)
class QueryState:
    """A charged query (`h1/squery/<query id>`): its body's fields, its digest, its charge and how
    many of the asked institutions have answered."""

    query_id: bytes
    study_id: bytes
    digest: bytes
    template: str
    params: QueryParams
    institutions: tuple[bytes, ...]
    epsilon_micro: int
    delta_pico: int
    as_of_height: int
    epsilon_charged_micro: int
    delta_charged_pico: int
    answer_count: int
    height: int
    time_ms: int

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        query_id=HASH,
        study_id=HASH,
        digest=HASH,
        template=TEMPLATE_NAME,
        params=Struct(QueryParams),
        institutions=Seq(KEY, QUERY_INSTITUTIONS_MAX),
        epsilon_micro=UInt(EPSILON_TOTAL_MICRO_MAX, 1),
        delta_pico=UInt(DELTA_TOTAL_PICO_MAX),
        as_of_height=UInt(),
        epsilon_charged_micro=UInt(EPSILON_TOTAL_MICRO_MAX, 1),
        delta_charged_pico=UInt(DELTA_TOTAL_PICO_MAX),
        answer_count=UInt(QUERY_INSTITUTIONS_MAX),
        height=UInt(),
        time_ms=UInt(),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class AnswerState:
    """An institution's answer to a query (`h1/sanswer/<query id><institution key>`)."""

    query_id: bytes
    institution: bytes
    answer_id: bytes
    cells: tuple[AnswerCell, ...]
    noise_scale_milli: int
    height: int
    time_ms: int

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        query_id=HASH,
        institution=KEY,
        answer_id=HASH,
        cells=Seq(Struct(AnswerCell), ANSWER_CELLS_MAX),
        noise_scale_milli=UInt(VALUE_MILLI_MAX, 1),
        height=UInt(),
        time_ms=UInt(),
    )
