"""Hand-picked simulations: determinism, each fault kind, twins, and beyond the fault threshold.

Every run checks the safety invariants at each event (a violation raises `InvariantViolation`);
`check_simulation` also requires liveness after the last fault heals.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest
import sim_support
from sim_support import random_config, sim_config, with_skewed_proposers

import medledger.node.fixture_app
from medledger.chain import layout
from medledger.chain.codec import encode
from medledger.chain.consensus import SynchronyParams
from medledger.chain.governance import KIND_EVIDENCE, KIND_EVIDENCE_PROPOSAL
from medledger.chain.leader import compute_window, is_probe_height
from medledger.chain.store import BlockStore, ConsensusLock, LastSigned
from medledger.chain.types import ConsensusParams
from medledger.network.sim import (
    Fault,
    FaultKind,
    InvariantViolation,
    SimConfig,
    SimResult,
    TimeSkew,
    check_simulation,
    generate_fault_plan,
    run_simulation,
)
from medledger.network.simreport import TimelineKind


def test_the_replay_line_rebuilds_the_config() -> None:
    config = random_config(21, n=7, twins=2)
    namespace: dict[str, object] = {"SimConfig": SimConfig, "Fault": Fault, "FaultKind": FaultKind}
    namespace |= {"medledger": medledger, "sim_support": sim_support, "TimeSkew": TimeSkew}
    assert eval(config.describe(), namespace) == config
    skewed = with_skewed_proposers(config, TimeSkew.INSIDE_PAST)
    assert eval(skewed.describe(), namespace) == skewed


def test_a_run_replays_exactly_from_its_config() -> None:
    config = random_config(11, n=4, twins=1)
    first, second = run_simulation(config), run_simulation(config)
    assert first.trace_digest == second.trace_digest
    assert (first.heights, first.events, first.end_ms) == (second.heights, second.events, second.end_ms)
    other = run_simulation(random_config(12, n=4, twins=1))
    assert other.trace_digest != first.trace_digest


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7])
def test_fault_free_networks_commit_and_agree(n: int) -> None:
    result = check_simulation(sim_config(n, seed=n, heights_after_gst=8))
    assert result.live
    assert set(result.heights.values()) == {8}
    assert result.evidence == 0


@pytest.mark.parametrize("kind", list(FaultKind), ids=lambda kind: kind.value)
@pytest.mark.parametrize("n", [4, 7])
def test_each_fault_kind_heals_without_breaking_safety(n: int, kind: FaultKind) -> None:
    for seed in range(3):
        check_simulation(random_config(1000 * n + seed, n=n, kinds=(kind,)))


def test_a_node_cut_off_for_long_catches_up_through_certificates() -> None:
    config = sim_config(4, seed=5, faults=(Fault(FaultKind.PARTITION, 100, 3_000, (3,)),))
    stalled = run_simulation(
        sim_config(4, seed=5, faults=config.faults, stop_ms=2_999, expect_liveness=False)
    )
    assert stalled.heights[3] + 10 < min(stalled.heights[i] for i in range(3))  # far behind at GST
    result = check_simulation(config)
    assert result.live
    assert result.end_ms < 3_000 + 2_000  # certificates, not rounds, brought it back


def test_a_crashed_validator_restarts_where_it_was() -> None:
    faults = (Fault(FaultKind.CRASH, 400, 900, (2,)), Fault(FaultKind.CRASH_MID, 1_200, 1_500, (1,)))
    result = check_simulation(sim_config(4, seed=9, faults=faults))
    assert result.live
    assert len(set(result.heights.values())) == 1


@pytest.mark.parametrize(("n", "twins"), [(4, 1), (7, 2)])
def test_f_twins_equivocate_yet_safety_and_liveness_hold(n: int, twins: int) -> None:
    evidence = 0
    for seed in range(4):
        result = check_simulation(random_config(2000 * n + seed, n=n, twins=twins))
        evidence += result.evidence
    assert evidence > 0  # the twins really did sign conflicting votes, and correct nodes saw it


def test_more_than_f_crashed_validators_halt_the_chain_but_never_fork_it() -> None:
    # Two of four down for good: no quorum. Runs are deterministic, so the shorter run is a prefix.
    down = (Fault(FaultKind.CRASH, 500, 10**9, (1, 2)),)
    early = run_simulation(sim_config(4, seed=1, faults=down, expect_liveness=False, stop_ms=1_500))
    late = run_simulation(sim_config(4, seed=1, faults=down, expect_liveness=False, stop_ms=20_000))
    assert late.heights == early.heights  # halted: not one block in 18.5 s of virtual time
    assert set(late.heights) == {0, 3}
    healed = check_simulation(sim_config(4, seed=1, faults=(Fault(FaultKind.CRASH, 500, 8_000, (1, 2)),)))
    assert min(healed.heights.values()) > max(late.heights.values())


def test_more_than_f_twins_can_fork_and_the_checker_catches_it() -> None:
    # Validators 0 and 1 are twinned (nodes 4 and 5): 2 > f = 1 Byzantine keys. Each side of the
    # partition has three distinct keys, a quorum: the theory's bound, seen by the checker.
    split = (Fault(FaultKind.PARTITION, 0, 10**9, (0, 1, 2)),)
    config = sim_config(4, seed=0, twins=(0, 1), faults=split, expect_liveness=False, stop_ms=3_000)
    with pytest.raises(InvariantViolation, match=r"FORK at height \d+(.|\n)*replay: run_simulation"):
        run_simulation(config)


def test_the_checker_catches_double_signing_when_last_signed_is_not_synced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A mutation test: with the vote record written unsynced, a crash makes a validator re-sign."""

    def save_unsynced(self: BlockStore, last: LastSigned | None, lock: ConsensusLock | None) -> None:
        with self._db.write_batch(transaction=True, sync=False) as batch:
            if last is not None:
                batch.put(layout.META_LAST_SIGNED, encode(last))
            if lock is not None:
                batch.put(layout.META_CONSENSUS_LOCK, encode(lock))

    monkeypatch.setattr(BlockStore, "save_signing_state", save_unsynced)
    caught = None
    for seed in range(40):
        rng = random.Random(seed)
        plan = generate_fault_plan(rng, n=4, kinds=(FaultKind.CRASH_MID, FaultKind.LOSS), faults_max=6)
        try:
            run_simulation(sim_config(4, seed, faults=plan))
        except InvariantViolation as exc:
            caught = str(exc)
            break
    assert caught is not None
    assert "double-signed" in caught


def test_liveness_failures_report_how_to_replay() -> None:
    never_heals = (Fault(FaultKind.PARTITION, 0, 2_000, (0, 1)),)
    config = sim_config(4, seed=3, faults=never_heals, liveness_bound_ms=1, heights_after_gst=50)
    with pytest.raises(
        InvariantViolation, match=r"LIVENESS(.|\n)*replay: run_simulation\(SimConfig\(n=4, seed=3"
    ):
        check_simulation(config)


def test_invalid_configs_are_refused() -> None:
    with pytest.raises(ValueError, match="start_ms"):
        Fault(FaultKind.LOSS, 10, 10)
    with pytest.raises(ValueError, match="rate"):
        Fault(FaultKind.LOSS, 0, 10, rate=1.5)
    with pytest.raises(ValueError, match="twins"):
        sim_config(4, 0, twins=(4,))
    with pytest.raises(ValueError, match="node that does not exist"):
        sim_config(4, 0, faults=(Fault(FaultKind.CRASH, 0, 10, (4,)),))
    with pytest.raises(ValueError, match="at least one"):
        SimConfig(n=0, seed=0, app_factory=sim_config(1, 0).app_factory, make_tx=sim_config(1, 0).make_tx)


# -- Byzantine block time and evidence (issue 9, defects 3 and 12) -------------------------------


@pytest.mark.parametrize("skew", list(TimeSkew), ids=lambda skew: skew.value)
@pytest.mark.parametrize(("n", "twins"), [(4, 1), (7, 2)])
def test_trust_3_a_time_skewing_proposer_with_f_twins_keeps_safety_liveness_and_block_time(
    n: int, twins: int, skew: TimeSkew
) -> None:
    """f Byzantine keys, each run twice and stamping its blocks with a skewed time, among honest
    clocks that disagree: no fork, every correct node live after GST, and the checker held each
    committed block time to after its parent's and within the PBTS bounds of honest clocks."""
    seed = 3000 * n + list(TimeSkew).index(skew)
    config = with_skewed_proposers(random_config(seed, n=n, twins=twins), skew)
    assert config.skewed == config.twins
    assert len(config.twins) == (n - 1) // 3
    result = check_simulation(config)
    assert result.live


def test_trust_3_a_lone_skewed_proposer_without_faults_costs_rounds_not_liveness() -> None:
    for skew in TimeSkew:
        config = sim_config(
            4, seed=31, skewed=(0,), time_skew=skew, clock_offset_ms_max=20, heights_after_gst=8
        )
        assert check_simulation(config).live


def test_trust_3_the_checker_catches_a_far_future_block_when_validators_do_not_judge_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The block-time invariant can fail: with the timely predicate off (as before the fix), the
    skewed proposer's block of 2^64 - 1 ms is committed and the run is refused."""
    monkeypatch.setattr(SynchronyParams, "is_timely", lambda self, block_ms, received_ms, round_: True)
    config = sim_config(4, seed=31, skewed=(0,), time_skew=TimeSkew.FAR_FUTURE, heights_after_gst=8)
    with pytest.raises(InvariantViolation, match="ahead of every honest clock"):
        run_simulation(config)


def test_trust_12_twins_equivocations_reach_the_ledger_once() -> None:
    """Twins sign conflicting votes and proposals; correct nodes detect them, and the next proposer
    files each offence in its block. The checker refuses a block that files one twice (which the
    ledger would reject as a duplicate) or accuses a correct validator."""
    detected = recorded = 0
    kinds: set[str] = set()
    for seed in range(4):
        result = check_simulation(random_config(2000 * 7 + seed, n=7, twins=2))
        detected += result.evidence
        recorded += result.evidence_recorded
        kinds.update(result.evidence_kinds)
    assert kinds == {KIND_EVIDENCE, KIND_EVIDENCE_PROPOSAL}  # duplicate votes and conflicting proposals
    assert recorded <= detected  # each node reports what it saw; the ledger keeps each offence once


def _commits_of(result: SimResult, node: int) -> list[tuple[int, int]]:
    """(height, round) of each commit `node` made, in order."""
    return [
        (e.height, e.round)
        for e in result.timeline.events
        if e.kind is TimelineKind.COMMIT and e.node == node
    ]


def test_leader_skipping_stops_waiting_out_a_down_validators_propose_timeout() -> None:
    # Validator 2 is down from the start and never returns (docs/adr/0023). Plain round-robin
    # (a version-1 genesis) waits out its propose timeout at every fourth height, forever; with
    # leader skipping (a version-2 genesis), once it has been absent from the window its slot goes
    # to its successor at round 0, and only the probe cycles still wait on it.
    down = (Fault(FaultKind.CRASH, 0, 10**9, (2,)),)
    params = ConsensusParams(block_txs_max=16, block_bytes_max=1 << 20, leader_window=8)
    common: dict[str, Any] = {"faults": down, "expect_liveness": False, "stop_ms": 30_000}
    plain = run_simulation(sim_config(4, seed=3, **common))
    skipping = run_simulation(sim_config(4, seed=3, consensus_params=params, **common))
    window = compute_window(4, params.leader_window)
    for result in (plain, skipping):
        assert not result.violations
        assert len({result.heights[i] for i in (0, 1, 3)}) <= 2  # the three up agree (±1 in flight)
    late_plain = [r for h, r in _commits_of(plain, 0) if h > window]
    late_skipping = [(h, r) for h, r in _commits_of(skipping, 0) if h > window]
    assert sum(1 for r in late_plain if r > 0) >= len(late_plain) // 5  # every fourth height
    waited = [h for h, r in late_skipping if r > 0]
    assert all(is_probe_height(h, 4, window) for h in waited), waited  # only probes wait
    assert len(waited) * 10 < len(late_skipping)
    assert min(skipping.heights[i] for i in (0, 1, 3)) > 1.3 * max(plain.heights[i] for i in (0, 1, 3))


def test_leader_skipping_keeps_safety_and_liveness_through_crashes_and_returns() -> None:
    params = ConsensusParams(block_txs_max=16, block_bytes_max=1 << 20, leader_window=8)
    faults = (Fault(FaultKind.CRASH, 200, 6_000, (1,)), Fault(FaultKind.CRASH, 7_000, 9_000, (3,)))
    result = check_simulation(sim_config(4, seed=11, faults=faults, consensus_params=params))
    assert result.live
    assert len(set(result.heights.values())) == 1
    for seed in range(3):
        check_simulation(dataclasses.replace(random_config(7000 + seed, n=4), consensus_params=params))
