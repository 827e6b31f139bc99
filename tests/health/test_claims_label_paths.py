"""Every path that writes a record version takes the same label decision (issue 12, review).

A record, a document (a record with attachments, ADR 0013) and a correction answering an amendment
(ADR 0014) are each labelled by `policy.compute_version_labels` (their content's labels and, for a
correction, every label of what it corrects) and sealed by `policy.compute_node_version_sealing`;
the labels go on the ledger with the version, and the rules refuse a version sealed for a consent
that does not name its labels. Refusals go through `Ledger.submit_rejected` (nothing changes).
"""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from health_testkit import Ledger, make_condition, make_identity, make_observation

from medledger.crypto import DecryptionError
from medledger.health import claims_client, client, events, policy, rights_seal
from medledger.health import state as st
from medledger.health.blobs import build_blob_refs, compute_blob_url, generate_blob_key, open_blob_key
from medledger.health.records import compute_binding_of, encrypt_record, get_record_key
from medledger.health.rights_types import AmendmentState
from medledger.health.types import compute_patient_id

ROLES = {"clinic": "clinic", "hospital": "hospital", "insurer": "insurer"}
DAY_MS = 24 * 3600 * 1000
ICD10 = "http://hl7.org/fhir/sid/icd-10"


def hiv_diagnosis() -> dict[str, Any]:
    """A correction's content: the diagnosis was HIV disease (ICD-10 B20), with no meta.security."""
    condition = make_condition("corrected")
    condition["code"] = {"coding": [{"system": ICD10, "code": "B20"}], "text": "HIV disease"}
    return condition


def labelled_letter(urls: list[str]) -> dict[str, Any]:
    return {
        "resourceType": "DocumentReference",
        "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}]},
        "status": "current",
        "subject": {"reference": "Patient/synthetic-docs"},
        "content": [{"attachment": {"contentType": "application/pdf", "url": url}} for url in urls],
    }


class World:
    def __init__(self) -> None:
        self.ledger = Ledger(ROLES)
        self.patient = make_identity("patient")
        self.clinic = make_identity("clinic")
        self.insurer = make_identity("insurer")
        self.ledger.submit_ok(self.ledger.sign(client.build_register_patient, self.patient))
        self.patient_id = compute_patient_id(self.patient.public.sign_key)
        body = claims_client.make_consent(
            self.patient_id,
            self.insurer.public.sign_key,
            record_types=("Condition", "DocumentReference", "Observation"),
            authors=[self.clinic.public.sign_key],
            expires_ms=self.ledger.next_time_ms + 30 * DAY_MS,
        )
        self.ledger.submit_ok(self.ledger.sign(claims_client.build_grant_consent, self.patient, body))

    def sealing(
        self, resource: dict[str, Any], supersedes: bytes = b""
    ) -> tuple[tuple[str, ...], list[bytes]]:
        """What the clinic's node writes a version of `resource` with (labels, readers)."""
        patient = st.get_patient(self.ledger.state, self.patient_id)
        assert patient is not None
        labels, readers = policy.compute_node_version_sealing(
            self.ledger.state,
            patient,
            self.ledger.institutions["clinic"],
            resource["resourceType"],
            resource,
            self.ledger.next_time_ms,
            supersedes=supersedes,
        )
        return labels, sorted(readers)

    def add(self, resource: dict[str, Any]) -> bytes:
        labels, readers = self.sealing(resource)
        encrypted = encrypt_record(
            resource, patient_id=self.patient_id, author=self.clinic.public.sign_key, readers=readers
        )
        if labels:
            signed = self.ledger.sign(
                claims_client.build_add_labelled_record, self.clinic, self.patient_id, encrypted, labels
            )
        else:
            signed = self.ledger.sign(client.build_add_record, self.clinic, self.patient_id, encrypted)
        return self.ledger.submit_ok(signed).tx_id

    def ask_amendment(self, record_id: bytes) -> AmendmentState:
        signed = self.ledger.sign(
            rights_seal.build_request_amendment,
            self.patient,
            self.patient_id,
            record_id,
            "the diagnosis is wrong",
            author=self.clinic.public.sign_key,
            patient_enc_key=self.patient.public.enc_key,
            author_enc_key=self.clinic.public.enc_key,
        )
        amendment = st.get_amendment(self.ledger.state, self.ledger.submit_ok(signed).tx_id)
        assert amendment is not None
        return amendment

    def readers_of(self, record_id: bytes) -> set[str]:
        record = st.get_record(self.ledger.state, record_id)
        assert record is not None
        named = {"patient": self.patient, "clinic": self.clinic, "insurer": self.insurer}
        return {name for name, who in named.items() if who.public.enc_key in record.envelope.readers}


@pytest.fixture
def world() -> World:
    return World()


# --- a correction answering an amendment ---------------------------------------------------------


def test_a_correction_accepting_an_amendment_is_labelled_by_its_content(world: World) -> None:
    diagnosis = world.add(make_condition("hypertension"))
    assert world.readers_of(diagnosis) == {"patient", "clinic", "insurer"}  # unlabelled: covered
    amendment = world.ask_amendment(diagnosis)
    labels, readers = world.sealing(hiv_diagnosis(), supersedes=diagnosis)
    assert labels == ("HIV",)  # from the corrected content, not the (unlabelled) original
    assert world.insurer.public.enc_key not in readers
    corrected = encrypt_record(
        hiv_diagnosis(),
        patient_id=world.patient_id,
        author=world.clinic.public.sign_key,
        readers=readers,
        supersedes=diagnosis,
    )
    signed = world.ledger.sign(
        rights_seal.build_accept_amendment, world.clinic, amendment, diagnosis, corrected, labels=labels
    )
    assert signed[0].kind == "health.accept_labelled_amendment"
    correction = world.ledger.submit_ok(signed).tx_id
    effects = events.compute_tx_effects(world.ledger.state, signed[0], correction)
    assert [e.kind for e in effects] == ["amendment.accepted", "record.superseded"]
    assert world.readers_of(correction) == {"patient", "clinic"}
    assert st.get_record_labels(world.ledger.state, correction) == ("HIV",)
    accepted = st.get_amendment(world.ledger.state, amendment.amendment_id)
    assert accepted is not None
    assert (accepted.status, accepted.answer_id) == ("accepted", correction)
    # A later correction of it (whatever its content) keeps the label.
    assert world.sealing(make_condition("again"), supersedes=correction)[0] == ("HIV",)


def test_invalid_labelled_correction_sealed_for_a_consent_not_naming_its_label(world: World) -> None:
    diagnosis = world.add(make_condition("hypertension"))
    amendment = world.ask_amendment(diagnosis)
    everyone = sorted(e.public.enc_key for e in (world.patient, world.clinic, world.insurer))
    corrected = encrypt_record(
        hiv_diagnosis(),
        patient_id=world.patient_id,
        author=world.clinic.public.sign_key,
        readers=everyone,
        supersedes=diagnosis,
    )
    signed = world.ledger.sign(
        rights_seal.build_accept_amendment, world.clinic, amendment, diagnosis, corrected, labels=("HIV",)
    )
    world.ledger.submit_rejected(signed, "health.record_readers")


def test_an_unlabelled_correction_of_a_labelled_record_keeps_its_labels(world: World) -> None:
    labelled = world.add({**make_observation(7), "meta": {"security": [{"code": "R"}]}})
    assert st.get_record_labels(world.ledger.state, labelled) == ("R",)
    amendment = world.ask_amendment(labelled)
    labels, readers = world.sealing(make_observation(8), supersedes=labelled)
    assert labels == ("R",)
    corrected = encrypt_record(
        make_observation(8),
        patient_id=world.patient_id,
        author=world.clinic.public.sign_key,
        readers=readers,
        supersedes=labelled,
    )
    signed = world.ledger.sign(
        rights_seal.build_accept_amendment, world.clinic, amendment, labelled, corrected, labels=labels
    )
    correction = world.ledger.submit_ok(signed).tx_id
    assert st.get_record_labels(world.ledger.state, correction) == ("R",)
    assert world.readers_of(correction) == {"patient", "clinic"}


# --- a labelled document -------------------------------------------------------------------------


def test_a_labelled_document_is_labelled_and_its_attachments_have_its_readers(world: World) -> None:
    blobs = [(secrets.token_bytes(32), 1000, generate_blob_key())]
    resource = labelled_letter([compute_blob_url(blobs[0][0])])
    labels, readers = world.sealing(resource)
    assert labels == ("PSY",)
    assert world.insurer.public.enc_key not in readers
    encrypted = encrypt_record(
        resource, patient_id=world.patient_id, author=world.clinic.public.sign_key, readers=readers
    )
    refs = build_blob_refs(encrypted, world.patient_id, world.clinic, blobs)
    signed = world.ledger.sign(
        client.build_add_document, world.clinic, world.patient_id, encrypted, refs, labels=labels
    )
    assert signed[0].kind == "health.add_labelled_document"
    record_id = world.ledger.submit_ok(signed).tx_id
    effects = events.compute_tx_effects(world.ledger.state, signed[0], record_id)
    assert [(e.kind, e.institutions) for e in effects] == [("record.added", (world.clinic.public.sign_key,))]
    assert st.get_record_labels(world.ledger.state, record_id) == ("PSY",)
    assert world.readers_of(record_id) == {"patient", "clinic"}
    (ref,) = st.get_record_attachments(world.ledger.state, record_id)
    assert ref.blob_id == blobs[0][0]
    record = st.get_record(world.ledger.state, record_id)
    assert record is not None
    for reader in (world.patient, world.clinic):  # the attachment's key opens for its readers
        assert (
            open_blob_key(get_record_key(record, reader, None), ref, compute_binding_of(record))
            == blobs[0][2]
        )
    with pytest.raises(DecryptionError):
        get_record_key(record, world.insurer, None)


def test_invalid_labelled_document_sealed_for_a_consent_not_naming_its_label(world: World) -> None:
    blobs = [(secrets.token_bytes(32), 1000, generate_blob_key())]
    resource = labelled_letter([compute_blob_url(blobs[0][0])])
    everyone = sorted(e.public.enc_key for e in (world.patient, world.clinic, world.insurer))
    encrypted = encrypt_record(
        resource, patient_id=world.patient_id, author=world.clinic.public.sign_key, readers=everyone
    )
    refs = build_blob_refs(encrypted, world.patient_id, world.clinic, blobs)
    signed = world.ledger.sign(
        client.build_add_document, world.clinic, world.patient_id, encrypted, refs, labels=("PSY",)
    )
    world.ledger.submit_rejected(signed, "health.record_readers")
