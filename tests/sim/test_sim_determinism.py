"""A run is a pure function of its config: the same seed replays every event exactly, in this
process and in another one whose string hashing is seeded differently (nothing iterates a set
of bytes, no thread, no wall clock, no OS randomness)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sim_support import replay_config, run_digest

from medledger.network.sim import run_simulation

HERE = Path(__file__).resolve().parent
#: Prints the digest of `replay_config()`'s run (run in a fresh interpreter).
CHILD = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from sim_support import replay_config, run_digest; "
    "from medledger.network.sim import run_simulation; "
    "print(run_digest(run_simulation(replay_config())))"
)


def digest_in_subprocess(hash_seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    command = [sys.executable, "-c", CHILD, str(HERE)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True, timeout=240)
    return done.stdout.strip().splitlines()[-1]


def test_a_seed_replays_every_event_exactly() -> None:
    first, second = run_simulation(replay_config()), run_simulation(replay_config())
    assert first.timeline.events == second.timeline.events
    assert first.trace_digest == second.trace_digest
    assert (first.heights, first.events, first.end_ms, first.stats) == (
        second.heights,
        second.events,
        second.end_ms,
        second.stats,
    )
    # The run did exercise what makes replay hard: crashes mid-write, a rebuild, hostile peers.
    assert first.stats.restarts >= 1
    assert first.stats.hostile_dropped >= 1


def test_a_seed_replays_exactly_under_other_hash_seeds() -> None:
    here = run_digest(run_simulation(replay_config()))
    assert digest_in_subprocess("1") == here
    assert digest_in_subprocess("4242") == here
