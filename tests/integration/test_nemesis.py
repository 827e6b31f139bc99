"""The nemesis test of issue 9 [TRUST]: kill -9, SIGSTOP for 5–20 s and a restart of all four
validators, while a client submits txs round-robin and records every tx it was told is committed.

Four validators tolerate one fault. The nemesis (tests/integration/nemesis.py) keeps at most one
validator down or paused at a time until it stops and starts them all. Afterwards:

- nothing forked: every node holds the same blocks, each certified by a quorum;
- nothing is lost: every tx the client was told is committed is on every node at the height and
  index it was told, and every tx a node accepted is committed unless that node was killed or
  stopped after it was sent there;
- the chain never stalled longer than twice the round timeout while at most one validator was
  down. A stall is measured from the committed blocks' header times and the client's accepted
  txs (time the chain owed a block and committed none), outside the nemesis log's windows with
  more than one validator down; so it does not depend on how often anything polled.

The schedule comes from a seed printed at the start (`MEDLEDGER_NEMESIS_SEED` replays it). The
fast tests below check the checker itself on made-up histories: a stall it should see, and one
it should excuse.
"""

from __future__ import annotations

import itertools
from typing import Final

import pytest
from cluster_harness import (
    LocalCluster,
    assert_committed_everywhere,
    assert_same_chain,
    compute_positions,
    count_log_lines,
)
from nemesis import (
    CLIENT_TXS_PER_SUBMIT,
    Acceptance,
    Action,
    FaultKind,
    Nemesis,
    NemesisEvent,
    RecordingClient,
    compute_blind_spots,
    compute_degraded_windows,
    compute_down_intervals,
    compute_owed_spans,
    compute_round_timeout_ms,
    compute_schedule,
    compute_stalls,
    compute_unexplained_losses,
    describe_log,
    describe_span,
    get_seed,
)

from medledger.chain.consensus import ConsensusTimeouts
from medledger.crypto import Identity

#: The nodes run the consensus core's timeouts as `medledger start` builds it: the defaults
#: (config.toml has no keys that change them).
NODE_TIMEOUTS: Final = ConsensusTimeouts()
#: The liveness bound of the issue: no stall longer than twice the round timeout.
STALL_BOUND_MS: Final = 2 * compute_round_timeout_ms(NODE_TIMEOUTS)
#: The log line of a peer banned for breaking the protocol (what defect 11 does to a pause).
BAN_LOG_LINE: Final = "dropping peer"


@pytest.mark.slow
def test_nemesis_kill_pause_and_restart_lose_nothing_fork_nothing_and_never_stall(
    local_cluster: LocalCluster, signer: Identity
) -> None:
    cluster = local_cluster
    schedule = compute_schedule(get_seed(), [v.name for v in cluster.validators])
    print(schedule.describe())  # shown by pytest when the test fails: replay with its seed

    with RecordingClient(cluster.validators, signer, "nemesis") as client:
        client.wait_committed(CLIENT_TXS_PER_SUBMIT, "the client to see its first txs committed")
        with Nemesis(cluster) as nemesis:
            nemesis.run(schedule)
    window = (client.started_at_ms, client.stopped_at_ms)
    log = describe_log(nemesis.log, window[0])
    print(f"nemesis log (t: since the client started):\n{log}")
    assert not client.failures, client.failures
    # The nemesis kept its promise: more than one validator was down only while it restarted all.
    down = compute_down_intervals(nemesis.log, end_ms=window[1])
    degraded = compute_degraded_windows(down)
    assert len(degraded) == 1, (degraded, log)

    # No fork: one chain on every node, every block certified by a quorum of validators.
    tip = cluster.wait_agreed()
    blocks = assert_same_chain(cluster.nodes, tip["height"], cluster.validator_keys)
    chain = compute_positions(blocks)
    # Nothing lost: what the client was told is committed is there, at that height and index.
    told = client.positions()
    assert told, "the client was never told a tx is committed"
    assert_committed_everywhere(cluster.nodes, blocks, told)

    problems: list[str] = []
    lost = compute_unexplained_losses(client.accepted, chain, nemesis.log)
    if lost:
        problems.append(
            f"{len(lost)} accepted txs never committed (their node was not killed or stopped after):\n"
            + "\n".join(describe_acceptance(tx_id, client.accepted[tx_id], window[0]) for tx_id in lost)
        )
    # No stall longer than the bound while at most one validator was down.
    block_times = {height: int(block["header"]["time_ms"]) for height, block in blocks.items()}
    owed = compute_owed_spans(client.accepted, chain, block_times, nemesis.log, end_ms=window[1])
    blind = compute_blind_spots(owed, window=window, excused=degraded, bound_ms=STALL_BOUND_MS)
    if blind:
        problems.append(
            "the client had no tx pending for longer than the stall bound, so a stall there would "
            f"go unseen: {[describe_span(s, e, window[0]) for s, e in blind]}"
        )
    waits = compute_stalls(block_times, owed, window=window, excused=degraded, bound_ms=0)
    stalls = [s for s in waits if s.counted_ms > STALL_BOUND_MS]
    if stalls:
        problems.append(
            f"the chain stalled longer than {STALL_BOUND_MS} ms (twice the round timeout) with at "
            "most one validator down:\n"
            + "\n".join(
                f"  {s.counted_ms} ms, {describe_span(s.start_ms, s.end_ms, window[0])}, "
                f"{f'ended by block {s.height}' if s.height is not None else 'never ended'}"
                for s in stalls
            )
        )
    print(
        f"{len(blocks)} blocks, {len(client.accepted)} txs accepted, {len(told)} seen committed; "
        f"longest wait for a block with at most one validator down: "
        f"{max((s.counted_ms for s in waits), default=0)} ms (bound {STALL_BOUND_MS} ms)"
    )
    bans = {node.name: count_log_lines(node, BAN_LOG_LINE) for node in cluster.nodes}
    assert not problems, "\n".join(
        [*problems, f"nemesis log:\n{log}", f"'{BAN_LOG_LINE}' lines per node log: {bans}"]
    )


def describe_acceptance(tx_id: str, acceptance: Acceptance, origin_ms: int) -> str:
    return (
        f"  {tx_id[:16]} sent to {acceptance.node} at t+{(acceptance.sent_ms - origin_ms) / 1000:.1f} s, "
        f"accepted at t+{(acceptance.at_ms - origin_ms) / 1000:.1f} s"
    )


# -- the checker on made-up histories -----------------------------------------------------------


def event(at_s: float, action: Action, *nodes: str) -> NemesisEvent:
    return NemesisEvent(int(at_s * 1000), action, nodes)


HISTORY: Final = [
    event(10, Action.KILL, "v1"),
    event(15, Action.UP, "v1"),
    event(20, Action.PAUSE, "v2"),
    event(30, Action.UP, "v2"),
    event(40, Action.STOP, "v0", "v1", "v2", "v3"),
    event(45, Action.UP, "v0", "v1", "v2", "v3"),
]


def test_nemesis_checker_degraded_only_while_more_than_one_is_down() -> None:
    down = compute_down_intervals(HISTORY, end_ms=60_000)
    assert down["v1"] == [(10_000, 15_000), (40_000, 45_000)]
    assert down["v2"] == [(20_000, 30_000), (40_000, 45_000)]
    assert compute_degraded_windows(down) == [(40_000, 45_000)]
    # Overlapping single faults on two nodes are a degraded window too.
    overlapping = compute_down_intervals(
        [event(1, Action.PAUSE, "v0"), event(2, Action.KILL, "v1"), event(3, Action.UP, "v0")], end_ms=9_000
    )
    assert compute_degraded_windows(overlapping) == [(2_000, 3_000)]


def test_nemesis_checker_sees_a_stall_with_one_down_and_excuses_the_restart_of_all() -> None:
    # Blocks every second, but none between t=20 s and t=32 s (v2 paused), nor between t=40 s
    # and t=47 s (all restarting). One tx per block, accepted 0.9 s before it, and a few that
    # waited across the gaps.
    times = [*range(1, 21), 32, 33, 34, 35, 36, 37, 38, 39, 40, 47, 48, 49, 50]
    block_times = {height: t * 1000 for height, t in enumerate(times, 1)}
    chain = {f"tx{h}": (h, 0) for h in block_times}
    accepted = {f"tx{h}": Acceptance("v0", t - 950, t - 900) for h, t in block_times.items()}
    accepted["tx21"] = Acceptance("v0", 19_950, 20_000)  # waited for block 21 from t=20 s
    accepted["tx30"] = Acceptance("v0", 39_450, 39_500)  # waited across the restart of all
    degraded = compute_degraded_windows(compute_down_intervals(HISTORY, end_ms=60_000))
    owed = compute_owed_spans(accepted, chain, block_times, HISTORY, end_ms=60_000)
    stalls = compute_stalls(block_times, owed, window=(0, 60_000), excused=degraded, bound_ms=STALL_BOUND_MS)
    assert [(s.height, s.start_ms, s.end_ms, s.counted_ms) for s in stalls] == [(21, 20_000, 32_000, 12_000)]
    # The wait across the restart of all counts only its 2 s after every node serves again.
    waits = compute_stalls(block_times, owed, window=(0, 60_000), excused=degraded, bound_ms=0)
    assert {s.height: s.counted_ms for s in waits}[30] == 2_000
    # No tx pending, no stall: an idle chain commits nothing and owes nothing.
    accepted["tx21"] = Acceptance("v0", 31_450, 31_500)
    idle = compute_owed_spans(accepted, chain, block_times, HISTORY, end_ms=60_000)
    assert compute_stalls(block_times, idle, window=(0, 60_000), excused=degraded, bound_ms=10_000) == []
    assert compute_blind_spots(idle, window=(0, 60_000), excused=degraded, bound_ms=10_000) == [
        (20_000, 31_500)
    ]


def test_nemesis_checker_counts_a_stall_whose_txs_died_with_the_restart_of_all() -> None:
    # The chain stops at t=29.5 s with one validator down; a tx accepted then is lost when every
    # node is stopped at t=40 s: a stall of 10.5 s all the same (the run that found it).
    block_times = {1: 29_000, 2: 29_500, 3: 47_000}
    chain = {"a": (1, 0), "b": (2, 0), "c": (3, 0)}
    accepted = {
        "a": Acceptance("v0", 28_000, 28_100),
        "b": Acceptance("v0", 29_000, 29_100),
        "lost": Acceptance("v3", 29_400, 29_500),  # v3 stayed up until the stop of all
        "c": Acceptance("v0", 46_000, 46_100),
    }
    degraded = compute_degraded_windows(compute_down_intervals(HISTORY, end_ms=60_000))
    owed = compute_owed_spans(accepted, chain, block_times, HISTORY, end_ms=60_000)
    assert compute_unexplained_losses(accepted, chain, HISTORY) == []
    stalls = compute_stalls(block_times, owed, window=(0, 60_000), excused=degraded, bound_ms=10_000)
    assert [(s.height, s.start_ms, s.end_ms) for s in stalls] == [(3, 29_500, 40_000)]


def test_nemesis_checker_names_the_gaps_it_cannot_vouch_for() -> None:
    owed = [(1_000, 2_000), (14_000, 15_000), (39_000, 46_000), (55_000, 55_500)]
    assert compute_blind_spots(owed, window=(0, 56_000), excused=[(40_000, 45_000)], bound_ms=10_000) == [
        (2_000, 14_000),
        (15_000, 39_000),
    ]


def test_nemesis_checker_loses_nothing_a_live_node_accepted() -> None:
    accepted = {
        "kept": Acceptance("v0", 9_000, 9_100),
        "crashed": Acceptance("v1", 9_950, 10_050),  # sent before v1's kill -9 at t=10 s
        "paused": Acceptance("v2", 19_000, 19_100),  # v2 paused after, but kept its mempool
    }
    before_the_restart_of_all = HISTORY[:4]
    assert compute_unexplained_losses(accepted, {"kept": (1, 0)}, before_the_restart_of_all) == ["paused"]
    # A stop of all (SIGTERM) loses every mempool.
    assert compute_unexplained_losses(accepted, {"kept": (1, 0)}, HISTORY) == []


def test_nemesis_schedule_replays_from_its_seed() -> None:
    names = ["validator0", "validator1", "validator2", "validator3"]
    schedule = compute_schedule(1234, names)
    assert schedule == compute_schedule(1234, names)
    assert [f.kind for f in schedule.faults] == [
        FaultKind.PAUSE,
        FaultKind.KILL,
        FaultKind.PAUSE,
        FaultKind.KILL,
        FaultKind.RESTART_ALL,
    ]
    victims = [f.victim for f in schedule.faults]
    assert victims[-1] is None  # the restart of all
    assert all(a != b for a, b in itertools.pairwise(victims[:-1]))
    assert all(5.0 <= f.duration_s <= 20.0 for f in schedule.faults if f.kind is FaultKind.PAUSE)
    assert get_seed({"MEDLEDGER_NEMESIS_SEED": "1234"}) == 1234
    assert "MEDLEDGER_NEMESIS_SEED=1234" in schedule.describe()
