"""The local computation of a research answer at one institution (issue 13, ADR 0019).

What an asked institution does with a query, in four steps, each a plain function:

1. **Collect** (`collect_patient_facts`): for every patient who is a member of the query's study at
   the query's block (`research.is_member_at`), the records *this institution authored* for them
   that were on the ledger at the query's data version (`as_of_height`; a record superseded by
   then counts in its newer version only) are opened with the institution's own key. Records it
   reads under a patient's grant are not used: a grant names a purpose (treatment, claims) and is
   not a consent to research, and reading one would write a read receipt. From each resource only
   the facts a template can use are kept (`PatientFacts`): birth date and administrative sex from
   a Patient resource (a record of its own, or an entry of a Bundle), and the codes, years and
   numeric values of Conditions and Observations. Nothing else of a record is looked at.
2. **Count** (`compute_cell_counts`): the template's aggregate per cell, exactly, generalised as
   HIPAA Safe Harbor requires: ages in ten-year bands with everyone 90 or older in "90+" (age at
   the query's block time), dates to the year. Each patient is in at most one cell (a histogram by
   year counts them in the year of their first finding), so adding or removing one patient moves
   one cell by one: the sensitivity the noise is calibrated to.
3. **Suppress** (`apply_suppression`): on the exact counts, before any noise or rounding, every
   cell below k (zero included: whether a cell is shown never says "none here") is suppressed;
   then, complementarily, while the suppressed cells' total is between 1 and k - 1 (a total
   learnt elsewhere, less the shown cells, would reveal it), the smallest shown cell is suppressed
   too. Which cells are suppressed is a function of exact counts, as Safe Harbor's cell-size rule
   is; it is outside the DP guarantee, which covers the values (ADR 0019 amendment).
4. **Noise** (`noise_answer`): OpenDP's integer samplers, never seeded (ADR 0019): the discrete
   Laplace mechanism with scale 1/ε on the count vector when the query spends no δ, the discrete
   Gaussian calibrated by OpenDP to (ε, δ) otherwise. A mean spends half its budget on a noised
   count and half on a noised sum of values clamped to the asked range (in thousandths), and
   releases their clamped ratio. Suppressed cells carry 0; values are clamped at 0 (post-processing).

Steps 1 to 3 are deterministic: the same ledger and key give the same counts and the same
suppressed cells. Only step 4 draws randomness, which is why a node saves its answer before it
posts it and re-posts those bytes after a crash (`node.research_answers`).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
from collections.abc import Iterable, Iterator, Mapping
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any, Final, Protocol

from medledger.chain.app import StateReader
from medledger.crypto import CryptoError, Identity
from medledger.health import research
from medledger.health import state as st
from medledger.health.errors import HealthError
from medledger.health.records import open_record
from medledger.health.research_types import (
    CELL_LABELS_BY_GROUPING,
    CELL_NOISED,
    CELL_SUPPRESSED,
    CELL_TOTAL,
    GROUP_AGE_BAND,
    GROUP_NONE,
    GROUP_SEX,
    GROUP_YEAR,
    SEXES,
    TEMPLATE_COUNT,
    TEMPLATE_COUNT_IN_RANGE,
    TEMPLATE_HISTOGRAM,
    TEMPLATE_MEAN,
    VALUE_MILLI_MAX,
    YEAR_FIRST,
    YEAR_LAST,
    AnswerCell,
    PostAnswerBody,
    QueryState,
    QueryTemplate,
)
from medledger.health.types import RecordState

#: FHIR coding systems → the code prefixes of `research_types.CODE_PATTERNS`.
CODE_SYSTEMS: Final[dict[str, str]] = {
    "http://snomed.info/sct": "sct",
    "http://loinc.org": "loinc",
    "http://hl7.org/fhir/sid/icd-10": "icd10",
    "http://hl7.org/fhir/sid/icd-10-cm": "icd10",
}
#: Observations in these statuses, and Conditions whose verification is one of these, never count.
OBSERVATION_STATUSES_VOID: Final = frozenset({"entered-in-error", "cancelled"})
CONDITION_VERIFICATION_VOID: Final = frozenset({"entered-in-error", "refuted"})
#: Safe Harbor: every age from this on is one group.
AGE_TOP: Final = 90
AGE_BAND_WIDTH: Final = 10
#: Records read per page while collecting a patient's records.
_PAGE: Final = 100
_MILLI: Final = 1000
_MICRO: Final = 1_000_000
_PICO: Final = 10**12


class ResearchComputeError(HealthError):
    """A query this institution cannot compute (e.g. its study or template is missing)."""

    code = "research_compute"


@dataclasses.dataclass(frozen=True, slots=True)
class Finding:
    """A coded Condition or Observation: its code ("sct:…"), the year of its clinical date (0 if
    none), its numeric value in thousandths (None if none) and its date as an ordinal for "latest"
    (0 if none). Local to the computation: it never leaves the node."""

    code: str
    year: int
    value_milli: int | None
    date_ordinal: int


@dataclasses.dataclass(frozen=True, slots=True)
class PatientFacts:
    """What the computation may use of one patient's records at this institution."""

    birth_date: datetime.date | None
    sex: str
    findings: tuple[Finding, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class CellCount:
    """One cell's exact aggregate (local only): patients counted, the sum of their clamped values
    (a mean's; 0 otherwise) and whether it is suppressed."""

    label: str
    count: int
    value_sum_milli: int = 0
    suppressed: bool = False


# --- 1. facts from records ----------------------------------------------------------------------


def parse_fhir_date(value: object) -> datetime.date | None:
    """A FHIR date or dateTime ("2024", "2024-03", "2024-03-05", "2024-03-05T08:30:00Z") as a
    date; missing month or day count as the first (only the year is ever released)."""
    if not isinstance(value, str) or len(value) < 4:
        return None
    parts = value[:10].split("-")
    try:
        numbers = [int(p) for p in parts[:3]]
        return datetime.date(numbers[0], *[*numbers[1:], 1, 1][:2])
    except ValueError:
        return None


def parse_value_milli(value: object) -> int | None:
    """A FHIR decimal as thousandths (half to even), within the ledger's range; None otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        milli = int((Decimal(str(value)) * _MILLI).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
    except (InvalidOperation, ValueError):
        return None
    return milli if 0 <= milli <= VALUE_MILLI_MAX else None


def _codes_of(concept: object) -> list[str]:
    if not isinstance(concept, Mapping):
        return []
    codes = []
    for coding in concept.get("coding") or ():
        if isinstance(coding, Mapping):
            prefix = CODE_SYSTEMS.get(str(coding.get("system", "")))
            code = coding.get("code")
            if prefix is not None and isinstance(code, str):
                codes.append(f"{prefix}:{code}")
    return codes


def _iter_resources(resource: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """The resource itself, or a Bundle's entries (one level: records are validated that way)."""
    if resource.get("resourceType") != "Bundle":
        yield resource
        return
    for entry in resource.get("entry") or ():
        inner = entry.get("resource") if isinstance(entry, Mapping) else None
        if isinstance(inner, Mapping):
            yield inner


def _finding(codes: list[str], date: datetime.date | None, value: int | None) -> list[Finding]:
    year = date.year if date is not None and YEAR_FIRST <= date.year <= YEAR_LAST else 0
    ordinal = date.toordinal() if date is not None else 0
    return [Finding(code, year, value, ordinal) for code in codes]


#: A record's facts name no sex (it holds no Patient resource with one).
SEX_NONE: Final = ""
NO_FACTS: Final = PatientFacts(None, SEX_NONE, ())


def extract_record_facts(record: Mapping[str, Any]) -> PatientFacts:
    """The facts of one record's resource (sex `SEX_NONE` if it names none)."""
    birth: datetime.date | None = None
    sex = SEX_NONE
    findings: list[Finding] = []
    for resource in _iter_resources(record):
        kind = resource.get("resourceType")
        if kind == "Patient":
            birth = parse_fhir_date(resource.get("birthDate")) or birth
            gender = resource.get("gender")
            if isinstance(gender, str) and gender in SEXES:
                sex = gender
        elif kind == "Condition":
            if set(_status_codes(resource.get("verificationStatus"))) & CONDITION_VERIFICATION_VOID:
                continue
            date = parse_fhir_date(resource.get("onsetDateTime") or resource.get("recordedDate"))
            findings += _finding(_codes_of(resource.get("code")), date, None)
        elif kind == "Observation":
            if resource.get("status") in OBSERVATION_STATUSES_VOID:
                continue
            date = parse_fhir_date(resource.get("effectiveDateTime") or resource.get("issued"))
            quantity = resource.get("valueQuantity")
            value = parse_value_milli(quantity.get("value")) if isinstance(quantity, Mapping) else None
            findings += _finding(_codes_of(resource.get("code")), date, value)
    return PatientFacts(birth, sex, tuple(findings))


def merge_facts(parts: Iterable[PatientFacts]) -> PatientFacts:
    """One patient's facts from their records' (in record order: the last birth date and sex
    seen win, as a correction supersedes; no sex anywhere is "unknown")."""
    birth: datetime.date | None = None
    sex = SEX_NONE
    findings: list[Finding] = []
    for part in parts:
        birth = part.birth_date or birth
        sex = part.sex or sex
        findings += part.findings
    return PatientFacts(birth, sex or "unknown", tuple(findings))


def extract_facts(resources: Iterable[Mapping[str, Any]]) -> PatientFacts:
    """The facts of one patient from the resources of their current records."""
    return merge_facts(extract_record_facts(r) for r in resources)


def _status_codes(concept: object) -> list[str]:
    if not isinstance(concept, Mapping):
        return []
    return [str(c.get("code")) for c in concept.get("coding") or () if isinstance(c, Mapping)]


def is_record_current_at(state: StateReader, record: RecordState, height: int) -> bool:
    """Whether a record was on the ledger at `height` and not yet superseded there."""
    if record.height > height:
        return False
    if not record.superseded_by:
        return True
    newer = st.get_record(state, record.superseded_by)
    return newer is None or newer.height > height


@dataclasses.dataclass(frozen=True, slots=True)
class OwnRecord:
    """One record this institution authored for a patient, as the collection needs it: its id, the
    height it was added at, and the height of its newer version (None while it is current)."""

    record_id: bytes
    height: int
    superseded_height: int | None

    def is_current_at(self, height: int) -> bool:
        return self.height <= height and (self.superseded_height is None or self.superseded_height > height)


class FactsCache:
    """What an institution's node keeps between queries, in its own memory only (never the ledger,
    never a file): each own record's facts by record id, and each patient's own records.

    A record never changes (a correction is a new record), so its facts are cached for good. A
    patient's list of own records is valid while the patient's record count on the ledger is
    unchanged: a record is only ever added to its patient's list, and superseding one always adds
    its correction to the same patient's list (`rules.validate_supersede_record`), so the count
    moves whenever a record or a `superseded_by` link does. The node's answerer fills the facts as
    its own records are committed (`warm`), so that a query opens no record at all. Bounded: past
    `max_records` facts everything is dropped and refilled on demand."""

    def __init__(self, max_records: int = 500_000) -> None:
        self.max_records = max_records
        self.facts: dict[bytes, PatientFacts] = {}
        self._own: dict[bytes, tuple[int, tuple[OwnRecord, ...]]] = {}

    def __len__(self) -> int:
        return len(self.facts)

    def _bound(self) -> None:
        if len(self.facts) > self.max_records:
            self.facts.clear()
            self._own.clear()

    def own_records(self, state: StateReader, me: bytes, patient_id: bytes) -> tuple[OwnRecord, ...]:
        count = st.get_record_count(state, patient_id)
        known = self._own.get(patient_id)
        if known is not None and known[0] == count:
            return known[1]
        own = tuple(_list_own_records(state, me, patient_id))
        self._own[patient_id] = (count, own)
        return own

    def record_facts(self, state: StateReader, identity: Identity, record_id: bytes) -> PatientFacts | None:
        """The facts of one own record (opened once); None when it does not open with this key."""
        part = self.facts.get(record_id)
        if part is not None:
            return part
        record = st.get_record(state, record_id)
        if record is None:
            return None
        part = _open_record_facts(record, identity)
        if part is not None:
            self._bound()
            self.facts[record_id] = part
        return part

    def warm(self, state: StateReader, identity: Identity, record_ids: Iterable[bytes]) -> int:
        """Open and keep the facts of newly committed records this institution authored, and bring
        their patients' lists of own records up to date; returns how many were opened. Records by
        other authors are left alone."""
        me = identity.public.sign_key
        opened = 0
        for record_id in record_ids:
            if record_id in self.facts:
                continue
            record = st.get_record(state, record_id)
            if record is None or record.author != me:
                continue
            part = _open_record_facts(record, identity)
            if part is not None:
                self._bound()
                self.facts[record_id] = part
                opened += 1
            self.own_records(state, me, record.patient_id)  # the patient's list, as of now
        return opened


def _list_own_records(state: StateReader, me: bytes, patient_id: bytes) -> Iterator[OwnRecord]:
    heights: dict[bytes, int] = {}
    records: list[RecordState] = []
    start = 0
    while True:
        page = st.list_records(state, patient_id, start=start, limit=_PAGE)
        for record in page:
            heights[record.record_id] = record.height
            if record.author == me:
                records.append(record)
        if len(page) < _PAGE:
            break
        start += _PAGE
    for record in records:
        newer: int | None = None
        if record.superseded_by:
            # The correction is in the same patient's list; a missing one would be a broken state,
            # read as "current" exactly as `is_record_current_at` does.
            newer = heights.get(record.superseded_by)
        yield OwnRecord(record.record_id, record.height, newer)


def collect_patient_facts(
    state: StateReader,
    identity: Identity,
    query: QueryState,
    cache: FactsCache | None = None,
) -> list[PatientFacts]:
    """The facts of every patient the query may cover, from the records this institution authored
    for them as of the query's data version (module docstring, step 1). A record that does not
    open with the institution's key is left out (it was not written for it).

    `cache` (a `FactsCache`) keeps facts and own-record lists across queries; without one
    everything is read and opened for this query alone."""
    me = identity.public.sign_key
    cache = cache if cache is not None else FactsCache()
    facts: list[PatientFacts] = []
    start = 0
    while True:
        member_ids = st.list_member_ids(state, query.study_id, start=start, limit=_PAGE)
        for patient_id in member_ids:
            if not research.is_member_at(st.get_membership(state, query.study_id, patient_id), query.height):
                continue
            parts = []
            for own in cache.own_records(state, me, patient_id):
                if own.is_current_at(query.as_of_height):
                    part = cache.record_facts(state, identity, own.record_id)
                    if part is not None:  # not readable with this key: never counted
                        parts.append(part)
            if parts:
                facts.append(merge_facts(parts))
        if len(member_ids) < _PAGE:
            return facts
        start += _PAGE


def _open_record_facts(record: RecordState, identity: Identity) -> PatientFacts | None:
    try:
        opened = open_record(record, identity)
    except (CryptoError, HealthError):
        return None
    # `open_record` parsed and checked the JSON strictly already; parsed again plainly here (its
    # `resource` would repeat the strict checks, the larger part of a query's time).
    resource = json.loads(opened.canonical_json)
    return extract_record_facts(resource) if isinstance(resource, dict) else NO_FACTS


# --- 2. exact counts, generalised ---------------------------------------------------------------


def compute_age_band(birth: datetime.date, on: datetime.date) -> str | None:
    """The Safe Harbor age band of someone born on `birth`, on `on` ("90+" from 90 on)."""
    age = on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))
    if age < 0:
        return None
    if age >= AGE_TOP:
        return f"{AGE_TOP}+"
    low = age - age % AGE_BAND_WIDTH
    return f"{low}-{low + AGE_BAND_WIDTH - 1}"


def _matches(finding: Finding, template: QueryTemplate, query: QueryState) -> bool:
    if finding.code != query.params.code:
        return False
    if template.kind == TEMPLATE_COUNT_IN_RANGE:
        value = finding.value_milli
        return value is not None and query.params.value_low_milli <= value <= query.params.value_high_milli
    if template.kind == TEMPLATE_MEAN:
        return finding.value_milli is not None
    return True


def _label_of(facts: PatientFacts, matched: list[Finding], grouping: str, on: datetime.date) -> str | None:
    if grouping == GROUP_NONE:
        return CELL_TOTAL
    if grouping == GROUP_SEX:
        return facts.sex
    if grouping == GROUP_AGE_BAND:
        return compute_age_band(facts.birth_date, on) if facts.birth_date is not None else None
    if grouping == GROUP_YEAR:
        years = [f.year for f in matched if f.year]
        return str(min(years)) if years else None
    raise ResearchComputeError(f"unknown grouping {grouping!r}")


def compute_cell_counts(
    template: QueryTemplate, query: QueryState, patients: Iterable[PatientFacts]
) -> tuple[CellCount, ...]:
    """Exact counts per cell, one cell for every label of the grouping, sorted by label. A patient
    counts once, in one cell; one without the grouping's fact (no birth date for an age band, no
    dated finding for a year) is left out. Ages are on the query's block date."""
    grouping = query.params.grouping
    on = datetime.datetime.fromtimestamp(query.time_ms / 1000, datetime.UTC).date()
    counts: dict[str, int] = dict.fromkeys(CELL_LABELS_BY_GROUPING[grouping], 0)
    sums: dict[str, int] = dict.fromkeys(counts, 0)
    low, high = query.params.value_low_milli, query.params.value_high_milli
    for facts in patients:
        matched = [f for f in facts.findings if _matches(f, template, query)]
        if not matched:
            continue
        label = _label_of(facts, matched, grouping, on)
        if label is None or label not in counts:
            continue
        counts[label] += 1
        if template.kind == TEMPLATE_MEAN:
            # The patient's latest value (by clinical date; the last recorded among equals).
            latest = max(enumerate(matched), key=lambda item: (item[1].date_ordinal, item[0]))[1]
            sums[label] += min(max(latest.value_milli or 0, low), high)
    return tuple(CellCount(label, counts[label], sums[label]) for label in sorted(counts))


# --- 3. suppression -----------------------------------------------------------------------------


def apply_suppression(cells: tuple[CellCount, ...], k: int) -> tuple[CellCount, ...]:
    """Primary suppression of every cell below `k`, then complementary suppression of the smallest
    shown cells (ties by label) until the suppressed cells' exact total is 0 or at least `k`, so no
    total learnt elsewhere gives a small cell away. On exact counts: before any noise or rounding."""
    suppressed = {c.label for c in cells if c.count < k}
    shown = sorted((c for c in cells if c.label not in suppressed), key=lambda c: (c.count, c.label))
    hidden_total = sum(c.count for c in cells if c.label in suppressed)
    while 0 < hidden_total < k and shown:
        smallest = shown.pop(0)
        suppressed.add(smallest.label)
        hidden_total += smallest.count
    return tuple(dataclasses.replace(c, suppressed=c.label in suppressed) for c in cells)


# --- 4. noise -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Mechanism:
    """An OpenDP measurement on integer vectors and the scale it uses (Laplace b or Gaussian σ)."""

    scale: float
    measurement: Any  # opendp.mod.Measurement: the package ships no type hints

    def sample(self, values: list[int]) -> list[int]:
        return [int(v) for v in self.measurement(values)]


def make_mechanism(epsilon: float, delta: float, sensitivity: int) -> Mechanism:
    """The integer mechanism that is (ε, δ)-DP for a vector whose L1 (and L2) sensitivity under
    adding or removing one patient is `sensitivity`: discrete Laplace if δ is 0, else the discrete
    Gaussian. Both are calibrated by OpenDP's privacy maps at sensitivity 1 (for the Gaussian, σ by
    its binary search) and scaled by `sensitivity`: both mechanisms' guarantees scale linearly, and
    a large sensitivity (a mean's sum in thousandths) would overflow the maps' arithmetic."""
    import opendp.prelude as dp  # noqa: PLC0415 - a heavy import, needed only here

    dp.enable_features("contrib")
    atom = dp.vector_domain(dp.atom_domain(T="i64"))
    if delta == 0:
        unit: Any = dp.m.make_laplace(atom, dp.l1_distance(T="i64"), scale=1 / epsilon)
        if unit.map(1) > epsilon * (1 + 1e-9):
            raise ResearchComputeError("the Laplace mechanism would spend more ε than the query")
        scale = sensitivity / epsilon
        return Mechanism(scale, dp.m.make_laplace(atom, dp.l1_distance(T="i64"), scale=scale))

    def gaussian(scale: float) -> Any:
        measurement = dp.m.make_gaussian(atom, dp.l2_distance(T="i64"), scale=scale)
        return dp.c.make_fix_delta(dp.c.make_zCDP_to_approxDP(measurement), delta=delta)

    unit_scale = float(dp.binary_search_param(gaussian, d_in=1, d_out=(epsilon, delta), T=float))
    scale = unit_scale * sensitivity
    return Mechanism(scale, gaussian(scale))


def _scale_milli(scale: float) -> int:
    return min(max(math.ceil(scale * _MILLI), 1), VALUE_MILLI_MAX)


class NoiseSource(Protocol):
    """Where the noise of an answer comes from: `OPENDP` in every node. Tests may pass a seeded
    sampler of the same distribution at the scale OpenDP calibrated (OpenDP takes no seed)."""

    def sample(self, mechanism: Mechanism, values: list[int]) -> list[int]: ...


class _OpenDPNoise:
    def sample(self, mechanism: Mechanism, values: list[int]) -> list[int]:
        return mechanism.sample(values)


#: OpenDP's own samplers (the measurement's), drawing from the operating system's randomness.
OPENDP: Final[NoiseSource] = _OpenDPNoise()


def noise_answer(
    template: QueryTemplate, query: QueryState, cells: tuple[CellCount, ...], noise: NoiseSource = OPENDP
) -> PostAnswerBody:
    """The answer to post: suppressed cells at 0, the others noised (module docstring, step 4)."""
    epsilon, delta = query.epsilon_micro / _MICRO, query.delta_pico / _PICO
    if template.kind == TEMPLATE_MEAN:
        return _noise_mean(query, cells, epsilon, delta, noise)
    if template.kind not in (TEMPLATE_COUNT, TEMPLATE_COUNT_IN_RANGE, TEMPLATE_HISTOGRAM):
        raise ResearchComputeError(f"unknown template kind {template.kind!r}")
    mechanism = make_mechanism(epsilon, delta, 1)
    noised = noise.sample(mechanism, [c.count for c in cells])
    out = tuple(
        AnswerCell(c.label, CELL_SUPPRESSED, 0)
        if c.suppressed
        else AnswerCell(c.label, CELL_NOISED, min(max(value, 0) * _MILLI, VALUE_MILLI_MAX))
        for c, value in zip(cells, noised, strict=True)
    )
    return PostAnswerBody(query.query_id, out, _scale_milli(mechanism.scale))


def _noise_mean(
    query: QueryState, cells: tuple[CellCount, ...], epsilon: float, delta: float, noise: NoiseSource
) -> PostAnswerBody:
    (cell,) = cells
    low, high = query.params.value_low_milli, query.params.value_high_milli
    counter = make_mechanism(epsilon / 2, delta / 2, 1)
    summer = make_mechanism(epsilon / 2, delta / 2, max(high, 1))
    count = max(noise.sample(counter, [cell.count])[0], 1)
    total = noise.sample(summer, [cell.value_sum_milli])[0]
    # The released scale is the sum's over the noised count: post-processing of released values.
    scale = _scale_milli(summer.scale / count)
    if cell.suppressed:
        return PostAnswerBody(query.query_id, (AnswerCell(CELL_TOTAL, CELL_SUPPRESSED, 0),), scale)
    mean = min(max(round(total / count), low), high)
    return PostAnswerBody(query.query_id, (AnswerCell(CELL_TOTAL, CELL_NOISED, mean),), scale)


def compute_answer(
    template: QueryTemplate, query: QueryState, k: int, patients: Iterable[PatientFacts]
) -> PostAnswerBody:
    """Count, suppress, noise: the answer an institution posts for `patients`' facts."""
    return noise_answer(template, query, apply_suppression(compute_cell_counts(template, query, patients), k))


def compute_answer_from_ledger(
    state: StateReader,
    identity: Identity,
    query: QueryState,
    cache: FactsCache | None = None,
) -> PostAnswerBody:
    """The institution's answer to a query on the ledger (k is the study's, at least the network's)."""
    study = st.get_study(state, query.study_id)
    template = study.get_template(query.template) if study is not None else None
    if study is None or template is None:
        raise ResearchComputeError("the query's study or template is missing")
    k = max(study.k_min, st.get_research_k_min(state))
    return compute_answer(template, query, k, collect_patient_facts(state, identity, query, cache))


__all__ = [
    "OPENDP",
    "CellCount",
    "FactsCache",
    "Finding",
    "NoiseSource",
    "OwnRecord",
    "PatientFacts",
    "apply_suppression",
    "collect_patient_facts",
    "compute_age_band",
    "compute_answer",
    "compute_answer_from_ledger",
    "compute_cell_counts",
    "extract_facts",
    "noise_answer",
]
