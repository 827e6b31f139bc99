"""A record built before a standing consent committed, committed after it (ADR 0017, amendment 2).

The author's node decides a record's readers when it builds the tx; a consent that commits in
between used to leave that record sealed for nobody but the patient and the author, for good (the
consent's re-sealing had computed its records before this one existed). On a layout-4 chain the
rules refuse it (`health.record_consent_unsealed`, deterministic: the consent's terms and the
block's time), and the node seals it again from the new state; a record the consent covers only
inside the margin around its window or expiry may go either way. Refusals go through
`Ledger.submit_rejected` (nothing changed).
"""

from __future__ import annotations

from typing import Any

import pytest
from health_testkit import Ledger, make_condition, make_identity, make_observation

from medledger.health import claims_client, client, policy
from medledger.health import state as st
from medledger.health.records import encrypt_record, open_record
from medledger.health.types import STATE_LAYOUT_ENC_KEY_CHECK, STATE_LAYOUT_LATEST, compute_patient_id

ROLES = {"clinic": "clinic", "hospital": "hospital", "insurer": "insurer"}
DAY_MS = 24 * 3600 * 1000
MARGIN_MS = policy.CONSENT_SEAL_MARGIN_MS


class World:
    def __init__(self, layout: int = STATE_LAYOUT_LATEST) -> None:
        self.ledger = Ledger(ROLES, layout=layout)
        self.patient = make_identity("patient")
        self.ledger.submit_ok(self.ledger.sign(client.build_register_patient, self.patient))
        self.patient_id = compute_patient_id(self.patient.public.sign_key)

    def build(
        self, resource: dict[str, Any], labels: tuple[str, ...] = (), author: str = "clinic"
    ) -> client.SignedTx:
        """The record tx as the author's node builds it now (`compute_node_version_sealing`)."""
        patient = st.get_patient(self.ledger.state, self.patient_id)
        assert patient is not None
        institution = self.ledger.institutions[author]
        readers = policy.compute_node_record_readers(
            self.ledger.state,
            patient,
            institution,
            resource["resourceType"],
            self.ledger.next_time_ms,
            labels,
        )
        encrypted = encrypt_record(
            resource, patient_id=self.patient_id, author=institution.sign_key, readers=sorted(readers)
        )
        identity = make_identity(author)
        if labels:
            return self.ledger.sign(
                claims_client.build_add_labelled_record, identity, self.patient_id, encrypted, labels
            )
        return self.ledger.sign(client.build_add_record, identity, self.patient_id, encrypted)

    def consent(self, **changes: Any) -> bytes:
        terms: dict[str, Any] = {
            "record_types": ("Condition", "Observation"),
            "authors": [make_identity("clinic").public.sign_key],
            "expires_ms": self.ledger.next_time_ms + 30 * DAY_MS,
        }
        terms.update(changes)
        body = claims_client.make_consent(self.patient_id, make_identity("insurer").public.sign_key, **terms)
        return self.ledger.submit_ok(
            self.ledger.sign(claims_client.build_grant_consent, self.patient, body)
        ).tx_id

    def insurer_reads(self, record_id: bytes) -> bool:
        record = st.get_record(self.ledger.state, record_id)
        assert record is not None
        return make_identity("insurer").public.enc_key in record.envelope.readers


def test_invalid_record_built_before_a_consent_and_committed_after_it() -> None:
    world = World()
    stale = world.build(make_observation(71))  # the node seals before it knows the consent
    world.consent()
    world.ledger.submit_rejected(stale, "health.record_consent_unsealed")
    # The node seals it again from the state after the consent's block: the insurer can read it.
    again = world.ledger.submit_ok(world.build(make_observation(71))).tx_id
    assert world.insurer_reads(again)
    record = st.get_record(world.ledger.state, again)
    assert record is not None
    assert open_record(record, make_identity("insurer")).resource["valueQuantity"]["value"] == 71


def test_a_record_the_consent_does_not_cover_is_not_required_for_the_insurer() -> None:
    world = World()
    labelled = world.build(make_condition("synthetic"), ("HIV",))
    other_author = world.build(make_observation(72), author="hospital")
    world.consent()
    # An unnamed label and an unnamed author: the consent covers neither, so neither is refused.
    assert not world.insurer_reads(world.ledger.submit_ok(labelled).tx_id)
    assert not world.insurer_reads(world.ledger.submit_ok(other_author).tx_id)


def test_a_grant_answering_an_inquiry_is_not_required() -> None:
    world = World()
    stale = world.build(make_observation(73))
    insurer = make_identity("insurer")
    signed = world.ledger.sign(
        client.build_request_access,
        insurer,
        world.patient_id,
        client.make_scope(record_types=("Observation",)),
        "HPAYMT",
        world.ledger.next_time_ms + DAY_MS,
        "synthetic claim check",
        patient_enc_key=world.patient.public.enc_key,
    )
    inquiry_id = world.ledger.submit_ok(signed).tx_id
    world.ledger.submit_ok(world.ledger.sign(client.build_grant, world.patient, inquiry_id, []))
    # The grant covers future Observations, but only a standing consent's insurer is required.
    assert not world.insurer_reads(world.ledger.submit_ok(stale).tx_id)


@pytest.mark.parametrize("edge", ["expires_ms", "from_ms", "to_ms"])
@pytest.mark.parametrize("inside", [True, False])
def test_inside_the_margin_sealing_for_the_consent_is_allowed_not_required(edge: str, inside: bool) -> None:
    """At the edges of a consent (its expiry, its window's ends) a node cannot know on which side
    the block's time falls: within `CONSENT_SEAL_MARGIN_MS` of an edge the insurer is not required
    (a node may have left it out), one ms further it is."""
    world = World()
    stale = world.build(make_observation(74))  # built before the consent: not sealed for it
    record_ms = world.ledger.next_time_ms + 1_000  # the consent's block, then the record's
    shift = 0 if inside else 1
    edges = {
        "expires_ms": record_ms + MARGIN_MS + shift,
        "from_ms": record_ms - MARGIN_MS + 1 - shift,
        "to_ms": record_ms + MARGIN_MS - 1 + shift,
    }
    world.consent(**{edge: edges[edge]})
    if inside:
        assert not world.insurer_reads(world.ledger.submit_ok(stale).tx_id)
    else:
        world.ledger.submit_rejected(stale, "health.record_consent_unsealed")


def test_a_consent_revoked_in_between_refuses_the_record_sealed_for_it() -> None:
    world = World()
    consent_id = world.consent()
    sealed = world.build(make_observation(75))
    world.ledger.submit_ok(world.ledger.sign(client.build_revoke, world.patient, consent_id))
    world.ledger.submit_rejected(sealed, "health.record_readers")
    assert not world.insurer_reads(world.ledger.submit_ok(world.build(make_observation(75))).tx_id)


def test_a_layout_3_chain_replays_the_race_as_it_was_certified() -> None:
    world = World(STATE_LAYOUT_ENC_KEY_CHECK)
    stale = world.build(make_observation(76))
    world.consent()
    assert not world.insurer_reads(world.ledger.submit_ok(stale).tx_id)
