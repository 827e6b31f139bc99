"""The grant preview, computed on a light ledger exactly as the patient's client does (pure).

Issue 9, defect 1: the patient must be shown, in words, everything a grant would share. A Bundle
record is a container: "bundles of several records" says nothing about the diagnoses inside, so
the preview names what each Bundle holds (opened on the patient's device, as the client does).
"""

from __future__ import annotations

import json
from pathlib import Path

from health_testkit import CHAIN_ID, GENESIS_TIME_MS, Ledger, make_identity
from test_client_ledger import _feed

from medledger.chain.types import Genesis
from medledger.health import client
from medledger.health.app import encode_genesis
from medledger.health.preview import compute_grant_preview
from medledger.health.records import encrypt_record, open_verified_record
from medledger.health.types import HealthGenesis, compute_patient_id
from medledger.health.verify import PatientLedger

FIXTURES = Path(__file__).parent / "fixtures"
HOUR_MS = 3_600_000


def test_trust_1_preview_names_what_a_bundle_holds() -> None:
    chain = Ledger()
    genesis = Genesis(
        CHAIN_ID,
        GENESIS_TIME_MS,
        chain.validators,
        encode_genesis(HealthGenesis(tuple(chain.institutions.values()))),
    )
    patient, clinic, insurer = (
        make_identity("patient-bundle"),
        make_identity("clinic"),
        make_identity("insurer"),
    )
    patient_id = compute_patient_id(patient.public.sign_key)
    light = PatientLedger(genesis, patient_id)
    assert _feed(chain, [light], chain.sign(client.build_register_patient, patient)).ok
    bundle = json.loads((FIXTURES / "bundle.json").read_text())
    encrypted = encrypt_record(
        bundle,
        patient_id=patient_id,
        author=clinic.public.sign_key,
        readers=[patient.public.enc_key, clinic.public.enc_key],
    )
    assert _feed(chain, [light], chain.sign(client.build_add_record, clinic, patient_id, encrypted)).ok
    inquiry_tx = chain.sign(
        client.build_request_access,
        insurer,
        patient_id,
        client.make_scope(record_types=("Bundle",)),
        "HPAYMT",
        chain.next_time_ms + HOUR_MS,
        "synthetic claim review",
        patient_enc_key=patient.public.enc_key,
    )
    assert _feed(chain, [light], inquiry_tx).ok
    (inquiry,) = light.list_inquiries()
    preview = compute_grant_preview(
        light,
        inquiry,
        reason="synthetic claim review",
        signer_enc_key=patient.public.enc_key,
        open_verified=lambda record: open_verified_record(record, patient),
    )
    (shared,) = preview.records
    assert shared.record_type == "Bundle"
    assert shared.contents == ("Condition", "Encounter", "Observation")
    text = "\n".join(preview.lines())
    assert "conditions and diagnoses" in text
    assert "visits and hospital stays" in text
    assert preview.to_json()["records"][0]["contents"] == ["Condition", "Encounter", "Observation"]
