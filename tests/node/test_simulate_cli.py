"""`medledger simulate`: deterministic runs, a summary, and an exit status that reports violations."""

from __future__ import annotations

from click.testing import CliRunner

from medledger.network.sim import FaultKind, TimeSkew
from medledger.node.cli import main
from medledger.node.simulate import build_config, simulate


def test_simulate_runs_seeds_and_reports_a_summary() -> None:
    result = CliRunner().invoke(main, ["simulate", "--nodes", "4", "--seed", "11", "--runs", "2"])
    assert result.exit_code == 0, result.output
    assert "seed 11:" in result.output
    assert "seed 12:" in result.output
    assert "2 run(s), 4 validators, 0 twin(s)" in result.output
    assert "0 run(s) broke an invariant" in result.output


def test_simulate_with_a_twin_records_equivocation_and_stays_safe() -> None:
    # A seed whose twin's equivocations reach a block before the run ends (most do).
    result = CliRunner().invoke(main, ["simulate", "--nodes", "4", "--twins", "1", "--seed", "2"])
    assert result.exit_code == 0, result.output
    assert "0 equivocations seen" not in result.output
    assert "0 recorded on the ledger" not in result.output


def test_a_seed_replays_exactly() -> None:
    config = build_config(nodes=4, seed=5, kinds=(FaultKind.LOSS, FaultKind.CRASH))
    first, second = simulate(config), simulate(config)
    assert first.failure is None
    assert first.result is not None
    assert second.result is not None
    assert first.result.trace_digest == second.result.trace_digest
    assert first.result.heights == second.result.heights


def test_invalid_more_twins_than_nodes_is_refused() -> None:
    result = CliRunner().invoke(main, ["simulate", "--nodes", "1", "--twins", "2"])
    assert result.exit_code != 0
    assert "--twins cannot exceed --nodes" in result.output


def test_trust_3_simulate_with_a_time_skewing_proposer_stays_safe_and_live() -> None:
    result = CliRunner().invoke(
        main, ["simulate", "--nodes", "4", "--twins", "1", "--seed", "3", "--skew-proposer", "far_future"]
    )
    assert result.exit_code == 0, result.output
    assert "0 run(s) broke an invariant" in result.output
    config = build_config(nodes=4, seed=3, twins=1, skew=TimeSkew.FAR_FUTURE)
    assert config.skewed == config.twins
    assert config.expect_liveness
