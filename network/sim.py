"""A deterministic simulator of a validator network that runs the real node, on virtual time.

Every node of a run is the node's own machinery: `network.reactor.Reactor` with its block sync,
`Mempool` and `Admission`, a `BlockStore` over an in-memory disk and the app governed on chain.
What is simulated is only what surrounds a node, all in one asyncio loop whose clock is virtual
(`network/simloop.py`) and with every random choice drawn from one `random.Random(seed)`:

* the peer network (`network/simnet.py`): per-frame delay, loss, duplication and reordering,
  symmetric partitions (a group cut off from the rest) and one-way ones (a group's frames to the
  rest are lost), bounded send queues; a node that breaks the protocol is dropped and relinks
  after a ban, as `network/peers.py` does;
* crashes that lose every unsynced write, at a moment or in the middle of a store write; a torn
  last write and a table that rots while the node is down, after which the node refuses its store
  and is rebuilt as an operator would; a state restored from a wrong backup while the node is
  down, which its start check cannot see, so that it must halt at the next certified block
  (`network/simstorage.py`);
* Byzantine "twins": a second node holding a validator's key, so that key proposes and votes for
  different blocks (Bano et al., "Twins: BFT Systems Made Robust", 2020);
* Byzantine proposers that stamp their blocks with a skewed time (`TimeSkew`), usually the
  twins; honest clocks off by up to `clock_offset_ms_max` either way;
* hostile sync peers that lie about their height, withhold answers, serve tampered blocks or
  forged certificates, answer with gaps or send garbage (`network/simhostile.py`);
* clients that submit signed transactions to random nodes.

`InvariantChecker` (`network/siminvariants.py`) checks every safety property at each event
that could break it: no fork, valid certificates, no double signing by a correct validator,
heights never go back, one state root per height, block times within the PBTS bounds, evidence
only of real offences and recorded once, no correct node taken for a forger or dropped by a
correct node (nor by a diverged one), no block committed on a diverged state, no block
requested twice. Liveness: once every fault has healed (GST), every correct node (not diverged)
must commit `heights_after_gst` more blocks within `liveness_bound_ms` of virtual time.

A run is a pure function of its `SimConfig`, so a failure prints the config and replays exactly:
`run_simulation(config)`. `SimResult.timeline` records what happened (commits, rounds, faults,
crashes, sync sessions, dropped peers, the violation) for `network/simreport.write_report`.

This module imports only `medledger.chain`, `medledger.crypto` and `medledger.network`; the
application (and the transactions clients send) are passed in, since apps live in higher layers.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import multiprocessing
import random
from collections.abc import Sequence

from medledger.network.simcluster import SimResult, SimStats, Simulation, run_simulation
from medledger.network.simconfig import (
    CHAIN_ID,
    CRASH_KINDS,
    DIVERGING_KINDS,
    SIM_SYNCHRONY,
    SIM_TIMEOUTS,
    STORE_LOSS_KINDS,
    Fault,
    FaultKind,
    HostileKind,
    SimConfig,
    TimeSkew,
)
from medledger.network.siminvariants import InvariantChecker, InvariantViolation


def check_simulation(config: SimConfig) -> SimResult:
    """Run one simulation and raise `InvariantViolation` on any safety or liveness failure."""
    result = run_simulation(config)
    if result.violations:
        raise InvariantViolation(
            "\n".join(result.violations) + f"\nreplay: run_simulation({config.describe()})"
        )
    return result


@dataclasses.dataclass(frozen=True, slots=True)
class SweepOutcome:
    """One run of a sweep: its config line, the failure (None: every property held) and what the
    run exercised."""

    seed: int
    description: str
    failure: str | None
    live: bool
    events: int
    stats: SimStats


def _run_one(config: SimConfig) -> SweepOutcome:
    try:
        result = check_simulation(config)
    except InvariantViolation as exc:
        return SweepOutcome(config.seed, config.describe(), str(exc), False, 0, SimStats())
    return SweepOutcome(config.seed, config.describe(), None, result.live, result.events, result.stats)


def run_sweep(configs: Sequence[SimConfig], *, jobs: int = 1) -> list[SweepOutcome]:
    """Run many simulations, on `jobs` processes; outcomes come back in the configs' order.

    The configs' factories must be importable module-level callables (they cross processes).
    """
    if jobs <= 1 or len(configs) <= 1:
        return [_run_one(config) for config in configs]
    context = multiprocessing.get_context("spawn")  # no fork of a possibly threaded parent
    chunk = max(1, len(configs) // (jobs * 8))
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        return list(pool.map(_run_one, configs, chunksize=chunk))


# -- fault plans -----------------------------------------------------------------------------


def generate_fault_plan(
    rng: random.Random,
    *,
    n: int,
    twins: tuple[int, ...] = (),
    kinds: tuple[FaultKind, ...] = tuple(FaultKind),
    faults_max: int = 4,
    horizon_ms: int = 4_000,
    skewed: tuple[int, ...] = (),
) -> tuple[Fault, ...]:
    """A random plan of faults that all heal within `horizon_ms` (so liveness after GST is due).

    Each crash takes down up to f + 1 correct validators at once (more than f: the chain halts
    until they restart); twins are Byzantine already and are not crashed. Faults that destroy a
    store (a torn write, a rotten table) strike only f validators drawn for the plan: were every
    copy of the chain lost, no rebuild could recover it. A state restored from a wrong backup
    makes its node faulty for good (it halts), so it strikes only validators drawn for the plan
    within what the Byzantine ones (twins, and `skewed` proposers) leave of f. Without such a
    budget (f = 0, or the Byzantine take it all) they are plain crashes (`CRASH_MID`, `CRASH`).
    """
    nodes = n + len(twins)
    f = (n - 1) // 3
    plan: list[Fault] = []
    storage_nodes: list[int] | None = None
    diverging_nodes: list[int] | None = None
    for _ in range(rng.randint(1, faults_max)):
        kind = rng.choice(kinds)
        start = rng.randrange(0, horizon_ms - 100)
        end = rng.randint(start + 50, horizon_ms)
        if kind in DIVERGING_KINDS:
            byzantine = {*twins, *skewed}
            candidates = [i for i in range(n) if i not in byzantine]
            budget = min(f - len(byzantine), len(candidates))
            if budget <= 0:
                kind = FaultKind.CRASH
            else:
                if diverging_nodes is None:
                    diverging_nodes = sorted(rng.sample(candidates, budget))
                count = rng.randint(1, len(diverging_nodes))
                plan.append(Fault(kind, start, end, tuple(sorted(rng.sample(diverging_nodes, count)))))
                continue
        if kind in STORE_LOSS_KINDS:
            candidates = [i for i in range(n) if i not in twins]
            budget = min(f, len(candidates))
            if budget == 0:
                kind = FaultKind.CRASH_MID if kind is FaultKind.TORN_WRITE else FaultKind.CRASH
            else:
                if storage_nodes is None:
                    storage_nodes = sorted(rng.sample(candidates, budget))
                count = rng.randint(1, len(storage_nodes))
                plan.append(Fault(kind, start, end, tuple(sorted(rng.sample(storage_nodes, count)))))
                continue
        if kind in CRASH_KINDS:
            candidates = [i for i in range(n) if i not in twins]
            count = min(len(candidates), rng.randint(1, f + 1))
            plan.append(Fault(kind, start, end, tuple(sorted(rng.sample(candidates, count)))))
        elif kind in (FaultKind.PARTITION, FaultKind.ONE_WAY):
            if nodes < 2:
                continue
            group = tuple(sorted(rng.sample(range(nodes), rng.randint(1, nodes - 1))))
            plan.append(Fault(kind, start, end, group))
        elif kind is FaultKind.LOSS:
            plan.append(Fault(kind, start, end, rate=round(rng.uniform(0.05, 0.6), 3)))
        elif kind is FaultKind.DUPLICATE:
            plan.append(Fault(kind, start, end, rate=round(rng.uniform(0.05, 0.5), 3)))
        else:
            plan.append(Fault(kind, start, end, extra_ms=rng.randint(20, 400)))
    if twins:
        # Split each twin pair for a while, so the key really speaks with two voices.
        group = tuple(sorted({*twins, *rng.sample(range(n), n // 2)} - {n + j for j in range(len(twins))}))
        start = rng.randrange(0, horizon_ms // 2)
        plan.append(Fault(FaultKind.PARTITION, start, rng.randint(start + 200, horizon_ms), group))
    return tuple(plan)


def draw_hostile(rng: random.Random, *, count_max: int = 2) -> tuple[HostileKind, ...]:
    """Up to `count_max` hostile sync peers of kinds drawn from `rng` (possibly none)."""
    kinds = list(HostileKind)
    return tuple(rng.choice(kinds) for _ in range(rng.randint(0, count_max)))


__all__ = [
    "CHAIN_ID",
    "SIM_SYNCHRONY",
    "SIM_TIMEOUTS",
    "Fault",
    "FaultKind",
    "HostileKind",
    "InvariantChecker",
    "InvariantViolation",
    "SimConfig",
    "SimResult",
    "SimStats",
    "Simulation",
    "SweepOutcome",
    "TimeSkew",
    "check_simulation",
    "draw_hostile",
    "generate_fault_plan",
    "run_simulation",
    "run_sweep",
]
