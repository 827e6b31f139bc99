"""Who proposes (height, round): the one proposer-selection function (docs/adr/0023).

A version-1 genesis (no `ConsensusParams`, or `leader_window` 0) keeps plain round-robin over the
sorted set, `validators[(height + round) % n]`, so old chains replay exactly as they were built.

Under a version-2 genesis with a `leader_window`, round 0 skips a validator that proposed none of
the last `compute_window(n, leader_window)` committed blocks (leader reputation in the style of
DiemBFT v4 / Aptos, from data every node agrees on: the proposers in committed headers). The slot
goes to the next validator in round-robin order that did propose one of them. Rounds ≥ 1 stay plain
round-robin, so a wrongly skipped validator still gets its turns whenever round 0 fails. Safety never
depends on who proposes (any proposal still needs a quorum of prevotes and precommits).

Why proposers only and not the certificate's signers: a block's commit certificate is not part of
the block (the block hash excludes it, and any quorum certifies it), so two honest nodes may store
different signers for the same height; a selection reading them would not be a function of the
committed chain, and block sync and `medledger verify` would refuse blocks a quorum accepted.

A skipped validator that comes back could then never be seen again, so every
`PROBE_FACTOR * window` heights (one cycle of n heights) the round-0 slot is plain round-robin:
a validator that is up again proposes there and is back in the window for its next turns; one
still down costs one propose timeout per probe. That timeout is shortened
(`LeaderSchedule.is_probing`, `PROBE_TIMEOUT_DIVISOR`): a validator that is up has its round-0
block built ahead and proposes at once, and a timeout only ever moves a round on (it precommits
nil at worst), so it never touches safety.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Final

from medledger.chain.types import Validator, ValidatorSet

#: A probe cycle (plain round-robin at round 0) every `PROBE_FACTOR` windows.
PROBE_FACTOR: Final = 10
#: A probed validator's round-0 propose timeout is the usual one divided by this.
PROBE_TIMEOUT_DIVISOR: Final = 4


def compute_window(validator_count: int, leader_window: int) -> int:
    """How many committed blocks before a height its round-0 selection reads (0: none, plain
    round-robin). At least two full rotations, so that an active validator, which proposes once
    per rotation, never drops out of the window while others are skipped."""
    if leader_window == 0 or validator_count == 1:
        return 0
    return max(leader_window, 2 * validator_count)


def is_probe_height(height: int, validator_count: int, window: int) -> bool:
    """Whether `height` lies in a probe cycle, where round 0 is plain round-robin."""
    cycles_per_probe = max(1, PROBE_FACTOR * window // validator_count)
    return (height // validator_count) % cycles_per_probe == 0


def select_proposer(
    validators: ValidatorSet,
    height: int,
    round_: int,
    *,
    leader_window: int,
    recent_proposers: Sequence[bytes],
) -> Validator:
    """The proposer of (`height`, `round_`).

    `recent_proposers`: the proposers of the committed blocks `height - window` to `height - 1`,
    with `window = compute_window(len(validators), leader_window)`; empty when `window` is 0 or
    `height <= window` (history shorter than the window: nobody is skipped yet).
    """
    members = validators.validators
    n = len(members)
    plain = members[(height + round_) % n]
    window = compute_window(n, leader_window)
    if window == 0 or height <= window:
        if recent_proposers:
            raise ValueError(f"height {height}: no history is read below the window of {window}")
        return plain
    if len(recent_proposers) != window:
        raise ValueError(f"height {height}: {len(recent_proposers)} recent proposers, the window is {window}")
    if round_ > 0 or is_probe_height(height, n, window):
        return plain
    active = set(recent_proposers)
    for step in range(n):
        candidate = members[(height + step) % n]
        if candidate.sign_key in active:
            return candidate
    return plain  # nobody of this set proposed lately (a new set): plain round-robin


@dataclasses.dataclass(frozen=True, slots=True)
class LeaderSchedule:
    """The proposers of one height: its set and the committed history its selection reads."""

    validators: ValidatorSet
    height: int
    leader_window: int = 0
    recent_proposers: tuple[bytes, ...] = ()

    def get_proposer(self, round_: int) -> Validator:
        return select_proposer(
            self.validators,
            self.height,
            round_,
            leader_window=self.leader_window,
            recent_proposers=self.recent_proposers,
        )

    @property
    def is_probing(self) -> bool:
        """Whether round 0 goes to a validator absent from the window only because this height is
        in a probe cycle (the consensus core then waits less for its proposal)."""
        window = self.window
        if (
            window == 0
            or self.height <= window
            or not is_probe_height(self.height, len(self.validators), window)
        ):
            return False
        return self.get_proposer(0).sign_key not in self.recent_proposers

    @property
    def window(self) -> int:
        """How many committed blocks before `height` the selection reads."""
        return compute_window(len(self.validators), self.leader_window)


def plain_schedule(validators: ValidatorSet, height: int) -> LeaderSchedule:
    """Round-robin at every round (a version-1 genesis)."""
    return LeaderSchedule(validators, height)


__all__ = [
    "PROBE_FACTOR",
    "PROBE_TIMEOUT_DIVISOR",
    "LeaderSchedule",
    "compute_window",
    "is_probe_height",
    "plain_schedule",
    "select_proposer",
]
