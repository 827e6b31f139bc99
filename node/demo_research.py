"""The demo's research story (issue 13), one function for `medledger demo` to call after its own.

`run_research_story(clients, roles, patient, echo)`: the research institute registers a study
(a histogram of a diagnosis by age band, an ε budget) through its REST API; a few hundred
synthetic patients, each with their own keys made here, register and opt in (their txs signed
with their keys and sent as batches to the public `/v1/txs/batch`), and so does the demo patient
through the patient SDK; the clinic and the hospital add their records (synthetic FHIR) through
their APIs; the institute asks the histogram; both institutions' nodes answer on their own
(`node.research_answers`: computed over the records they hold, generalised, small cells
suppressed, noised by OpenDP); the demo prints the combined result with its noise and the
suppressed cells marked, the study's remaining budget, and what the demo patient sees. Nothing
printed names a patient: the result carries no identifier (ADR 0019).

The ages are chosen so that suppression shows: the bands 0-9 and 10-19 are empty and 90+ holds
fewer than k patients at each institution, so they are suppressed, and since their total would
then be below k, the smallest shown band goes with them (complementary suppression).
"""

from __future__ import annotations

import base64
import datetime
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from medledger.crypto import Identity
from medledger.errors import MedledgerError
from medledger.health import client, research_client
from medledger.health.research_results import format_result_lines
from medledger.health.sdk import PatientClient
from medledger.health.types import compute_patient_id
from medledger.node.demo_claims import InstitutionApi

#: The synthetic cohort: how many patients of each age band the clinic holds records of (the
#: hospital holds every other one of them). 0-9 and 10-19 are empty; 90+ is below k.
COHORT: Final[dict[int, int]] = {25: 30, 35: 40, 45: 50, 55: 60, 65: 55, 75: 40, 85: 19, 93: 6}
DIABETES: Final = "sct:44054006"
STUDY_DAYS: Final = 30
EPSILON_TOTAL: Final = 3.0
EPSILON_QUERY: Final = 1.0
#: Transactions per `/v1/txs/batch` request.
BATCH: Final = 200
RESULT_TIMEOUT_S: Final = 120.0
POLL_S: Final = 0.25
_MICRO: Final = 1_000_000


class ResearchDemoError(MedledgerError):
    """The research story could not run to its end (a node refused or did not answer in time)."""

    code = "demo_research"


def _born(age_years: int, today: datetime.date) -> str:
    return (today - datetime.timedelta(days=round((age_years + 0.5) * 365.25))).isoformat()


def _bundle(birth: str, gender: str) -> dict[str, Any]:
    """A synthetic patient's record: who (birth date, sex) and a type 2 diabetes diagnosis."""
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"resource": {"resourceType": "Patient", "gender": gender, "birthDate": birth}},
            {
                "resource": {
                    "resourceType": "Condition",
                    "code": {
                        "coding": [{"system": "http://snomed.info/sct", "code": DIABETES.split(":")[1]}]
                    },
                    "subject": {"reference": "Patient/synthetic"},
                    "onsetDateTime": "2021-03-15",
                }
            },
        ],
    }


def _submit_batches(node: InstitutionApi, raws: list[bytes]) -> None:
    """Send signed txs in batches, each waiting for its commit (a node refuses a whole batch with
    an error if one tx in it is invalid)."""
    for start in range(0, len(raws), BATCH):
        chunk = raws[start : start + BATCH]
        reply = node.call(
            "POST", "/v1/txs/batch?wait_ms=30000", {"txs": [base64.b64encode(raw).decode() for raw in chunk]}
        )
        pending = [r for r in reply["results"] if r["status"] != "committed"]
        if pending:
            raise ResearchDemoError(
                f"{len(pending)} of the cohort's txs did not commit at {node.name} in 30 s"
            )


def _wait(what: str, check: Callable[[], bool], timeout_s: float = RESULT_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise ResearchDemoError(f"timed out waiting for {what}")
        time.sleep(POLL_S)  # polling the nodes for a condition, with a deadline


def run_research_story(
    clients: Mapping[str, InstitutionApi],
    roles: Mapping[str, str],
    patient: PatientClient,
    echo: Callable[[str], None],
) -> dict[str, Any]:
    """Run the story; returns the combined result as the institute's API served it."""
    started = time.monotonic()
    institute = next(clients[n] for n, r in roles.items() if r == "research")
    clinic = next(clients[n] for n, r in roles.items() if r == "clinic")
    hospital = next(clients[n] for n, r in roles.items() if r == "hospital")
    template = {
        "name": "diabetes-by-age",
        "kind": "histogram",
        "codes": [DIABETES],
        "groupings": ["age_band"],
        "value_min_milli": 0,
        "value_max_milli": 0,
        "epsilon_max_micro": int(EPSILON_QUERY * _MICRO),
    }
    expires_ms = int(time.time() * 1000) + STUDY_DAYS * 24 * 3600 * 1000
    registered = institute.call(
        "POST",
        "/v1/health/institution/studies?wait_ms=30000",
        {
            "title": "Type 2 diabetes by age: a federated cohort",
            "ethics_ref": "IRB-DEMO-2026-013",
            "templates": [template],
            "epsilon_total_micro": int(EPSILON_TOTAL * _MICRO),
            "expires_ms": expires_ms,
        },
    )
    study_id = registered["study_id"]
    echo(
        f"1. {institute.name} registered study {study_id[:16]}… (ethics approval IRB-DEMO-2026-013, "
        f"budget ε = {EPSILON_TOTAL:g}, histogram of a diagnosis by age band)"
    )

    today = datetime.datetime.now(datetime.UTC).date()
    cohort = [
        (Identity.generate(), age, "female" if i % 2 else "male")
        for age, count in COHORT.items()
        for i in range(count)
    ]
    chain_id = patient.chain_id
    _submit_batches(clinic, [client.build_register_patient(p, chain_id=chain_id)[1] for p, _, _ in cohort])
    study = bytes.fromhex(study_id)
    joins = [
        research_client.build_join_study(p, study, compute_patient_id(p.public.sign_key), chain_id=chain_id)[
            1
        ]
        for p, _, _ in cohort
    ]
    _submit_batches(hospital, joins)
    joined = patient.join_study(study)
    echo(
        f"2. {len(cohort)} synthetic patients registered and opted in with their own keys, and the demo "
        f"patient joined from their device (height {joined.height})"
    )

    at_hospital = 0
    for index, (person, age, sex) in enumerate(cohort):
        patient_id = compute_patient_id(person.public.sign_key).hex()
        resource = _bundle(_born(age, today), sex)
        holders = [clinic] + ([hospital] if index % 2 == 0 else [])
        for holder in holders:
            last = index >= len(cohort) - 2
            holder.call(
                "POST",
                f"/v1/health/institution/records?wait_ms={30_000 if last else 0}",
                {"patient_id": patient_id, "resource": resource},
            )
        at_hospital += len(holders) - 1
    echo(
        f"3. {clinic.name} added {len(cohort)} of their records, {hospital.name} {at_hospital} "
        "(encrypted; only noised aggregates will leave these nodes)"
    )

    path = f"/v1/health/institution/studies/{study_id}"
    _wait("the opt-ins to commit", lambda: institute.call("GET", path)["member_count"] == len(cohort) + 1)
    asked = institute.call(
        "POST",
        f"{path}/queries?wait_ms=30000",
        {
            "template": "diabetes-by-age",
            "code": DIABETES,
            "grouping": "age_band",
            "epsilon_micro": int(EPSILON_QUERY * _MICRO),
        },
    )
    query_id = asked["query_id"]
    echo(
        f"4. {institute.name} asked the histogram (query {query_id[:16]}…, ε = {EPSILON_QUERY:g} per answer)"
    )
    result_path = f"/v1/health/institution/queries/{query_id}"
    _wait("both institutions' answers", lambda: not institute.call("GET", result_path)["pending"])
    result: dict[str, Any] = institute.call("GET", result_path)
    echo(f"5. {clinic.name} and {hospital.name} answered on their own; the combined result:")
    for line in format_result_lines(result):
        echo("     " + line)
    remaining = institute.call("GET", path)["epsilon_remaining_micro"] / _MICRO
    echo(
        f"   the study's remaining budget, on the ledger for every node: ε = {remaining:g} of "
        f"{EPSILON_TOTAL:g} (each answering institution is charged)"
    )
    covering = patient.list_queries_covering()
    echo(
        f"6. the demo patient sees the study they joined and {len(covering)} query their data could "
        f"have entered (checked against the chain); took {time.monotonic() - started:.1f} s"
    )
    return result


__all__ = ["COHORT", "ResearchDemoError", "run_research_story"]
