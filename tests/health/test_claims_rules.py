"""The claims rules one by one (issue 12): standing consents, security labels, claims, decisions.

Each refusal goes through `Ledger.submit_rejected`, which also asserts that nothing changed. The
stateful test (`test_stateful.py`) drives the same rules in random sequences against a model.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from claims_testkit import make_encounter, seal_test_claim, seal_test_response
from health_testkit import Ledger, make_condition, make_identity, make_observation

from medledger.crypto import Identity
from medledger.health import claims_client, client, events, policy
from medledger.health import state as st
from medledger.health.claims_types import OUTCOME_APPROVED, OUTCOME_DENIED, OUTCOME_PENDED
from medledger.health.labels import compute_security_labels
from medledger.health.membership_types import KIND_INSTITUTION_REMOVE
from medledger.health.records import encrypt_record, open_record
from medledger.health.types import EVENT_CLAIM_READ, EVENT_READ, compute_patient_id

ROLES = {
    "clinic": "clinic",
    "hospital": "hospital",
    "insurer": "insurer",
    "insurer-2": "insurer",
    "research": "research",
}
DAY_MS = 24 * 3600 * 1000


@dataclasses.dataclass
class World:
    ledger: Ledger
    patient: Identity
    patient_id: bytes
    consent_id: bytes

    def who(self, name: str) -> Identity:
        return make_identity(name)

    def key(self, name: str) -> bytes:
        return make_identity(name).public.sign_key

    def enc(self, name: str) -> bytes:
        return make_identity(name).public.enc_key

    def add(
        self, author: str, resource: dict[str, Any], labels: tuple[str, ...] = (), *, ok: bool = True
    ) -> bytes:
        """A record sealed as the author's node seals it (`compute_node_record_readers`)."""
        patient = st.get_patient(self.ledger.state, self.patient_id)
        assert patient is not None
        institution = self.ledger.institutions[author]
        record_type = resource["resourceType"]
        readers = policy.compute_node_record_readers(
            self.ledger.state, patient, institution, record_type, self.ledger.next_time_ms, labels
        )
        encrypted = encrypt_record(
            resource, patient_id=self.patient_id, author=institution.sign_key, readers=sorted(readers)
        )
        if labels:
            signed = self.ledger.sign(
                claims_client.build_add_labelled_record, self.who(author), self.patient_id, encrypted, labels
            )
        else:
            signed = self.ledger.sign(client.build_add_record, self.who(author), self.patient_id, encrypted)
        return self.ledger.submit_ok(signed).tx_id

    def readers_of(self, record_id: bytes) -> set[str]:
        record = st.get_record(self.ledger.state, record_id)
        assert record is not None
        return {name for name in (*ROLES, "patient") if self.enc(name) in record.envelope.readers}

    def claim_readers(self, insurer: str = "insurer") -> list[bytes]:
        return [self.enc("patient"), self.enc("clinic"), self.enc(insurer)]

    def file(
        self, encounter_id: bytes, record_ids: list[bytes], *, by: str = "clinic", insurer: str = "insurer"
    ) -> Any:
        sealed = seal_test_claim(
            1,
            self.claim_readers(insurer),
            patient_id=self.patient_id,
            clinic=self.key(by),
            insurer=self.key(insurer),
            encounter_id=encounter_id,
            version=1,
        )
        return self.ledger.sign(
            claims_client.build_file_claim,
            self.who(by),
            self.patient_id,
            self.key(insurer),
            encounter_id,
            record_ids,
            sealed,
        )

    def decide(self, claim_id: bytes, version: int, outcome: str, *, by: str = "insurer") -> Any:
        sealed = seal_test_response(
            outcome, self.claim_readers(), claim_id=claim_id, version=version, insurer=self.key("insurer")
        )
        return self.ledger.sign(
            claims_client.build_decide_claim, self.who(by), claim_id, version, outcome, sealed
        )

    def amend(
        self,
        claim_id: bytes,
        version: int,
        record_ids: list[bytes],
        encounter_id: bytes,
        *,
        by: str = "clinic",
    ) -> Any:
        sealed = seal_test_claim(
            2,
            self.claim_readers(),
            patient_id=self.patient_id,
            clinic=self.key("clinic"),
            insurer=self.key("insurer"),
            encounter_id=encounter_id,
            version=version,
        )
        return self.ledger.sign(
            claims_client.build_amend_claim, self.who(by), claim_id, version, record_ids, sealed
        )


def consent(world_ledger: Ledger, patient_id: bytes, signer: Identity, **changes: Any) -> Any:
    terms: dict[str, Any] = {
        "record_types": ("Condition", "Encounter", "Observation"),
        "authors": [make_identity("clinic").public.sign_key],
        "labels": (),
        "from_ms": 0,
        "expires_ms": world_ledger.next_time_ms + 30 * DAY_MS,
    }
    terms.update(changes)
    grantee = terms.pop("grantee", make_identity("insurer").public.sign_key)
    body = claims_client.make_consent(patient_id, grantee, **terms)
    return world_ledger.sign(claims_client.build_grant_consent, signer, body)


@pytest.fixture
def world() -> World:
    ledger = Ledger(ROLES)
    patient = make_identity("patient")
    ledger.submit_ok(ledger.sign(client.build_register_patient, patient))
    patient_id = compute_patient_id(patient.public.sign_key)
    consent_id = ledger.submit_ok(consent(ledger, patient_id, patient)).tx_id
    return World(ledger, patient, patient_id, consent_id)


# --- standing consents and labels -----------------------------------------------------------------


def test_consent_seals_covered_new_records_and_never_an_unnamed_label(world: World) -> None:
    vitals = world.add("clinic", make_observation(61))
    diagnosis = world.add("clinic", make_condition("synthetic"), ("HIV",))
    elsewhere = world.add("hospital", make_observation(62))
    assert world.readers_of(vitals) == {"patient", "clinic", "insurer"}
    assert world.readers_of(diagnosis) == {"patient", "clinic"}
    assert world.readers_of(elsewhere) == {"patient", "hospital"}  # not a named author
    assert st.get_record_labels(world.ledger.state, diagnosis) == ("HIV",)
    record = st.get_record(world.ledger.state, vitals)
    assert record is not None
    assert open_record(record, world.who("insurer")).resource["valueQuantity"]["value"] == 61


def test_consent_naming_a_label_covers_records_with_it(world: World) -> None:
    world.ledger.submit_ok(consent(world.ledger, world.patient_id, world.patient, labels=("HIV", "R")))
    assert "insurer" in world.readers_of(world.add("clinic", make_condition("a"), ("HIV", "R")))
    assert "insurer" not in world.readers_of(world.add("clinic", make_condition("b"), ("HIV", "PSY")))


def test_revocation_stops_sealing_from_its_block_on(world: World) -> None:
    before = world.add("clinic", make_observation(63))
    world.ledger.submit_ok(world.ledger.sign(client.build_revoke, world.patient, world.consent_id))
    after = world.add("clinic", make_observation(64))
    assert "insurer" in world.readers_of(before)
    assert world.readers_of(after) == {"patient", "clinic"}


def _sealed_for_insurer(world: World, resource: dict[str, Any], labels: tuple[str, ...]) -> Any:
    readers = [world.enc("patient"), world.enc("clinic"), world.enc("insurer")]
    encrypted = encrypt_record(
        resource, patient_id=world.patient_id, author=world.key("clinic"), readers=readers
    )
    if labels:
        return world.ledger.sign(
            claims_client.build_add_labelled_record, world.who("clinic"), world.patient_id, encrypted, labels
        )
    return world.ledger.sign(client.build_add_record, world.who("clinic"), world.patient_id, encrypted)


def test_invalid_labelled_record_sealed_for_a_consent_not_naming_it(world: World) -> None:
    world.ledger.submit_rejected(
        _sealed_for_insurer(world, make_condition("x"), ("SUD",)), "health.record_readers"
    )


def test_invalid_record_sealed_for_the_insurer_after_revocation(world: World) -> None:
    world.ledger.submit_ok(world.ledger.sign(client.build_revoke, world.patient, world.consent_id))
    world.ledger.submit_rejected(
        _sealed_for_insurer(world, make_observation(65), ()), "health.record_readers"
    )


def test_a_correction_keeps_its_records_labels(world: World) -> None:
    diagnosis = world.add("clinic", make_condition("first"), ("PSY",))
    readers = [world.enc("patient"), world.enc("clinic")]
    encrypted = encrypt_record(
        make_condition("second"),
        patient_id=world.patient_id,
        author=world.key("clinic"),
        readers=readers,
        supersedes=diagnosis,
    )
    signed = world.ledger.sign(
        client.build_supersede_record, world.who("clinic"), world.patient_id, diagnosis, encrypted
    )
    corrected = world.ledger.submit_ok(signed).tx_id
    assert st.get_record_labels(world.ledger.state, corrected) == ("PSY",)


@pytest.mark.parametrize(
    ("changes", "signer", "rule"),
    [
        ({"grantee": make_identity("research").public.sign_key}, "patient", "health.consent_grantee"),
        ({"grantee": make_identity("clinic").public.sign_key}, "patient", "health.consent_grantee"),
        ({}, "insurer", "health.not_authorised"),
        ({"authors": [make_identity("insurer-2").public.sign_key]}, "patient", "health.consent_scope"),
        ({"authors": []}, "patient", "health.consent_scope"),
        ({"record_types": ()}, "patient", "health.consent_scope"),
        ({"from_ms": 10, "to_ms": 5}, "patient", "health.consent_scope"),
        ({"expires_ms": 1}, "patient", "health.expiry"),
    ],
)
def test_invalid_consent(world: World, changes: dict[str, Any], signer: str, rule: str) -> None:
    identity = world.patient if signer == "patient" else world.who(signer)
    world.ledger.submit_rejected(consent(world.ledger, world.patient_id, identity, **changes), rule)


def test_compute_security_labels_from_meta_security_and_condition_codes() -> None:
    resource = {
        "resourceType": "Bundle",
        "type": "collection",
        "meta": {
            "security": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"},
                {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "N"},
                {"system": "http://example.org/other", "code": "HIV"},
            ]
        },
        "entry": [
            {
                "resource": {
                    "resourceType": "Condition",
                    "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "F10.2"}]},
                }
            },
            {
                "resource": {
                    "resourceType": "Observation",
                    "meta": {
                        "security": [
                            {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "ETH"}
                        ]
                    },
                }
            },
        ],
    }
    assert compute_security_labels(resource) == ("ETH", "R", "SUD")
    assert compute_security_labels(make_observation(60)) == ()


# --- claims -----------------------------------------------------------------------------------------


@pytest.fixture
def filed(world: World) -> tuple[World, bytes, bytes, list[bytes]]:
    encounter = world.add("clinic", make_encounter(1))
    vitals = world.add("clinic", make_observation(66))
    diagnosis = world.add("clinic", make_condition("c"), ("HIV",))
    records = sorted([encounter, vitals, diagnosis])
    claim_id = world.ledger.submit_ok(world.file(encounter, records)).tx_id
    return world, claim_id, encounter, records


def test_a_claim_is_read_under_the_consent_and_decided_once_a_version(
    filed: tuple[World, bytes, bytes, list[bytes]],
) -> None:
    world, claim_id, encounter, records = filed
    vitals = next(r for r in records if "insurer" in world.readers_of(r) and r != encounter)
    read = world.ledger.sign(
        claims_client.build_claim_read_receipt, world.who("insurer"), claim_id, world.consent_id, [vitals]
    )
    world.ledger.submit_ok(read)
    world.ledger.submit_ok(world.decide(claim_id, 1, OUTCOME_PENDED))
    world.ledger.submit_rejected(world.decide(claim_id, 1, OUTCOME_APPROVED), "health.claim_decided")
    world.ledger.submit_ok(world.amend(claim_id, 2, records, encounter))
    world.ledger.submit_ok(world.decide(claim_id, 2, OUTCOME_APPROVED))
    stored = st.get_claim(world.ledger.state, claim_id)
    assert stored is not None
    assert (stored.version, stored.status, stored.decided_version) == (2, OUTCOME_APPROVED, 2)
    audit = st.list_audit_events(world.ledger.state, world.patient_id)
    assert [
        (e.event, e.subject_id, e.record_ids) for e in audit if e.event in (EVENT_READ, EVENT_CLAIM_READ)
    ] == [
        (EVENT_READ, world.consent_id, (vitals,)),
        (EVENT_CLAIM_READ, claim_id, (vitals,)),
    ]


def test_claim_events_carry_kinds_and_ids_only(filed: tuple[World, bytes, bytes, list[bytes]]) -> None:
    world, claim_id, _, _ = filed
    signed = world.decide(claim_id, 1, OUTCOME_DENIED)
    tx, _, tx_id = signed
    world.ledger.submit_ok(signed)
    (effect,) = events.compute_tx_effects(world.ledger.state, tx, tx_id)
    assert effect.kind == events.EVENT_CLAIM_DECIDED
    assert effect.ids == (("claim_id", claim_id),)
    assert set(effect.institutions) == {world.key("clinic"), world.key("insurer")}


def test_an_insurers_claim_reads_are_the_patients_and_the_insurers_events_only(
    filed: tuple[World, bytes, bytes, list[bytes]],
) -> None:
    """docs/health.md, "Who sees which event": the filing clinic sees its claim's filing and
    decisions, not the insurer's reads under the patient's consent (nor the consent's grant id)."""
    world, claim_id, encounter, _ = filed
    signed = world.ledger.sign(
        claims_client.build_claim_read_receipt, world.who("insurer"), claim_id, world.consent_id, [encounter]
    )
    tx, _, tx_id = signed
    world.ledger.submit_ok(signed)
    effects = events.compute_tx_effects(world.ledger.state, tx, tx_id)
    assert [e.kind for e in effects] == [events.EVENT_RECORD_READ, events.EVENT_CLAIM_READ]
    for effect in effects:
        assert effect.institutions == (world.key("insurer"),)
        assert effect.patient_id == world.patient_id
        assert ("grant_id", world.consent_id) in effect.ids


def test_invalid_claims(filed: tuple[World, bytes, bytes, list[bytes]]) -> None:
    world, claim_id, encounter, records = filed
    ledger = world.ledger
    vitals = next(r for r in records if r != encounter and "insurer" in world.readers_of(r))
    diagnosis = next(r for r in records if st.get_record_labels(ledger.state, r))
    ledger.submit_rejected(world.file(encounter, records, by="insurer"), "health.claim_filer")
    ledger.submit_rejected(world.file(encounter, records, by="hospital"), "health.claim_encounter")
    ledger.submit_rejected(world.file(vitals, records), "health.claim_encounter")  # not an Encounter
    ledger.submit_rejected(world.file(encounter, records, insurer="research"), "health.claim_insurer")
    ledger.submit_rejected(world.file(encounter, []), "health.claim_records")
    ledger.submit_rejected(world.file(encounter, [bytes(32)]), "health.claim_records")
    wrong_readers = seal_test_claim(
        1,
        [world.enc("patient"), world.enc("clinic"), world.enc("insurer"), world.enc("research")],
        patient_id=world.patient_id,
        clinic=world.key("clinic"),
        insurer=world.key("insurer"),
        encounter_id=encounter,
        version=1,
    )
    ledger.submit_rejected(
        ledger.sign(
            claims_client.build_file_claim,
            world.who("clinic"),
            world.patient_id,
            world.key("insurer"),
            encounter,
            records,
            wrong_readers,
        ),
        "health.claim_envelope",
    )
    ledger.submit_rejected(
        world.decide(claim_id, 1, OUTCOME_APPROVED, by="insurer-2"), "health.not_claim_insurer"
    )
    ledger.submit_rejected(
        world.decide(claim_id, 1, OUTCOME_APPROVED, by="clinic"), "health.not_claim_insurer"
    )
    ledger.submit_rejected(world.decide(claim_id, 2, OUTCOME_APPROVED), "health.claim_version")
    ledger.submit_rejected(
        world.amend(claim_id, 2, records, encounter, by="hospital"), "health.not_claim_filer"
    )
    ledger.submit_rejected(world.amend(claim_id, 3, records, encounter), "health.claim_version")
    receipt = claims_client.build_claim_read_receipt
    ledger.submit_rejected(
        ledger.sign(receipt, world.who("insurer"), claim_id, world.consent_id, [diagnosis]),
        "health.receipt_records",
    )
    ledger.submit_rejected(
        ledger.sign(receipt, world.who("insurer-2"), claim_id, world.consent_id, [vitals]),
        "health.not_claim_insurer",
    )
    other = world.add("clinic", make_observation(67))  # sealed for the insurer, but not cited
    ledger.submit_rejected(
        ledger.sign(receipt, world.who("insurer"), claim_id, world.consent_id, [other]),
        "health.receipt_records",
    )
    ledger.submit_ok(world.decide(claim_id, 1, OUTCOME_APPROVED))
    ledger.submit_rejected(world.amend(claim_id, 2, records, encounter), "health.claim_closed")
    stored = st.get_claim(ledger.state, claim_id)
    assert stored is not None
    assert (stored.status, stored.version) == (OUTCOME_APPROVED, 1)


ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


def _condition(
    code: dict[str, str] | None = None, security: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Condition", "subject": {"reference": "Patient/x"}}
    if code is not None:
        resource["code"] = {"coding": [code]}
    if security is not None:
        resource["meta"] = {"security": security}
    return resource


@pytest.mark.parametrize(
    ("resource", "labels"),
    [
        # The attacker's spellings (each was computed as no label, so a consent naming no label
        # would have had the record sealed for the insurer).
        (
            _condition(
                security=[{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "hiv"}]
            ),
            ("HIV",),
        ),
        (_condition(security=[{"system": "urn:oid:2.16.840.1.113883.5.4", "code": "HIV"}]), ("HIV",)),
        (_condition(security=[{"system": "http://hl7.org/fhir/v3/ActCode", "code": "PSY"}]), ("PSY",)),
        (_condition(security=[{"code": "HIV"}]), ("HIV",)),  # no system: fail closed
        (_condition(security=[{"system": "urn:oid:2.16.840.1.113883.5.25", "code": "R"}]), ("R",)),
        (_condition(code={"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "B20"}), ("HIV",)),
        (_condition(code={"system": "urn:oid:2.16.840.1.113883.6.90", "code": "f11.2"}), ("SUD",)),
        (_condition(code={"system": "urn:oid:2.16.840.1.113883.6.96", "code": "86406008"}), ("HIV",)),
        # What restricts nothing stays unlabelled.
        (_condition(security=[{"system": "urn:oid:2.16.840.1.113883.5.25", "code": "N"}]), ()),
        (_condition(security=[{"system": "http://example.org/other", "code": "HIV"}]), ()),
        (_condition(code={"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "E11"}), ()),
    ],
)
def test_attack_labels_are_found_whatever_the_spelling(
    resource: dict[str, Any], labels: tuple[str, ...]
) -> None:
    assert compute_security_labels(resource) == labels


# --- a removed insurer (issue 16, ADR 0020) -------------------------------------------------------


def test_a_removed_insurer_is_sealed_consented_and_claimed_nothing(world: World) -> None:
    w = world
    before = w.add("clinic", make_encounter(1))
    assert "insurer" in w.readers_of(before)  # its standing consent covers the clinic's records
    validator = w.ledger.validator_identities[0]  # one validator: its approval alone passes
    w.ledger.submit_ok(
        w.ledger.sign(client.build_institution_status, validator, KIND_INSTITUTION_REMOVE, w.key("insurer"))
    )
    # Nothing new is sealed for it (the consent no longer requires it; sealing for it is refused) ...
    after = w.add("clinic", make_encounter(2))
    assert "insurer" not in w.readers_of(after)
    # ... no new consent names it, no claim is filed to it, and it files nothing.
    w.ledger.submit_rejected(consent(w.ledger, w.patient_id, w.patient), "health.institution_inactive")
    w.ledger.submit_rejected(w.file(after, [after]), "health.institution_inactive")
    w.ledger.submit_rejected(w.decide(w.consent_id, 1, OUTCOME_APPROVED), "health.institution_inactive")
    # Another insurer is unaffected.
    w.ledger.submit_ok(w.file(after, [after], insurer="insurer-2"))
