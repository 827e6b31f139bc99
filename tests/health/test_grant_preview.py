"""The grant preview, computed on a light ledger exactly as the patient's client does (pure).

Issue 9, defect 1: the patient must be shown, in words, everything a grant would share. A Bundle
record is a container: "bundles of several records" says nothing about the diagnoses inside, so
the preview names what each Bundle holds (opened on the patient's device, as the client does).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from health_testkit import CHAIN_ID, GENESIS_TIME_MS, Ledger, make_identity
from test_client_ledger import _feed

from medledger.chain.types import Genesis
from medledger.crypto import Identity
from medledger.health import client, records
from medledger.health.app import encode_genesis
from medledger.health.fhir import ValidatedRecord, compute_canonical_json
from medledger.health.preview import PROBLEM_UNKNOWN_TYPE, ScopeNotShowableError, compute_grant_preview
from medledger.health.records import encrypt_record, open_verified_record
from medledger.health.types import HealthGenesis, InquiryState, compute_patient_id
from medledger.health.verify import PatientLedger

FIXTURES = Path(__file__).parent / "fixtures"
HOUR_MS = 3_600_000


def _bundle_scene(bundle: dict[str, Any]) -> tuple[PatientLedger, InquiryState, Identity]:
    """A light ledger holding one Bundle record of the patient and an insurer's Bundle inquiry."""
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
    return light, inquiry, patient


def test_trust_1_preview_names_what_a_bundle_holds() -> None:
    light, inquiry, patient = _bundle_scene(json.loads((FIXTURES / "bundle.json").read_text()))
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


def test_trust_1_preview_refuses_a_bundle_it_cannot_describe(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hostile author's bundle holding a bundle (or a resource with no words): the preview cannot
    say what would be shared, so it refuses and nothing is signed."""
    nested = json.loads((FIXTURES / "bundle.json").read_text())
    outer = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": nested}]}
    monkeypatch.setattr(
        records, "validate_record", lambda _: ValidatedRecord("Bundle", outer, compute_canonical_json(outer))
    )
    light, inquiry, patient = _bundle_scene(outer)
    monkeypatch.undo()
    with pytest.raises(ScopeNotShowableError) as refused:
        compute_grant_preview(
            light,
            inquiry,
            reason="synthetic claim review",
            signer_enc_key=patient.public.enc_key,
            open_verified=lambda record: open_verified_record(record, patient),
        )
    assert refused.value.problem == PROBLEM_UNKNOWN_TYPE
