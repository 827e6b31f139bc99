"""The patient's CLI pins the network's genesis and refuses to talk to any other (issue 9, defect 2)."""

from __future__ import annotations

import os
from pathlib import Path

from click.testing import CliRunner, Result
from health_harness import PATIENT_ENV, HealthNet, make_patient_key, patient_cli

from medledger.health.sdk import get_genesis_pin_path, load_genesis_pin, save_genesis_pin
from medledger.health.types import compute_patient_id
from medledger.node.cli import main


def run(key: Path, url: str, *args: str, genesis: str | None = None) -> Result:
    pin = ["--genesis", genesis] if genesis is not None else []
    return CliRunner().invoke(
        main, ["patient", "--key", str(key), "--url", url, *pin, *args], env=dict(PATIENT_ENV)
    )


def test_trust_2_first_register_pins_the_genesis_and_a_contradicting_pin_is_refused(
    shared_net: HealthNet, tmp_path: Path
) -> None:
    url = shared_net["clinic"].url
    key = tmp_path / "patient.key"
    identity = make_patient_key(key)
    # Without a pin, nothing but `register` (first use) talks to a node.
    refused = run(key, url, "records")
    assert refused.exit_code != 0
    assert "no pinned genesis" in refused.output
    out = patient_cli(key, url, "register")
    pinned = load_genesis_pin(key)
    assert pinned is not None
    assert f"pinned genesis {pinned.hex()}" in out
    served = shared_net["clinic"].get("/v1/proofs/genesis").json()["hash"]
    assert pinned.hex() == served
    other = os.urandom(32).hex()
    contradicting = run(key, url, "records", genesis=other)
    assert contradicting.exit_code != 0
    assert "refusing to talk to another network" in contradicting.output
    assert run(key, url, "records", genesis=pinned.hex()).exit_code == 0
    assert identity.public.sign_key  # the key is still the patient's


def test_trust_2_a_node_of_another_network_is_named_and_nothing_is_signed(
    shared_net: HealthNet, tmp_path: Path
) -> None:
    url = shared_net["clinic"].url
    key = tmp_path / "patient.key"
    identity = make_patient_key(key)
    save_genesis_pin(key, os.urandom(32))  # the patient's real network is another one
    result = run(key, url, "register")
    assert result.exit_code != 0
    assert f"the node at {url} serves another network's genesis" in result.output
    patient_id = compute_patient_id(identity.public.sign_key).hex()
    assert shared_net["clinic"].get(f"/v1/health/patients/{patient_id}").status == 404


def test_keys_records_a_genesis_given_out_of_band(shared_net: HealthNet, tmp_path: Path) -> None:
    served = shared_net["clinic"].get("/v1/proofs/genesis").json()["hash"]
    key = tmp_path / "new.key"
    result = run(key, shared_net["clinic"].url, "keys", genesis=served)
    assert result.exit_code == 0, result.output
    assert load_genesis_pin(key) == bytes.fromhex(served)
    assert get_genesis_pin_path(key).stat().st_mode & 0o777 == 0o600
    assert "patient id:  " in result.output
    out = patient_cli(key, shared_net["clinic"].url, "register")
    assert "pinned genesis" not in out  # already pinned: nothing new recorded
