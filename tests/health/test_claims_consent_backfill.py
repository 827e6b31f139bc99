"""A standing consent covers the records already in its window (ADR 0017, amendment).

The patient's client re-seals, once the consent is committed, the keys of the records already on
the ledger that the consent covers: `health.consent_manifest` declares them (part digests bound to
the consent's id) and `health.grant_part` txs carry the keys, each record checked against the
consent's scope and terms (authors, labels). Refusals go through `Ledger.submit_rejected`.
"""

from __future__ import annotations

from typing import Any

import pytest
from health_testkit import CHAIN_ID, Ledger, make_condition, make_identity, make_observation

from medledger.crypto import Identity
from medledger.health import claims_client, client, policy
from medledger.health import state as st
from medledger.health.records import encrypt_record, open_record, reseal_record_keys
from medledger.health.types import RecordState, compute_patient_id

ROLES = {"clinic": "clinic", "hospital": "hospital", "insurer": "insurer"}
DAY_MS = 24 * 3600 * 1000


class World:
    def __init__(self) -> None:
        self.ledger = Ledger(ROLES)
        self.patient = make_identity("patient")
        self.insurer = make_identity("insurer")
        self.ledger.submit_ok(self.ledger.sign(client.build_register_patient, self.patient))
        self.patient_id = compute_patient_id(self.patient.public.sign_key)

    def add(self, author: str, resource: dict[str, Any], labels: tuple[str, ...] = ()) -> RecordState:
        """A record written before any consent: sealed for the patient and its author only."""
        identity = make_identity(author)
        readers = sorted([self.patient.public.enc_key, identity.public.enc_key])
        encrypted = encrypt_record(
            resource, patient_id=self.patient_id, author=identity.public.sign_key, readers=readers
        )
        if labels:
            signed = self.ledger.sign(
                claims_client.build_add_labelled_record, identity, self.patient_id, encrypted, labels
            )
        else:
            signed = self.ledger.sign(client.build_add_record, identity, self.patient_id, encrypted)
        record = st.get_record(self.ledger.state, self.ledger.submit_ok(signed).tx_id)
        assert record is not None
        return record

    def consent(self, **changes: Any) -> bytes:
        terms: dict[str, Any] = {
            "record_types": ("Condition", "Observation"),
            "authors": [make_identity("clinic").public.sign_key],
            "expires_ms": self.ledger.next_time_ms + 30 * DAY_MS,
        }
        terms.update(changes)
        body = claims_client.make_consent(self.patient_id, self.insurer.public.sign_key, **terms)
        signed = self.ledger.sign(claims_client.build_grant_consent, self.patient, body)
        return self.ledger.submit_ok(signed).tx_id

    def reseal(self, consent_id: bytes, records: list[RecordState], signer: Identity | None = None) -> Any:
        keys = reseal_record_keys(records, self.patient, self.insurer.public.enc_key)
        return claims_client.build_consent_in_parts(
            signer or self.patient,
            consent_id,
            keys,
            chain_id=CHAIN_ID,
            nonce=self.ledger.nonce(),
            timestamp_ms=self.ledger.next_time_ms,
        )


@pytest.fixture
def world() -> World:
    return World()


def test_a_consent_re_seals_the_records_already_in_its_scope(world: World) -> None:
    old = [world.add("clinic", make_observation(n)) for n in (1, 2)]
    world.ledger.advance(DAY_MS)
    consent_id = world.consent()
    manifest, parts = world.reseal(consent_id, old)
    assert manifest[0].kind == "health.consent_manifest"
    world.ledger.submit_ok(manifest)
    for part in parts:
        world.ledger.submit_ok(part)
    grant = st.get_grant(world.ledger.state, consent_id)
    assert grant is not None
    now = world.ledger.next_time_ms
    insurer = world.ledger.institutions["insurer"]
    for record in old:
        access = policy.get_read_access(world.ledger.state, insurer, record, now)
        assert access is not None
        assert access.grant is not None
        assert access.grant.grant_id == consent_id
        sealed_key = policy.get_grant_sealed_key(world.ledger.state, grant, record.record_id)
        opened = open_record(record, world.insurer, grant=grant, sealed_key=sealed_key)
        assert opened.resource["resourceType"] == "Observation"
    # The audit trail lists exactly the records shared, and the insurer sees it.
    trail = policy.get_institution_audit(world.ledger.state, world.patient_id, insurer.sign_key)
    (part_event,) = [e for e in trail if e.event == "grant_part"]
    assert set(part_event.record_ids) == {r.record_id for r in old}


def _one_of_each(world: World) -> dict[str, RecordState]:
    return {
        "covered": world.add("clinic", make_observation(3)),
        "labelled": world.add("clinic", make_condition("hiv"), ("HIV",)),
        "other_author": world.add("hospital", make_observation(4)),
    }


@pytest.mark.parametrize("which", ["labelled", "other_author"])
def test_invalid_consent_part_re_sealing_a_record_its_terms_do_not_cover(world: World, which: str) -> None:
    records = _one_of_each(world)
    consent_id = world.consent()
    manifest, (part,) = world.reseal(consent_id, [records["covered"], records[which]])
    world.ledger.submit_ok(manifest)  # the manifest declares ids only: the part is judged
    world.ledger.submit_rejected(part, "health.grant_records")


def test_a_consent_naming_a_label_re_seals_records_with_it(world: World) -> None:
    labelled = world.add("clinic", make_condition("hiv"), ("HIV",))
    consent_id = world.consent(labels=("HIV",))
    manifest, parts = world.reseal(consent_id, [labelled])
    world.ledger.submit_ok(manifest)
    world.ledger.submit_ok(parts[0])


def test_invalid_consent_part_outside_its_window(world: World) -> None:
    old = world.add("clinic", make_observation(6))
    consent_id = world.consent(from_ms=old.time_ms + 1)
    manifest, (part,) = world.reseal(consent_id, [old])
    world.ledger.submit_ok(manifest)
    world.ledger.submit_rejected(part, "health.grant_records")


def test_invalid_consent_manifests(world: World) -> None:
    old = world.add("clinic", make_observation(7))
    consent_id = world.consent()
    other = make_identity("someone")
    world.ledger.submit_rejected(world.reseal(consent_id, [old], other)[0], "health.not_authorised")
    world.ledger.submit_rejected(world.reseal(b"\x01" * 32, [old])[0], "health.grant_unknown")
    manifest, _ = world.reseal(consent_id, [old])
    world.ledger.submit_ok(manifest)
    world.ledger.submit_rejected(world.reseal(consent_id, [old])[0], "health.grant_manifest")  # once
    revoked = world.consent(record_types=("Observation",))
    world.ledger.submit_ok(world.ledger.sign(client.build_revoke, world.patient, revoked))
    world.ledger.submit_rejected(world.reseal(revoked, [old])[0], "health.grant_revoked")


def test_invalid_consent_part_after_revocation(world: World) -> None:
    old = world.add("clinic", make_observation(8))
    consent_id = world.consent()
    manifest, (part,) = world.reseal(consent_id, [old])
    world.ledger.submit_ok(manifest)
    world.ledger.submit_ok(world.ledger.sign(client.build_revoke, world.patient, consent_id))
    world.ledger.submit_rejected(part, "health.grant_revoked")
