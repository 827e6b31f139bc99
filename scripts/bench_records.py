#!/usr/bin/env python3
"""Benchmark records through the institution API: a 50 MB attachment up and down, and records/s.

Machine: whatever runs it (printed: CPU count, platform); the figures in docs and reports were
taken on the project's shared 2-core AMD EPYC VM with other jobs running, so treat them as a floor.

Setup: a one-validator health testnet (a clinic; `medledger start` as its own process, block
interval 50 ms) in a temporary directory, and one synthetic patient registered with the SDK. Then,
through the API on loopback with the stdlib HTTP client:

- upload: `POST /v1/health/institution/blobs` with a 50 MB body (random bytes: nobody's data),
  streamed by the node into its blob store, encrypted a MiB at a time; MB/s = 50 MB / wall time
  of the request. The file is then cited by a DocumentReference (`health.add_document`).
- download: `GET /v1/health/institution/records/{id}/attachments/{blob}` as the author, read in
  1 MiB pieces and hashed (checked equal to the upload); MB/s = 50 MB / wall time.
- records/s: `--records` (default 2000) FHIR Observations posted by `--clients` (default 16, an
  integration engine's worker pool) concurrent keep-alive connections with `wait_ms=0` (each
  validated, encrypted, signed and admitted by the node), the clock running from the first post
  to the moment the last one is committed. On this machine the figure moves with the load of
  the other jobs (8 clients gave 420-500 records/s, 16 gave 700); on a quiet machine, 16
  clients: 408 records/s while each record was validated twice, 543-603 once.

It reports and never asserts; targets (issue 14): ≥ 50 MB/s each way, ≥ 500 records/s. The last
line printed is one JSON object: {"bench": "records", "upload_mb_per_s": …, "download_mb_per_s": …,
"records_per_s": …}.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import http.client
import json
import os
import platform
import secrets
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import nacl.pwhash.argon2id

from medledger.crypto import Identity
from medledger.health.sdk import PatientClient
from medledger.node.process import NodeProcess
from medledger.node.testnet import create_testnet

PASSPHRASE = "bench-passphrase"
MB = 1_000_000


def connect(url: str) -> http.client.HTTPConnection:
    parsed = urllib.parse.urlsplit(url)
    return http.client.HTTPConnection("127.0.0.1", parsed.port or 80, timeout=300)


def observation(n: int) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0", "display": "Glucose"}]},
        "subject": {"reference": "Patient/synthetic-bench"},
        "effectiveDateTime": "2024-01-05T08:30:00Z",
        "valueQuantity": {
            "value": 4 + (n % 50) / 10,
            "unit": "mmol/L",
            "system": "http://unitsofmeasure.org",
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--attachment-mb", type=int, default=50)
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory(prefix="bench-records-") as tmp:
        (node,) = create_testnet(
            Path(tmp) / "net",
            validators=1,
            chain_id="medledger-bench-records",
            block_interval_ms=50,
            passphrase=PASSPHRASE.encode(),
            key_opslimit=nacl.pwhash.argon2id.OPSLIMIT_MIN,
            key_memlimit=nacl.pwhash.argon2id.MEMLIMIT_MIN,
            app="health",
            names=["clinic"],
            roles=["clinic"],
        )
        process = NodeProcess(node.home, env={"MEDLEDGER_KEY_PASSPHRASE": PASSPHRASE})
        process.start()
        try:
            url = process.wait_ready(60.0)
            result = run(url, node.api_token, args)
        finally:
            process.stop()
    print(json.dumps({"bench": "records", **result}))


def run(url: str, token: str, args: argparse.Namespace) -> dict[str, float]:
    auth = {"Authorization": f"Bearer {token}"}
    patient = PatientClient(url, Identity.generate())
    patient.register()
    patient_id = patient.patient_id.hex()
    deadline = time.monotonic() + 30
    while True:  # the registration commits within a block or two
        status = json.loads(get(url, "/status", auth))
        if status["mempool"]["txs"] == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.05)

    size = args.attachment_mb * MB
    data = secrets.token_bytes(size)
    connection = connect(url)
    started = time.perf_counter()
    connection.request(
        "POST",
        "/v1/health/institution/blobs",
        body=data,
        headers={**auth, "Content-Type": "application/octet-stream"},
    )
    response = connection.getresponse()
    blob = json.loads(response.read())
    upload_s = time.perf_counter() - started
    if response.status != 201:
        raise RuntimeError(f"upload refused: {response.status} {blob}")
    document = {
        "resourceType": "DocumentReference",
        "status": "current",
        "subject": {"reference": "Patient/synthetic-bench"},
        "content": [{"attachment": {"contentType": "application/pdf", "url": blob["url"]}}],
    }
    body = json.dumps({"patient_id": patient_id, "resource": document}).encode()
    connection.request(
        "POST",
        "/v1/health/institution/records",
        body=body,
        headers={**auth, "Content-Type": "application/json"},
    )
    response = connection.getresponse()
    record = json.loads(response.read())
    if response.status != 201:
        raise RuntimeError(f"document refused: {response.status} {record}")
    started = time.perf_counter()
    connection.request(
        "GET",
        f"/v1/health/institution/records/{record['record_id']}/attachments/{blob['blob_id']}",
        headers=auth,
    )
    response = connection.getresponse()
    hasher = hashlib.sha256()
    received = 0
    while piece := response.read(2**20):
        hasher.update(piece)
        received += len(piece)
    download_s = time.perf_counter() - started
    connection.close()
    if response.status != 200 or received != size:
        raise RuntimeError(f"download failed: status {response.status}, {received} of {size} bytes")
    if hasher.digest() != hashlib.sha256(data).digest():
        raise RuntimeError("the download differs from the upload")
    print(f"attachment: {size / MB:.0f} MB up in {upload_s:.2f} s, down in {download_s:.2f} s")

    records_per_s = ingest(url, auth, patient_id, args.records, args.clients)
    upload_rate, download_rate = size / MB / upload_s, size / MB / download_s
    print(f"upload {upload_rate:.1f} MB/s, download {download_rate:.1f} MB/s, {records_per_s:.0f} records/s")
    return {
        "upload_mb_per_s": round(upload_rate, 1),
        "download_mb_per_s": round(download_rate, 1),
        "records_per_s": round(records_per_s, 1),
    }


def get(url: str, path: str, headers: dict[str, str]) -> bytes:
    connection = connect(url)
    try:
        connection.request("GET", path, headers=headers)
        return connection.getresponse().read()
    finally:
        connection.close()


def ingest(url: str, auth: dict[str, str], patient_id: str, total: int, clients: int) -> float:
    bodies = [
        json.dumps({"patient_id": patient_id, "resource": observation(n)}).encode() for n in range(total)
    ]
    local = threading.local()
    headers = {**auth, "Content-Type": "application/json"}
    tx_ids: list[str] = []
    lock = threading.Lock()

    def post(body: bytes) -> None:
        connection = getattr(local, "connection", None)
        if connection is None:
            connection = local.connection = connect(url)
        connection.request("POST", "/v1/health/institution/records?wait_ms=0", body=body, headers=headers)
        response = connection.getresponse()
        answer = json.loads(response.read())
        if response.status not in (201, 202):
            raise RuntimeError(f"record refused: {response.status} {answer}")
        with lock:
            tx_ids.append(answer["tx_id"])

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        list(pool.map(post, bodies))
    while True:
        status = json.loads(get(url, "/status", auth))
        if status["mempool"]["txs"] == 0:
            last = json.loads(get(url, f"/v1/txs/{tx_ids[-1]}", auth))
            if last.get("status") == "committed":
                break
        time.sleep(0.02)
    elapsed = time.perf_counter() - started
    print(f"records: {total} posted by {clients} clients and committed in {elapsed:.2f} s")
    return total / elapsed


if __name__ == "__main__":
    main()
