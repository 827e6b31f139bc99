"""A nemesis for the integration tests: seeded process faults against a local testnet, a client
that records what it was told, and the checks over what the chain and the client saw.

Three parts, as in Jepsen and CometBFT's end-to-end runner:

- `compute_schedule` turns a seed into a schedule of faults: kill -9 of one validator and its
  restart, SIGSTOP of one validator for a while and SIGCONT, and finally an orderly stop and start
  of every node. The seed is printed, and `MEDLEDGER_NEMESIS_SEED` replays a schedule.
- `Nemesis` carries a schedule out against a `LocalCluster` and logs every fault with wall-clock
  times (the clock block headers use). Waiting out a fault's duration or a healthy interval is the
  schedule itself, the one place these tests hold still on purpose; nothing waits for recovery, so
  a node slow to rejoin overlaps the next fault, as it would in production. On exit every paused
  node is resumed, whatever happened, so the cluster fixture can stop it.
- `RecordingClient` submits signed txs at a steady rate, round-robin over the nodes, giving up on
  a node that does not answer (killed or paused) for a moment; it records every tx a node accepted
  (when it was sent and when the node answered) and, looking its pending txs up, every tx a node
  said is committed, with the height and index it was told.

The checks are pure functions over the committed blocks, the client's records and the nemesis
log (`compute_down_intervals`, `compute_degraded_windows`, `compute_unexplained_losses`,
`compute_owed_spans`, `compute_stalls`, `compute_blind_spots`): a stall is measured from the
block headers' times and the client's acceptances, never from how often anything polled.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import http.client
import itertools
import os
import random
import secrets
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Final

from cluster_harness import (
    DEADLINE_S,
    ApiClient,
    ClusterNode,
    LocalCluster,
    api_at_config_port,
    make_batch,
    pause_node,
    request_within,
    resume_node,
    wait_until,
)

from medledger.chain.consensus import ConsensusTimeouts, TimeoutStep
from medledger.crypto import Identity

#: The environment variable that replays a schedule from its seed.
SEED_ENV: Final = "MEDLEDGER_NEMESIS_SEED"

# -- the schedule's bounds (seconds) ------------------------------------------------------------

#: How long a killed validator stays down before it is started again (its restart takes longer).
KILL_DOWN_S: Final = (8.0, 12.0)
#: How long a validator stays paused (SIGSTOP) before SIGCONT: a GC pause or VM hiccup, from as
#: long as the peer heartbeat (5 s) to several of them.
PAUSE_S: Final = (5.0, 20.0)
#: How long the cluster runs with no fault before each fault (nothing waits for recovery).
HEALTHY_S: Final = (2.0, 5.0)
#: How long the cluster runs after the restart of all nodes before the client stops.
TAIL_S: Final = 8.0

# -- the client ---------------------------------------------------------------------------------

#: Client threads: one stuck on a node that paused mid-request leaves the others submitting.
CLIENT_WORKERS: Final = 3
#: Each worker submits this many txs per request, one request per interval (~15 txs/s in all).
CLIENT_TXS_PER_SUBMIT: Final = 2
CLIENT_INTERVAL_S: Final = 0.4
#: A node that has not answered within this long is given up on for this request.
CLIENT_TIMEOUT_S: Final = 1.5
#: A node that did not answer is not asked again for this long.
CLIENT_REST_S: Final = 1.0
#: Pending txs looked up (`GET /v1/txs/{id}`) per worker per interval: more than are submitted.
CLIENT_CONFIRMS_PER_TICK: Final = 3 * CLIENT_TXS_PER_SUBMIT
#: Answers that mean "not now" (shutting down, mempool full): the node is rested, not blamed.
UNAVAILABLE_STATUSES: Final = frozenset({429, 503})


def now_ms() -> int:
    """Wall-clock milliseconds: the clock a proposer stamps its block header with."""
    return time.time_ns() // 1_000_000


def compute_round_timeout_ms(timeouts: ConsensusTimeouts, round_: int = 0) -> int:
    """How long one round of consensus may take before the next starts: its propose, prevote and
    precommit timeouts (a round whose proposer is down ends after the propose timeout, the others
    end early on a quorum of votes)."""
    steps = (TimeoutStep.PROPOSE, TimeoutStep.PREVOTE, TimeoutStep.PRECOMMIT)
    return sum(timeouts.compute_timeout_ms(step, round_) for step in steps)


# -- the schedule -------------------------------------------------------------------------------


class FaultKind(enum.Enum):
    KILL = "kill -9 {victim}, start it again {duration_s:.1f} s later"
    PAUSE = "SIGSTOP {victim}, SIGCONT {duration_s:.1f} s later"
    RESTART_ALL = "stop all nodes (SIGTERM), then start them all"


#: The main phase (at most one validator down at any time), then the restart of all. Each pause
#: is followed a few seconds later by a kill of another validator that keeps it down for longer
#: than the stall bound, so a validator slow to rejoin after a pause (defect 11: banned by its
#: peers for 30 s) leaves two down in effect, and the chain stalls where it must not.
MAIN_FAULTS: Final = (FaultKind.PAUSE, FaultKind.KILL, FaultKind.PAUSE, FaultKind.KILL)


@dataclasses.dataclass(frozen=True, slots=True)
class Fault:
    kind: FaultKind
    #: The validator it hits (None: every node).
    victim: str | None
    #: How long the victim stays killed or paused (0 for the restart of all).
    duration_s: float
    #: How long the cluster runs with no fault before this one.
    healthy_before_s: float


@dataclasses.dataclass(frozen=True, slots=True)
class Schedule:
    seed: int
    faults: tuple[Fault, ...]
    #: How long the cluster runs after the last fault before the client stops.
    tail_s: float

    def describe(self) -> str:
        lines = [f"nemesis seed {self.seed} (replay: {SEED_ENV}={self.seed})"]
        for number, fault in enumerate(self.faults, 1):
            what = fault.kind.value.format(victim=fault.victim, duration_s=fault.duration_s)
            lines.append(f"  {number}. after {fault.healthy_before_s:.1f} s healthy: {what}")
        lines.append(f"  then {self.tail_s:.1f} s healthy")
        return "\n".join(lines)


def get_seed(environ: Mapping[str, str] | None = None) -> int:
    """The seed to replay (`MEDLEDGER_NEMESIS_SEED`), else a fresh one."""
    environ = os.environ if environ is None else environ
    raw = environ.get(SEED_ENV)
    if raw is None:
        return secrets.randbits(32)
    try:
        return int(raw, 10)
    except ValueError:
        raise ValueError(f"{SEED_ENV} must be a decimal integer, got {raw!r}") from None


def compute_schedule(seed: int, validators: Sequence[str]) -> Schedule:
    """The faults of one run, from its seed alone: each hits a validator other than the last one."""
    assert len(validators) >= 2, validators
    rng = random.Random(seed)
    faults: list[Fault] = []
    previous: str | None = None
    for kind in MAIN_FAULTS:
        victim = rng.choice([v for v in validators if v != previous])
        span = KILL_DOWN_S if kind is FaultKind.KILL else PAUSE_S
        faults.append(
            Fault(
                kind,
                victim,
                duration_s=round(rng.uniform(*span), 1),
                healthy_before_s=round(rng.uniform(*HEALTHY_S), 1),
            )
        )
        previous = victim
    faults.append(
        Fault(FaultKind.RESTART_ALL, None, duration_s=0.0, healthy_before_s=round(rng.uniform(*HEALTHY_S), 1))
    )
    return Schedule(seed, tuple(faults), TAIL_S)


# -- the nemesis log ------------------------------------------------------------------------------


class Action(enum.Enum):
    """What the nemesis did; a node is down from KILL, PAUSE or STOP to the RESUME or UP that
    follows (UP: its API answers again)."""

    KILL = "killed (-9)"
    PAUSE = "paused (SIGSTOP)"
    RESUME = "resumed (SIGCONT)"
    STOP = "stopped (SIGTERM)"
    UP = "serving again"


_GOES_DOWN: Final = frozenset({Action.KILL, Action.PAUSE, Action.STOP})

#: A [start, end) interval of wall-clock milliseconds.
Span = tuple[int, int]


@dataclasses.dataclass(frozen=True, slots=True)
class NemesisEvent:
    time_ms: int
    action: Action
    nodes: tuple[str, ...]


def compute_down_intervals(events: Iterable[NemesisEvent], end_ms: int) -> dict[str, list[Span]]:
    """node → the [start, end) wall-clock intervals it was down (killed, paused or stopped); one
    still down at `end_ms` is down until then."""
    down_since: dict[str, int] = {}
    intervals: dict[str, list[Span]] = collections.defaultdict(list)
    for event in sorted(events, key=lambda e: e.time_ms):
        for node in event.nodes:
            if event.action in _GOES_DOWN:
                down_since.setdefault(node, event.time_ms)
            elif node in down_since:
                intervals[node].append((down_since.pop(node), event.time_ms))
    for node, start in down_since.items():
        intervals[node].append((start, end_ms))
    return dict(intervals)


def compute_degraded_windows(down: Mapping[str, Sequence[Span]], *, tolerated: int = 1) -> list[Span]:
    """The [start, end) intervals during which more than `tolerated` nodes were down at once."""
    edges = sorted(
        [(start, 1) for spans in down.values() for start, _ in spans]
        + [(end, -1) for spans in down.values() for _, end in spans],
        key=lambda edge: (edge[0], edge[1]),  # an end before a start at the same instant
    )
    windows: list[Span] = []
    count = 0
    opened = 0
    for at, delta in edges:
        before = count
        count += delta
        if before <= tolerated < count:
            opened = at
        elif count <= tolerated < before and at > opened:
            windows.append((opened, at))
    return windows


@dataclasses.dataclass(frozen=True, slots=True)
class Acceptance:
    """A node admitted the tx to its mempool: the client sent it at `sent_ms` and heard so at
    `at_ms` (a node killed in between may have admitted it and lost it with its mempool)."""

    node: str
    sent_ms: int
    at_ms: int


def _overlap_ms(start: int, end: int, windows: Sequence[Span]) -> int:
    return sum(max(0, min(end, w_end) - max(start, w_start)) for w_start, w_end in windows)


def _merge(spans: Iterable[Span]) -> list[Span]:
    """The union of [start, end) spans, as disjoint spans in order."""
    merged: list[Span] = []
    for start, end in sorted(s for s in spans if s[1] > s[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _crashes(events: Iterable[NemesisEvent]) -> list[tuple[int, str]]:
    """(when, node) of every kill -9 and stop: the node's mempool is gone with its process."""
    return sorted(
        (event.time_ms, node)
        for event in events
        if event.action in (Action.KILL, Action.STOP)
        for node in event.nodes
    )


def compute_unexplained_losses(
    accepted: Mapping[str, Acceptance], chain: Mapping[str, object], events: Iterable[NemesisEvent]
) -> list[str]:
    """Accepted txs the chain does not hold although the node that accepted them was neither
    killed nor stopped after they were sent to it (a paused node keeps its mempool)."""
    crashes = _crashes(events)
    return [
        tx_id
        for tx_id, acceptance in accepted.items()
        if tx_id not in chain
        and not any(node == acceptance.node and at >= acceptance.sent_ms for at, node in crashes)
    ]


def compute_owed_spans(
    accepted: Mapping[str, Acceptance],
    chain: Mapping[str, tuple[int, int]],
    block_times_ms: Mapping[int, int],
    events: Iterable[NemesisEvent],
    *,
    end_ms: int,
) -> list[Span]:
    """When the chain owed the client a block: the union, over accepted txs, of the time from
    the acceptance until the tx's block, or, for a tx the chain does not hold, until the node that
    accepted it was killed or stopped (after that nobody had it), else until `end_ms`.

    The acceptance is when the client heard of it (`at_ms`): the node answers a submission right
    after admitting it, so this is at most one answer's latency late, and a stall measured from
    it is never longer than the real one."""
    crashes = _crashes(events)
    spans: list[Span] = []
    for tx_id, acceptance in accepted.items():
        place = chain.get(tx_id)
        if place is not None:
            end = block_times_ms[place[0]]
        else:
            end = next(
                (at for at, node in crashes if node == acceptance.node and at >= acceptance.sent_ms), end_ms
            )
        spans.append((acceptance.at_ms, end))
    return _merge(spans)


@dataclasses.dataclass(frozen=True, slots=True)
class Stall:
    """Time the chain owed a block (some accepted tx was pending) and committed none."""

    #: The block that ended it (None: none did before the window closed).
    height: int | None
    start_ms: int
    end_ms: int
    #: Its length outside the windows when more than one validator was down.
    counted_ms: int


def compute_stalls(
    block_times_ms: Mapping[int, int],
    owed: Sequence[Span],
    *,
    window: Span,
    excused: Sequence[Span],
    bound_ms: int,
) -> list[Stall]:
    """Every stretch longer than `bound_ms` (excused windows not counted) in which the chain owed
    a block (`compute_owed_spans`) and committed none, from the blocks' header times."""
    window_start, window_end = window
    inside = sorted((t, h) for h, t in block_times_ms.items() if window_start < t < window_end)
    marks: list[tuple[int, int | None]] = [(window_start, None), *inside, (window_end, None)]
    stalls: list[Stall] = []
    for (gap_start, _), (gap_end, height) in itertools.pairwise(marks):
        for owed_start, owed_end in owed:
            start, end = max(gap_start, owed_start), min(gap_end, owed_end)
            if end <= start:
                continue
            counted = (end - start) - _overlap_ms(start, end, excused)
            if counted > bound_ms:
                stalls.append(Stall(height, start, end, counted))
    return stalls


def compute_blind_spots(
    owed: Sequence[Span], *, window: Span, excused: Sequence[Span], bound_ms: int
) -> list[Span]:
    """Stretches longer than `bound_ms` (excused windows not counted) in which the client had no
    tx pending: a stall there would go unseen, so the stall check cannot vouch for them."""
    edges = [window[0]]
    for start, end in owed:
        edges += [min(max(start, window[0]), window[1]), min(max(end, window[0]), window[1])]
    edges.append(window[1])
    idle = [(edges[i], edges[i + 1]) for i in range(0, len(edges), 2)]
    return [(s, e) for s, e in idle if (e - s) - _overlap_ms(s, e, excused) > bound_ms]


def describe_span(start_ms: int, end_ms: int, origin_ms: int) -> str:
    return f"t+{(start_ms - origin_ms) / 1000:.1f} s..t+{(end_ms - origin_ms) / 1000:.1f} s"


def describe_log(events: Sequence[NemesisEvent], origin_ms: int) -> str:
    return "\n".join(
        f"  t+{(e.time_ms - origin_ms) / 1000:6.1f} s  {', '.join(e.nodes)} {e.action.value}" for e in events
    )


# -- the nemesis ----------------------------------------------------------------------------------


class Nemesis:
    """Carries out a schedule against a cluster and logs what it did and when (wall clock).

    A context manager: on exit every node it paused is resumed, so the cluster can be stopped.
    """

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.log: list[NemesisEvent] = []
        self._paused: set[str] = set()

    def __enter__(self) -> Nemesis:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for name in sorted(self._paused):
            resume_node(self.cluster[name])
        self._paused.clear()

    def run(self, schedule: Schedule) -> None:
        for fault in schedule.faults:
            _hold(fault.healthy_before_s)
            if fault.kind is FaultKind.KILL:
                self._kill_and_restart(self._victim(fault), fault.duration_s)
            elif fault.kind is FaultKind.PAUSE:
                self._pause_and_resume(self._victim(fault), fault.duration_s)
            else:
                self._restart_all()
        _hold(schedule.tail_s)

    def _victim(self, fault: Fault) -> ClusterNode:
        assert fault.victim is not None, fault
        return self.cluster[fault.victim]

    def _record(self, action: Action, nodes: Sequence[ClusterNode]) -> None:
        self.log.append(NemesisEvent(now_ms(), action, tuple(n.name for n in nodes)))

    def _kill_and_restart(self, victim: ClusterNode, down_s: float) -> None:
        self._record(Action.KILL, [victim])
        victim.kill()
        _hold(down_s)
        self.cluster.start([victim])
        self._record(Action.UP, [victim])

    def _pause_and_resume(self, victim: ClusterNode, paused_s: float) -> None:
        self._record(Action.PAUSE, [victim])
        pause_node(victim)
        self._paused.add(victim.name)
        try:
            _hold(paused_s)
        finally:
            resume_node(victim)
            self._paused.discard(victim.name)
        self._record(Action.RESUME, [victim])

    def _restart_all(self) -> None:
        nodes = self.cluster.nodes
        self._record(Action.STOP, nodes)
        self.cluster.stop_all()
        self.cluster.start()
        self._record(Action.UP, nodes)


def _hold(seconds: float) -> None:
    """Keep the current state (a fault, or health) for `seconds`: the schedule's own timing."""
    time.sleep(seconds)


# -- the client -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Sighting:
    """A node told the client this tx is committed here."""

    height: int
    index: int
    node: str
    at_ms: int


class RecordingClient:
    """Threads that submit signed txs at a steady rate, round-robin over the nodes, and record
    what they were told. A node that does not answer in time, or answers "not now", is rested
    for a moment; any other unexpected answer is recorded in `failures`.

    A context manager: the threads are stopped and joined on exit, also when a test fails.
    """

    def __init__(self, nodes: Sequence[ClusterNode], signer: Identity, label: str) -> None:
        self._apis: list[tuple[str, ApiClient]] = [(n.name, api_at_config_port(n)) for n in nodes]
        self._signer = signer
        self._label = label
        self._lock = threading.Lock()
        self._turn = itertools.count()
        self._rested_until: dict[str, float] = {}
        self._pending: collections.deque[str] = collections.deque()
        #: tx id → the node that accepted it and when the client heard so.
        self.accepted: dict[str, Acceptance] = {}
        #: tx id → where a node said it is committed (the first node that said so).
        self.committed: dict[str, Sighting] = {}
        self.failures: list[str] = []
        self.unanswered: collections.Counter[str] = collections.Counter()
        self.started_at_ms = 0
        self.stopped_at_ms = 0
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(worker,), name=f"client-{label}-{worker}")
            for worker in range(CLIENT_WORKERS)
        ]

    def __enter__(self) -> RecordingClient:
        self.started_at_ms = now_ms()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        if not self._stop.is_set():
            self._stop.set()
            self.stopped_at_ms = now_ms()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=DEADLINE_S)
        assert not any(t.is_alive() for t in self._threads), "a client thread did not stop"

    def committed_count(self) -> int:
        with self._lock:
            return len(self.committed)

    def wait_committed(self, count: int, what: str) -> None:
        wait_until(lambda: self.committed_count() >= count, what)

    def positions(self) -> dict[str, tuple[int, int]]:
        """tx id → (height, index) the client was told, as `assert_committed_everywhere` takes it."""
        with self._lock:
            return {tx_id: (s.height, s.index) for tx_id, s in self.committed.items()}

    # -- the threads --------------------------------------------------------------------------------

    def _run(self, worker: int) -> None:
        for number in itertools.count():
            began = time.monotonic()
            self._submit(f"{self._label}-{worker}-{number}")
            self._confirm()
            # Pacing (a steady rate), not synchronisation: the stop event ends it early.
            if self._stop.wait(max(0.0, CLIENT_INTERVAL_S - (time.monotonic() - began))):
                return

    def _pick(self) -> tuple[str, ApiClient]:
        """The next node in turn that is not resting (the next in turn if all are)."""
        now = time.monotonic()
        with self._lock:
            first = next(self._turn)
            for offset in range(len(self._apis)):
                name, api = self._apis[(first + offset) % len(self._apis)]
                if self._rested_until.get(name, 0.0) <= now:
                    return name, api
            return self._apis[first % len(self._apis)]

    def _rest(self, name: str) -> None:
        with self._lock:
            self.unanswered[name] += 1
            self._rested_until[name] = time.monotonic() + CLIENT_REST_S

    def _ask(
        self, name: str, api: ApiClient, method: str, path: str, data: Any = None, *, expected: Iterable[int]
    ) -> Any | None:
        """The JSON answer, or None if the node did not answer (or said "not now")."""
        try:
            reply = request_within(api, method, path, data=data, timeout_s=CLIENT_TIMEOUT_S)
        except (OSError, http.client.HTTPException):
            self._rest(name)
            return None
        if reply.status in UNAVAILABLE_STATUSES:
            self._rest(name)
            return None
        if reply.status not in set(expected):
            with self._lock:
                self.failures.append(f"{name} {method} {path}: {reply.status} {reply.body[:200]!r}")
            return None
        return reply.json()

    def _submit(self, label: str) -> None:
        txs = make_batch(self._signer, label, CLIENT_TXS_PER_SUBMIT)
        name, api = self._pick()
        sent_ms = now_ms()
        answer = self._ask(
            name,
            api,
            "POST",
            # No wait_ms: the node answers as soon as it admitted the txs, so the time of the
            # answer is when the chain started to owe them a block (see `compute_owed_spans`).
            "/v1/txs/batch",
            {"txs": [t.b64 for t in txs]},
            expected=(200, 202),
        )
        if answer is None:
            return
        at_ms = now_ms()
        with self._lock:
            for result in answer["results"]:
                tx_id = result["tx_id"]
                self.accepted[tx_id] = Acceptance(name, sent_ms, at_ms)
                self._pending.append(tx_id)

    def _confirm(self) -> None:
        """Ask a node about a few txs still pending (those it does not know or has not committed
        go to the back of the line)."""
        with self._lock:
            count = min(CLIENT_CONFIRMS_PER_TICK, len(self._pending))
            asking = [self._pending.popleft() for _ in range(count)]
        if not asking:
            return
        name, api = self._pick()
        unresolved: list[str] = []
        for number, tx_id in enumerate(asking):
            # 404: not (yet) gossiped to this node.
            answer = self._ask(name, api, "GET", f"/v1/txs/{tx_id}", expected=(200, 404))
            if answer is None:
                unresolved += asking[number:]
                break
            if answer.get("status") == "committed":
                with self._lock:
                    self._record_sighting(tx_id, name, answer, now_ms())
            else:
                unresolved.append(tx_id)
        with self._lock:
            self._pending.extend(unresolved)

    def _record_sighting(self, tx_id: str, node: str, result: Mapping[str, Any], at_ms: int) -> None:
        """(Called with the lock held.)"""
        sighting = Sighting(int(result["height"]), int(result["index"]), node, at_ms)
        earlier = self.committed.setdefault(tx_id, sighting)
        if (earlier.height, earlier.index) != (sighting.height, sighting.index):
            self.failures.append(f"tx {tx_id[:12]} committed at {earlier} and at {sighting}")
