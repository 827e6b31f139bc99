"""A study end to end across real node processes (issue 13, ADR 0019).

A research institute registers a study with `medledger research`; 24 synthetic patients register
and opt in, one withdraws; a clinic and a hospital hold their records; the institute asks a
histogram by age band; both nodes answer on their own; the combined result and its HTML page mark
the suppressed cells. The clinic's band 60-69 has 11 members until one withdraws: it is suppressed
only because the withdrawal is honoured (10 < k = 11), and the suppressed total (10 + 1 in 70-79)
reaches k, so no complementary suppression hides the band 40-49.
"""

from __future__ import annotations

import base64
import datetime
import json
import time
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from health_harness import (
    DEADLINE_S,
    NODE_ENV,
    POLL_S,
    HealthNet,
    Institution,
    assert_problem,
    make_patient_key,
    patient_cli,
    request,
    start_health_net,
)

from medledger.chain.codec import decode
from medledger.chain.validation import decode_tx
from medledger.crypto import Identity
from medledger.health import client, research_client
from medledger.health.research_types import CELL_LABELS_BY_GROUPING, GROUP_AGE_BAND, PostAnswerBody
from medledger.health.types import KIND_POST_ANSWER, compute_patient_id
from medledger.node.cli import main
from medledger.node.research_answers import ANSWERS_DIR

CODE = "sct:44054006"
CHAIN_ID = "medledger-health-api-test"


def submit(node: Institution, signed: client.SignedTx, wait_ms: int = 0) -> None:
    body = json.dumps({"tx": base64.b64encode(signed[1]).decode()}).encode()
    reply = request(
        node.url,
        "POST",
        f"/v1/txs?wait_ms={wait_ms}",
        body=body,
        headers={"Content-Type": "application/json"},
    )
    assert reply.status in (200, 201, 202), reply


def born(age_years: int) -> str:
    """A birth date about `age_years` and a half ago (ages are banded on the query's block date)."""
    today = datetime.datetime.now(datetime.UTC).date()
    return (today - datetime.timedelta(days=round((age_years + 0.5) * 365.25))).isoformat()


def bundle(birth: str, gender: str) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "resource": {
                    "resourceType": "Patient",
                    "gender": gender,
                    "birthDate": birth,
                    "name": [{"family": "Synthetic"}],
                }
            },
            {
                "resource": {
                    "resourceType": "Condition",
                    "code": {"coding": [{"system": "http://snomed.info/sct", "code": CODE.split(":")[1]}]},
                    "subject": {"reference": "Patient/synthetic-1"},
                    "onsetDateTime": "2019-04-02",
                }
            },
        ],
    }


def research_cli(home: Path, *args: str) -> str:
    result = CliRunner().invoke(main, ["research", "--home", str(home), *args], env=dict(NODE_ENV))
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result.output


def wait_for(predicate: Any, what: str) -> Any:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, what
        time.sleep(POLL_S)  # polling a condition with a deadline


def test_a_study_from_opt_in_to_a_combined_suppressed_histogram(tmp_path: Path) -> None:
    roles = {"clinic": "clinic", "hospital": "hospital", "research": "research"}
    with start_health_net(tmp_path / "net", roles) as net:
        run_story(net, tmp_path)


def run_story(net: HealthNet, tmp_path: Path) -> None:
    clinic, hospital, institute = net["clinic"], net["hospital"], net["research"]
    templates = [
        {
            "name": "by-age",
            "kind": "histogram",
            "codes": [CODE],
            "groupings": ["age_band", "sex"],
            "value_min_milli": 0,
            "value_max_milli": 0,
            "epsilon_max_micro": 1_000_000,
        }
    ]
    templates_file = tmp_path / "templates.json"
    templates_file.write_text(json.dumps(templates), encoding="utf-8")
    out = research_cli(
        institute.home,
        "register",
        "--title",
        "Diabetes by age: a federated cohort",
        "--ethics-ref",
        "IRB-2026-0113",
        "--templates",
        str(templates_file),
        "--epsilon",
        "4",
        "--days",
        "30",
    )
    study_id = out.strip()
    assert len(study_id) == 64

    # The first patient uses `medledger patient` (their key file, their verified light client).
    key = tmp_path / "leaver.key"
    patients = [make_patient_key(key), *(Identity.generate() for _ in range(23))]
    ids = [compute_patient_id(p.public.sign_key) for p in patients]
    patient_cli(key, hospital.url, "register")
    for index, patient in enumerate(patients[1:], 1):
        signed = client.build_register_patient(patient, chain_id=CHAIN_ID)
        submit(clinic, signed, 10_000 if index == len(patients) - 1 else 0)
    net.sync()
    assert "joined study" in patient_cli(key, hospital.url, "join-study", study_id)
    for patient, patient_id in zip(patients[1:], ids[1:], strict=True):
        submit(
            hospital,
            research_client.build_join_study(patient, bytes.fromhex(study_id), patient_id, chain_id=CHAIN_ID),
        )
    # Clinic: 11 in 60-69 (one of them withdraws), 12 in 40-49, 1 in 70-79. Hospital: the 12 in 40-49.
    for index, patient_id in enumerate(ids):
        age = 65 if index < 11 else 45 if index < 23 else 75
        reply = clinic.post(
            "/v1/health/institution/records?wait_ms=0",
            {"patient_id": patient_id.hex(), "resource": bundle(born(age), "female")},
        )
        assert reply.status in (201, 202), reply
        if 11 <= index < 23:
            reply = hospital.post(
                "/v1/health/institution/records?wait_ms=0",
                {"patient_id": patient_id.hex(), "resource": bundle(born(age), "female")},
            )
            assert reply.status in (201, 202), reply
    assert "left study" in patient_cli(key, clinic.url, "leave-study", study_id)
    listed = json.loads(patient_cli(key, clinic.url, "studies", "--json"))
    assert [(s["study_id"], s["member"], s["title"]) for s in listed] == [
        (study_id, False, "Diabetes by age: a federated cohort")
    ]
    wait_for(
        lambda: institute.get(f"/v1/health/institution/studies/{study_id}").json()["member_count"] == 23,
        "the opt-ins and the withdrawal did not commit",
    )
    wait_for(
        lambda: (
            len(clinic.get(f"/v1/health/institution/records?patient_id={ids[23].hex()}").json()["records"])
            == 1
        ),
        "the clinic's records did not commit",
    )
    net.sync()

    query_id = research_cli(
        institute.home,
        "query",
        study_id,
        "--template",
        "by-age",
        "--code",
        CODE,
        "--grouping",
        "age_band",
        "--epsilon",
        "1",
    ).strip()
    text = research_cli(
        institute.home, "result", query_id, "--wait", str(DEADLINE_S), "--html", str(tmp_path / "h.html")
    )
    assert "pending" not in text
    result = institute.get(f"/v1/health/institution/queries/{query_id}").json()
    assert {i["name"] for i in result["answered"]} == {"clinic", "hospital"}
    assert result["pending"] == []
    cells = {c["label"]: c for c in result["cells"]}
    assert set(cells) == CELL_LABELS_BY_GROUPING[GROUP_AGE_BAND]
    assert (cells["40-49"]["status"], cells["40-49"]["noised_at"]) == ("noised", 2)
    # Withdrawal honoured: 10 left in 60-69 at the clinic, below k.
    assert cells["60-69"] == {
        "label": "60-69",
        "status": "suppressed",
        "value": None,
        "noised_at": 0,
        "suppressed_at": 2,
    }
    assert all(c["status"] == "suppressed" for label, c in cells.items() if label != "40-49")
    assert result["mechanism"] == "discrete Laplace"
    assert abs(result["noise_sd"] - 2.0) < 1e-9  # two answers of b = 1: √(2·1² + 2·1²)
    assert "suppressed" in text
    assert "40-49" in text

    page = (tmp_path / "h.html").read_text(encoding="utf-8")
    # What the institute reads names no patient and no birth date.
    served = json.dumps(result) + page + text
    assert not any(patient_id.hex() in served for patient_id in ids)
    assert not any(born(age) in served for age in (45, 65, 75))
    assert "<svg" in page
    assert 'class="noised"' in page
    assert 'class="suppressed"' in page
    assert "Diabetes by age" in page

    # Each answering node saved its answer before posting it: the bytes on disk are its answer.
    for node in (clinic, hospital):
        raw = (node.home / ANSWERS_DIR / f"{query_id}.tx").read_bytes()
        tx, tx_id = decode_tx(raw)
        assert tx.kind == KIND_POST_ANSWER
        assert decode(PostAnswerBody, tx.body, max_bytes=len(tx.body)).query_id.hex() == query_id
        status = request(node.url, "GET", f"/v1/txs/{tx_id.hex()}", headers=node.auth)
        assert status.status == 200, status
        assert status.json()["status"] == "committed"

    # Asking the same again is refused without charge: the answers are on the ledger.
    again = institute.post(
        f"/v1/health/institution/studies/{study_id}/queries",
        {
            "template": "by-age",
            "code": CODE,
            "grouping": "age_band",
            "epsilon_micro": 1_000_000,
            "as_of_height": institute.get(f"/v1/health/institution/studies/{study_id}").json()["queries"][0][
                "as_of_height"
            ],
        },
    )
    assert again.status == 409, again
    study = institute.get(f"/v1/health/institution/studies/{study_id}").json()
    assert study["epsilon_remaining_micro"] == 4_000_000 - 2 * 1_000_000

    # Attacks: each refused with a problem, and nothing changes on the ledger.
    before = institute.get(f"/v1/health/institution/studies/{study_id}").json()
    study_request = {
        "title": "t",
        "ethics_ref": "IRB-1",
        "templates": templates,
        "epsilon_total_micro": 1_000_000,
        "expires_ms": before["expires_ms"],
    }
    assert_problem(clinic.post("/v1/health/institution/studies", study_request), 403)  # not a research role
    free_text = [{**templates[0], "codes": ["Jane Doe 1980-01-02"]}]
    assert_problem(
        institute.post("/v1/health/institution/studies", {**study_request, "templates": free_text}), 422
    )
    queries = f"/v1/health/institution/studies/{study_id}/queries"
    asked = {"template": "by-age", "code": CODE, "grouping": "age_band", "epsilon_micro": 1_000_000}
    assert_problem(institute.post(queries, {**asked, "code": "sct:Jané"}), 422)  # not a ledger code
    assert_problem(institute.post(queries, {**asked, "patient_id": "00" * 32}), 400)  # no such field
    assert_problem(
        institute.post(queries, {**asked, "epsilon_micro": 3_000_000}), 422
    )  # over the template's ε
    assert_problem(clinic.post(queries, asked), 422)  # only the study's institute queries it
    assert_problem(institute.get(f"/v1/health/institution/queries/{'00' * 32}"), 404)
    net.sync()
    assert institute.get(f"/v1/health/institution/studies/{study_id}").json() == before
    assert len(institute.get("/v1/health/institution/studies").json()["studies"]) == 1
