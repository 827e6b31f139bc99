"""Institution membership by governance: wire bodies and stored values (issue 16, ADR 0020).

Four tx kinds, each an *approval* signed by a current validator; a change passes in the block where
more than two thirds of the validators of that block's height have approved it (as `chain.validator_*`):

- `health.institution_add` (body: the `Institution`): registers a new institution;
- `health.institution_suspend`, `health.institution_reinstate`, `health.institution_remove`
  (body: `MembershipKeyBody`, the institution's signing key): change its status.

The genesis institutions have no `MembershipState` (absent means active, so an old chain's state is
what it was); the first status change writes one. Removed institutions keep their `Institution`
entry (the history names them) and their `MembershipState` says `removed`.
The rules are `health.membership`.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Final

from medledger.chain.codec import FieldSpec, FixedBytes, Seq, Struct, Text, UInt, wire_fields
from medledger.health.types import HASH, KEY, Institution

KIND_INSTITUTION_ADD: Final = "health.institution_add"
KIND_INSTITUTION_SUSPEND: Final = "health.institution_suspend"
KIND_INSTITUTION_REINSTATE: Final = "health.institution_reinstate"
KIND_INSTITUTION_REMOVE: Final = "health.institution_remove"
#: The kinds that change a registered institution's status (body: its key).
STATUS_KINDS: Final = frozenset(
    {KIND_INSTITUTION_SUSPEND, KIND_INSTITUTION_REINSTATE, KIND_INSTITUTION_REMOVE}
)
MEMBERSHIP_KINDS: Final = frozenset({KIND_INSTITUTION_ADD, *STATUS_KINDS})

STATUS_ACTIVE: Final = "active"
STATUS_SUSPENDED: Final = "suspended"
STATUS_REMOVED: Final = "removed"
STATUSES: Final = frozenset({STATUS_ACTIVE, STATUS_SUSPENDED, STATUS_REMOVED})
#: The status each kind sets when its change passes.
STATUS_AFTER: Final[dict[str, str]] = {
    KIND_INSTITUTION_ADD: STATUS_ACTIVE,
    KIND_INSTITUTION_SUSPEND: STATUS_SUSPENDED,
    KIND_INSTITUTION_REINSTATE: STATUS_ACTIVE,
    KIND_INSTITUTION_REMOVE: STATUS_REMOVED,
}
#: Most approvals one change records (a validator set is at most this large: `chain.governance`).
APPROVALS_MAX: Final = 256
#: Domain of a change's id.
CHANGE_DOMAIN: Final = b"medledger/health/membership-change/v1\x00"


@dataclasses.dataclass(frozen=True, slots=True)
class MembershipKeyBody:
    """The body of a suspend, reinstate or remove approval: whose status changes."""

    sign_key: bytes

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(sign_key=KEY)


@dataclasses.dataclass(frozen=True, slots=True)
class MembershipState:
    """An institution's status, the height it took effect, and how many changes it has passed."""

    status: str
    height: int
    changes: int

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        status=Text(allowed=STATUSES), height=UInt(), changes=UInt()
    )


@dataclasses.dataclass(frozen=True, slots=True)
class MembershipChange:
    """A proposed change (pending while `decided_height` is 0) and the validators that approved it.

    `change_id` digests the kind, the body and the institution's count of passed changes (its
    `round`), so the same kind on the same key later (suspended again after a reinstatement) is a
    new change with approvals of its own; an approval that arrives after its change passed is
    refused by the status rule of its kind."""

    change_id: bytes
    kind: str
    institution: Institution
    round: int
    approvals: tuple[bytes, ...]
    proposed_height: int
    decided_height: int

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        change_id=HASH,
        kind=Text(allowed=MEMBERSHIP_KINDS),
        institution=Struct(Institution),
        round=UInt(),
        approvals=Seq(FixedBytes(32), APPROVALS_MAX),
        proposed_height=UInt(),
        decided_height=UInt(),
    )

    @property
    def is_pending(self) -> bool:
        return self.decided_height == 0


#: The body type of each membership kind.
MEMBERSHIP_BODY_TYPES: Final[dict[str, type]] = {
    KIND_INSTITUTION_ADD: Institution,
    KIND_INSTITUTION_SUSPEND: MembershipKeyBody,
    KIND_INSTITUTION_REINSTATE: MembershipKeyBody,
    KIND_INSTITUTION_REMOVE: MembershipKeyBody,
}
