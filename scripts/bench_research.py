#!/usr/bin/env python3
"""Benchmark the local computation of research answers (issue 13): a count and a histogram.

Machine: whatever runs it (printed: CPU count, platform).

Setup, in this process and in memory (no node, no consensus: what is measured is an institution's
computation): one study with a count and a histogram template, `--records` (default 100,000)
synthetic patients who all joined it, and for each one Bundle record (a Patient with a birth date
and sex, a Condition with a SNOMED CT code and an onset) authored by one clinic and encrypted for
the patient and the clinic exactly as `health.records.encrypt_record` does (the FHIR validation is
skipped in the setup: the records are made in code and known valid). The state is the ledger's key
layout in a dict (`health.state`'s own writers).

Measured: `research_compute.compute_answer_from_ledger` for a count (ε = 1) and for a histogram
by age band (ε = 1), each from the query to the noised answer: every member's records listed,
opened with the clinic's key, parsed, generalised, counted, suppressed, noised by OpenDP. Both run
cold (no cached facts: `count_s`, `histogram_s`; `query_s` is the slower), then the histogram again
with the facts the count cached, as a node's answerer keeps them between queries (`warm_s`). It
reports and never asserts; target (issue 13): under 5 s per query. The last line printed is one
JSON object: {"bench": "research", "records": …, "query_s": …, …}.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import secrets
import sys
import time

from medledger.crypto import Identity
from medledger.health import research_compute
from medledger.health import state as st
from medledger.health.fhir import ValidatedRecord, compute_canonical_json
from medledger.health.records import encrypt_record
from medledger.health.research_types import (
    GROUP_AGE_BAND,
    GROUP_NONE,
    TEMPLATE_COUNT,
    TEMPLATE_HISTOGRAM,
    QueryParams,
    QueryState,
    QueryTemplate,
    StudyMembership,
    StudyState,
)
from medledger.health.types import RecordState, compute_patient_id

CODE = "sct:44054006"
COUNT = QueryTemplate("count", TEMPLATE_COUNT, (CODE,), (), 0, 0, 1_000_000, 0)
HISTOGRAM = QueryTemplate("hist", TEMPLATE_HISTOGRAM, (CODE,), (GROUP_AGE_BAND,), 0, 0, 1_000_000, 0)
NOW_MS = 1_790_000_000_000


class DictState:
    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def put(self, key: bytes, value: bytes | None) -> None:
        if value is None:
            self.data.pop(key, None)
        else:
            self.data[key] = value


def make_bundle(index: int) -> ValidatedRecord:
    birth = datetime.date(1930 + index % 90, 1 + index % 12, 1 + index % 28)
    resource = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "resource": {
                    "resourceType": "Patient",
                    "gender": ("female", "male")[index % 2],
                    "birthDate": birth.isoformat(),
                }
            },
            {
                "resource": {
                    "resourceType": "Condition",
                    "code": {
                        "coding": [
                            {
                                "system": "http://snomed.info/sct",
                                "code": "44054006" if index % 3 else "38341003",
                            }
                        ]
                    },
                    "subject": {"reference": "Patient/synthetic"},
                    "onsetDateTime": f"{2000 + index % 25}-03-01",
                }
            },
        ],
    }
    return ValidatedRecord("Bundle", resource, compute_canonical_json(resource))


def build_state(records: int, clinic: Identity, study_id: bytes) -> tuple[DictState, list[bytes]]:
    state = DictState()
    record_ids: list[bytes] = []
    study = StudyState(
        study_id,
        secrets.token_bytes(32),
        "Bench",
        "IRB-BENCH",
        (COUNT, HISTOGRAM),
        20_000_000,
        0,
        20_000_000,
        0,
        11,
        NOW_MS + 10**9,
        records,
        0,
        1,
        NOW_MS,
    )
    st.save_study(state, study)
    for index in range(records):
        patient = Identity.from_secrets(secrets.token_bytes(32), secrets.token_bytes(32))
        patient_id = compute_patient_id(patient.public.sign_key)
        st.save_membership(state, StudyMembership(study_id, patient_id, 1, 0))
        encrypted = encrypt_record(
            make_bundle(index),
            patient_id=patient_id,
            author=clinic.public.sign_key,
            readers=[patient.public.enc_key, clinic.public.enc_key],
        )
        record_ids.append(secrets.token_bytes(32))
        st.save_record(
            state,
            RecordState(
                record_ids[-1],
                patient_id,
                clinic.public.sign_key,
                encrypted.record_type,
                encrypted.commitment,
                encrypted.envelope,
                b"",
                b"",
                1,
                NOW_MS,
            ),
        )
    return state, record_ids


def make_query(study_id: bytes, template: QueryTemplate, grouping: str, clinic: Identity) -> QueryState:
    return QueryState(
        secrets.token_bytes(32),
        study_id,
        secrets.token_bytes(32),
        template.name,
        QueryParams(CODE, grouping, 0, 0),
        (clinic.public.sign_key,),
        1_000_000,
        0,
        1,
        1_000_000,
        0,
        0,
        2,
        NOW_MS,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--records", type=int, default=100_000, help="Patients (one record each) at the clinic."
    )
    args = parser.parse_args()
    clinic = Identity.generate()
    study_id = secrets.token_bytes(32)
    started = time.perf_counter()
    state, record_ids = build_state(args.records, clinic, study_id)
    setup_s = time.perf_counter() - started
    print(f"machine: {os.cpu_count()} CPUs, {platform.platform()}; setup {setup_s:.1f} s", file=sys.stderr)
    timings: dict[str, float] = {}
    # What the clinic's node does as its records commit (`FactsCache.warm`, in the answerer's
    # thread): each own record opened once and its facts kept.
    cache = research_compute.FactsCache(max(500_000, args.records))
    started = time.perf_counter()
    warmed = cache.warm(state, clinic, record_ids)
    timings["warm"] = time.perf_counter() - started
    print(
        f"facts filled at commit: {warmed} records in {timings['warm']:.2f} s "
        f"({warmed / timings['warm']:,.0f} records/s)",
        file=sys.stderr,
    )
    runs = (
        ("count", COUNT, GROUP_NONE, cache),
        ("histogram", HISTOGRAM, GROUP_AGE_BAND, cache),
        ("cold_count", COUNT, GROUP_NONE, None),
    )
    for name, template, grouping, facts in runs:
        query = make_query(study_id, template, grouping, clinic)
        started = time.perf_counter()
        answer = research_compute.compute_answer_from_ledger(state, clinic, query, facts)
        timings[name] = time.perf_counter() - started
        shown = sum(1 for cell in answer.cells if cell.status == "noised")
        print(f"{name}: {timings[name]:.2f} s, {shown} of {len(answer.cells)} cells shown", file=sys.stderr)
    print(
        json.dumps(
            {
                "bench": "research",
                "records": args.records,
                "query_s": round(max(timings["count"], timings["histogram"]), 3),
                "count_s": round(timings["count"], 3),
                "histogram_s": round(timings["histogram"], 3),
                "fill_at_commit_s": round(timings["warm"], 3),
                "cold_count_s": round(timings["cold_count"], 3),
            }
        )
    )


if __name__ == "__main__":
    main()
