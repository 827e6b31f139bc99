"""Attacks on the claims and research rules (issues 12 and 13), as hostile parties would mount them.

Each attack is a test: a passing one documents a defence that holds, a `test_invalid_*` goes through
`Ledger.submit_rejected` (refused by the named rule, nothing changed). The worlds and helpers are
those of the rules' own tests (`test_claims_rules`, `test_claims_consent_backfill`,
`test_claims_label_paths`, `test_research_rules`), imported, not copied.

- A hostile patient, representative or insurer tries to get records re-sealed to an insurer
  outside a standing consent's scope, or to make a consent manifest or its parts lie.
- A hostile clinic tries to drop a record's labels through a correction or a document.
- A hostile institution listens for events the audience rules keep from it.
- A hostile research institute or asked institution tries to drain, overflow or dodge the privacy
  budget, answer twice or for others, or post an answer that says it added too little noise.
- Anyone sends malformed bodies: every refusal is a typed rejection, never an unhandled error.
- Two nodes with different hash seeds replay the same blocks to the same state root.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import test_claims_consent_backfill as backfill
import test_claims_label_paths as label_paths
import test_grant_parts as grant_parts_tests
import test_research_rules as rr
from health_testkit import CHAIN_ID, Ledger, make_condition, make_identity, make_observation
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as stg
from test_claims_rules import ROLES as CLAIMS_ROLES
from test_claims_rules import World as ClaimsWorld
from test_claims_rules import consent

from medledger.chain.codec import Bytes, HumanText, Seq, Struct, Text, UInt
from medledger.chain.txbuilder import sign_tx
from medledger.chain.types import ZERO_HASH, Block, Header
from medledger.chain.validation import compute_tx_root
from medledger.crypto.envelope import SEALED_KEY_SIZE
from medledger.health import claims_client, claims_types, client, events, policy, research_types, rights_seal
from medledger.health import state as st
from medledger.health.claims_types import ConsentManifestBody, ConsentTerms
from medledger.health.records import encrypt_record, reseal_record_keys
from medledger.health.research_types import (
    CELL_NOISED,
    CELL_TOTAL,
    EPSILON_TOTAL_MICRO_MAX,
    GROUP_NONE,
    QUERY_INSTITUTIONS_MAX,
    TEMPLATE_COUNT,
    AnswerCell,
    PostAnswerBody,
    QueryParams,
    QueryTemplate,
    StudyMembershipBody,
)
from medledger.health.types import (
    GRANT_PART_RECORDS_MAX,
    KIND_CONSENT_MANIFEST,
    KIND_GRANT_CONSENT,
    KIND_GRANT_PART,
    KIND_JOIN_STUDY,
    KIND_LEAVE_STUDY,
    KIND_POST_ANSWER,
    KIND_REGISTER_STUDY,
    KIND_SUBMIT_QUERY,
    GrantManifestBody,
    GrantPartBody,
    RecordKey,
    compute_grant_part_digest,
    compute_patient_id,
)

DAY_MS = 24 * 3600 * 1000


# --- (a), (c): a standing consent's re-sealing -----------------------------------------------------


@pytest.fixture
def bw() -> backfill.World:
    return backfill.World()


def _fake_keys(record_ids: list[bytes]) -> list[RecordKey]:
    """Keys the rules cannot look inside: what a hostile client would label any id with."""
    return [RecordKey(record_id, bytes(SEALED_KEY_SIZE)) for record_id in sorted(record_ids)]


def _part(world: backfill.World, signer: Any, consent_id: bytes, index: int, keys: list[RecordKey]) -> Any:
    return world.ledger.sign(client.build_grant_part, signer, consent_id, index, keys)


def _manifest(world: backfill.World, signer: Any, body: ConsentManifestBody) -> Any:
    return world.ledger.sign(client.build_tx, signer, KIND_CONSENT_MANIFEST, body)


def test_invalid_consent_part_after_the_consent_expired(bw: backfill.World) -> None:
    old = bw.add("clinic", make_observation(1))
    consent_id = bw.consent(expires_ms=bw.ledger.next_time_ms + 2 * DAY_MS)
    manifest, (part,) = bw.reseal(consent_id, [old])
    bw.ledger.submit_ok(manifest)
    bw.ledger.advance(3 * DAY_MS)
    bw.ledger.submit_rejected(part, "health.grant_expired")


def test_invalid_consent_manifest_after_the_consent_expired(bw: backfill.World) -> None:
    old = bw.add("clinic", make_observation(1))
    consent_id = bw.consent(expires_ms=bw.ledger.next_time_ms + 2 * DAY_MS)
    bw.ledger.advance(3 * DAY_MS)
    bw.ledger.submit_rejected(bw.reseal(consent_id, [old])[0], "health.grant_expired")


def test_invalid_consent_part_after_revocation(bw: backfill.World) -> None:
    old = [bw.add("clinic", make_observation(n)) for n in (1, 2)]
    consent_id = bw.consent()
    manifest, (part,) = bw.reseal(consent_id, old)
    bw.ledger.submit_ok(manifest)
    bw.ledger.submit_ok(bw.ledger.sign(client.build_revoke, bw.patient, consent_id))
    bw.ledger.submit_rejected(part, "health.grant_revoked")
    for record in old:
        assert st.get_grant_key(bw.ledger.state, consent_id, record.record_id) is None


def test_invalid_consent_parts_by_anyone_but_a_current_signer(bw: backfill.World) -> None:
    """A representative signs the consent and its manifest, then is removed: neither they, nor
    the patient, nor the insurer, nor another patient may send its parts."""
    guardian = make_identity("guardian")
    bw.ledger.submit_ok(
        bw.ledger.sign(client.build_add_representative, bw.patient, bw.patient_id, guardian.public.sign_key)
    )
    old = bw.add("clinic", make_observation(1))
    body = claims_client.make_consent(
        bw.patient_id,
        bw.insurer.public.sign_key,
        record_types=("Observation",),
        authors=[make_identity("clinic").public.sign_key],
        expires_ms=bw.ledger.next_time_ms + 30 * DAY_MS,
    )
    consent_id = bw.ledger.submit_ok(bw.ledger.sign(claims_client.build_grant_consent, guardian, body)).tx_id
    keys = reseal_record_keys([old], bw.patient, bw.insurer.public.enc_key)
    manifest, (part,) = claims_client.build_consent_in_parts(
        guardian, consent_id, keys, chain_id=CHAIN_ID, nonce=bw.ledger.nonce(), timestamp_ms=0
    )
    bw.ledger.submit_ok(manifest)
    for someone in (bw.patient, bw.insurer, make_identity("patient-2")):
        bw.ledger.submit_rejected(_part(bw, someone, consent_id, 0, list(keys)), "health.not_authorised")
    bw.ledger.submit_ok(
        bw.ledger.sign(
            client.build_remove_representative, bw.patient, bw.patient_id, guardian.public.sign_key
        )
    )
    bw.ledger.submit_rejected(_part(bw, guardian, consent_id, 0, list(keys)), "health.not_authorised")
    del part


def test_invalid_consent_part_carrying_another_patients_record(bw: backfill.World) -> None:
    other = make_identity("patient-2")
    bw.ledger.submit_ok(bw.ledger.sign(client.build_register_patient, other))
    other_id = compute_patient_id(other.public.sign_key)
    clinic = make_identity("clinic")
    encrypted = encrypt_record(
        make_observation(9),
        patient_id=other_id,
        author=clinic.public.sign_key,
        readers=sorted([other.public.enc_key, clinic.public.enc_key]),
    )
    foreign = bw.ledger.submit_ok(bw.ledger.sign(client.build_add_record, clinic, other_id, encrypted)).tx_id
    consent_id = bw.consent()
    keys = _fake_keys([foreign])
    digest = compute_grant_part_digest(consent_id, 0, (foreign,))
    bw.ledger.submit_ok(_manifest(bw, bw.patient, ConsentManifestBody(consent_id, 1, (digest,))))
    bw.ledger.submit_rejected(_part(bw, bw.patient, consent_id, 0, keys), "health.grant_records")


def test_invalid_consent_manifest_for_another_patients_consent(bw: backfill.World) -> None:
    old = bw.add("clinic", make_observation(1))
    consent_id = bw.consent()
    other = make_identity("patient-2")
    bw.ledger.submit_ok(bw.ledger.sign(client.build_register_patient, other))
    bw.ledger.submit_rejected(bw.reseal(consent_id, [old], other)[0], "health.not_authorised")


def test_invalid_consent_part_re_sealing_a_correction_of_a_labelled_record(bw: backfill.World) -> None:
    """A plain correction of an HIV-labelled record inherits the label: a consent naming no label
    cannot have it re-sealed, however the correction was written."""
    labelled = bw.add("clinic", make_condition("first"), ("HIV",))
    clinic = make_identity("clinic")
    encrypted = encrypt_record(
        make_condition("second"),
        patient_id=bw.patient_id,
        author=clinic.public.sign_key,
        readers=sorted([bw.patient.public.enc_key, clinic.public.enc_key]),
        supersedes=labelled.record_id,
    )
    signed = bw.ledger.sign(
        client.build_supersede_record, clinic, bw.patient_id, labelled.record_id, encrypted
    )
    correction = st.get_record(bw.ledger.state, bw.ledger.submit_ok(signed).tx_id)
    assert correction is not None
    assert st.get_record_labels(bw.ledger.state, correction.record_id) == ("HIV",)
    consent_id = bw.consent(record_types=("Condition",))
    manifest, (part,) = bw.reseal(consent_id, [correction])
    bw.ledger.submit_ok(manifest)
    bw.ledger.submit_rejected(part, "health.grant_records")


def test_invalid_consent_part_re_sealing_an_old_version_of_a_record_now_labelled(bw: backfill.World) -> None:
    """A record corrected into an HIV diagnosis: its corrected version carries HIV (from its
    content), and so is never re-sealed for a consent naming no label; nor is the version it
    replaced, which is the same record before correction. The insurer would otherwise read the
    first version of what the ledger now labels HIV (its labels and its chain are public)."""
    first = bw.add("clinic", make_condition("first"))
    clinic = make_identity("clinic")
    encrypted = encrypt_record(
        label_paths.hiv_diagnosis(),
        patient_id=bw.patient_id,
        author=clinic.public.sign_key,
        readers=sorted([bw.patient.public.enc_key, clinic.public.enc_key]),
        supersedes=first.record_id,
    )
    signed = bw.ledger.sign(
        claims_client.build_add_labelled_record, clinic, bw.patient_id, encrypted, ("HIV",)
    )
    bw.ledger.submit_ok(signed)
    consent_id = bw.consent(record_types=("Condition",))
    old = st.get_record(bw.ledger.state, first.record_id)
    assert old is not None
    assert st.get_record_labels(bw.ledger.state, old.record_id) == ()
    manifest, (part,) = bw.reseal(consent_id, [old])
    bw.ledger.submit_ok(manifest)
    bw.ledger.submit_rejected(part, "health.grant_records")
    assert st.get_grant_key(bw.ledger.state, consent_id, old.record_id) is None


def test_a_consent_naming_the_label_re_seals_every_version(bw: backfill.World) -> None:
    first = bw.add("clinic", make_condition("first"))
    clinic = make_identity("clinic")
    encrypted = encrypt_record(
        label_paths.hiv_diagnosis(),
        patient_id=bw.patient_id,
        author=clinic.public.sign_key,
        readers=sorted([bw.patient.public.enc_key, clinic.public.enc_key]),
        supersedes=first.record_id,
    )
    signed = bw.ledger.sign(
        claims_client.build_add_labelled_record, clinic, bw.patient_id, encrypted, ("HIV",)
    )
    second = st.get_record(bw.ledger.state, bw.ledger.submit_ok(signed).tx_id)
    old = st.get_record(bw.ledger.state, first.record_id)
    assert second is not None
    assert old is not None
    consent_id = bw.consent(record_types=("Condition",), labels=("HIV",))
    manifest, (part,) = bw.reseal(consent_id, [old, second])
    bw.ledger.submit_ok(manifest)
    bw.ledger.submit_ok(part)


def test_the_patients_light_ledger_previews_old_versions_as_the_rules_judge_them() -> None:
    """The client's preview (`PatientLedger.is_consent_covering`, on the verified light ledger)
    and the rules agree: the first version of a record corrected into HIV is not offered for a
    consent that does not name HIV, so a manifest never declares a record its part would fail on."""
    patient, clinic = make_identity("patient"), make_identity("clinic")
    chain = grant_parts_tests.Chain(patient)
    chain.commit([chain.sign(client.build_register_patient, patient)])
    (first_tx,) = grant_parts_tests._records(chain, clinic, [make_condition("first")])
    chain.commit([first_tx])
    encrypted = encrypt_record(
        label_paths.hiv_diagnosis(),
        patient_id=chain.patient_id,
        author=clinic.public.sign_key,
        readers=sorted([patient.public.enc_key, clinic.public.enc_key]),
        supersedes=first_tx[2],
    )
    chain.commit(
        [chain.sign(claims_client.build_add_labelled_record, clinic, chain.patient_id, encrypted, ("HIV",))]
    )
    old = chain.light.get_record(first_tx[2])
    assert old is not None
    plain = ConsentTerms(b"", (clinic.public.sign_key,), ())
    named = ConsentTerms(b"", (clinic.public.sign_key,), ("HIV",))
    for terms, covered in ((plain, False), (named, True)):
        assert chain.light.is_consent_covering(terms, old) is covered
        assert policy.is_consent_covering(chain.ledger.state, terms, old) is covered


def test_invalid_consent_parts_that_lie_about_their_manifest(bw: backfill.World) -> None:
    """A manifest of 257 records (two parts): a short first part, a part past the last, a part
    in another's place, and a part whose ids are not the declared ones are all refused."""
    real = bw.add("clinic", make_observation(1))
    consent_id = bw.consent()
    declared = sorted([real.record_id, *(bytes([0xFF, n]) + bytes(30) for n in range(256))])
    first, second = declared[:GRANT_PART_RECORDS_MAX], declared[GRANT_PART_RECORDS_MAX:]
    digests = (
        compute_grant_part_digest(consent_id, 0, tuple(first)),
        compute_grant_part_digest(consent_id, 1, tuple(second)),
    )
    bw.ledger.submit_rejected(
        _manifest(bw, bw.patient, ConsentManifestBody(consent_id, 257, digests[:1])), "health.grant_manifest"
    )
    bw.ledger.submit_rejected(
        _manifest(bw, bw.patient, ConsentManifestBody(consent_id, 0, ())), "health.grant_manifest"
    )
    bw.ledger.submit_ok(_manifest(bw, bw.patient, ConsentManifestBody(consent_id, 257, digests)))
    bw.ledger.submit_rejected(
        _part(bw, bw.patient, consent_id, 0, _fake_keys(first[:255])), "health.grant_part"
    )
    bw.ledger.submit_rejected(_part(bw, bw.patient, consent_id, 2, _fake_keys(second)), "health.grant_part")
    bw.ledger.submit_rejected(
        _part(bw, bw.patient, consent_id, 4095, _fake_keys(second)), "health.grant_part"
    )
    # Part 1's records sent as part 0's index (the digest binds the index) and vice versa.
    bw.ledger.submit_rejected(
        _part(bw, bw.patient, consent_id, 1, _fake_keys(first[:1])), "health.grant_part_digest"
    )
    swapped = sorted([*second[:0], bytes([0xEE]) + bytes(31)])
    bw.ledger.submit_rejected(
        _part(bw, bw.patient, consent_id, 1, _fake_keys(swapped)), "health.grant_part_digest"
    )
    # The declared ids that are no record of the patient's: refused record by record.
    part_of_real = first if real.record_id in first else second
    index = 0 if part_of_real is first else 1
    bw.ledger.submit_rejected(
        _part(bw, bw.patient, consent_id, index, _fake_keys(part_of_real)), "health.grant_records"
    )


def test_invalid_consent_parts_short_or_unsorted_then_the_declared_one(bw: backfill.World) -> None:
    old = [bw.add("clinic", make_observation(n)) for n in range(3)]
    consent_id = bw.consent()
    keys = reseal_record_keys(old, bw.patient, bw.insurer.public.enc_key)
    ordered = sorted(keys, key=lambda k: k.record_id)
    # Three parts of one record each cannot be declared: parts are full but the last, so a
    # manifest of 3 records has one part of 3; a part of fewer is refused, whatever its index.
    manifest, (part,) = bw.reseal(consent_id, old)
    bw.ledger.submit_ok(manifest)
    bw.ledger.submit_rejected(_part(bw, bw.patient, consent_id, 0, ordered[:2]), "health.grant_part")
    reversed_part = GrantPartBody(consent_id, 0, tuple(ordered[::-1]))
    bw.ledger.submit_rejected(
        bw.ledger.sign(client.build_tx, bw.patient, KIND_GRANT_PART, reversed_part), "health.grant_records"
    )
    bw.ledger.submit_ok(part)
    parts = st.get_grant_parts(bw.ledger.state, consent_id)
    assert parts is not None
    assert parts.is_part_received(0)


def test_invalid_consent_part_re_signed_after_it_arrived(bw: backfill.World) -> None:
    old = bw.add("clinic", make_observation(1))
    consent_id = bw.consent()
    manifest, (part,) = bw.reseal(consent_id, [old])
    bw.ledger.submit_ok(manifest)
    bw.ledger.submit_ok(part)
    keys = reseal_record_keys([old], bw.patient, bw.insurer.public.enc_key)
    bw.ledger.submit_rejected(_part(bw, bw.patient, consent_id, 0, list(keys)), "health.grant_part_duplicate")


def test_invalid_consent_part_of_one_consent_sent_to_another(bw: backfill.World) -> None:
    old = bw.add("clinic", make_observation(1))
    first = bw.consent()
    second = bw.consent(record_types=("Observation",))
    manifest, _ = bw.reseal(first, [old])
    bw.ledger.submit_ok(manifest)
    other_manifest, _ = bw.reseal(second, [old])
    bw.ledger.submit_ok(other_manifest)
    keys = reseal_record_keys([old], bw.patient, bw.insurer.public.enc_key)
    # Part digests bind the consent's id: one consent's declaration does not fit another's ids.
    forged = _manifest(
        bw,
        bw.patient,
        ConsentManifestBody(first, 1, (compute_grant_part_digest(second, 0, (old.record_id,)),)),
    )
    bw.ledger.submit_rejected(forged, "health.grant_manifest")  # once per consent
    bw.ledger.submit_ok(_part(bw, bw.patient, second, 0, list(keys)))
    bw.ledger.submit_ok(_part(bw, bw.patient, first, 0, list(keys)))


def test_invalid_grant_manifest_naming_a_consent_as_its_inquiry(bw: backfill.World) -> None:
    old = bw.add("clinic", make_observation(1))
    consent_id = bw.consent()
    keys = reseal_record_keys([old], bw.patient, bw.insurer.public.enc_key)
    body: GrantManifestBody = client.compute_grant_manifest(consent_id, keys)
    bw.ledger.submit_rejected(
        bw.ledger.sign(client.build_grant_manifest, bw.patient, body), "health.inquiry_unknown"
    )


def test_invalid_consent_manifest_on_an_inquirys_grant(bw: backfill.World) -> None:
    old = bw.add("clinic", make_observation(1))
    insurer = bw.insurer
    scope = client.make_scope(record_types=("Observation",))
    inquiry_id = bw.ledger.submit_ok(
        bw.ledger.sign(
            client.build_request_access,
            insurer,
            bw.patient_id,
            scope,
            "HPAYMT",
            bw.ledger.next_time_ms + DAY_MS,
            "payment",
            patient_enc_key=bw.patient.public.enc_key,
        )
    ).tx_id
    keys = reseal_record_keys([old], bw.patient, insurer.public.enc_key)
    grant_id = bw.ledger.submit_ok(bw.ledger.sign(client.build_grant, bw.patient, inquiry_id, keys)).tx_id
    bw.ledger.submit_rejected(bw.reseal(grant_id, [old])[0], "health.grant_unknown")


# --- (b): labels survive every correction and document path ----------------------------------------


@pytest.fixture
def lw() -> label_paths.World:
    return label_paths.World()


def _everyone(world: label_paths.World) -> list[bytes]:
    return sorted(e.public.enc_key for e in (world.patient, world.clinic, world.insurer))


def test_invalid_plain_correction_of_a_labelled_record_sealed_for_the_insurer(lw: label_paths.World) -> None:
    labelled = lw.add({**make_observation(1), "meta": {"security": [{"code": "PSY"}]}})
    encrypted = encrypt_record(
        make_observation(2),
        patient_id=lw.patient_id,
        author=lw.clinic.public.sign_key,
        readers=_everyone(lw),
        supersedes=labelled,
    )
    signed = lw.ledger.sign(client.build_supersede_record, lw.clinic, lw.patient_id, labelled, encrypted)
    lw.ledger.submit_rejected(signed, "health.record_readers")


def test_invalid_plain_amendment_correction_of_a_labelled_record_sealed_for_the_insurer(
    lw: label_paths.World,
) -> None:
    labelled = lw.add({**make_observation(1), "meta": {"security": [{"code": "R"}]}})
    amendment = lw.ask_amendment(labelled)
    encrypted = encrypt_record(
        make_observation(2),
        patient_id=lw.patient_id,
        author=lw.clinic.public.sign_key,
        readers=_everyone(lw),
        supersedes=labelled,
    )
    signed = lw.ledger.sign(rights_seal.build_accept_amendment, lw.clinic, amendment, labelled, encrypted)
    assert signed[0].kind == "health.accept_amendment"
    lw.ledger.submit_rejected(signed, "health.record_readers")


def test_invalid_plain_document_superseding_a_labelled_record_sealed_for_the_insurer(
    lw: label_paths.World,
) -> None:
    import secrets

    from medledger.health.blobs import build_blob_refs, compute_blob_url, generate_blob_key

    labelled = lw.add({**make_observation(1), "meta": {"security": [{"code": "SUD"}]}})
    blobs = [(secrets.token_bytes(32), 1000, generate_blob_key())]
    letter = {
        "resourceType": "DocumentReference",
        "status": "current",
        "subject": {"reference": "Patient/synthetic-docs"},
        "content": [{"attachment": {"contentType": "application/pdf", "url": compute_blob_url(blobs[0][0])}}],
    }
    encrypted = encrypt_record(
        letter,
        patient_id=lw.patient_id,
        author=lw.clinic.public.sign_key,
        readers=_everyone(lw),
        supersedes=labelled,
    )
    refs = build_blob_refs(encrypted, lw.patient_id, lw.clinic, blobs)
    signed = lw.ledger.sign(client.build_add_document, lw.clinic, lw.patient_id, encrypted, refs)
    assert signed[0].kind == "health.add_document"
    lw.ledger.submit_rejected(signed, "health.record_readers")
    # The node's one decision agrees: the document inherits the label and is not sealed for it.
    labels, readers = lw.sealing(letter, supersedes=labelled)
    assert labels == ("SUD",)
    assert lw.insurer.public.enc_key not in readers


def test_a_labelled_correction_can_add_labels_but_never_shed_one(lw: label_paths.World) -> None:
    labelled = lw.add({**make_observation(1), "meta": {"security": [{"code": "PSY"}]}})
    readers = sorted([lw.patient.public.enc_key, lw.clinic.public.enc_key])
    encrypted = encrypt_record(
        make_observation(2),
        patient_id=lw.patient_id,
        author=lw.clinic.public.sign_key,
        readers=readers,
        supersedes=labelled,
    )
    signed = lw.ledger.sign(
        claims_client.build_add_labelled_record, lw.clinic, lw.patient_id, encrypted, ("HIV",)
    )
    correction = lw.ledger.submit_ok(signed).tx_id
    assert st.get_record_labels(lw.ledger.state, correction) == ("HIV", "PSY")


# --- (d): events --------------------------------------------------------------------------------


@pytest.fixture
def cw() -> ClaimsWorld:
    ledger = Ledger(CLAIMS_ROLES)
    patient = make_identity("patient")
    ledger.submit_ok(ledger.sign(client.build_register_patient, patient))
    patient_id = compute_patient_id(patient.public.sign_key)
    consent_id = ledger.submit_ok(consent(ledger, patient_id, patient)).tx_id
    return ClaimsWorld(ledger, patient, patient_id, consent_id)


def test_an_insurers_plain_read_under_a_consent_reaches_no_other_institution(cw: ClaimsWorld) -> None:
    vitals = cw.add("clinic", make_observation(61))
    signed = cw.ledger.sign(client.build_read_receipt, cw.who("insurer"), cw.consent_id, [vitals])
    cw.ledger.submit_ok(signed)
    by_kind = {e.kind: e for e in cw.ledger.list_events()}
    read = by_kind[events.EVENT_RECORD_READ]
    assert read.institutions == (cw.key("insurer"),)
    assert read.patient_id == cw.patient_id
    # The consent itself: the patient's and the insurer's only.
    assert by_kind[events.EVENT_CONSENT_GRANTED].institutions == (cw.key("insurer"),)


def test_a_consents_manifest_and_parts_reach_the_patient_and_the_insurer_only(bw: backfill.World) -> None:
    old = bw.add("clinic", make_observation(1))
    consent_id = bw.consent()
    manifest, (part,) = bw.reseal(consent_id, [old])
    bw.ledger.submit_ok(manifest)
    bw.ledger.submit_ok(part)
    later = [e for e in bw.ledger.list_events() if e.height > bw.ledger.height - 2]
    assert [e.kind for e in later] == [events.EVENT_GRANT_PART_ADDED]
    assert later[0].institutions == (bw.insurer.public.sign_key,)
    for event in bw.ledger.list_events():
        assert make_identity("hospital").public.sign_key not in event.institutions
        payload = event.to_payload()
        assert bw.patient_id.hex() not in str(payload)


def test_research_events_reach_no_one_the_audience_rules_exclude() -> None:
    world = rr.make_world()
    world.join("patient")
    query_id = world.query(institutions=(rr.key("clinic"),))
    world.ok("clinic", KIND_POST_ANSWER, rr.total_answer(query_id))
    for event in world.ledger.list_events():
        if event.kind in (events.EVENT_STUDY_JOINED, events.EVENT_STUDY_LEFT):
            assert event.institutions == ()  # not the institute: who joined is the patient's
        assert rr.key("hospital") not in event.institutions  # not asked
        assert rr.key("research-2") not in event.institutions
        assert rr.pid("patient").hex() not in str(event.to_payload())


# --- (e): research --------------------------------------------------------------------------------


@pytest.fixture
def world() -> rr.World:
    return rr.make_world()


def test_invalid_query_of_another_institutes_study_leaves_its_budget_alone(world: rr.World) -> None:
    before = world.study()
    world.rejected(
        "research-2", KIND_SUBMIT_QUERY, rr.count_query(world.study_id), "health.not_study_institute"
    )
    assert world.study() == before


def test_invalid_opt_in_for_another_patient_by_their_representative_of_someone_else(world: rr.World) -> None:
    ledger = world.ledger
    ledger.submit_ok(
        ledger.sign(
            client.build_add_representative,
            make_identity("patient-2"),
            rr.pid("patient-2"),
            rr.key("guardian"),
        )
    )
    world.rejected(
        "guardian",
        KIND_JOIN_STUDY,
        StudyMembershipBody(world.study_id, rr.pid("patient")),
        "health.not_authorised",
    )
    world.join("patient")
    world.rejected(
        "guardian",
        KIND_LEAVE_STUDY,
        StudyMembershipBody(world.study_id, rr.pid("patient")),
        "health.not_authorised",
    )


def test_invalid_answer_for_a_query_not_asked_of_it_nor_twice(world: rr.World) -> None:
    query_id = world.query(institutions=(rr.key("clinic"),))
    world.rejected("hospital", KIND_POST_ANSWER, rr.total_answer(query_id), "health.not_query_institution")
    world.ok("clinic", KIND_POST_ANSWER, rr.total_answer(query_id))
    world.rejected(
        "clinic", KIND_POST_ANSWER, rr.total_answer(query_id, value_milli=1), "health.answer_exists"
    )


def _gaussian_count_study(world: rr.World) -> bytes:
    count = QueryTemplate("a-count", TEMPLATE_COUNT, ("sct:38341003",), (), 0, 0, 1_000_000, 1_000)
    body = rr.study_body(world.ledger, templates=(count,))
    return world.ok("research", KIND_REGISTER_STUDY, body)


def test_invalid_gaussian_count_answer_with_too_little_noise(world: rr.World) -> None:
    """A count asked with δ > 0 (Gaussian noise) must still declare at least the noise its ε
    requires of any mechanism: σ below 1/ε cannot be (ε, δ ≤ 10^-6)-DP for a count. Without this
    check, an institution could post a count noised by a thousandth of a patient."""
    study_id = _gaussian_count_study(world)
    query = rr.count_query(
        study_id,
        delta_pico=1_000,
        epsilon_micro=100_000,
        institutions=(rr.key("clinic"),),
        as_of_height=world.ledger.height,
    )
    query_id = world.ok("research", KIND_SUBMIT_QUERY, query)
    world.rejected(
        "clinic", KIND_POST_ANSWER, rr.total_answer(query_id, scale_milli=1), "health.answer_noise"
    )
    world.rejected(
        "clinic", KIND_POST_ANSWER, rr.total_answer(query_id, scale_milli=9_999), "health.answer_noise"
    )
    world.ok("clinic", KIND_POST_ANSWER, rr.total_answer(query_id, scale_milli=40_000))


def test_invalid_gaussian_count_answer_at_the_smallest_epsilon(world: rr.World) -> None:
    """At ε of one millionth, 1/ε is a million patients; the Gaussian floor never asks more than a
    Laplace count would, and never less than the noise that could be (ε, 10^-6)-DP."""
    study_id = _gaussian_count_study(world)
    query = rr.count_query(
        study_id,
        delta_pico=1_000,
        epsilon_micro=1,
        institutions=(rr.key("clinic"),),
        as_of_height=world.ledger.height,
    )
    query_id = world.ok("research", KIND_SUBMIT_QUERY, query)
    world.rejected(
        "clinic", KIND_POST_ANSWER, rr.total_answer(query_id, scale_milli=9_999_999), "health.answer_noise"
    )
    world.ok("clinic", KIND_POST_ANSWER, rr.total_answer(query_id, scale_milli=10_000_000))


def test_invalid_query_whose_charge_overflows_the_largest_budget() -> None:
    """ε = 20 an answer asked of 64 institutions is 1,280 ε: refused, charged nothing; a charge of
    exactly the remaining budget is accepted and leaves 0, after which nothing more is."""
    roles = {"research": "research", **{f"clinic-{n:02d}": "clinic" for n in range(QUERY_INSTITUTIONS_MAX)}}
    ledger = Ledger(roles)
    template = QueryTemplate(
        "a-count", TEMPLATE_COUNT, ("sct:38341003",), (), 0, 0, EPSILON_TOTAL_MICRO_MAX, 0
    )
    body = dataclasses.replace(
        rr.study_body(ledger), templates=(template,), epsilon_total_micro=EPSILON_TOTAL_MICRO_MAX
    )
    world = rr.World(
        ledger,
        ledger.submit_ok(
            ledger.sign(client.build_tx, make_identity("research"), KIND_REGISTER_STUDY, body)
        ).tx_id,
    )
    everyone = tuple(sorted(rr.key(name) for name in roles if name != "research"))
    world.rejected(
        "research",
        KIND_SUBMIT_QUERY,
        rr.count_query(
            world.study_id, institutions=everyone, epsilon_micro=EPSILON_TOTAL_MICRO_MAX, as_of_height=1
        ),
        "health.budget_exhausted",
    )
    share = EPSILON_TOTAL_MICRO_MAX // QUERY_INSTITUTIONS_MAX
    world.ok(
        "research",
        KIND_SUBMIT_QUERY,
        rr.count_query(world.study_id, institutions=everyone, epsilon_micro=share, as_of_height=1),
    )
    assert (
        world.study().epsilon_remaining_micro == EPSILON_TOTAL_MICRO_MAX - share * QUERY_INSTITUTIONS_MAX == 0
    )
    world.rejected(
        "research",
        KIND_SUBMIT_QUERY,
        rr.count_query(world.study_id, institutions=everyone[:1], epsilon_micro=1, as_of_height=1),
        "health.budget_exhausted",
    )


def test_invalid_query_with_a_data_version_past_every_integer_bound(world: rr.World) -> None:
    world.rejected(
        "research",
        KIND_SUBMIT_QUERY,
        rr.count_query(world.study_id, as_of_height=2**64 - 1),
        "health.query_as_of",
    )


def test_invalid_answer_values_past_their_bounds(world: rr.World) -> None:
    query_id = world.query()
    huge = PostAnswerBody(query_id, (AnswerCell(CELL_TOTAL, CELL_NOISED, 10**12 + 1),), 10_000)
    world.rejected("clinic", KIND_POST_ANSWER, huge, "health.body")
    world.rejected(
        "clinic", KIND_POST_ANSWER, dataclasses.replace(huge, cells=(), noise_scale_milli=0), "health.body"
    )
    other = PostAnswerBody(query_id, (AnswerCell("90+", CELL_NOISED, 5),), 10_000)
    world.rejected("clinic", KIND_POST_ANSWER, other, "health.answer_cells")


def test_invalid_query_mean_range_outside_the_template(world: rr.World) -> None:
    params = QueryParams("loinc:8867-4", GROUP_NONE, 0, 10**12)
    world.rejected(
        "research",
        KIND_SUBMIT_QUERY,
        rr.count_query(world.study_id, template=rr.MEAN.name, params=params, delta_pico=0),
        "health.query_parameters",
    )


# --- (g): malformed bodies are typed rejections -----------------------------------------------------

NEW_KINDS = (
    "health.add_labelled_record",
    "health.add_labelled_document",
    "health.accept_labelled_amendment",
    KIND_GRANT_CONSENT,
    KIND_CONSENT_MANIFEST,
    KIND_GRANT_PART,
    "health.file_claim",
    "health.amend_claim",
    "health.decide_claim",
    "health.claim_read_receipt",
    KIND_REGISTER_STUDY,
    KIND_JOIN_STUDY,
    KIND_LEAVE_STUDY,
    KIND_SUBMIT_QUERY,
    KIND_POST_ANSWER,
)


@pytest.fixture(scope="module")
def garbage_world() -> rr.World:
    return rr.make_world()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kind=stg.sampled_from(NEW_KINDS),
    body=stg.binary(max_size=200),
    signer=stg.sampled_from(["patient", "clinic", "insurer", "research"]),
)
def test_invalid_garbage_bodies_are_typed_rejections(
    garbage_world: rr.World, kind: str, body: bytes, signer: str
) -> None:
    ledger = garbage_world.ledger
    signed = sign_tx(
        make_identity(signer),
        chain_id=CHAIN_ID,
        kind=kind,
        body=body,
        nonce=ledger.nonce(),
        timestamp_ms=ledger.next_time_ms,
    )
    outcome = ledger.submit(signed)  # an unhandled error would raise here
    assert not outcome.ok
    assert outcome.rule.startswith("health.")


# --- (f): two nodes agree, whatever their hash seed -------------------------------------------------

_REPLAY = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {here!r})
    import test_research_rules as rr
    from health_testkit import make_identity
    from medledger.health import claims_client, client
    from medledger.health.claims_types import ConsentManifestBody, ConsentTerms
    from medledger.health.research_types import QueryParams
    from medledger.health.types import KIND_CONSENT_MANIFEST, KIND_POST_ANSWER, KIND_SUBMIT_QUERY

    world = rr.make_world()
    ledger = world.ledger
    world.join("patient")
    world.join("patient-2", by="patient-2")
    world.query()
    world.query(template=rr.HISTOGRAM.name, params=QueryParams("sct:38341003", "sex", 0, 0))
    small = world.query(epsilon_micro=1_000)
    world.ok("clinic", KIND_POST_ANSWER, rr.total_answer(small, scale_milli=1_000_000))
    world.leave("patient")
    patient = make_identity("patient")
    body = claims_client.make_consent(
        rr.pid("patient"),
        rr.key("insurer"),
        record_types=("Observation", "Condition"),
        authors=sorted([rr.key("hospital"), rr.key("clinic")]),
        labels=("PSY", "HIV", "R"),
        expires_ms=ledger.next_time_ms + 10 * rr.DAY_MS,
    )
    consent_id = ledger.submit_ok(ledger.sign(claims_client.build_grant_consent, patient, body)).tx_id
    manifest = ConsentManifestBody(consent_id, 1, (bytes(32),))
    ledger.submit_ok(ledger.sign(client.build_tx, patient, KIND_CONSENT_MANIFEST, manifest))
    ledger.submit_ok(ledger.sign(client.build_revoke, patient, consent_id))
    print(ledger.state_root.hex())
    """
)


def test_two_nodes_with_different_hash_seeds_reach_the_same_state_root() -> None:
    here = str(Path(__file__).resolve().parent)
    script = _REPLAY.format(here=here)
    roots = set()
    for seed in ("0", "1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False, timeout=120
        )
        assert done.returncode == 0, done.stderr
        roots.add(done.stdout.strip())
    assert len(roots) == 1


# --- (g) continued: well-formed bodies with hostile values, aimed at what is on the ledger -----------


def _strategy(spec: Any, name: str, ids: dict[str, list[bytes]], words: list[str]) -> stg.SearchStrategy[Any]:
    """Values the codec accepts for field `name` of `spec`, mostly the ledger's own ids of that
    name (so that the rules get past "unknown" to their deeper checks), and the bounds."""
    if isinstance(spec, UInt):
        edges = {spec.minimum, spec.minimum + 1, 3, spec.maximum - 1, spec.maximum}
        inside = sorted(e for e in edges if spec.minimum <= e <= spec.maximum)
        return stg.sampled_from(inside) | stg.integers(spec.minimum, min(spec.maximum, 10**13))
    if isinstance(spec, Bytes):
        known = [b for b in ids.get(name, ()) if spec.min_length <= len(b) <= spec.max_length]
        raw = stg.binary(min_size=spec.min_length, max_size=min(spec.max_length, spec.min_length + 48))
        return stg.one_of(*[stg.sampled_from(known)] * 4, raw) if known else raw
    if isinstance(spec, Text):
        if spec.allowed is not None:
            return stg.sampled_from(sorted(spec.allowed))
        fitting = [w for w in words if spec.min_length <= len(w) <= spec.max_length]
        free = stg.text(
            alphabet=stg.characters(min_codepoint=0x21, max_codepoint=0x7E),
            min_size=spec.min_length,
            max_size=min(spec.max_length, 12),
        )
        return stg.one_of(*[stg.sampled_from(fitting)] * 3, free) if fitting else free
    if isinstance(spec, HumanText):
        return stg.sampled_from(["Une étude", "A study"])
    if isinstance(spec, Struct):
        return _body_strategy(spec.cls, ids, words)
    if isinstance(spec, Seq):
        items = stg.lists(_strategy(spec.item, name, ids, words), max_size=min(spec.max_items, 4))
        return stg.one_of(items, items.map(_canonical)).map(tuple)
    raise AssertionError(f"no strategy for {spec!r}")


def _canonical(items: list[Any]) -> list[Any]:
    """Sorted and unique, as the rules want lists (when the items are ids, codes or numbers)."""
    if items and all(isinstance(x, (bytes, str, int)) for x in items) and len({type(x) for x in items}) == 1:
        return sorted(set(items))
    return items


def _body_strategy(cls: type[Any], ids: dict[str, list[bytes]], words: list[str]) -> stg.SearchStrategy[Any]:
    fields = {name: _strategy(spec, name, ids, words) for name, spec in cls.WIRE_FIELDS.items()}
    return stg.builds(cls, **fields)


@dataclasses.dataclass
class _Scene:
    ledger: Ledger
    ids: dict[str, list[bytes]]
    words: list[str]


def _make_scene() -> _Scene:
    """A ledger holding something of every kind: a consent with a manifest, labelled and plain
    records, a claim, a study with members, a query and an answer."""
    roles = {**CLAIMS_ROLES, "research-2": "research"}
    ledger = Ledger(roles)
    patient = make_identity("patient")
    ledger.submit_ok(ledger.sign(client.build_register_patient, patient))
    patient_id = compute_patient_id(patient.public.sign_key)
    consent_id = ledger.submit_ok(consent(ledger, patient_id, patient)).tx_id
    cw = ClaimsWorld(ledger, patient, patient_id, consent_id)
    encounter = cw.add(
        "clinic", {"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"}}
    )
    vitals = cw.add("clinic", make_observation(70))
    hiv = cw.add("clinic", make_condition("h"), ("HIV",))
    claim_id = ledger.submit_ok(cw.file(encounter, sorted([encounter, vitals, hiv]))).tx_id
    manifest = ConsentManifestBody(consent_id, 1, (compute_grant_part_digest(consent_id, 0, (vitals,)),))
    ledger.submit_ok(ledger.sign(client.build_tx, patient, KIND_CONSENT_MANIFEST, manifest))
    study_id = ledger.submit_ok(
        ledger.sign(client.build_tx, make_identity("research"), KIND_REGISTER_STUDY, rr.study_body(ledger))
    ).tx_id
    ledger.submit_ok(
        ledger.sign(client.build_tx, patient, KIND_JOIN_STUDY, StudyMembershipBody(study_id, patient_id))
    )
    query = rr.count_query(study_id, as_of_height=ledger.height)
    query_id = ledger.submit_ok(
        ledger.sign(client.build_tx, make_identity("research"), KIND_SUBMIT_QUERY, query)
    ).tx_id
    ledger.submit_ok(
        ledger.sign(client.build_tx, make_identity("clinic"), KIND_POST_ANSWER, rr.total_answer(query_id))
    )
    public = {name: make_identity(name).public for name in (*roles, "patient")}
    records = [encounter, vitals, hiv]
    authors = sorted(public[n].sign_key for n in ("clinic", "hospital"))
    institutions = [public[n].sign_key for n in roles]
    ids: dict[str, list[bytes]] = {
        "grant_id": [consent_id, claim_id],
        "claim_id": [claim_id],
        "study_id": [study_id],
        "query_id": [query_id],
        "patient_id": [patient_id],
        "record_id": records,
        "record_ids": records,
        "encounter_id": [encounter],
        "supersedes": [*records, b""],
        "grantee": institutions,
        "insurer": institutions,
        "authors": authors,
        "institutions": authors,
        "reader": [k.enc_key for k in public.values()],
    }
    words = [t.name for t in rr.TEMPLATES] + [c for t in rr.TEMPLATES for c in t.codes]
    return _Scene(ledger, ids, words)


_SCENE: list[_Scene] = []


def _scene() -> _Scene:
    if not _SCENE:
        _SCENE.append(_make_scene())
    return copy.deepcopy(_SCENE[0])


_BODY_KINDS = sorted(
    {
        **claims_types.CLAIMS_BODY_TYPES,
        **research_types.RESEARCH_BODY_TYPES,
        KIND_GRANT_PART: GrantPartBody,
    }.items()
)


@settings(max_examples=300, deadline=None)
@given(data=stg.data())
def test_well_formed_hostile_bodies_are_accepted_or_refused_by_a_named_rule(data: stg.DataObject) -> None:
    scene = _scene()
    kind, cls = data.draw(stg.sampled_from(_BODY_KINDS), label="kind")
    body = data.draw(_body_strategy(cls, scene.ids, scene.words), label="body")
    signer = data.draw(
        stg.sampled_from(["patient", "clinic", "hospital", "insurer", "research"]), label="signer"
    )
    signed = scene.ledger.sign(client.build_tx, make_identity(signer), kind, body)
    outcome = scene.ledger.submit(signed)  # any error but a rejection would raise here
    assert outcome.ok or outcome.rule.startswith("health."), outcome
    if outcome.ok:  # an accepted tx's events derive, with kinds and ledger ids only
        for effect in events.compute_tx_effects(scene.ledger.state, signed[0], signed[2]):
            assert effect.kind in events.EVENT_KINDS
            assert all(name in events.ID_FIELDS for name, _ in effect.ids)


# --- (e), (f): the same attack twice in one block -------------------------------------------------


def _commit_block(ledger: Ledger, batch: list[Any]) -> list[str]:
    """Commit `batch` as one block of `ledger`'s chain; the rule each tx met ("" if accepted)."""
    raws = tuple(raw for _, raw, _ in batch)
    header = Header(
        chain_id=CHAIN_ID,
        height=ledger.height + 1,
        round=0,
        parent_hash=ZERO_HASH,
        time_ms=ledger.next_time_ms,
        proposer=ledger.proposer,
        tx_count=len(raws),
        tx_root=compute_tx_root(raws),
        state_root=ledger.state_root,
        validators_hash=ledger.validators.hash(),
        next_validators_hash=ledger.validators.hash(),
    )
    execution = ledger.app.apply_block(
        Block(header, raws), tuple(tx for tx, _, _ in batch), ledger.state, ledger.state_root
    )
    for key, value in execution.writes.items():
        if value is None:
            ledger.state.data.pop(key, None)
        else:
            ledger.state.data[key] = value
    ledger.height, ledger.state_root = header.height, execution.state_root
    ledger.time_ms, ledger.next_time_ms = ledger.next_time_ms, ledger.next_time_ms + 1_000
    return [("" if r.ok else r.code) for r in execution.results]


def test_invalid_repeats_within_one_block_are_refused_and_charged_once(world: rr.World) -> None:
    """A query and its re-signed twin, and an institution's two answers, in one block: the second
    of each is refused by the same rule as in a later block, and the budget is charged once."""
    query = rr.count_query(world.study_id)
    twins = [world.tx("research", KIND_SUBMIT_QUERY, query) for _ in range(2)]
    assert _commit_block(world.ledger, twins) == ["", "health.query_repeated"]
    assert world.study().epsilon_remaining_micro == rr.EPSILON_TOTAL_MICRO - 2 * query.epsilon_micro
    query_id = twins[0][2]
    answers = [world.tx("clinic", KIND_POST_ANSWER, rr.total_answer(query_id, value_milli=v)) for v in (1, 2)]
    assert _commit_block(world.ledger, answers) == ["", "health.answer_exists"]
    stored = st.get_query(world.ledger.state, query_id)
    assert stored is not None
    assert stored.answer_count == 1


def test_invalid_consent_parts_twice_or_after_revocation_within_one_block(bw: backfill.World) -> None:
    old = bw.add("clinic", make_observation(1))
    consent_id = bw.consent()
    manifest, (part,) = bw.reseal(consent_id, [old])
    bw.ledger.submit_ok(manifest)
    keys = list(reseal_record_keys([old], bw.patient, bw.insurer.public.enc_key))
    again = _part(bw, bw.patient, consent_id, 0, keys)
    assert _commit_block(bw.ledger, [part, again]) == ["", "health.grant_part_duplicate"]
    second = bw.consent(record_types=("Observation",))
    manifest, (part,) = bw.reseal(second, [old])
    bw.ledger.submit_ok(manifest)
    revoke = bw.ledger.sign(client.build_revoke, bw.patient, second)
    assert _commit_block(bw.ledger, [revoke, part]) == ["", "health.grant_revoked"]
    assert st.get_grant_key(bw.ledger.state, second, old.record_id) is None


# --- (a) at write time: an author seals for the insurer what the consent does not cover -----------


def _forced(cw: ClaimsWorld, author: str, resource: dict[str, Any], labels: tuple[str, ...] = ()) -> Any:
    """A record its author seals for the insurer whatever the consent says (a hostile node)."""
    readers = sorted([cw.enc("patient"), cw.enc(author), cw.enc("insurer")])
    encrypted = encrypt_record(resource, patient_id=cw.patient_id, author=cw.key(author), readers=readers)
    if labels:
        return cw.ledger.sign(
            claims_client.build_add_labelled_record, cw.who(author), cw.patient_id, encrypted, labels
        )
    return cw.ledger.sign(client.build_add_record, cw.who(author), cw.patient_id, encrypted)


def test_invalid_record_sealed_for_the_insurer_by_an_author_the_consent_does_not_name(
    cw: ClaimsWorld,
) -> None:
    cw.ledger.submit_rejected(_forced(cw, "hospital", make_observation(1)), "health.record_readers")


def test_invalid_record_sealed_for_the_insurer_outside_the_consents_window(cw: ClaimsWorld) -> None:
    ledger = cw.ledger
    ledger.submit_ok(ledger.sign(client.build_revoke, cw.patient, cw.consent_id))
    window_end = ledger.next_time_ms + 5_000
    ledger.submit_ok(consent(ledger, cw.patient_id, cw.patient, to_ms=window_end))
    ledger.advance(10_000)
    ledger.submit_rejected(_forced(cw, "clinic", make_observation(2)), "health.record_readers")


def test_invalid_record_sealed_for_the_insurer_of_a_type_the_consent_does_not_name(cw: ClaimsWorld) -> None:
    immunization = {
        "resourceType": "Immunization",
        "status": "completed",
        "vaccineCode": {"text": "synthetic"},
        "patient": {"reference": "Patient/synthetic-1"},
        "occurrenceDateTime": "2026-01-01",
    }
    cw.ledger.submit_rejected(_forced(cw, "clinic", immunization), "health.record_readers")


def test_invalid_record_sealed_for_the_insurer_after_the_consent_expired(cw: ClaimsWorld) -> None:
    cw.ledger.advance(31 * DAY_MS)
    cw.ledger.submit_rejected(_forced(cw, "clinic", make_observation(3)), "health.record_readers")


def test_invalid_record_of_another_patient_sealed_for_this_patients_insurer(cw: ClaimsWorld) -> None:
    other = make_identity("patient-2")
    cw.ledger.submit_ok(cw.ledger.sign(client.build_register_patient, other))
    other_id = compute_patient_id(other.public.sign_key)
    readers = sorted([other.public.enc_key, cw.enc("clinic"), cw.enc("insurer")])
    encrypted = encrypt_record(
        make_observation(4), patient_id=other_id, author=cw.key("clinic"), readers=readers
    )
    cw.ledger.submit_rejected(
        cw.ledger.sign(client.build_add_record, cw.who("clinic"), other_id, encrypted),
        "health.record_readers",
    )
