"""Hypothesis drives the simulator: a seed, up to f twins and a fault plan of every kind.

Whatever it draws, safety holds at every event, and once every fault has healed every correct node
commits again within the liveness bound. A failing example prints its `SimConfig`, which replays
the run exactly (`run_simulation(config)`); Hypothesis also shrinks the plan first.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from sim_support import sim_config

from medledger.network.sim import Fault, FaultKind, SimConfig, check_simulation

HORIZON_MS = 3_000
#: Shorter faults would hardly touch a run whose messages take 2-20 ms.
FAULT_MS_MIN = 100
CRASHES = (FaultKind.CRASH, FaultKind.CRASH_MID)
#: Faults that destroy a store: they strike only f validators (the first f correct ones), so a copy
#: of the chain always survives to rebuild from.
STORE_LOSSES = (FaultKind.TORN_WRITE, FaultKind.CORRUPT)
CUTS = (FaultKind.PARTITION, FaultKind.ONE_WAY)
#: Faults that make a node's state diverge (it halts for good): they strike only the validators f
#: leaves beside the twins (the last correct ones), so a quorum of correct nodes stays.
DIVERGING = (FaultKind.WRONG_BACKUP,)


@st.composite
def faults(draw: st.DrawFn, kind: FaultKind, n: int, twins: tuple[int, ...]) -> Fault:
    start = draw(st.integers(0, HORIZON_MS - FAULT_MS_MIN))
    end = draw(st.integers(start + FAULT_MS_MIN, HORIZON_MS))
    nodes = n + len(twins)
    if kind in CRASHES:
        correct = [i for i in range(n) if i not in twins]
        victims = draw(st.lists(st.sampled_from(correct), min_size=1, max_size=len(correct), unique=True))
        return Fault(kind, start, end, tuple(sorted(victims)))
    if kind in STORE_LOSSES:
        budget = [i for i in range(n) if i not in twins][: (n - 1) // 3]
        victims = draw(st.lists(st.sampled_from(budget), min_size=1, max_size=len(budget), unique=True))
        return Fault(kind, start, end, tuple(sorted(victims)))
    if kind in DIVERGING:
        budget = [i for i in reversed(range(n)) if i not in twins][: (n - 1) // 3 - len(twins)]
        victims = draw(st.lists(st.sampled_from(budget), min_size=1, max_size=len(budget), unique=True))
        return Fault(kind, start, end, tuple(sorted(victims)))
    if kind in CUTS:
        group = draw(st.lists(st.integers(0, nodes - 1), min_size=1, max_size=nodes - 1, unique=True))
        return Fault(kind, start, end, tuple(sorted(group)))
    if kind is FaultKind.DELAY:
        return Fault(kind, start, end, extra_ms=draw(st.integers(1, 600)))
    return Fault(kind, start, end, rate=draw(st.sampled_from([0.05, 0.2, 0.4, 0.7, 1.0])))


@st.composite
def scenarios(draw: st.DrawFn, n: int, every_kind: bool = False) -> SimConfig:
    f = (n - 1) // 3
    twins = tuple(sorted(draw(st.lists(st.integers(0, n - 1), max_size=f, unique=True))))
    kinds = [
        kind
        for kind in FaultKind
        if (n + len(twins) > 1 or kind not in CUTS)
        and (f > 0 or kind not in STORE_LOSSES)
        and (f > len(twins) or kind not in DIVERGING)
    ]
    if every_kind:
        chosen = draw(st.permutations(kinds))
    else:
        chosen = draw(st.lists(st.sampled_from(kinds), min_size=1, max_size=4))
    plan = tuple(draw(faults(kind, n, twins)) for kind in chosen)
    seed = draw(st.integers(0, 2**32 - 1))
    return sim_config(n, seed, faults=plan, twins=twins)


@settings(max_examples=30, deadline=None)
@given(config=scenarios(1))
def test_one_validator_survives_every_fault(config: SimConfig) -> None:
    assert check_simulation(config).live


@settings(max_examples=60, deadline=None)
@given(config=scenarios(4))
def test_four_validators_with_up_to_one_twin_stay_safe_and_live(config: SimConfig) -> None:
    assert check_simulation(config).live


@settings(max_examples=25, deadline=None)
@given(config=scenarios(7))
def test_seven_validators_with_up_to_two_twins_stay_safe_and_live(config: SimConfig) -> None:
    assert check_simulation(config).live


@settings(max_examples=20, deadline=None)
@given(config=st.one_of(scenarios(4, every_kind=True), scenarios(7, every_kind=True)))
def test_every_fault_kind_at_once(config: SimConfig) -> None:
    no_budget = (config.n - 1) // 3 <= len(config.twins)  # the twins take f: no state diverges
    every = set(FaultKind) - (set(DIVERGING) if no_budget else set())
    assert {fault.kind for fault in config.faults} == every  # storage faults included
    assert check_simulation(config).live
