"""Builders of the health recovery test: four institutions on real node processes, HTTP, FHIR data.

`start_health_cluster` creates a four-validator health testnet (a clinic, a hospital, an insurer and
a research institute; genesis `app_state`), starts one `medledger start` process per institution
and stops every one of them on exit, pass or fail. An `Institution` is a small stdlib HTTP client of
one node's institution API (bearer token) that keeps the raw bytes of each answer, since the test
compares answers byte for byte. The HTTP client is a trimmed copy of tests/health_api/health_harness.py
(test folders are no packages).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import http.client
import json
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import nacl.pwhash.argon2id

from medledger.node.process import NodeProcess
from medledger.node.testnet import create_testnet

PASSPHRASE: Final = "test-pass"
#: Every blob on every node (author + 3 others), so a wiped node must get back every attachment.
NODE_ENV: Final = {"MEDLEDGER_KEY_PASSPHRASE": PASSPHRASE, "MEDLEDGER_BLOBS_REPLICAS": "3"}
CHAIN_ID: Final = "medledger-health-recovery"
BLOCK_INTERVAL_MS: Final = 50
DEADLINE_S: Final = 60.0
POLL_S: Final = 0.05
#: Institution name → role; every one of them is a validator (3 of the 4 keep the chain live).
ROLES: Final = {"clinic": "clinic", "hospital": "hospital", "insurer": "insurer", "research": "research"}


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = DEADLINE_S) -> None:
    """Poll `condition` until it holds; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(POLL_S)  # polling a condition with a deadline


@dataclasses.dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    url: str, method: str, path: str, *, body: bytes | None = None, headers: Mapping[str, str]
) -> Reply:
    parsed = urllib.parse.urlsplit(url)
    assert parsed.hostname == "127.0.0.1", url
    assert parsed.port is not None, url
    connection = http.client.HTTPConnection("127.0.0.1", parsed.port, timeout=60)
    try:
        connection.request(method, path, body=body, headers=dict(headers))
        response = connection.getresponse()
        return Reply(response.status, response.read())
    finally:
        connection.close()


@dataclasses.dataclass(frozen=True, slots=True)
class Institution:
    """One institution's node process and its institution API token."""

    name: str
    token: str
    process: NodeProcess

    @property
    def url(self) -> str:
        return self.process.url

    @property
    def data_dir(self) -> Path:
        return self.process.home / "data"

    def get(self, path: str) -> Reply:
        """GET `path` with the token; any answer but 200 fails the test."""
        reply = request(self.url, "GET", path, headers={"Authorization": f"Bearer {self.token}"})
        assert reply.status == 200, (self.name, path, reply)
        return reply

    def post(self, path: str, data: Any) -> Reply:
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        reply = request(self.url, "POST", path, body=json.dumps(data).encode(), headers=headers)
        assert reply.status == 201, (self.name, path, reply)
        return reply

    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = self.get("/status").json()
        return data

    def tip(self) -> tuple[int, str, str, int]:
        """Height, latest block hash, state root and mempool size."""
        s = self.status()
        return int(s["height"]), str(s["latest_block_hash"]), str(s["state_root"]), int(s["mempool"]["txs"])

    def add_record(self, patient_id: str, resource: Mapping[str, Any]) -> str:
        body = {"patient_id": patient_id, "resource": resource}
        # The longest wait the API allows: a round whose proposer is down times out first.
        return str(self.post("/v1/health/institution/records?wait_ms=30000", body).json()["record_id"])

    def inquire(self, patient_id: str, purpose: str, record_types: list[str]) -> bytes:
        body: dict[str, Any] = {"patient_id": patient_id, "purpose": purpose, "reason": "synthetic follow-up"}
        body["record_types"] = record_types
        return bytes.fromhex(self.post("/v1/health/institution/inquiries", body).json()["inquiry_id"])

    def list_records(self, patient_id: str) -> Reply:
        return self.get(f"/v1/health/institution/records?patient_id={patient_id}")

    def read(self, record_id: str) -> Reply:
        """Decrypt one record (a read under a grant commits a read receipt first)."""
        return self.get(f"/v1/health/institution/records/{record_id}")

    def upload(self, data: bytes) -> str:
        """Upload an attachment (a blob); returns its `urn:medledger:blob:` URL."""
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/octet-stream"}
        reply = request(self.url, "POST", "/v1/health/institution/blobs", body=data, headers=headers)
        assert reply.status == 201, (self.name, reply)
        return str(reply.json()["url"])

    def held_blobs(self) -> dict[str, bool]:
        """The blobs this node holds, each re-read and checked against its manifest: id → verified."""
        items = self.get("/v1/health/institution/blobs?verify=true").json()["blobs"]
        return {str(item["blob_id"]): bool(item["verified"]) for item in items}

    def download(self, record_id: str, blob_id: str) -> bytes:
        return self.get(f"/v1/health/institution/records/{record_id}/attachments/{blob_id}").body


@dataclasses.dataclass(frozen=True, slots=True)
class HealthCluster:
    institutions: dict[str, Institution]

    def __getitem__(self, name: str) -> Institution:
        return self.institutions[name]

    def running(self) -> list[Institution]:
        return [i for i in self.institutions.values() if i.process.running]

    def sync(self) -> None:
        """Wait until every running node has what any of them had committed when called."""
        nodes = self.running()
        target = max(n.tip()[0] for n in nodes)
        wait_until(lambda: min(n.tip()[0] for n in nodes) >= target, f"the nodes to reach height {target}")

    def wait_agreed(self) -> tuple[int, str, str]:
        """Wait until every running node is idle at one height, block hash and state root."""
        nodes = self.running()
        seen: list[tuple[int, str, str, int]] = []

        def agreed() -> bool:
            seen[:] = [n.tip() for n in nodes]
            return len(set(seen)) == 1 and seen[0][3] == 0

        wait_until(agreed, f"the nodes to agree (last seen {seen})")
        return seen[0][:3]

    def block_hashes(self, name: str, last: int) -> list[str]:
        hashes: list[str] = []
        for start in range(1, last + 1, 100):
            data = self[name].get(f"/v1/blocks?from={start}&to={min(start + 99, last)}").json()
            hashes += [str(b["hash"]) for b in data["blocks"]]
        return hashes


def is_meshed(institution: Institution) -> bool:
    return bool(institution.status()["peers"] == len(ROLES) - 1)


@contextlib.contextmanager
def start_health_cluster(out: Path) -> Iterator[HealthCluster]:
    """The four institutions on their own node processes, meshed; every process is stopped on exit."""
    nodes = create_testnet(
        out,
        validators=len(ROLES),
        chain_id=CHAIN_ID,
        block_interval_ms=BLOCK_INTERVAL_MS,
        passphrase=PASSPHRASE.encode(),
        key_opslimit=nacl.pwhash.argon2id.OPSLIMIT_MIN,
        key_memlimit=nacl.pwhash.argon2id.MEMLIMIT_MIN,
        app="health",
        names=list(ROLES),
        roles=list(ROLES.values()),
    )
    cluster = HealthCluster(
        {
            n.name: Institution(
                n.name, n.api_token, NodeProcess(n.home, env=dict(NODE_ENV), use_config_ports=True)
            )
            for n in nodes
        }
    )
    try:
        for institution in cluster.institutions.values():
            institution.process.start()
        for institution in cluster.institutions.values():
            institution.process.wait_ready(DEADLINE_S, require_ready=False)
        for institution in cluster.institutions.values():
            wait_until(functools.partial(is_meshed, institution), f"{institution.name} meshed")
        yield cluster
    finally:
        for institution in cluster.institutions.values():
            institution.process.stop()
        for institution in cluster.institutions.values():
            # Shown by pytest only when the test failed.
            print(f"===== {institution.name}\n{institution.process.read_log()[-3000:]}")


# -- synthetic FHIR R4 records (no real person behind any of them) ---------------------------------


def _subject(patient: int) -> dict[str, str]:
    return {"reference": f"Patient/synthetic-{patient}"}


def glucose(patient: int, value: float) -> dict[str, Any]:
    """An Observation; its note is not ASCII, so a byte-for-byte comparison means something."""
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0", "display": "Glucose"}]},
        "subject": _subject(patient),
        "effectiveDateTime": f"2024-01-0{patient + 1}T08:30:00Z",
        "valueQuantity": {
            "value": value,
            "unit": "mmol/L",
            "system": "http://unitsofmeasure.org",
            "code": "mmol/L",
        },
        "note": [{"text": f"Synthetic note {patient}: nüchtern, ≥ 8 h — «test» ✓"}],
    }


def condition(patient: int) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "clinicalStatus": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
            ]
        },
        "code": {
            "coding": [
                {
                    "system": "http://snomed.info/sct",
                    "code": "44054006",
                    "display": "Diabetes mellitus type 2",
                }
            ]
        },
        "subject": _subject(patient),
        "onsetDateTime": f"20{10 + patient}-06-01",
    }


def immunization(patient: int) -> dict[str, Any]:
    return {
        "resourceType": "Immunization",
        "status": "completed",
        "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140"}]},
        "patient": _subject(patient),
        "occurrenceDateTime": "2023-10-15",
        "lotNumber": f"SYN-{patient:04d}",
    }


def encounter(patient: int) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": _subject(patient),
        "period": {"start": "2024-02-01T08:00:00Z", "end": f"2024-02-01T08:4{patient}:00Z"},
    }


def diagnostic_report(patient: int, label: str) -> dict[str, Any]:
    return {
        "resourceType": "DiagnosticReport",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "58410-2", "display": "CBC panel"}]},
        "subject": _subject(patient),
        "effectiveDateTime": "2024-02-01",
        "issued": "2024-02-01T12:00:00Z",
        "conclusion": f"Synthetic report {label} for patient {patient}: within normal limits.",
    }


def document_reference(patient: int, url: str, title: str) -> dict[str, Any]:
    """A DocumentReference whose content is an attachment stored as a blob."""
    return {
        "resourceType": "DocumentReference",
        "status": "current",
        "type": {
            "coding": [{"system": "http://loinc.org", "code": "18842-5", "display": "Discharge summary"}]
        },
        "subject": _subject(patient),
        "date": "2024-03-01T10:00:00Z",
        "content": [{"attachment": {"contentType": "application/pdf", "url": url, "title": title}}],
    }


def with_presented_form(report: dict[str, Any], url: str) -> dict[str, Any]:
    """A DiagnosticReport with its rendered report (an imaging report PDF) as an attachment."""
    return {**report, "presentedForm": [{"contentType": "application/pdf", "url": url}]}
