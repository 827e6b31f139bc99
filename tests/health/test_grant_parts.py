"""Grants of any number of records (issue 14, defect 1; ADR 0012), in-process.

A one-tx grant carries at most `GRANT_RECORDS_MAX` keys; a real history is longer. Here a patient
with 10,000 records grants them all to a hospital through the same functions the patient's client
uses (preview on the verified light ledger, re-seal, manifest and parts), every node's rules judge
each tx, and the hospital opens every granted record and receipts every read. Then the hostile
cases, each through the one `test_invalid_*` helper (`Ledger.submit_rejected`: refused by the named
rule, nothing changed): parts that open records outside the scope, parts that differ from their
manifest, forged and oversized grants, replays, parts after a revocation.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from health_testkit import (
    BLOCK_INTERVAL_MS,
    CHAIN_ID,
    GENESIS_TIME_MS,
    Ledger,
    make_condition,
    make_identity,
    make_observation,
)

from medledger.chain.codec import encode
from medledger.chain.lightclient import CertifiedBlock
from medledger.chain.limits import TX_BYTES_MAX
from medledger.chain.types import ZERO_HASH, Block, Commit, Genesis, Header, TxId
from medledger.chain.validation import compute_tx_root
from medledger.crypto import Identity
from medledger.crypto.envelope import SEALED_KEY_SIZE
from medledger.health import client, policy
from medledger.health import state as st
from medledger.health.app import encode_genesis
from medledger.health.client import SignedTx
from medledger.health.errors import RecordBindingError
from medledger.health.preview import GrantPreview, compute_grant_preview
from medledger.health.records import encrypt_record, open_record, open_verified_record, reseal_record_keys
from medledger.health.types import (
    EVENT_GRANT_PART,
    EVENT_READ,
    GRANT_MANIFEST_RECORDS_MAX,
    GRANT_PART_RECORDS_MAX,
    GRANT_PARTS_MAX,
    KIND_GRANT_PART,
    STATE_VALUE_BYTES_MAX,
    GrantManifestBody,
    GrantPartBody,
    GrantPartsState,
    HealthGenesis,
    RecordKey,
    RecordState,
    compute_patient_id,
)
from medledger.health.verify import PatientLedger
from medledger.node.health_reads import compute_receipt_batches

HOUR_MS = 3_600_000
BLOCK_TXS = 2_500


class Chain:
    """A `Ledger` whose blocks hold many txs, each block also fed to the patient's light ledger."""

    def __init__(self, patient: Identity) -> None:
        self.ledger = Ledger()
        genesis = Genesis(
            CHAIN_ID,
            GENESIS_TIME_MS,
            self.ledger.validators,
            encode_genesis(HealthGenesis(tuple(self.ledger.institutions.values()))),
        )
        self.patient = patient
        self.patient_id = compute_patient_id(patient.public.sign_key)
        self.light = PatientLedger(genesis, self.patient_id)

    def commit(self, batch: list[SignedTx]) -> None:
        """Admit each tx (on the committed state, as a node does), then commit them in blocks; all
        must pass, and the light ledger must judge each as the chain did."""
        chain = self.ledger
        for start in range(0, len(batch), BLOCK_TXS):
            chunk = batch[start : start + BLOCK_TXS]
            for tx, _, tx_id in chunk:
                chain.app.check_tx(tx, tx_id, chain.state)
            raws = tuple(raw for _, raw, _ in chunk)
            height = chain.height + 1
            header = Header(
                chain_id=CHAIN_ID,
                height=height,
                round=0,
                parent_hash=ZERO_HASH,
                time_ms=chain.next_time_ms,
                proposer=chain.proposer,
                tx_count=len(raws),
                tx_root=compute_tx_root(raws),
                state_root=chain.state_root,
                validators_hash=chain.validators.hash(),
                next_validators_hash=chain.validators.hash(),
            )
            block = Block(header, raws)
            execution = chain.app.apply_block(
                block, tuple(tx for tx, _, _ in chunk), chain.state, chain.state_root
            )
            refused = [r.code for r in execution.results if not r.ok]
            assert not refused, refused
            for key, value in execution.writes.items():
                if value is None:
                    chain.state.data.pop(key, None)
                else:
                    chain.state.data[key] = value
            chain.height, chain.state_root = height, execution.state_root
            chain.next_time_ms += BLOCK_INTERVAL_MS
            tx_ids = tuple(TxId(tx_id) for _, _, tx_id in chunk)
            self.light.apply_block(CertifiedBlock(block, Commit(height, 0, block.hash(), ()), tx_ids))
            assert all(self.light.txs[t].ok for t in tx_ids if t in self.light.txs)

    def sign(self, build: Any, *args: Any, **kwargs: Any) -> SignedTx:
        return self.ledger.sign(build, *args, **kwargs)


def _records(chain: Chain, author: Identity, resources: list[dict[str, Any]]) -> list[SignedTx]:
    readers = sorted([chain.patient.public.enc_key, author.public.enc_key])
    return [
        chain.sign(
            client.build_add_record,
            author,
            chain.patient_id,
            encrypt_record(r, patient_id=chain.patient_id, author=author.public.sign_key, readers=readers),
        )
        for r in resources
    ]


def _inquire(chain: Chain, requester: Identity, scope: Any) -> bytes:
    signed = chain.sign(
        client.build_request_access,
        requester,
        chain.patient_id,
        scope,
        "TREAT",
        chain.ledger.next_time_ms + 24 * HOUR_MS,
        "synthetic follow-up",
        patient_enc_key=chain.patient.public.enc_key,
    )
    chain.commit([signed])
    return signed[2]


def _preview(chain: Chain, inquiry_id: bytes) -> GrantPreview:
    inquiry = chain.light.get_inquiry(inquiry_id)
    assert inquiry is not None
    return compute_grant_preview(
        chain.light,
        inquiry,
        reason="synthetic follow-up",
        signer_enc_key=chain.patient.public.enc_key,
        open_verified=lambda record: open_verified_record(record, chain.patient),
    )


def _reseal(chain: Chain, record_ids: tuple[bytes, ...], grantee: Identity) -> tuple[RecordKey, ...]:
    records = [chain.light.get_record(r) for r in record_ids]
    return reseal_record_keys([r for r in records if r is not None], chain.patient, grantee.public.enc_key)


def test_a_grant_of_10000_records_shares_every_one_of_them_and_every_read_is_receipted() -> None:
    patient, clinic, hospital = (
        make_identity("patient-10k"),
        make_identity("clinic"),
        make_identity("hospital"),
    )
    chain = Chain(patient)
    chain.commit([chain.sign(client.build_register_patient, patient)])
    observations = [make_observation(40 + n % 150) for n in range(10_000)]
    conditions = [make_condition(f"synthetic note {n}") for n in range(3)]
    chain.commit(_records(chain, clinic, observations) + _records(chain, clinic, conditions))
    inquiry_id = _inquire(chain, hospital, client.make_scope(record_types=("Observation",)))

    # What the patient is shown: every covered record, counted exactly (no silent cut at 256).
    preview = _preview(chain, inquiry_id)
    assert len(preview.records) == 10_000
    counts = preview.counts()
    assert counts.total == 10_000
    assert counts.by_type == (("Observation", 10_000),)
    assert counts.by_author == (("clinic", 10_000),)
    assert preview.transactions == 1 + 10_000 // GRANT_PART_RECORDS_MAX + 1  # 40 parts of ≤ 256
    text = "\n".join(preview.lines())
    assert "exactly these 10000 record(s)" in text
    assert "10000  measurements and test results (Observation)" in text
    assert "the JSON form lists each one" in text
    assert len(preview.to_json()["records"]) == 10_000

    keys = _reseal(chain, preview.record_ids, hospital)
    manifest, parts = client.build_grant_in_parts(patient, inquiry_id, keys, chain_id=CHAIN_ID)
    assert len(parts) == 40
    chain.commit([manifest])
    chain.commit(parts)  # admitted all at once: each part is judged on its own
    grant_id = manifest[2]
    state = chain.ledger.state
    grant = st.get_grant(state, grant_id)
    progress = st.get_grant_parts(state, grant_id)
    assert grant is not None
    assert progress is not None
    assert progress.is_complete
    assert chain.light.get_grant_parts(grant_id) == progress  # the patient's client agrees

    # The hospital reads every granted record with the key its grant holds, and nothing else.
    time_ms = chain.ledger.next_time_ms
    hospital_institution = chain.ledger.institutions["hospital"]
    all_records = chain.light.list_records()
    assert len(all_records) == 10_003
    accesses = policy.get_read_accesses(state, hospital_institution, chain.patient_id, all_records, time_ms)
    readable = [(r, a.grant) for r, a in zip(all_records, accesses, strict=True) if a is not None]
    assert {r.record_type for r, _ in readable} == {"Observation"}
    assert len(readable) == 10_000
    values = sorted(
        open_record(
            r, hospital, grant=g, sealed_key=policy.get_grant_sealed_key(state, g, r.record_id)
        ).resource["valueQuantity"]["value"]
        for r, g in readable
        if g is not None
    )
    assert values == sorted(o["valueQuantity"]["value"] for o in observations)

    # Every read is receipted: 40 receipts of ≤ 256 records, all accepted by the rules.
    batches = compute_receipt_batches([(g, r) for r, g in readable if g is not None])
    assert len(batches) == 40
    chain.commit([chain.sign(client.build_read_receipt, hospital, g, ids) for g, ids in batches])
    events = policy.get_audit_events(state, chain.patient_id)
    read_ids = [i for e in events if e.event == EVENT_READ for i in e.record_ids]
    shared_ids = [i for e in events if e.event == EVENT_GRANT_PART for i in e.record_ids]
    assert sorted(read_ids) == sorted(shared_ids) == sorted(preview.record_ids)


# --- hostile cases (one tx per block, through `Ledger.submit_rejected`) -------------------------


@dataclasses.dataclass
class Scene:
    ledger: Ledger
    patient: Identity
    hospital: Identity
    patient_id: bytes
    observations: list[RecordState]
    condition: RecordState
    inquiry_id: bytes

    def keys(self, records: list[RecordState], *, labels: list[bytes] | None = None) -> tuple[RecordKey, ...]:
        """The records' keys re-sealed for the hospital (optionally labelled with other ids)."""
        resealed = reseal_record_keys(records, self.patient, self.hospital.public.enc_key)
        by_id = {rk.record_id: rk for rk in resealed}
        ordered = [by_id[r.record_id] for r in records]
        if labels is not None:
            ordered = [RecordKey(label, rk.sealed_key) for label, rk in zip(labels, ordered, strict=True)]
        return tuple(sorted(ordered, key=lambda rk: rk.record_id))

    def manifest(self, keys: tuple[RecordKey, ...]) -> bytes:
        return self.ledger.submit_ok(
            self.ledger.sign(
                client.build_grant_manifest,
                self.patient,
                client.compute_grant_manifest(self.inquiry_id, keys),
            )
        ).tx_id


@pytest.fixture
def scene() -> Scene:
    """A patient with 300 Observations and one Condition; the hospital asks for Observations."""
    chain = Ledger()
    patient, clinic, hospital = (
        make_identity("patient-parts"),
        make_identity("clinic"),
        make_identity("hospital"),
    )
    patient_id = compute_patient_id(patient.public.sign_key)
    chain.submit_ok(chain.sign(client.build_register_patient, patient))
    readers = sorted([patient.public.enc_key, clinic.public.enc_key])
    ids = []
    for resource in [make_observation(50 + n % 100) for n in range(300)] + [make_condition("synthetic")]:
        encrypted = encrypt_record(
            resource, patient_id=patient_id, author=clinic.public.sign_key, readers=readers
        )
        ids.append(chain.submit_ok(chain.sign(client.build_add_record, clinic, patient_id, encrypted)).tx_id)
    records = [st.get_record(chain.state, i) for i in ids]
    assert all(r is not None for r in records)
    observations = [r for r in records if r is not None and r.record_type == "Observation"]
    (condition,) = [r for r in records if r is not None and r.record_type == "Condition"]
    inquiry = chain.submit_ok(
        chain.sign(
            client.build_request_access,
            hospital,
            patient_id,
            client.make_scope(record_types=("Observation",)),
            "TREAT",
            chain.next_time_ms + 24 * HOUR_MS,
            "synthetic follow-up",
            patient_enc_key=patient.public.enc_key,
        )
    )
    return Scene(chain, patient, hospital, patient_id, observations, condition, inquiry.tx_id)


def test_a_grant_in_parts_completes_with_every_part_in_any_order(scene: Scene) -> None:
    keys = scene.keys(scene.observations)
    grant_id = scene.manifest(keys)
    parts = client.split_grant_parts(keys)
    assert [len(p) for p in parts] == [256, 44]
    for index in (1, 0):  # parts may arrive in any order
        scene.ledger.submit_ok(
            scene.ledger.sign(client.build_grant_part, scene.patient, grant_id, index, parts[index])
        )
    progress = st.get_grant_parts(scene.ledger.state, grant_id)
    assert progress is not None
    assert progress.is_complete
    assert progress.keys_received == 300


def test_invalid_part_naming_a_record_outside_the_scope(scene: Scene) -> None:
    """The patient's client never builds it; a hostile one that declares a Condition in a grant of
    Observations gets the manifest through (it names ids by digest only), but never the key."""
    keys = scene.keys([*scene.observations[:10], scene.condition])
    grant_id = scene.manifest(keys)
    (part,) = client.split_grant_parts(keys)
    scene.ledger.submit_rejected(
        scene.ledger.sign(client.build_grant_part, scene.patient, grant_id, 0, part), "health.grant_records"
    )
    assert st.get_grant_key(scene.ledger.state, grant_id, scene.condition.record_id) is None


def test_invalid_keys_that_would_open_a_record_outside_the_scope(scene: Scene) -> None:
    """A key labelled as an in-scope record but re-sealed from an out-of-scope one: the rules
    cannot see inside a sealed key, but the key opens nothing it is labelled for, and the record it
    does belong to stays unreadable under the grant (no access, and its receipt is refused)."""
    target = scene.observations[0]
    keys = scene.keys([scene.condition], labels=[target.record_id])
    grant_id = scene.manifest(keys)
    (part,) = client.split_grant_parts(keys)
    scene.ledger.submit_ok(scene.ledger.sign(client.build_grant_part, scene.patient, grant_id, 0, part))
    state = scene.ledger.state
    grant = st.get_grant(state, grant_id)
    assert grant is not None
    with pytest.raises(RecordBindingError):  # per-record keys: the Condition's key opens no Observation
        open_record(
            target,
            scene.hospital,
            grant=grant,
            sealed_key=policy.get_grant_sealed_key(state, grant, target.record_id),
        )
    hospital = scene.ledger.institutions["hospital"]
    assert policy.get_read_access(state, hospital, scene.condition, scene.ledger.next_time_ms) is None
    scene.ledger.submit_rejected(
        scene.ledger.sign(client.build_read_receipt, scene.hospital, grant_id, [scene.condition.record_id]),
        "health.receipt_records",
    )


def test_invalid_part_that_differs_from_its_manifest(scene: Scene) -> None:
    keys = scene.keys(scene.observations[:20])
    grant_id = scene.manifest(keys[:10] + keys[11:])  # declares 19 records
    other = scene.keys(scene.observations[20:39])  # sends 19 others
    scene.ledger.submit_rejected(
        scene.ledger.sign(client.build_grant_part, scene.patient, grant_id, 0, other),
        "health.grant_part_digest",
    )
    scene.ledger.submit_rejected(  # or more than declared
        scene.ledger.sign(client.build_grant_part, scene.patient, grant_id, 0, keys), "health.grant_part"
    )
    scene.ledger.submit_rejected(  # or a part the manifest does not have
        scene.ledger.sign(client.build_grant_part, scene.patient, grant_id, 1, keys[:1]), "health.grant_part"
    )


def test_invalid_forged_manifest_and_parts(scene: Scene) -> None:
    keys = scene.keys(scene.observations)
    forged = client.compute_grant_manifest(scene.inquiry_id, keys)
    scene.ledger.submit_rejected(  # the requester grants itself
        scene.ledger.sign(client.build_grant_manifest, scene.hospital, forged), "health.not_authorised"
    )
    grant_id = scene.manifest(keys)
    part = client.split_grant_parts(keys)[0]
    for signer in (scene.hospital, make_identity("clinic"), make_identity("someone")):
        scene.ledger.submit_rejected(
            scene.ledger.sign(client.build_grant_part, signer, grant_id, 0, part), "health.not_authorised"
        )
    scene.ledger.submit_rejected(  # a part of a grant that does not exist
        scene.ledger.sign(client.build_grant_part, scene.patient, scene.inquiry_id, 0, part),
        "health.grant_unknown",
    )


def test_invalid_oversized_or_inconsistent_grants(scene: Scene) -> None:
    keys = scene.keys(scene.observations)
    good = client.compute_grant_manifest(scene.inquiry_id, keys)
    wrong_count = dataclasses.replace(good, record_count=good.record_count + GRANT_PART_RECORDS_MAX)
    scene.ledger.submit_rejected(
        scene.ledger.sign(client.build_grant_manifest, scene.patient, wrong_count), "health.grant_manifest"
    )
    grant_id = scene.manifest(keys)
    too_many = GrantPartBody(
        grant_id, 0, tuple(sorted(keys, key=lambda rk: rk.record_id))[: GRANT_PART_RECORDS_MAX + 1]
    )
    assert len(too_many.record_keys) == GRANT_PART_RECORDS_MAX + 1
    scene.ledger.submit_rejected(
        scene.ledger.sign(client.build_tx, scene.patient, KIND_GRANT_PART, too_many), "health.body"
    )
    huge = GrantManifestBody(scene.inquiry_id, 2**40, good.part_digests)
    scene.ledger.submit_rejected(
        scene.ledger.sign(client.build_grant_manifest, scene.patient, huge), "health.body"
    )
    assert encode(good)  # the honest manifest of 300 records is two digests


def test_invalid_replayed_parts(scene: Scene) -> None:
    keys = scene.keys(scene.observations)
    grant_id = scene.manifest(keys)
    parts = client.split_grant_parts(keys)
    scene.ledger.submit_ok(scene.ledger.sign(client.build_grant_part, scene.patient, grant_id, 0, parts[0]))
    scene.ledger.submit_rejected(  # the same part again (a new tx: the chain's replay check is by tx id)
        scene.ledger.sign(client.build_grant_part, scene.patient, grant_id, 0, parts[0]),
        "health.grant_part_duplicate",
    )
    scene.ledger.submit_rejected(  # the manifest again: the inquiry is decided
        scene.ledger.sign(
            client.build_grant_manifest, scene.patient, client.compute_grant_manifest(scene.inquiry_id, keys)
        ),
        "health.inquiry_closed",
    )


def test_invalid_parts_after_revocation(scene: Scene) -> None:
    keys = scene.keys(scene.observations)
    grant_id = scene.manifest(keys)
    parts = client.split_grant_parts(keys)
    scene.ledger.submit_ok(scene.ledger.sign(client.build_grant_part, scene.patient, grant_id, 0, parts[0]))
    scene.ledger.submit_ok(scene.ledger.sign(client.build_revoke, scene.patient, grant_id))
    scene.ledger.submit_rejected(
        scene.ledger.sign(client.build_grant_part, scene.patient, grant_id, 1, parts[1]),
        "health.grant_revoked",
    )
    first = parts[0][0].record_id
    scene.ledger.submit_rejected(  # and reads under it stop, as for any grant
        scene.ledger.sign(client.build_read_receipt, scene.hospital, grant_id, [first]),
        "health.grant_revoked",
    )


def test_invalid_part_of_a_one_tx_grant(scene: Scene) -> None:
    keys = scene.keys(scene.observations[:3])
    grant_id = scene.ledger.submit_ok(
        scene.ledger.sign(client.build_grant, scene.patient, scene.inquiry_id, keys)
    ).tx_id
    scene.ledger.submit_rejected(
        scene.ledger.sign(client.build_grant_part, scene.patient, grant_id, 0, keys), "health.grant_unknown"
    )


def test_the_largest_manifest_and_part_fit_one_tx() -> None:
    """Bounded tx sizes: a manifest of a million records and a full part are each one tx."""
    signer = make_identity("patient-bounds")
    manifest = GrantManifestBody(
        bytes(32), GRANT_MANIFEST_RECORDS_MAX, tuple(bytes([i % 256]) * 32 for i in range(GRANT_PARTS_MAX))
    )
    part = GrantPartBody(
        bytes(32),
        GRANT_PARTS_MAX - 1,
        tuple(
            RecordKey(i.to_bytes(32, "big"), bytes(SEALED_KEY_SIZE)) for i in range(GRANT_PART_RECORDS_MAX)
        ),
    )
    for signed in (
        client.build_grant_manifest(signer, manifest, chain_id=CHAIN_ID),
        client.build_tx(signer, KIND_GRANT_PART, part, chain_id=CHAIN_ID),
    ):
        assert len(signed[1]) <= TX_BYTES_MAX
    assert len(
        encode(GrantPartsState(bytes(32), GRANT_MANIFEST_RECORDS_MAX, manifest.part_digests, bytes(512), 0))
    ) <= (STATE_VALUE_BYTES_MAX)


def test_records_added_later_are_shared_only_if_the_scope_covers_them(scene: Scene) -> None:
    """A grant in parts hands out per-record keys only: a later record reaches the grantee only
    when its author seals it for a live grant whose scope covers it, as for any grant."""
    keys = scene.keys(scene.observations)
    scene.manifest(keys)
    state, ledger = scene.ledger.state, scene.ledger
    patient = st.get_patient(state, scene.patient_id)
    assert patient is not None
    clinic, hospital = ledger.institutions["clinic"], ledger.institutions["hospital"]
    readers = {
        record_type: policy.compute_record_readers(
            state, patient, clinic, record_type, record_id=b"", time_ms=ledger.next_time_ms
        )
        for record_type in ("Observation", "Condition")
    }
    assert hospital.enc_key in readers["Observation"]
    assert hospital.enc_key not in readers["Condition"]
