"""Institution membership by governance (issue 16, ADR 0020): approvals, threshold, effects.

A ledger of four validators: a change passes with the third approval (3 * 3 > 2 * 4), not the
second; a duplicate approval and a non-validator's are refused with their own codes. A removed
institution authors, requests, reads and is granted nothing from its block on; records already
sealed for it stay on the ledger (what removal cannot undo).
"""

from __future__ import annotations

import pytest
from health_testkit import Ledger, make_identity, make_institution, make_observation

from medledger.crypto import Identity
from medledger.health import client
from medledger.health import state as st
from medledger.health.membership_types import (
    KIND_INSTITUTION_REINSTATE,
    KIND_INSTITUTION_REMOVE,
    KIND_INSTITUTION_SUSPEND,
    STATUS_ACTIVE,
    STATUS_REMOVED,
    STATUS_SUSPENDED,
)
from medledger.health.records import encrypt_record, reseal_record_keys
from medledger.health.types import Institution, RecordState, compute_patient_id

HOUR_MS = 3_600_000


@pytest.fixture
def ledger() -> Ledger:
    return Ledger(validator_count=4)


def approve_add(ledger: Ledger, validator: Identity, institution: Institution) -> client.SignedTx:
    return ledger.sign(client.build_institution_add, validator, institution)


def approve_status(ledger: Ledger, validator: Identity, kind: str, key: bytes) -> client.SignedTx:
    return ledger.sign(client.build_institution_status, validator, kind, key)


def pass_change(ledger: Ledger, build: object, *args: object) -> None:
    for validator in ledger.validator_identities[:3]:
        ledger.submit_ok(ledger.sign(build, validator, *args))  # type: ignore[arg-type]


def test_two_approvals_of_four_do_not_pass_three_do(ledger: Ledger) -> None:
    newcomer = make_institution("newcomer", "clinic")
    v = ledger.validator_identities
    ledger.submit_ok(approve_add(ledger, v[0], newcomer))
    ledger.submit_ok(approve_add(ledger, v[1], newcomer))
    assert st.get_institution(ledger.state, newcomer.sign_key) is None
    changes = [st.get_membership_change(ledger.state, c) for c in st.list_membership_change_ids(ledger.state)]
    assert len(changes) == 1
    assert changes[0] is not None
    assert changes[0].is_pending
    assert len(changes[0].approvals) == 2
    outcome = ledger.submit_ok(approve_add(ledger, v[2], newcomer))
    assert st.get_institution(ledger.state, newcomer.sign_key) == newcomer
    status = st.get_institution_status(ledger.state, newcomer.sign_key)
    assert status is not None
    assert status.status == STATUS_ACTIVE
    assert status.height == outcome.height
    change = st.get_membership_change(ledger.state, changes[0].change_id)
    assert change is not None
    assert change.decided_height == outcome.height
    # The fourth approval comes after the change passed: the key is an institution now.
    ledger.submit_rejected(approve_add(ledger, v[3], newcomer), "health.membership_exists")


def test_duplicate_and_non_validator_approvals_are_refused(ledger: Ledger) -> None:
    newcomer = make_institution("newcomer", "clinic")
    v = ledger.validator_identities
    ledger.submit_ok(approve_add(ledger, v[0], newcomer))
    ledger.submit_rejected(approve_add(ledger, v[0], newcomer), "health.membership_duplicate")
    # An institution (not a validator) and a stranger may not vote.
    ledger.submit_rejected(
        approve_add(ledger, make_identity("clinic"), newcomer), "health.membership_approver"
    )
    ledger.submit_rejected(
        approve_add(ledger, make_identity("stranger"), newcomer), "health.membership_approver"
    )
    change = st.get_membership_change(ledger.state, st.list_membership_change_ids(ledger.state)[0])
    assert change is not None
    assert change.approvals == (v[0].public.sign_key,)


def test_without_governance_no_approval_is_accepted() -> None:
    ledger = Ledger(validator_count=4)
    ledger.app.genesis_validators = None
    signed = approve_add(ledger, ledger.validator_identities[0], make_institution("newcomer", "clinic"))
    ledger.submit_rejected(signed, "health.membership_approver")


def test_status_changes_follow_their_order(ledger: Ledger) -> None:
    clinic = ledger.institutions["clinic"].sign_key
    v = ledger.validator_identities
    unknown = make_identity("nobody").public.sign_key
    ledger.submit_rejected(
        approve_status(ledger, v[0], KIND_INSTITUTION_SUSPEND, unknown), "health.membership_unknown"
    )
    ledger.submit_rejected(
        approve_status(ledger, v[0], KIND_INSTITUTION_REINSTATE, clinic), "health.membership_status"
    )
    pass_change(ledger, client.build_institution_status, KIND_INSTITUTION_SUSPEND, clinic)
    status = st.get_institution_status(ledger.state, clinic)
    assert status is not None
    assert status.status == STATUS_SUSPENDED
    pass_change(ledger, client.build_institution_status, KIND_INSTITUTION_REINSTATE, clinic)
    # Suspended again after reinstatement: a new change (a new round), approvals start afresh.
    ledger.submit_ok(approve_status(ledger, v[0], KIND_INSTITUTION_SUSPEND, clinic))
    status = st.get_institution_status(ledger.state, clinic)
    assert status is not None
    assert status.status == STATUS_ACTIVE
    assert status.changes == 2
    pass_change(ledger, client.build_institution_status, KIND_INSTITUTION_REMOVE, clinic)
    ledger.submit_rejected(
        approve_status(ledger, v[0], KIND_INSTITUTION_REINSTATE, clinic), "health.membership_status"
    )
    # A removed institution's entry stays, with its status: the history names it.
    assert st.get_institution(ledger.state, clinic) == ledger.institutions["clinic"]
    status = st.get_institution_status(ledger.state, clinic)
    assert status is not None
    assert status.status == STATUS_REMOVED
    ledger.submit_rejected(
        approve_add(ledger, v[0], ledger.institutions["clinic"]), "health.membership_exists"
    )


def _record(ledger: Ledger, patient: Identity, author: Identity, *extra: Identity) -> client.SignedTx:
    patient_id = compute_patient_id(patient.public.sign_key)
    readers = [patient.public.enc_key, author.public.enc_key, *(e.public.enc_key for e in extra)]
    encrypted = encrypt_record(
        make_observation(72), patient_id=patient_id, author=author.public.sign_key, readers=readers
    )
    return ledger.sign(client.build_add_record, author, patient_id, encrypted)


def _inquiry(ledger: Ledger, patient: Identity, requester: Identity) -> client.SignedTx:
    return ledger.sign(
        client.build_request_access,
        requester,
        compute_patient_id(patient.public.sign_key),
        client.make_scope(),
        "TREAT",
        ledger.next_time_ms + HOUR_MS,
        "synthetic follow-up",
        patient_enc_key=patient.public.enc_key,
    )


def _grant(
    ledger: Ledger, patient: Identity, inquiry_id: bytes, records: list[RecordState], to: Identity
) -> client.SignedTx:
    keys = reseal_record_keys(records, patient, to.public.enc_key)
    return ledger.sign(client.build_grant, patient, inquiry_id, keys)


def test_a_joined_clinic_writes_then_removed_it_can_do_nothing(ledger: Ledger) -> None:
    joiner = make_identity("joiner")
    joined = Institution("Joiner Clinic", "clinic", joiner.public.sign_key, joiner.public.enc_key)
    hospital = make_identity("hospital")
    patient = make_identity("patient-a")
    ledger.submit_ok(ledger.sign(client.build_register_patient, patient))
    # Before it joins it is no institution.
    ledger.submit_rejected(_record(ledger, patient, joiner), "health.not_institution")
    pass_change(ledger, client.build_institution_add, joined)
    outcome = ledger.submit_ok(_record(ledger, patient, joiner))
    record = st.get_record(ledger.state, outcome.tx_id)
    assert record is not None
    # The patient shares it with the hospital, and the joined clinic asks for the hospital's.
    hospital_inquiry = ledger.submit_ok(_inquiry(ledger, patient, hospital)).tx_id
    grant_id = ledger.submit_ok(_grant(ledger, patient, hospital_inquiry, [record], hospital)).tx_id
    ledger.submit_ok(ledger.sign(client.build_read_receipt, hospital, grant_id, [record.record_id]))
    open_inquiry = ledger.submit_ok(_inquiry(ledger, patient, joiner)).tx_id
    granted_inquiry = ledger.submit_ok(_inquiry(ledger, patient, joiner)).tx_id
    joiner_grant = ledger.submit_ok(_grant(ledger, patient, granted_inquiry, [record], joiner)).tx_id
    # A live grant to it: a new record may be sealed for it ...
    ledger.submit_ok(_record(ledger, make_identity("patient-a"), hospital, joiner))

    pass_change(ledger, client.build_institution_status, KIND_INSTITUTION_REMOVE, joiner.public.sign_key)
    # ... and after its removal it authors, requests and reads nothing,
    ledger.submit_rejected(_record(ledger, patient, joiner), "health.institution_inactive")
    ledger.submit_rejected(_inquiry(ledger, patient, joiner), "health.institution_inactive")
    ledger.submit_rejected(
        ledger.sign(client.build_read_receipt, joiner, joiner_grant, [record.record_id]),
        "health.institution_inactive",
    )
    # its open inquiry cannot be granted (the patient may still deny it),
    ledger.submit_rejected(
        _grant(ledger, patient, open_inquiry, [record], joiner), "health.institution_inactive"
    )
    # nothing new is sealed for it under its live grant (sealing for it is refused),
    ledger.submit_rejected(_record(ledger, patient, hospital, joiner), "health.record_readers")
    ledger.submit_ok(_record(ledger, patient, hospital))
    ledger.submit_ok(ledger.sign(client.build_deny, patient, open_inquiry))
    # and what it wrote stays on the ledger, readable by those it was shared with.
    ledger.submit_ok(ledger.sign(client.build_read_receipt, hospital, grant_id, [record.record_id]))
