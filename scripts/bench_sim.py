#!/usr/bin/env python3
"""Benchmark the simulator: wall time of a 100-node simulation of 100 heights with faults.

Setup: this process runs `medledger simulate --nodes 100 --heights 100 --hostile 2 --seed 1`
(the console script of the virtualenv this Python belongs to) as a child process and times it
from outside, start to exit, so the figure includes interpreter start-up and everything the
command does: the simulator (issue 10: every node's real reactor, block sync, mempool and
admission over an in-memory network on virtual time) with the fault plan it draws from the seed
over every fault kind it has by default, plus two hostile sync peers, `--heights` counted after
the last fault healed, checking every invariant after each event, in one process on one core.
Options this build's `medledger simulate` lacks (read from its `--help`) are left out and said
so. With `--report FILE.html` the run also writes its timeline report (whose size is printed).

The target (issue 10) is 600 s on this machine: a 2-core x86_64 VM, Python 3.11.7, Linux, with
nothing else running. The bench reports, it does not assert: the last line printed is one JSON
object, `{"bench": "sim", "nodes": ..., "heights": ..., "wall_s": ..., "target_s": 600,
"events": ..., "cpu_s": ..., "meets_target": ...}` (`events`: the simulator's own count of
processed events, from its summary line; `cpu_s`: the child's user + system CPU time;
`heights_reached`: the lowest and highest committed height over the nodes, when it prints them;
`meets_target`: finished within the target, every invariant held and the run was live). The exit
code is the simulator's (non-zero: it broke an invariant or refused the options).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

TARGET_S = 600
#: A run that takes this much longer than the target is stopped (the bench must end).
TIMEOUT_FACTOR = 3

_EVENTS = re.compile(r"run\(s\).*?(\d+) events")
_HEIGHTS = re.compile(r"^seed \d+: heights \[([\d, ]*)\]", re.MULTILINE)


def find_medledger() -> str:
    """The `medledger` console script beside this interpreter (the venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "medledger"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("medledger")
    if found is None:
        raise SystemExit("no medledger console script found (run scripts/bootstrap.sh dev)")
    return found


def simulate_options(medledger: str) -> str:
    """`medledger simulate --help`, to pass only the options this build has."""
    done = subprocess.run([medledger, "simulate", "--help"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"medledger simulate --help failed: {done.stderr.strip()}")
    return done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100, help="validators")
    parser.add_argument("--heights", type=int, default=100, help="heights every correct node commits")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--twins", type=int, default=0, help="Byzantine twin validators")
    parser.add_argument("--hostile", type=int, default=2, help="hostile sync peers")
    parser.add_argument("--report", type=Path, default=None, help="also write the HTML timeline here")
    parser.add_argument("--medledger", default=None, help="the medledger executable (default: the venv's)")
    args = parser.parse_args()

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )
    medledger = args.medledger or find_medledger()
    options = simulate_options(medledger)
    argv = [medledger, "simulate", "--nodes", str(args.nodes), "--seed", str(args.seed)]
    if "--heights" in options:
        argv += ["--heights", str(args.heights)]
    else:
        print("this medledger simulate has no --heights: it runs its default length", flush=True)
    if args.twins:
        argv += ["--twins", str(args.twins)]
    if args.hostile:
        if "--hostile" in options:
            argv += ["--hostile", str(args.hostile)]
        else:
            print("this medledger simulate has no --hostile: no hostile sync peers", flush=True)
    if args.report is not None:
        if "--report" in options:
            argv += ["--report", str(args.report)]
        else:
            print("this medledger simulate has no --report: no report is written", flush=True)
    print("running: " + " ".join(argv[1:]), flush=True)

    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, check=False, timeout=TARGET_S * TIMEOUT_FACTOR
        )
    except subprocess.TimeoutExpired:
        wall_s = time.perf_counter() - started
        print(f"stopped after {wall_s:.0f} s ({TIMEOUT_FACTOR} x the target)", file=sys.stderr)
        stopped = {"bench": "sim", "nodes": args.nodes, "heights": args.heights, "wall_s": round(wall_s, 1)}
        stopped |= {"target_s": TARGET_S, "events": None, "meets_target": False, "timed_out": True}
        print(json.dumps(stopped))
        return 1
    wall_s = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)

    lines = done.stdout.strip().splitlines()
    if lines:
        print(lines[-1])
    if done.returncode != 0:
        print(done.stderr.strip()[-4_000:], file=sys.stderr)
        print(
            f"the simulation did not pass (exit code {done.returncode}): wall_s is no benchmark result",
            file=sys.stderr,
        )
    events_match = _EVENTS.search(done.stdout)
    heights_match = _HEIGHTS.search(done.stdout)
    result: dict[str, object] = {
        "bench": "sim",
        "nodes": args.nodes,
        "heights": args.heights if "--heights" in options else None,
        "wall_s": round(wall_s, 1),
        "target_s": TARGET_S,
        "events": int(events_match.group(1)) if events_match else None,
    }
    if heights_match and heights_match.group(1).strip():
        reached = [int(value) for value in heights_match.group(1).split(",")]
        result["heights_reached"] = [min(reached), max(reached)]
    if args.report is not None and args.report.is_file():
        result["report_bytes"] = args.report.stat().st_size
    result["cpu_s"] = round(cpu_s, 1)
    live = "NOT LIVE" not in done.stdout
    result["meets_target"] = done.returncode == 0 and live and wall_s <= TARGET_S
    result["exit_code"] = done.returncode
    print(json.dumps(result))
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
