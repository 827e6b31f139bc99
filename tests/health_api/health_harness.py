"""Helpers of the health API tests: a health network of real node processes and HTTP clients.

`start_health_net` creates a testnet whose validators are institutions (genesis `app_state`), starts
one `medledger start` process per institution and stops every one of them on exit, even on failure.
`Institution` is a small stdlib HTTP client of one node's institution API (bearer token);
`patient_cli` runs `medledger patient …` through click's runner against the real nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http.client
import json
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import nacl.pwhash.argon2id
from click.testing import CliRunner

from medledger.crypto import Identity, save_identity
from medledger.node.cli import main
from medledger.node.process import NodeProcess
from medledger.node.testnet import create_testnet

PASSPHRASE: Final = "test-pass"
NODE_ENV: Final = {"MEDLEDGER_KEY_PASSPHRASE": PASSPHRASE}
PATIENT_ENV: Final = {"MEDLEDGER_PATIENT_PASSPHRASE": PASSPHRASE}
PROBLEM: Final = "application/problem+json"
BLOCK_INTERVAL_MS: Final = 50
DEADLINE_S: Final = 30.0
POLL_S: Final = 0.02


@dataclasses.dataclass(frozen=True, slots=True)
class Reply:
    status: int
    content_type: str
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    url: str, method: str, path: str, *, body: bytes | None = None, headers: Mapping[str, str] | None = None
) -> Reply:
    parsed = urllib.parse.urlsplit(url)
    assert parsed.hostname == "127.0.0.1", url
    assert parsed.port is not None, url
    connection = http.client.HTTPConnection("127.0.0.1", parsed.port, timeout=60)
    try:
        connection.request(method, path, body=body, headers=dict(headers or {}))
        response = connection.getresponse()
        data = response.read()
        content_type = (response.getheader("Content-Type") or "").split(";", 1)[0].strip()
        return Reply(response.status, content_type, data)
    finally:
        connection.close()


@dataclasses.dataclass(frozen=True, slots=True)
class Institution:
    """One institution's node: its URL and institution API token."""

    name: str
    url: str
    token: str
    home: Path

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def get(self, path: str) -> Reply:
        return request(self.url, "GET", path, headers=self.auth)

    def post(self, path: str, data: Any) -> Reply:
        headers = {**self.auth, "Content-Type": "application/json"}
        return request(self.url, "POST", path, body=json.dumps(data).encode(), headers=headers)

    def add_record(self, patient_id: str, resource: Mapping[str, Any]) -> str:
        reply = self.post("/v1/health/institution/records", {"patient_id": patient_id, "resource": resource})
        assert reply.status == 201, reply
        return str(reply.json()["record_id"])

    def inquire(self, patient_id: str, purpose: str, record_types: list[str]) -> str:
        body: dict[str, Any] = {"patient_id": patient_id, "purpose": purpose, "reason": "follow-up visit"}
        body["record_types"] = record_types
        reply = self.post("/v1/health/institution/inquiries", body)
        assert reply.status == 201, reply
        return str(reply.json()["inquiry_id"])

    def read(self, record_id: str) -> Reply:
        return self.get(f"/v1/health/institution/records/{record_id}")


@dataclasses.dataclass(frozen=True, slots=True)
class HealthNet:
    institutions: dict[str, Institution]

    def __getitem__(self, name: str) -> Institution:
        return self.institutions[name]

    def heights(self) -> list[int]:
        return [
            int(request(i.url, "GET", "/status", headers=i.auth).json()["height"])
            for i in self.institutions.values()
        ]

    def sync(self) -> None:
        """Wait until every node has committed what any node had committed when called."""
        target = max(self.heights())
        deadline = time.monotonic() + DEADLINE_S
        while min(self.heights()) < target:
            assert time.monotonic() < deadline, f"nodes did not reach height {target}"
            time.sleep(POLL_S)  # polling a condition with a deadline


@contextlib.contextmanager
def start_health_net(out: Path, roles: Mapping[str, str]) -> Iterator[HealthNet]:
    """A health network of one validator per (name → role); every process is stopped on exit."""
    nodes = create_testnet(
        out,
        validators=len(roles),
        chain_id="medledger-health-api-test",
        block_interval_ms=BLOCK_INTERVAL_MS,
        passphrase=PASSPHRASE.encode(),
        key_opslimit=nacl.pwhash.argon2id.OPSLIMIT_MIN,
        key_memlimit=nacl.pwhash.argon2id.MEMLIMIT_MIN,
        app="health",
        names=list(roles),
        roles=list(roles.values()),
    )
    processes = [NodeProcess(n.home, env=dict(NODE_ENV), use_config_ports=True) for n in nodes]
    try:
        for process in processes:
            process.start()
        urls = [process.wait_ready(60.0) for process in processes]
        yield HealthNet(
            {
                n.name: Institution(n.name, url, n.api_token, n.home)
                for n, url in zip(nodes, urls, strict=True)
            }
        )
    finally:
        for process in processes:
            process.stop()


def make_patient_key(path: Path) -> Identity:
    """A patient key file with a cheap key derivation (tests only)."""
    identity = Identity.generate()
    save_identity(
        path,
        identity,
        PASSPHRASE.encode(),
        opslimit=nacl.pwhash.argon2id.OPSLIMIT_MIN,
        memlimit=nacl.pwhash.argon2id.MEMLIMIT_MIN,
    )
    return identity


def patient_cli(key: Path, url: str, *args: str) -> str:
    """Run `medledger patient --key KEY --url URL ARGS…`; asserts success, returns its output."""
    result = CliRunner().invoke(
        main, ["patient", "--key", str(key), "--url", url, *args], env=dict(PATIENT_ENV)
    )
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result.output


def assert_problem(reply: Reply, status: int) -> dict[str, Any]:
    assert reply.status == status, reply
    assert reply.content_type == PROBLEM, reply
    problem: dict[str, Any] = reply.json()
    assert problem["status"] == status
    for member in ("type", "title", "detail"):
        assert isinstance(problem[member], str), problem
        assert problem[member], problem
    return problem


OBSERVATION: Final[dict[str, Any]] = {
    "resourceType": "Observation",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0", "display": "Glucose"}]},
    "subject": {"reference": "Patient/synthetic-1"},
    "effectiveDateTime": "2024-01-05T08:30:00Z",
    "valueQuantity": {
        "value": 5.4,
        "unit": "mmol/L",
        "system": "http://unitsofmeasure.org",
        "code": "mmol/L",
    },
}


def observation(value: float) -> dict[str, Any]:
    return {**OBSERVATION, "valueQuantity": {**OBSERVATION["valueQuantity"], "value": value}}


async def wait_for(condition: Callable[[], bool], what: str) -> None:
    """In an async test: wait until `condition()` holds, failing with `what` after `DEADLINE_S`."""
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(POLL_S)  # polling a condition with a deadline
