"""The simulator's configuration: what a run depends on, and nothing else.

A `SimConfig` (the seed, the network's size, its fault plan, its Byzantine members) determines a
run completely: `describe()` prints Python that rebuilds it, so a failing run's replay line can be
pasted into a test. `Fault`s are network faults (loss, delay, duplication, partitions), process
faults (crashes, including crashes in the middle of a store write) and storage faults (a torn
write, a table corrupted while the node was down, a state restored from a wrong backup while it
was down); `HostileKind`s are peers that speak the frame
protocol but lie. Timeouts and block-time bounds are scaled to a simulated network of a few to
tens of milliseconds a hop.

This module imports only `medledger.chain`.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from enum import StrEnum
from typing import Final

from medledger.chain.app import App
from medledger.chain.consensus import ConsensusTimeouts, SynchronyParams
from medledger.chain.types import ConsensusParams

# -- limits and defaults ---------------------------------------------------------------------

#: Transactions a simulated block carries at most.
SIM_BLOCK_TXS_MAX: Final = 16
#: Pending transactions a simulated node keeps at most.
SIM_MEMPOOL_TXS_MAX: Final = 256
#: Timeouts scaled to the simulated network (a few to tens of milliseconds per hop).
SIM_TIMEOUTS: Final = ConsensusTimeouts(
    timeout_propose_ms_base=300,
    timeout_propose_ms_delta=100,
    timeout_propose_ms_max=1_500,
    timeout_prevote_ms_base=150,
    timeout_prevote_ms_delta=100,
    timeout_prevote_ms_max=1_000,
    timeout_precommit_ms_base=150,
    timeout_precommit_ms_delta=100,
    timeout_precommit_ms_max=1_000,
    rebroadcast_ms=400,
)

#: PBTS bounds scaled to the simulated network like the timeouts (delays of 2 to 20 ms a hop).
SIM_SYNCHRONY: Final = SynchronyParams(precision_ms=50, message_delay_ms=200)

CHAIN_ID: Final = "medledger-sim"


class TimeSkew(StrEnum):
    """How a Byzantine proposer stamps its blocks, relative to the virtual time `now`.

    "Just outside" is outside the bounds for every honest validator at round 0 (whatever its
    clock offset and the message delay), "just inside" inside for all of them.
    """

    FAR_FUTURE = "far_future"  # the largest time the wire carries
    FAR_PAST = "far_past"  # 0: at or before every parent
    OUTSIDE_FUTURE = "outside_future"
    OUTSIDE_PAST = "outside_past"
    INSIDE_FUTURE = "inside_future"
    INSIDE_PAST = "inside_past"

    def __repr__(self) -> str:
        """Python that rebuilds it (for a failing run's replay line)."""
        return f"TimeSkew.{self.name}"


class FaultKind(StrEnum):
    LOSS = "loss"  # each message is lost with probability `rate`
    DELAY = "delay"  # up to `extra_ms` more delay per message (reorders heavily)
    DUPLICATE = "duplicate"  # each message is delivered twice with probability `rate`
    PARTITION = "partition"  # `nodes` and the rest cannot talk to each other
    ONE_WAY = "one_way"  # messages from `nodes` to the rest are lost; the other way works
    CRASH = "crash"  # `nodes` crash at `start_ms` and restart at `end_ms`
    CRASH_MID = "crash_mid"  # like CRASH, but at a store write some time in the window
    TORN_WRITE = "torn_write"  # like CRASH_MID, and the write in flight is torn: store refused on start
    CORRUPT = "corrupt"  # like CRASH, and a table rots while down: the start check refuses the store
    #: Like CRASH, and while down the node's app state is restored from a wrong backup: altered
    #: with its state root, consistently, so the start check passes; the node must halt at the
    #: first block the network certifies on its tip (`StateDivergedError`), dropping no one.
    WRONG_BACKUP = "wrong_backup"

    def __repr__(self) -> str:
        """Python that rebuilds it (for a failing run's replay line)."""
        return f"FaultKind.{self.name}"


#: The faults that take nodes down during their window (and restart them at its end).
CRASH_KINDS: Final = frozenset(
    {FaultKind.CRASH, FaultKind.CRASH_MID, FaultKind.TORN_WRITE, FaultKind.CORRUPT, FaultKind.WRONG_BACKUP}
)

#: The faults after which a node refuses its store and is rebuilt from peers.
STORE_LOSS_KINDS: Final = frozenset({FaultKind.TORN_WRITE, FaultKind.CORRUPT})

#: The faults after which a node's state silently differs from the chain's: it is faulty from
#: then on (it halts; liveness is not due from it), so they strike only f validators, twins
#: included in that count.
DIVERGING_KINDS: Final = frozenset({FaultKind.WRONG_BACKUP})


class HostileKind(StrEnum):
    """A hostile sync peer: a node that speaks the frame protocol but lies (never a validator)."""

    LIE_HEIGHT = "lie_height"  # claims a huge height, answers block requests with nothing
    WITHHOLD = "withhold"  # claims the network's height plus some, never answers
    TAMPER_TX_ROOT = "tamper_tx_root"  # serves real blocks with a transaction changed
    FORGE_CERTIFICATE = "forge_certificate"  # real blocks, certificates with forged signatures
    SHORT_CERTIFICATE = "short_certificate"  # real blocks, certificates below a quorum
    OTHER_PARENT = "other_parent"  # blocks on another parent, with the real certificates
    GAPS = "gaps"  # answers ranges with a block left out
    GARBAGE = "garbage"  # frames that do not decode

    def __repr__(self) -> str:
        return f"HostileKind.{self.name}"


@dataclasses.dataclass(frozen=True, slots=True)
class Fault:
    """One fault of a plan, active during [start_ms, end_ms) of virtual time."""

    kind: FaultKind
    start_ms: int
    end_ms: int
    nodes: tuple[int, ...] = ()
    rate: float = 0.0
    extra_ms: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.start_ms < self.end_ms:
            raise ValueError(f"fault {self.kind.value}: needs 0 <= start_ms < end_ms")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"fault {self.kind.value}: rate must lie in [0, 1]")

    def is_active(self, now_ms: int) -> bool:
        return self.start_ms <= now_ms < self.end_ms

    def __repr__(self) -> str:
        """Python that rebuilds this fault (a failing run's replay line is pasted into a test)."""
        parts = [f"FaultKind.{self.kind.name}", str(self.start_ms), str(self.end_ms)]
        if self.nodes:
            parts.append(f"nodes={self.nodes!r}")
        if self.rate:
            parts.append(f"rate={self.rate!r}")
        if self.extra_ms:
            parts.append(f"extra_ms={self.extra_ms}")
        return f"Fault({', '.join(parts)})"


TxFactory = Callable[[random.Random], tuple[str, bytes]]


@dataclasses.dataclass(frozen=True, slots=True)
class SimConfig:
    """Everything a run depends on. Equal configs give identical runs."""

    n: int
    seed: int
    app_factory: Callable[[], App]
    make_tx: TxFactory
    faults: tuple[Fault, ...] = ()
    #: Validators (by index) that also run a Byzantine second copy with the same key.
    twins: tuple[int, ...] = ()
    #: Validators (by index) whose nodes (twins included) stamp their blocks with `time_skew`.
    skewed: tuple[int, ...] = ()
    time_skew: TimeSkew = TimeSkew.FAR_FUTURE
    #: Correct nodes' clocks are off by up to this either way (drawn from the seed).
    clock_offset_ms_max: int = 0
    synchrony: SynchronyParams = SIM_SYNCHRONY
    #: Heights every correct node must reach (beyond those committed before GST) for liveness.
    heights_after_gst: int = 3
    liveness_bound_ms: int = 20_000
    #: False when more than f validators are faulty or a fault never heals: only safety is checked.
    expect_liveness: bool = True
    delay_ms_min: int = 2
    delay_ms_max: int = 20
    #: The pause between committing a block and starting the next height (a node's block interval).
    block_interval_ms: int = 100
    client_tx_interval_ms: int = 40
    timeouts: ConsensusTimeouts = SIM_TIMEOUTS
    #: A run that processes more events than this fails (a message storm or a livelock).
    events_max: int = 2_000_000
    #: Stop here at the latest (virtual ms); needed when a fault never heals.
    stop_ms: int | None = None
    #: Hostile sync peers linked to every node for the whole run (one node each).
    hostile: tuple[HostileKind, ...] = ()
    #: The genesis's consensus params (a version-2 genesis: caps, leader skipping); None: version 1.
    consensus_params: ConsensusParams | None = None

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError("a simulation needs at least one validator")
        if any(not 0 <= i < self.n for i in self.twins) or len(set(self.twins)) != len(self.twins):
            raise ValueError("twins must be distinct validator indices")
        if any(not 0 <= i < self.n for i in self.skewed) or len(set(self.skewed)) != len(self.skewed):
            raise ValueError("skewed must be distinct validator indices")
        if not 0 <= self.clock_offset_ms_max <= self.synchrony.precision_ms // 2:
            raise ValueError("honest clocks must stay within PRECISION of each other")
        nodes = self.n + len(self.twins)
        for fault in self.faults:
            if any(not 0 <= i < nodes for i in fault.nodes):
                raise ValueError(f"fault {fault.kind.value} names a node that does not exist")
        for fault in self.faults:
            if fault.kind in CRASH_KINDS and any(i >= self.n for i in fault.nodes):
                raise ValueError(f"fault {fault.kind.value} crashes a twin (twins are Byzantine already)")

    @property
    def gst_ms(self) -> int:
        """The global stabilisation time: when the last fault heals."""
        return max((f.end_ms for f in self.faults), default=0)

    @property
    def node_count(self) -> int:
        """Validators, twins and hostile peers: the nodes of the run, in that order."""
        return self.n + len(self.twins) + len(self.hostile)

    def describe(self) -> str:
        """Python that rebuilds this config: every field that is not at its default."""
        parts = []
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name not in ("n", "seed") and value == field.default:
                continue
            if field.name in ("app_factory", "make_tx"):
                shown = f"{value.__module__}.{value.__qualname__}"
            else:
                shown = repr(value)
            parts.append(f"{field.name}={shown}")
        return f"SimConfig({', '.join(parts)})"
