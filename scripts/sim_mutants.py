#!/usr/bin/env python3
"""Mutation check of the simulator: re-introduce bugs fixed earlier and see which seed finds each.

Each mutant puts one fixed bug back at run time, by monkeypatching the fixed code inside every
worker process (no patch file, no edit to the package): the patch is installed by the worker
pool's initializer, so it holds whatever the start method (this script uses `spawn`, as
`medledger.network.sim.run_sweep` does). The workers then run the CI sweep's configs
(`tests/sim/test_sim_sweep.make_sweep`: n in {1, 4, 4, 7}, twins, skewed proposers, a fault plan
and hostile sync peers drawn from each seed), in seed order, until one run fails: a safety
violation raised (`InvariantViolation`) or reported (`SimResult.violations`, liveness
included). A control run of the unmutated code over the same seeds shows what the sweep itself
says about them (it must be zero failures, or a mutant's find means nothing).

Mutants (`--list` prints them):

* `one-peer-sync-trigger`: sync mode is entered on the highest height ANY peer claims (the code
  before 6757e0b), not the height f+1 validators back: a lying peer's STATUS takes a validator
  out of consensus.
* `redownload-applying`: block sync asks again for the heights of the run being applied
  (`BlockSync._is_wanted` without its `_applying_through` clause, as before 6757e0b). Found by
  the checker's block-request invariant (a correct node never asks for a height it has
  committed, is applying or holds downloaded), in the window that exists because the simulated
  offload costs virtual time (`simcluster.compute_offload_ms`: a run of blocks is applied after
  a wait proportional to its blocks and txs, while frames keep arriving and block sync
  re-plans). With an offload that ran the work at one instant there was no such window.
* `redownload-deciding`: block sync asks for the block consensus decided while the reactor writes
  it (`BlockSync.start_applying` does nothing, as before it existed): every peer that committed
  the height says so by its status meanwhile, and block sync asked one of them for the block. The
  same block-request invariant finds it (the height consensus decided is one the node lacks no
  more); it was found that way, not by review, once the offload cost virtual time.
* `certified-other-parent-drops-peer`: a certified block that does not fit our tip
  (`StateDivergedError`: another parent or state root) is taken as the serving peer's fault and
  the peer is dropped, instead of the node halting, so a node whose own chain is wrong drops its
  honest peers one after the other. Before 6757e0b this was so for a block on another parent (a
  state root mismatch already halted); the mutant does it for both. Found through the
  `WRONG_BACKUP` fault (a node's state restored from a wrong backup while it is down, which its
  start check cannot see) and the "dropped correct peer" check, which holds such a diverged node
  too: the fixed code halts it instead. What the seeds reach is the state-root half: a certified
  block on another parent than a node's own certified tip would take a fork (more than f faulty
  keys, or a backup of another network with the same genesis and keys), which no fault of the
  simulator makes, so the other-parent half alone (the exact code before 6757e0b) is not found.
* `pbts-timeliness-off`: every proposal is timely (`SynchronyParams.is_timely` is always true), so
  a Byzantine proposer's skewed block time is prevoted.
* `round-jump-off`: no f+1 round jump (`ConsensusCore._try_round_jump` never jumps). Found
  late (around seed 1000 of the sweep): a validator one round behind also catches up through
  the previous round's re-broadcasts, so only runs that leave validators further apart need the
  jump. Earlier seeds found it only together with a since fixed stall (a validator restarted
  after its precommit had lost its prevote, and its peers waited for it; see `chain/consensus.py`).

Output: one JSON object a line, flushed as each finishes. A mutant's line:
`{"mutant", "what", "found", "seed", "seeds_run", "wall_s", "failure", "reproduce"}` where
`found` says whether a seed failed within the budget, `seed` is the first failing seed (seed
order, so the lowest of those run), `seeds_run` how many runs it took (the failing one included;
the whole budget when not found), `wall_s` the wall time of the search (pool start included),
`failure` the first line of the violation, `fixed_code_passes` whether the unmutated code passes
that same seed (a find counts only if it does), and `reproduce` the command that runs just that
seed.
`exercised_runs` counts the runs in which the mutated code decided otherwise than the fixed code
would have (at least once): a mutant not found with `exercised_runs` 0 is never reached by what
the sweep's seeds do (a fault or hostile peer is missing); not found with runs exercised, the bug
ran and no invariant noticed.
The control's line (`"mutant": "control"`) has `failures` and `failing_seeds` (the first few)
over the same seeds, all of them run. A run that raises anything else than a violation counts as a
failure whose text starts with "error:"; a run over `--run-timeout` seconds of wall time is
skipped and counted in `timeouts`.

Machine: figures printed in the closing note of issue 10 come from the project's 2-core AMD EPYC
box with 23 GB of RAM, shared by several engineers at the time, so wall times vary by a third
or more from run to run; seeds and seed counts do not vary (a run is a function of its config).

Usage (from the repository root):
    .venv/bin/python scripts/sim_mutants.py --seeds 1500 --jobs 1
    .venv/bin/python scripts/sim_mutants.py --mutant one-peer-sync-trigger --seed-base 17 --seeds 1
    .venv/bin/python scripts/sim_mutants.py --control-only --seeds 500
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, Final, cast

from medledger.network.sim import InvariantViolation, SimConfig, run_simulation

#: Where the CI sweep's config builder lives (a test module, imported by path).
SWEEP_DIR: Final = Path(__file__).resolve().parent.parent / "tests" / "sim"
SWEEP_MODULE: Final = "test_sim_sweep"
#: Seeds a mutant is given by default before it is declared not found.
DEFAULT_SEEDS: Final = 2_000
#: A single run longer than this (wall seconds) is skipped: a hung run is no finding.
DEFAULT_RUN_TIMEOUT_S: Final = 300.0
#: Failing seeds the control line lists at most.
CONTROL_SEEDS_SHOWN: Final = 10
CONTROL: Final = "control"


# -- the mutants ---------------------------------------------------------------------------------
# Each installer imports the fixed module and replaces one attribute of a class, so every instance
# the simulator builds afterwards (in this process) runs the bug. `setattr` because the targets
# are methods and properties a type checker rightly refuses to see reassigned. Each mutated
# function also counts the calls where it decides otherwise than the fixed code (`_hit`): a
# mutant no seed finds was either never exercised (no fault or peer of the sweep reaches it) or
# exercised without any invariant noticing, and the output says which.

_hits = 0


def _hit() -> None:
    global _hits  # noqa: PLW0603 - one counter per worker process, reset per run
    _hits += 1


def _install_one_peer_sync_trigger() -> None:
    from medledger.network.syncservice import SyncService

    fixed = cast(property, SyncService.__dict__["backed_target"]).fget
    assert fixed is not None

    def backed_target(self: SyncService) -> int:
        target = self.sync.target  # the highest height any peer reported (validator or not)
        if target != fixed(self):
            _hit()
        return target

    setattr(SyncService, "backed_target", property(backed_target))  # noqa: B010


def _install_redownload_applying() -> None:
    from medledger.network.blocksync import BlockSync

    def is_wanted(self: BlockSync, height: int) -> bool:
        # The fixed code also requires `height > self._applying_through`.
        wanted = height not in self._buffer and not any(
            r.first <= height <= r.last for r in self._requests.values()
        )
        if wanted and height <= self._applying_through:
            _hit()
        return wanted

    setattr(BlockSync, "_is_wanted", is_wanted)  # noqa: B010


def _install_redownload_deciding() -> None:
    from medledger.network.blocksync import BlockSync

    def start_applying(self: BlockSync, last: int) -> None:
        _hit()  # the fixed code holds the height back from block sync until it is written

    setattr(BlockSync, "start_applying", start_applying)  # noqa: B010


def _install_certified_other_parent_drops_peer() -> None:
    from medledger.chain.errors import InvalidBlockError, StateDivergedError
    from medledger.chain.execution import ExecutedBlock
    from medledger.network.blocksync import SyncedBlock
    from medledger.network.syncservice import SyncService

    fixed = SyncService._apply_run

    def apply_run(
        self: SyncService, run: list[SyncedBlock]
    ) -> tuple[list[ExecutedBlock], tuple[bytes, InvalidBlockError] | None]:
        # The fixed code, one block at a time, except that a divergence blames the peer.
        applied: list[ExecutedBlock] = []
        for item in run:
            try:
                done, failure = fixed(self, [item])
            except StateDivergedError as exc:
                _hit()
                return applied, (item.peer, cast(InvalidBlockError, exc))  # it has `.rule` too
            applied.extend(done)
            if failure is not None:
                return applied, failure
        return applied, None

    setattr(SyncService, "_apply_run", apply_run)  # noqa: B010


def _install_pbts_timeliness_off() -> None:
    from medledger.chain.consensus import SynchronyParams

    fixed = SynchronyParams.is_timely

    def is_timely(self: SynchronyParams, block_time_ms: int, received_ms: int, round_: int) -> bool:
        if not fixed(self, block_time_ms, received_ms, round_):
            _hit()
        return True

    setattr(SynchronyParams, "is_timely", is_timely)  # noqa: B010


def _install_round_jump_off() -> None:
    from medledger.chain.consensus import Action, ConsensusCore

    def try_round_jump(self: ConsensusCore, out: list[Action]) -> bool:
        # The fixed code's condition to jump, read without jumping.
        assert self._validators is not None
        needed = self._validators.max_faulty + 1
        seen = self._max_round_seen
        if len(seen) >= needed and sorted(seen.values(), reverse=True)[needed - 1] > self.round:
            _hit()
        return False

    setattr(ConsensusCore, "_try_round_jump", try_round_jump)  # noqa: B010


@dataclasses.dataclass(frozen=True, slots=True)
class Mutant:
    name: str
    what: str
    install: Callable[[], None]


MUTANTS: Final = {
    m.name: m
    for m in (
        Mutant(
            "one-peer-sync-trigger",
            "SyncService.backed_target is the highest height any peer claims, not the f+1-th "
            "highest validator claim: one lying peer takes a node out of consensus",
            _install_one_peer_sync_trigger,
        ),
        Mutant(
            "redownload-applying",
            "BlockSync._is_wanted ignores _applying_through: block sync asks again for the "
            "heights of the run being applied",
            _install_redownload_applying,
        ),
        Mutant(
            "redownload-deciding",
            "BlockSync.start_applying does nothing: block sync asks for the block consensus "
            "decided while the reactor writes it",
            _install_redownload_deciding,
        ),
        Mutant(
            "certified-other-parent-drops-peer",
            "SyncService._apply_run returns a StateDivergedError as the serving peer's fault: the "
            "node drops the honest peer instead of halting",
            _install_certified_other_parent_drops_peer,
        ),
        Mutant(
            "pbts-timeliness-off",
            "SynchronyParams.is_timely is always true: a skewed block time is prevoted",
            _install_pbts_timeliness_off,
        ),
        Mutant(
            "round-jump-off",
            "ConsensusCore._try_round_jump never jumps: no f+1 round skip",
            _install_round_jump_off,
        ),
    )
}


# -- the workers ---------------------------------------------------------------------------------


class _RunTimeoutError(Exception):
    """A run took longer than the run timeout (wall time)."""


_run_timeout_s = DEFAULT_RUN_TIMEOUT_S
#: Set when the run's deadline passed: the run is a timeout, whatever the simulator made of the
#: exception (it may report it as a node's failure, since it catches a node's errors).
_timed_out = False
#: After the deadline, the alarm fires again this often until the run has unwound.
ALARM_REPEAT_S: Final = 1.0


def _init_worker(mutant: str, run_timeout_s: float) -> None:
    """Pool initializer: install the mutant (none for the control) in this worker process."""
    global _run_timeout_s  # noqa: PLW0603 - one worker process, one setting
    _run_timeout_s = run_timeout_s
    logging.getLogger("medledger").setLevel(logging.CRITICAL)  # a mutant's warnings are expected
    if mutant != CONTROL:
        MUTANTS[mutant].install()


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    global _timed_out  # noqa: PLW0603
    _timed_out = True
    raise _RunTimeoutError


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds, ALARM_REPEAT_S)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclasses.dataclass(frozen=True, slots=True)
class RunOutcome:
    seed: int
    #: The violation's text (None: every property held).
    failure: str | None
    timed_out: bool
    wall_s: float
    #: Decisions the mutated code took otherwise than the fixed code would have, in this run.
    hits: int


def _run_config(config: SimConfig) -> RunOutcome:
    global _hits, _timed_out  # noqa: PLW0603
    _hits = 0
    _timed_out = False
    started = time.perf_counter()
    failure: str | None = None
    timed_out = False
    try:
        with _deadline(_run_timeout_s):
            result = run_simulation(config)
        if result.violations:
            failure = "\n".join(result.violations)
    except InvariantViolation as exc:
        failure = str(exc)
    except _RunTimeoutError:
        timed_out = True
    except Exception as exc:  # the simulator itself fell over under the mutant: still a finding
        failure = f"error: {type(exc).__name__}: {exc}"
    if _timed_out:
        timed_out, failure = True, None
    return RunOutcome(config.seed, failure, timed_out, time.perf_counter() - started, _hits)


# -- the search ----------------------------------------------------------------------------------


def sweep_configs(base: int, count: int) -> list[SimConfig]:
    """The CI sweep's configs for seeds `base`..`base + count - 1`."""
    if str(SWEEP_DIR) not in sys.path:
        sys.path.insert(0, str(SWEEP_DIR))  # spawned workers inherit it (to unpickle make_tx)
    module: Any = importlib.import_module(SWEEP_MODULE)
    return cast(list[SimConfig], module.make_sweep(count, base))


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def _reproduce(name: str, seed: int) -> str:
    return (
        f".venv/bin/python scripts/sim_mutants.py --mutant {name} --seed-base {seed} --seeds 1 --no-control"
    )


def _pool(mutant: str, jobs: int, run_timeout_s: float) -> Any:
    context = multiprocessing.get_context("spawn")  # as run_sweep: no fork of a threaded parent
    return context.Pool(jobs, initializer=_init_worker, initargs=(mutant, run_timeout_s))


def search(
    mutant: Mutant, configs: Sequence[SimConfig], *, jobs: int, run_timeout_s: float
) -> dict[str, Any]:
    """Run `configs` in seed order under `mutant` until one fails."""
    started = time.perf_counter()
    seeds_run = 0
    timeouts = 0
    exercised = 0
    found: RunOutcome | None = None
    with _pool(mutant.name, jobs, run_timeout_s) as pool:
        for outcome in pool.imap(_run_config, configs):
            seeds_run += 1
            timeouts += outcome.timed_out
            exercised += outcome.hits > 0
            if outcome.failure is not None:
                found = outcome
                break
        pool.terminate()  # the runs still going are of later seeds
    line: dict[str, Any] = {
        "mutant": mutant.name,
        "what": mutant.what,
        "found": found is not None,
        "seed": found.seed if found is not None else None,
        "seeds_run": seeds_run,
        "wall_s": round(time.perf_counter() - started, 1),
        "failure": _first_line(found.failure) if found is not None and found.failure else None,
        "exercised_runs": exercised,
    }
    if found is not None:
        line["run_wall_s"] = round(found.wall_s, 2)
        # The same seed on the fixed code: a find counts only where the fixed code passes.
        with _pool(CONTROL, 1, run_timeout_s) as pool:
            (fixed,) = pool.map(_run_config, [configs[seeds_run - 1]])
        line["fixed_code_passes"] = fixed.failure is None and not fixed.timed_out
        line["reproduce"] = _reproduce(mutant.name, found.seed)
    if timeouts:
        line["timeouts"] = timeouts
    return line


def control(configs: Sequence[SimConfig], *, jobs: int, run_timeout_s: float) -> dict[str, Any]:
    """Run every config on the fixed code."""
    started = time.perf_counter()
    failing: list[int] = []
    first: str | None = None
    timeouts = 0
    with _pool(CONTROL, jobs, run_timeout_s) as pool:
        for outcome in pool.imap(_run_config, configs):
            timeouts += outcome.timed_out
            if outcome.failure is not None:
                failing.append(outcome.seed)
                first = first or _first_line(outcome.failure)
    line: dict[str, Any] = {
        "mutant": CONTROL,
        "what": "the fixed code",
        "found": bool(failing),
        "seeds_run": len(configs),
        "wall_s": round(time.perf_counter() - started, 1),
        "failures": len(failing),
        "failing_seeds": failing[:CONTROL_SEEDS_SHOWN],
        "failure": first,
    }
    if timeouts:
        line["timeouts"] = timeouts
    return line


def _emit(line: dict[str, Any]) -> None:
    print(json.dumps(line), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seeds", type=int, default=DEFAULT_SEEDS, help="seed budget per mutant")
    parser.add_argument("--seed-base", type=int, default=0, help="first seed")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="worker processes")
    parser.add_argument(
        "--mutant", choices=sorted(MUTANTS), action="append", help="run only this one (repeatable)"
    )
    parser.add_argument("--no-control", action="store_true", help="skip the control run")
    parser.add_argument("--control-only", action="store_true", help="run only the control")
    parser.add_argument("--run-timeout", type=float, default=DEFAULT_RUN_TIMEOUT_S, help="wall s per run")
    parser.add_argument("--list", action="store_true", help="print the mutants and exit")
    args = parser.parse_args(argv)
    if args.list:
        for mutant in MUTANTS.values():
            print(f"{mutant.name}: {mutant.what}")
        return 0
    if args.seeds < 1 or args.jobs < 1:
        parser.error("--seeds and --jobs must be at least 1")
    configs = sweep_configs(args.seed_base, args.seeds)
    chosen = [] if args.control_only else [MUTANTS[name] for name in (args.mutant or sorted(MUTANTS))]
    for mutant in chosen:
        _emit(search(mutant, configs, jobs=args.jobs, run_timeout_s=args.run_timeout))
    if not args.no_control:
        line = control(configs, jobs=args.jobs, run_timeout_s=args.run_timeout)
        _emit(line)
        if line["failures"]:
            print(
                "the fixed code fails some of these seeds: a mutant found there proves nothing",
                file=sys.stderr,
            )
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
