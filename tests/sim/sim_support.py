"""Shared builders of the simulation tests: the kv fixture app, its txs, and configs from seeds.

The simulator (`medledger.network.sim`) may not import the node layer, where the test-fixture app
lives, so the tests hand it in. Everything here is a module-level function, so configs built from
it can cross into the sweep's worker processes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
from typing import Any

from medledger.network.sim import (
    Fault,
    FaultKind,
    HostileKind,
    SimConfig,
    SimResult,
    TimeSkew,
    generate_fault_plan,
)
from medledger.node.fixture_app import KIND_SET, KeyValueFixtureApp, encode_set_body

#: Scale of the seed sweep: `MEDLEDGER_SIM_SEEDS=5000 pytest tests/sim` runs a bigger one, and
#: `MEDLEDGER_SIM_SEED_BASE` moves it to fresh seeds (a nightly job can explore new ones each day).
SIM_SEEDS = int(os.environ.get("MEDLEDGER_SIM_SEEDS", "1500"))
SIM_SEED_BASE = int(os.environ.get("MEDLEDGER_SIM_SEED_BASE", "0"))
#: Worker processes of the sweep (the CI box has 2 cores).
SIM_JOBS = int(os.environ.get("MEDLEDGER_SIM_JOBS", str(min(2, os.cpu_count() or 1))))


def make_kv_tx(rng: random.Random) -> tuple[str, bytes]:
    """A `kv.set` of one of 16 keys, so blocks overwrite each other's keys."""
    return KIND_SET, encode_set_body(b"key-%d" % rng.randrange(16), rng.randbytes(8))


def sim_config(n: int, seed: int, **options: Any) -> SimConfig:
    return SimConfig(n=n, seed=seed, app_factory=KeyValueFixtureApp, make_tx=make_kv_tx, **options)


def random_config(
    seed: int,
    *,
    n: int,
    twins: int = 0,
    kinds: tuple[FaultKind, ...] = tuple(FaultKind),
    horizon_ms: int = 4_000,
    **options: Any,
) -> SimConfig:
    """A config whose twins and fault plan are drawn from `seed` (so the seed alone replays it)."""
    rng = random.Random(seed)
    twin_indices = tuple(sorted(rng.sample(range(n), twins)))
    plan = generate_fault_plan(rng, n=n, twins=twin_indices, kinds=kinds, horizon_ms=horizon_ms)
    return sim_config(n, seed, faults=plan, twins=twin_indices, **options)


#: Honest clocks in skewed runs are off by up to this either way (within PRECISION / 2).
SKEWED_CLOCK_OFFSET_MS = 20


def with_skewed_proposers(config: SimConfig, skew: TimeSkew) -> SimConfig:
    """`config` whose twins (its Byzantine keys) also stamp their blocks with a skewed time, among
    honest clocks that disagree by up to `SKEWED_CLOCK_OFFSET_MS`."""
    return dataclasses.replace(
        config, skewed=config.twins, time_skew=skew, clock_offset_ms_max=SKEWED_CLOCK_OFFSET_MS
    )


def replay_config() -> SimConfig:
    """A run with a bit of everything (twins, hostile peers, crashes mid-write, a torn write,
    loss, duplication, a partition), for the determinism tests."""
    plan = (
        Fault(FaultKind.LOSS, 100, 900, rate=0.2),
        Fault(FaultKind.DUPLICATE, 300, 1_200, rate=0.3),
        Fault(FaultKind.PARTITION, 500, 1_500, (0, 2, 4)),
        Fault(FaultKind.CRASH_MID, 200, 1_800, (1,)),
        Fault(FaultKind.TORN_WRITE, 900, 2_000, (3,)),
    )
    hostile = (HostileKind.GARBAGE, HostileKind.TAMPER_TX_ROOT)
    return sim_config(4, 77, twins=(2,), faults=plan, hostile=hostile, heights_after_gst=4)


def run_digest(result: SimResult) -> str:
    """One digest of everything a run did: its trace and every event of its timeline."""
    digest = hashlib.blake2b(result.trace_digest.encode(), digest_size=16)
    for event in result.timeline.events:
        digest.update(repr(event).encode())
    digest.update(repr(sorted(result.heights.items())).encode())
    return digest.hexdigest()
