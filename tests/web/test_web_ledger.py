"""The web app's verified ledger (web/src/ledger.ts) judged against the Python one.

Python builds a small health chain (genesis with a clinic and a hospital, one validator): a patient
registers and names a representative, the clinic adds a record, the hospital asks, the patient
grants, the hospital reads, the patient revokes. `PatientLedger` (health/verify.py) re-executes the
certified blocks and yields the record, inquiry, grant and audit events a node would serve. The
app's code (web/test/verify-ledger.ts, run under Node) follows the same blocks and must believe
every one of those facts, and refuse each tampered copy a lying node could serve, naming the check.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any, Final

from medledger.chain.codec import encode
from medledger.chain.lightclient import CertifiedBlock
from medledger.chain.txbuilder import sign_commit
from medledger.chain.types import Block, Genesis, Header, Validator, ValidatorSet, compute_tx_id
from medledger.chain.types import encode_genesis as encode_chain_genesis
from medledger.chain.validation import compute_tx_root
from medledger.crypto import Identity, digest
from medledger.health import client
from medledger.health.app import encode_genesis
from medledger.health.records import encrypt_record, reseal_record_keys
from medledger.health.types import HealthGenesis, Institution, compute_patient_id
from medledger.health.verify import PatientLedger

WEB: Final = Path(__file__).resolve().parents[2] / "web"
CHAIN_ID: Final = "medledger-web-ledger-test"
TIME_MS: Final = 1_767_323_045_678
NPM_TIMEOUT_S: Final = 240
OBSERVATION: Final = {
    "resourceType": "Observation",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0", "display": "Glucose"}]},
    "valueQuantity": {"value": 5.4, "unit": "mmol/L"},
}


def _chain() -> tuple[dict[str, Any], dict[str, str]]:
    """The chain and facts for the app to judge; and which check must refuse each tampered fact."""
    patient, representative, clinic, hospital, validator = (Identity.generate() for _ in range(5))
    patient_id = compute_patient_id(patient.public.sign_key)
    institutions = (
        Institution("clinic", "clinic", clinic.public.sign_key, clinic.public.enc_key),
        Institution("hospital", "hospital", hospital.public.sign_key, hospital.public.enc_key),
    )
    validators = ValidatorSet.of([Validator("v0", validator.public.sign_key, validator.public.enc_key)])
    genesis = Genesis(CHAIN_ID, TIME_MS, validators, encode_genesis(HealthGenesis(institutions)))
    ledger = PatientLedger(genesis, patient_id)
    blocks: list[dict[str, str]] = []
    parent = genesis.hash()

    def commit_block(raw: bytes) -> bytes:
        nonlocal parent
        height = len(blocks) + 1
        header = Header(
            CHAIN_ID,
            height,
            0,
            parent,
            TIME_MS + 1000 * height,
            validator.public.sign_key,
            1,
            compute_tx_root([raw]),
            digest(f"state/{height}".encode()),
            validators.hash(),
            validators.hash(),
        )
        block = Block(header, (raw,))
        commit = sign_commit([validator], chain_id=CHAIN_ID, height=height, round_=0, block_hash=block.hash())
        tx_id = compute_tx_id(raw)
        ledger.apply_block(CertifiedBlock(block, commit, (tx_id,)))
        blocks.append({"block": encode(block).hex(), "commit": encode(commit).hex(), "next_validators": ""})
        parent = block.hash()
        return tx_id

    commit_block(client.build_register_patient(patient, chain_id=CHAIN_ID, timestamp_ms=TIME_MS)[1])
    commit_block(
        client.build_add_representative(
            patient, patient_id, representative.public.sign_key, chain_id=CHAIN_ID, timestamp_ms=TIME_MS
        )[1]
    )
    sealed = encrypt_record(
        OBSERVATION,
        patient_id=patient_id,
        author=clinic.public.sign_key,
        readers=[patient.public.enc_key, clinic.public.enc_key],
    )
    commit_block(
        client.build_add_record(clinic, patient_id, sealed, chain_id=CHAIN_ID, timestamp_ms=TIME_MS)[1]
    )
    scope = client.make_scope(record_types=["Observation"])
    inquiry_id = commit_block(
        client.build_request_access(
            hospital,
            patient_id,
            scope,
            "TREAT",
            TIME_MS + 86_400_000,
            "follow-up",
            patient_enc_key=patient.public.enc_key,
            chain_id=CHAIN_ID,
            timestamp_ms=TIME_MS,
        )[1]
    )
    keys = reseal_record_keys(ledger.list_records(), patient, hospital.public.enc_key)
    grant_id = commit_block(
        client.build_grant(patient, inquiry_id, keys, chain_id=CHAIN_ID, timestamp_ms=TIME_MS)[1]
    )
    commit_block(
        client.build_read_receipt(
            hospital, grant_id, [k.record_id for k in keys], chain_id=CHAIN_ID, timestamp_ms=TIME_MS
        )[1]
    )
    commit_block(client.build_revoke(patient, grant_id, chain_id=CHAIN_ID, timestamp_ms=TIME_MS)[1])
    # A second inquiry, granted in parts (ADR 0012): a manifest, then its one part.
    second_id = commit_block(
        client.build_request_access(
            hospital,
            patient_id,
            scope,
            "TREAT",
            TIME_MS + 86_400_000,
            "second opinion",
            patient_enc_key=patient.public.enc_key,
            chain_id=CHAIN_ID,
            timestamp_ms=TIME_MS,
        )[1]
    )
    manifest, parts = client.build_grant_in_parts(
        patient, second_id, keys, chain_id=CHAIN_ID, timestamp_ms=TIME_MS
    )
    commit_block(manifest[1])
    for part in parts:
        commit_block(part[1])

    (record,) = ledger.list_records()
    inquiry, second = sorted(ledger.list_inquiries(), key=lambda i: i.height)
    grant, in_parts = sorted(ledger.list_grants(), key=lambda g: g.height)
    events = ledger.list_audit_events()
    assert grant.is_revoked
    assert [e.event for e in events] == [
        "representative_added",
        "inquiry",
        "grant",
        "read",
        "revoke",
        "inquiry",
        "grant",
        "grant_part",
    ]
    facts: list[dict[str, str]] = [
        {"name": "record", "kind": "record", "encoded": encode(record).hex()},
        {"name": "inquiry", "kind": "inquiry", "encoded": encode(inquiry).hex()},
        {"name": "grant", "kind": "grant", "encoded": encode(grant).hex(), "inquiry": encode(inquiry).hex()},
        {"name": "inquiry granted in parts", "kind": "inquiry", "encoded": encode(second).hex()},
        {
            "name": "grant in parts",
            "kind": "grant",
            "encoded": encode(in_parts).hex(),
            "inquiry": encode(second).hex(),
        },
    ]
    facts += [{"name": f"event {e.event}", "kind": "event", "encoded": encode(e).hex()} for e in events]
    other = Identity.generate()
    lies: dict[str, tuple[str, Any, str]] = {
        "record with another commitment": (
            "record",
            dataclasses.replace(record, commitment=bytes(32)),
            "record content",
        ),
        "record from another block": (
            "record",
            dataclasses.replace(record, height=record.height + 1),
            "block",
        ),
        "record by another author": (
            "record",
            dataclasses.replace(record, author=hospital.public.sign_key),
            "author",
        ),
        "record nobody wrote": (
            "record",
            dataclasses.replace(record, record_id=digest(b"x")),
            "tx inclusion proof",
        ),
        "record said corrected": (
            "record",
            dataclasses.replace(record, superseded_by=grant_id),
            "correction",
        ),
        "inquiry with another purpose": (
            "inquiry",
            dataclasses.replace(inquiry, purpose="ETREAT"),
            "inquiry content",
        ),
        "inquiry with a wider scope": (
            "inquiry",
            dataclasses.replace(inquiry, scope=client.make_scope()),
            "inquiry content",
        ),
        "inquiry decided by another tx": (
            "inquiry",
            dataclasses.replace(inquiry, decision_id=record.record_id),
            "decision",
        ),
        "grant whose revocation is hidden": (
            "grant",
            dataclasses.replace(grant, revoked_height=0, revoked_time_ms=0),
            "revocation",
        ),
        "grant to another key": (
            "grant",
            dataclasses.replace(grant, grantee_enc_key=other.public.enc_key),
            "grantee key",
        ),
        "grant with a later expiry": (
            "grant",
            dataclasses.replace(grant, expires_ms=grant.expires_ms + 1),
            "grant content",
        ),
        "grant without its keys": ("grant", dataclasses.replace(grant, record_keys=()), "grant content"),
        "grant in parts with a key no part carries": (
            "grant",
            dataclasses.replace(in_parts, record_keys=(dataclasses.replace(keys[0], sealed_key=bytes(80)),)),
            "grant content",
        ),
        "event by another actor": (
            "event",
            dataclasses.replace(events[3], actor=clinic.public.sign_key),
            "event content",
        ),
    }
    expected: dict[str, str] = {}
    for name, (kind, value, what) in lies.items():
        fact = {"name": name, "kind": kind, "encoded": encode(value).hex()}
        if kind == "grant":
            fact["inquiry"] = encode(second if value.grant_id == in_parts.grant_id else inquiry).hex()
        facts.append(fact)
        expected[name] = what
    data = {
        "genesis": encode_chain_genesis(genesis).hex(),
        "genesis_hash": genesis.hash().hex(),
        "blocks": blocks,
        "facts": facts,
        "patient_sign_key": patient.public.sign_key.hex(),
        "patient_id": patient_id.hex(),
        "representatives": [representative.public.sign_key.hex()],
    }
    return data, expected


def test_the_app_believes_what_the_python_ledger_holds_and_refuses_each_tampered_fact(tmp_path: Path) -> None:
    data, lies = _chain()
    path = tmp_path / "chain.json"
    path.write_text(json.dumps(data))
    npm = shutil.which("npm")
    assert npm is not None, "npm is not installed: run scripts/bootstrap.sh"
    result = subprocess.run(
        [npm, "run", "-s", "verify-ledger", "--", str(path)],
        cwd=WEB,
        capture_output=True,
        text=True,
        timeout=NPM_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    judged = json.loads(result.stdout)
    assert judged["height"] == len(data["blocks"])
    assert judged["representatives"] == data["representatives"]
    verdicts = {r["name"]: (r["believed"], r["what"]) for r in judged["results"]}
    for fact in data["facts"]:
        name = fact["name"]
        if name in lies:
            assert verdicts[name] == (False, lies[name]), name
        else:
            assert verdicts[name] == (True, ""), name
