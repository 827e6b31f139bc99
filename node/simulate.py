"""`medledger simulate`: deterministic simulated networks for operators and CI.

Each run is N validators running the real consensus core and the key-value fixture app over the
in-memory network of `medledger.network.sim`, with virtual time and one seed; the seed alone
replays a run exactly. Faults come from a plan drawn from the seed (or only the kinds asked for).
"""

from __future__ import annotations

import dataclasses
import random

from medledger.network.sim import (
    FaultKind,
    InvariantViolation,
    SimConfig,
    SimResult,
    TimeSkew,
    generate_fault_plan,
    run_simulation,
)
from medledger.node.fixture_app import KIND_SET, KeyValueFixtureApp, encode_set_body

#: Honest clocks in runs with a skewed proposer are off by up to this either way.
SKEWED_CLOCK_OFFSET_MS = 20


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
) -> SimConfig:
    """The config a seed stands for: its twins and fault plan are drawn from the seed.

    `skew`: the twins (or, without twins, validator 0) are also Byzantine proposers that stamp
    their blocks with that time skew, among honest clocks off by up to `SKEWED_CLOCK_OFFSET_MS`.
    """
    rng = random.Random(seed)  # noqa: S311 - a simulation seed, not a secret
    twin_indices = tuple(sorted(rng.sample(range(nodes), twins)))
    plan = generate_fault_plan(rng, n=nodes, twins=twin_indices, kinds=kinds) if faults and kinds else ()
    skewed = (twin_indices or (0,)) if skew is not None else ()
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
        expect_liveness=expect_liveness,
        stop_ms=None if expect_liveness else 20_000,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class RunSummary:
    config: SimConfig
    result: SimResult | None
    failure: str | None


def simulate(config: SimConfig) -> RunSummary:
    try:
        result = run_simulation(config)
    except InvariantViolation as exc:  # its message already ends with the replay line
        return RunSummary(config, None, str(exc))
    if result.violations:
        failure = "\n".join(result.violations) + f"\nreplay: run_simulation({config.describe()})"
        return RunSummary(config, result, failure)
    return RunSummary(config, result, None)
