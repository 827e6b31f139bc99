"""The rules of institution membership by governance (issue 16, ADR 0020).

Every membership tx is one validator's approval of one change (kinds and bodies in
`health.membership_types`). The validators are those of the tx's block height, which the chain's
governance keeps in state (`chain.governance`); `HealthApp` passes their keys in
`TxContext.validators` (empty when it runs without governance: then no approval is accepted).

A change passes in the block where its approvals by current validators outnumber two thirds of
the set (approvals * 3 > 2 * n, as `chain.validator_*`); at admission (no block yet) an approval
is only checked, never passes. The effect of each kind, when it passes:

- add: the `Institution` is registered (`h1/inst/`) with status active;
- suspend / remove: status suspended / removed; reinstate: active again (a removal is final).

A rejected approval changes nothing. Refusal codes: `health.membership_approver` (the sender is not
a validator of this height), `health.membership_duplicate` (it already approved this change),
`health.membership_exists` (add: the key is already an institution, of any status, or a patient),
`health.membership_unknown` (no such institution), `health.membership_status` (the change does not
apply to the institution's status, e.g. suspending a suspended one or anything on a removed one),
`health.enc_key_unusable` (add: a low-order x25519 key).
"""

from __future__ import annotations

import dataclasses

from medledger.chain.app import StateReader
from medledger.chain.codec import decode, encode
from medledger.chain.errors import CodecError
from medledger.chain.types import Tx
from medledger.crypto import digest, is_usable_enc_key
from medledger.health import state as st
from medledger.health.errors import reject
from medledger.health.membership_types import (
    CHANGE_DOMAIN,
    KIND_INSTITUTION_ADD,
    KIND_INSTITUTION_REINSTATE,
    KIND_INSTITUTION_REMOVE,
    KIND_INSTITUTION_SUSPEND,
    MEMBERSHIP_BODY_TYPES,
    STATUS_ACTIVE,
    STATUS_AFTER,
    STATUS_REMOVED,
    STATUS_SUSPENDED,
    MembershipChange,
    MembershipKeyBody,
    MembershipState,
)
from medledger.health.types import Institution, compute_patient_id

#: The status an institution must have for each status kind to apply.
_STATUS_BEFORE: dict[str, frozenset[str]] = {
    KIND_INSTITUTION_SUSPEND: frozenset({STATUS_ACTIVE}),
    KIND_INSTITUTION_REINSTATE: frozenset({STATUS_SUSPENDED}),
    KIND_INSTITUTION_REMOVE: frozenset({STATUS_ACTIVE, STATUS_SUSPENDED}),
}


def compute_change_id(kind: str, institution: Institution, round_: int) -> bytes:
    """The id approvals of one change share: its kind, institution and the institution's round."""
    return digest(CHANGE_DOMAIN + kind.encode() + b"\x00" + encode(institution) + round_.to_bytes(8, "big"))


def is_passing(approvals: tuple[bytes, ...], validators: frozenset[bytes]) -> bool:
    """More than two thirds of `validators` approve (approvals by others do not count)."""
    count = sum(1 for a in approvals if a in validators)
    return bool(validators) and count * 3 > 2 * len(validators)


def decode_membership_body(tx: Tx) -> Institution | MembershipKeyBody:
    body_type = MEMBERSHIP_BODY_TYPES[tx.kind]
    try:
        body: Institution | MembershipKeyBody = decode(body_type, tx.body, max_bytes=len(tx.body))
    except CodecError as exc:
        raise reject("body", f"malformed {tx.kind} body: {exc.message}") from None
    return body


def validate_change(
    state: StateReader, kind: str, body: Institution | MembershipKeyBody
) -> tuple[Institution, int]:
    """The institution a change concerns and its round, if the change applies to today's state."""
    if isinstance(body, Institution):
        if st.get_institution(state, body.sign_key) is not None:
            raise reject("membership_exists", "that key is already a registered institution (of any status)")
        if st.get_patient(state, compute_patient_id(body.sign_key)) is not None:
            raise reject("membership_exists", "that key is a registered patient's")
        if not is_usable_enc_key(body.enc_key):
            raise reject("enc_key_unusable", "the institution's x25519 key is a low-order point")
        return body, 0
    institution = st.get_institution(state, body.sign_key)
    if institution is None:
        raise reject("membership_unknown", "no institution is registered under that key")
    membership = st.get_institution_status(state, body.sign_key)
    status = STATUS_ACTIVE if membership is None else membership.status
    if status not in _STATUS_BEFORE[kind]:
        raise reject("membership_status", f"{kind} does not apply to an institution that is {status}")
    return institution, 0 if membership is None else membership.changes


def process_membership(
    state: st.StateWriter,
    tx: Tx,
    *,
    sender: bytes,
    height: int,
    in_block: bool,
    validators: frozenset[bytes],
) -> MembershipChange:
    """Record `sender`'s approval of the change `tx` carries; apply the change if it passes."""
    body = decode_membership_body(tx)
    if sender not in validators:
        raise reject("membership_approver", "only a current validator may approve a membership change")
    institution, round_ = validate_change(state, tx.kind, body)
    change_id = compute_change_id(tx.kind, institution, round_)
    change = st.get_membership_change(state, change_id)
    if change is None:
        change = MembershipChange(change_id, tx.kind, institution, round_, (), height, 0)
    if sender in change.approvals:
        raise reject("membership_duplicate", "this validator already approved the change")
    approvals = tuple(sorted({*change.approvals, sender}))
    change = dataclasses.replace(change, approvals=approvals)
    if in_block and is_passing(approvals, validators):
        change = dataclasses.replace(change, decided_height=height)
        if tx.kind == KIND_INSTITUTION_ADD:
            st.save_institution(state, institution)
        status = STATUS_AFTER[tx.kind]
        st.save_institution_status(state, institution.sign_key, MembershipState(status, height, round_ + 1))
    st.save_membership_change(state, change)
    return change


__all__ = [
    "KIND_INSTITUTION_ADD",
    "KIND_INSTITUTION_REINSTATE",
    "KIND_INSTITUTION_REMOVE",
    "KIND_INSTITUTION_SUSPEND",
    "STATUS_REMOVED",
    "compute_change_id",
    "is_passing",
    "process_membership",
]
