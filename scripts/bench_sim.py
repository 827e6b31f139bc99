#!/usr/bin/env python3
"""Benchmark the simulator: a network of real nodes (100 validators by default) committing 100
heights after its faults heal, on virtual time, in one process.

Setup: `medledger.node.simulate.build_config` for the seed (a fault plan of every kind drawn from
it: losses, delays, duplicates, partitions, crashes, crashes mid-write, torn writes, rotten
tables), each validator the real reactor with block sync, mempool, admission, an in-memory store
and the kv fixture app. The run must stay safe and live. Target (issue 10): a 100-node run of 100
heights with faults within 10 minutes on the CI machine. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

from medledger.node.simulate import build_config, simulate

TARGET_S = 600.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--heights", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--hostile", type=int, default=2)
    args = parser.parse_args()
    config = build_config(nodes=args.nodes, seed=args.seed, heights=args.heights, hostile=args.hostile)
    print(f"faults: {', '.join(repr(f) for f in config.faults)}; hostile: {config.hostile}", flush=True)
    started, cpu = time.monotonic(), time.process_time()
    summary = simulate(config)
    elapsed, cpu_s = time.monotonic() - started, time.process_time() - cpu
    result = summary.result
    figures = {
        "nodes": args.nodes,
        "heights_after_gst": args.heights,
        "seed": args.seed,
        "faults": len(config.faults),
        "hostile": len(config.hostile),
        "wall_s": round(elapsed, 1),
        "cpu_s": round(cpu_s, 1),
        "target_s": TARGET_S,
        "meets_target": elapsed <= TARGET_S and summary.failure is None,
        "failure": summary.failure,
        "max_height": max(result.heights.values(), default=0) if result else None,
        "commits": result.commits if result else None,
        "frames": result.stats.frames_sent if result else None,
        "virtual_ms": result.end_ms if result else None,
        "sync_sessions": result.stats.sync_sessions if result else None,
        "python": platform.python_version(),
    }
    print(json.dumps(figures))
    return 0 if figures["meets_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
