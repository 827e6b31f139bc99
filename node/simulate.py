"""`medledger simulate`: deterministic simulated networks for operators and CI.

Each run is N validators, each the real node (reactor, block sync, mempool, admission, store and
the key-value fixture app governed on chain), over the in-memory peer network of
`medledger.network.sim` on virtual time with one seed; the seed alone replays a run exactly.
Faults (network, crash and storage faults) come from a plan drawn from the seed (or only the kinds
asked for); hostile sync peers and Byzantine twins are added on request. A run's timeline can be
written as a self-contained HTML report (`network/simreport.py`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
from collections.abc import Iterator
from pathlib import Path

from medledger.chain.types import BLOCK_BYTES_CAP_MIN, ConsensusParams
from medledger.network.sim import (
    FaultKind,
    HostileKind,
    InvariantViolation,
    SimConfig,
    SimResult,
    TimeSkew,
    generate_fault_plan,
    run_simulation,
)
from medledger.network.simconfig import SIM_BLOCK_TXS_MAX
from medledger.network.simreport import SimTimeline, write_report
from medledger.node.fixture_app import KIND_SET, KeyValueFixtureApp, encode_set_body

#: Honest clocks in runs with a skewed proposer are off by up to this either way.
SKEWED_CLOCK_OFFSET_MS = 20
#: Heights every correct node must commit after the last fault healed, by default.
HEIGHTS_DEFAULT = 3
#: Virtual time allowed per height after GST (a block interval and a few rounds), and at least.
LIVENESS_MS_PER_HEIGHT = 1_000
LIVENESS_MS_MIN = 20_000
#: A run fails past this many frames received (a storm): scaled to the frames a height takes in a
#: network of n nodes (votes and status to every peer: a few times n² a height).
EVENTS_MAX_MIN = 2_000_000
EVENTS_PER_PEER_HEIGHT = 20


def make_kv_tx(rng: random.Random) -> tuple[str, bytes]:
    return KIND_SET, encode_set_body(b"key-%d" % rng.randrange(16), rng.randbytes(8))


def build_config(
    *,
    nodes: int,
    seed: int,
    twins: int = 0,
    kinds: tuple[FaultKind, ...] = tuple(FaultKind),
    faults: bool = True,
    skew: TimeSkew | None = None,
    heights: int = HEIGHTS_DEFAULT,
    hostile: int = 0,
    leader_window: int | None = None,
) -> SimConfig:
    """The config a seed stands for: its twins, fault plan and hostile peers are drawn from it.

    `skew`: the twins (or, without twins, validator 0) are also Byzantine proposers that stamp
    their blocks with that time skew, among honest clocks off by up to `SKEWED_CLOCK_OFFSET_MS`.
    `heights`: blocks every correct node must commit once the last fault healed. `hostile`:
    that many hostile sync peers, of kinds drawn from the seed. `leader_window`: a version-2
    genesis with leader skipping over that window (docs/adr/0023); None: a version-1 genesis.
    """
    rng = random.Random(seed)  # noqa: S311 - a simulation seed, not a secret
    twin_indices = tuple(sorted(rng.sample(range(nodes), twins)))
    skewed = (twin_indices or (0,)) if skew is not None else ()
    plan = (
        generate_fault_plan(rng, n=nodes, twins=twin_indices, kinds=kinds, skewed=skewed)
        if faults and kinds
        else ()
    )
    # Hostile kinds from their own stream, so that a seed's fault plan does not depend on them.
    hostile_rng = random.Random(seed ^ 0x4057_11E)  # noqa: S311
    hostile_kinds = tuple(hostile_rng.choice(list(HostileKind)) for _ in range(hostile))
    # More than f faulty validators may halt the chain: then only safety is due, not liveness.
    expect_liveness = len({*twin_indices, *skewed}) <= (nodes - 1) // 3
    return SimConfig(
        n=nodes,
        seed=seed,
        app_factory=KeyValueFixtureApp,
        make_tx=make_kv_tx,
        faults=plan,
        twins=twin_indices,
        skewed=skewed,
        time_skew=skew if skew is not None else TimeSkew.FAR_FUTURE,
        clock_offset_ms_max=SKEWED_CLOCK_OFFSET_MS if skew is not None else 0,
        heights_after_gst=heights,
        liveness_bound_ms=max(LIVENESS_MS_MIN, heights * LIVENESS_MS_PER_HEIGHT),
        expect_liveness=expect_liveness,
        stop_ms=None if expect_liveness else 20_000,
        hostile=hostile_kinds,
        consensus_params=None
        if leader_window is None
        else ConsensusParams(
            block_txs_max=SIM_BLOCK_TXS_MAX, block_bytes_max=BLOCK_BYTES_CAP_MIN, leader_window=leader_window
        ),
        events_max=max(EVENTS_MAX_MIN, nodes * nodes * (heights + HEIGHTS_DEFAULT) * EVENTS_PER_PEER_HEIGHT),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class RunSummary:
    config: SimConfig
    result: SimResult | None
    failure: str | None
    #: What the run did, in virtual time (also when an invariant broke part-way).
    timeline: SimTimeline | None = None


@contextlib.contextmanager
def _quiet_nodes() -> Iterator[None]:
    """The simulated nodes log what a real node would (a peer dropped, a request unanswered):
    hundreds of lines a run. The run's own output says what matters; keep only errors."""
    logger = logging.getLogger("medledger")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def simulate(config: SimConfig) -> RunSummary:
    try:
        with _quiet_nodes():
            result = run_simulation(config)
    except InvariantViolation as exc:  # its message already ends with the replay line
        return RunSummary(config, None, str(exc), exc.timeline)
    if result.violations:
        failure = "\n".join(result.violations) + f"\nreplay: run_simulation({config.describe()})"
        return RunSummary(config, result, failure, result.timeline)
    return RunSummary(config, result, None, result.timeline)


def write_run_report(summary: RunSummary, path: Path) -> bool:
    """Write the run's timeline as an HTML report; False when the run left none."""
    if summary.timeline is None:
        return False
    write_report(summary.timeline, path)
    return True
