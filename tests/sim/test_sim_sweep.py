"""A sweep over seeds: n ∈ {1, 4, 4, 7}, 0..f twins, hostile sync peers and a random fault plan
(network, crash and storage faults), each from its seed, every node a real reactor.

Every other run with twins also makes them Byzantine proposers that skew block time (each
`TimeSkew` in turn) among honest clocks that disagree: the checker holds every committed block
time to the PBTS bounds of honest clocks. Runs are sized (2 s of faults, 2 heights after GST, a
tx every 100 ms on average) so that thousands fit in a few minutes on two cores; the sweep then
asserts that block sync, restarts, crashes in the middle of a write, rebuilt stores, states
restored from a wrong backup (and the halts they cause), checked block requests (some sent while
a run of blocks was applied) and dropped hostile peers really happened across it.

A second, smaller sweep (a tenth of the runs) replays the same kind of runs under a version-2
genesis with leader skipping (docs/adr/0023).

`MEDLEDGER_SIM_SEEDS` (default 1500) sets the number of runs, `MEDLEDGER_SIM_SEED_BASE` the first
seed and `MEDLEDGER_SIM_JOBS` the worker processes (default: up to 2). A failure prints each
failing run's replay line.
"""

from __future__ import annotations

import dataclasses
import random

import pytest
from sim_support import SIM_JOBS, SIM_SEED_BASE, SIM_SEEDS, random_config, with_skewed_proposers

from medledger.chain.types import ConsensusParams
from medledger.network.sim import SimConfig, TimeSkew, draw_hostile, run_sweep

SIZES = (1, 4, 4, 7)
SKEWS = tuple(TimeSkew)
#: Virtual ms within which a sweep run's faults all heal.
SWEEP_HORIZON_MS = 2_000
#: A tx every 100 ms on average, and 2 heights after GST.
SWEEP_TX_INTERVAL_MS = 100
SWEEP_HEIGHTS_AFTER_GST = 2


def make_sweep(count: int, base: int = 0) -> list[SimConfig]:
    configs = []
    for seed in range(base, base + count):
        n = SIZES[seed % len(SIZES)]
        twins = (seed // len(SIZES)) % ((n - 1) // 3 + 1)
        # Hostile peers from their own stream, so the fault plan of a seed stays what it was.
        hostile = draw_hostile(random.Random(seed ^ 0x4057_11E)) if n > 1 else ()
        config = random_config(
            seed,
            n=n,
            twins=twins,
            horizon_ms=SWEEP_HORIZON_MS,
            hostile=hostile,
            client_tx_interval_ms=SWEEP_TX_INTERVAL_MS,
            heights_after_gst=SWEEP_HEIGHTS_AFTER_GST,
        )
        if twins and (seed // 8) % 2:  # independent of the twins' count, (seed // 4) % (f + 1)
            config = with_skewed_proposers(config, SKEWS[(seed // 16) % len(SKEWS)])
        if seed % 3 == 2:  # a node's default: the next height as soon as a tx waits (issue 17)
            config = dataclasses.replace(config, block_interval_ms=0)
        configs.append(config)
    return configs


@pytest.mark.slow
@pytest.mark.timeout(max(600, SIM_SEEDS // 2))  # a big sweep gets more than the suite's 300 s per test
def test_seed_sweep_keeps_safety_and_liveness() -> None:
    configs = make_sweep(SIM_SEEDS, SIM_SEED_BASE)
    outcomes = run_sweep(configs, jobs=SIM_JOBS)
    failures = [o.failure for o in outcomes if o.failure is not None]
    assert not failures, f"{len(failures)} of {len(outcomes)} runs failed:\n\n" + "\n\n".join(failures[:3])
    assert [o.seed for o in outcomes] == [c.seed for c in configs]
    assert all(o.live for o in outcomes)
    assert sum(1 for c in configs if c.twins) >= SIM_SEEDS // 4  # the sweep really has Byzantine runs
    skews = {c.time_skew for c in configs if c.skewed}
    assert SIM_SEEDS < 200 or skews == set(TimeSkew)  # and every kind of skewed proposer
    # The paths the sweep is for really ran through the real reactor.
    stats = [o.stats for o in outcomes]
    assert sum(s.sync_sessions for s in stats) > 0
    assert sum(s.restarts for s in stats) > 0
    assert sum(s.mid_write_crashes for s in stats) > 0
    assert sum(s.rebuilds for s in stats) > 0
    assert sum(s.hostile_dropped for s in stats) > 0
    assert sum(s.states_diverged for s in stats) > 0
    assert sum(s.halts for s in stats) > 0
    assert sum(s.block_requests for s in stats) > 0
    assert SIM_SEEDS < 200 or sum(s.block_requests_while_applying for s in stats) > 0
    assert sum(1 for s in stats if s.synced_blocks >= 5) >= SIM_SEEDS // 50  # nodes far behind


#: Leader skipping from the first heights on (window 2n) in the v2 sweep.
SKIPPING = ConsensusParams(block_txs_max=16, block_bytes_max=1 << 20, leader_window=1)


@pytest.mark.slow
@pytest.mark.timeout(max(600, SIM_SEEDS // 2))
def test_seed_sweep_with_leader_skipping_keeps_safety_and_liveness() -> None:
    # The same runs under a version-2 genesis (docs/adr/0023), each going on for more heights
    # after GST, so that validators crashed or cut off are skipped, probed and taken back.
    count = max(1, SIM_SEEDS // 10)
    configs = [
        dataclasses.replace(c, consensus_params=SKIPPING, heights_after_gst=4 * c.n)
        for c in make_sweep(count, SIM_SEED_BASE + 100_000)
    ]
    outcomes = run_sweep(configs, jobs=SIM_JOBS)
    failures = [o.failure for o in outcomes if o.failure is not None]
    assert not failures, f"{len(failures)} of {len(outcomes)} runs failed:\n\n" + "\n\n".join(failures[:3])
    assert all(o.live for o in outcomes)
    assert sum(o.stats.restarts for o in outcomes) > 0
