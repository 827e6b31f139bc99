"""Issue 16 point 1 against real node processes: an institution joins a running network by the
validators' vote, works, and is removed (ADR 0020).

A 4-validator health network runs. A fifth institution makes its home with `medledger join`, its
node starts and is refused as a member; a validator proposes it (`medledger governance
propose-institution`), the node syncs, a second approval is not enough (2 of 4), the third passes
it and the node acts for its clinic: it writes a record for a patient, the patient grants it to
the hospital, the hospital reads it. Then three validators remove it: its API refuses writes (403
not_member) and the validators refuse its link (it no longer follows the chain).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from health_harness import (
    DEADLINE_S,
    NODE_ENV,
    PASSPHRASE,
    POLL_S,
    HealthNet,
    Institution,
    assert_problem,
    make_patient_key,
    observation,
    request,
    start_health_net,
)

from medledger.health.sdk import PatientClient
from medledger.node.cli import main
from medledger.node.config import load_config
from medledger.node.process import NodeProcess
from medledger.node.testnet import find_free_ports, load_api_token

ROLES = {"clinic": "clinic", "hospital": "hospital", "insurer": "insurer", "lab": "clinic"}
ME = "/v1/health/institution"


def cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), env=dict(NODE_ENV))
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result.output


def cli_fails(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), env=dict(NODE_ENV))
    assert result.exit_code == 1, (args, result.output)
    return result.output


def wait_until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(POLL_S)  # polling a condition with a deadline


def status(i: Institution) -> dict[str, Any]:
    reply = request(i.url, "GET", "/status", headers=i.auth)
    assert reply.status == 200, reply
    data: dict[str, Any] = reply.json()
    return data


def changes(home: Path) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads(cli("governance", "list", "--home", str(home), "--json"))[
        "changes"
    ]
    return data


def test_a_fifth_institution_joins_works_and_is_removed(tmp_path: Path) -> None:
    with start_health_net(tmp_path / "net", ROLES) as net:
        run_story(net, tmp_path)


def run_story(net: HealthNet, tmp_path: Path) -> None:
    clinic, hospital, insurer, lab = (net[n] for n in ROLES)
    peers = [f"http://127.0.0.1:{load_config(i.home).p2p.port}" for i in (clinic, hospital, insurer, lab)]
    api_port, p2p_port, ops_port = find_free_ports(3)
    passphrase_file = tmp_path / "fifth.passphrase"
    passphrase_file.write_text(PASSPHRASE + "\n", encoding="utf-8")
    home = tmp_path / "fifth"
    # Clear errors: no peer, an unknown role.
    genesis = str(clinic.home / "genesis.json")
    assert "--peer" in cli_fails(
        "join", "--genesis", genesis, "--name", "Fifth", "--role", "clinic", "--home", str(home)
    )
    out = cli(
        "join", "--genesis", genesis, "--name", "Fifth Street Clinic", "--role", "clinic",
        "--home", str(home),
        *(a for p in peers for a in ("--peer", p)),
        "--api-port", str(api_port), "--p2p-port", str(p2p_port), "--ops-port", str(ops_port),
        "--block-interval-ms", "50", "--passphrase-file", str(passphrase_file),
    )  # fmt: skip
    request_file = home / "join-request.json"
    assert str(request_file) in out
    join_request = json.loads(request_file.read_text(encoding="utf-8"))
    fifth_key = join_request["institution"]["sign_key"]
    assert join_request["institution"]["role"] == "clinic"

    process = NodeProcess(home, env=dict(NODE_ENV), use_config_ports=True)
    process.start()
    try:
        url = process.wait_ready(60.0, require_ready=False)
        fifth = Institution("fifth", url, load_api_token(home), home)
        # Not proposed yet: no institution, and no validator takes its link.
        assert assert_problem(fifth.get(ME), 403)["type"].endswith("not_institution")

        out = cli("governance", "propose-institution", str(request_file), "--home", str(clinic.home))
        assert "approvals: 1 of 3 needed" in out
        (change,) = changes(clinic.home)
        assert change["status"] == "pending"
        # Proposed: it links and syncs from genesis, but is not yet a member.
        proposed = change["proposed_height"]
        wait_until(lambda: status(fifth)["height"] >= proposed, "the fifth node did not sync")
        problem = assert_problem(fifth.get(ME), 403)
        assert problem["type"].endswith("not_member"), problem
        assert "not yet a member" in problem["detail"]
        # A second approval of four is not enough; the same validator twice is refused.
        assert "membership_duplicate" in cli_fails(
            "governance", "approve", change["change_id"][:12], "--home", str(clinic.home)
        )
        assert "approvals: 2 of 3 needed" in cli(
            "governance", "approve", change["change_id"][:12], "--home", str(hospital.home)
        )
        assert changes(clinic.home)[0]["status"] == "pending"
        assert fifth.get(ME).status == 403
        out = cli("governance", "approve", change["change_id"][:12], "--home", str(insurer.home))
        assert "passed in block" in out
        wait_until(lambda: fifth.get(ME).status == 200, "the fifth node did not start acting as a member")
        assert fifth.get(ME).json()["name"] == "Fifth Street Clinic"
        listing = cli("governance", "list", "--home", str(lab.home))
        assert "Fifth Street Clinic" in listing
        assert "passed in block" in listing

        # It works: writes a record; the patient grants it to the hospital, which reads it.
        patient = PatientClient(clinic.url, make_patient_key(tmp_path / "patient.key"))
        patient.register()
        wait_until(lambda: status(fifth)["height"] >= status(clinic)["height"], "the fifth node lags")
        record_id = fifth.add_record(patient.patient_id.hex(), observation(6.1))
        net.sync()
        inquiry_id = hospital.inquire(patient.patient_id.hex(), "TREAT", ["Observation"])
        net.sync()
        patient.grant(bytes.fromhex(inquiry_id))
        net.sync()
        answer = hospital.read(record_id)
        assert answer.status == 200, answer
        assert answer.json()["resource"]["valueQuantity"]["value"] == 6.1
        assert any(r.record.record_id.hex() == record_id for r in patient.read_records())

        # Removed by three of four: its API refuses writes, its link is refused.
        for validator in (lab, clinic, hospital):
            out = cli("governance", "remove", fifth_key, "--home", str(validator.home))
        assert "passed in block" in out
        removed_at = status(clinic)["height"]
        wait_until(
            lambda: all(status(v)["peers"] == 3 for v in (clinic, hospital, insurer, lab)), "link kept"
        )
        reply = fifth.post(
            f"{ME}/records", {"patient_id": patient.patient_id.hex(), "resource": observation(7)}
        )
        problem = assert_problem(reply, 403)
        assert problem["type"].endswith("not_member"), problem
        assert "removed" in problem["detail"]
        # The network goes on without it: blocks it never receives (it dials, and is refused).
        patient_b = PatientClient(hospital.url, make_patient_key(tmp_path / "patient-b.key"))
        patient_b.register()
        net.sync()
        assert status(clinic)["height"] > removed_at
        assert status(fifth)["peers"] == 0
        assert status(fifth)["height"] <= removed_at
        assert "removed" in cli("governance", "list", "--home", str(clinic.home))
    finally:
        process.stop()
