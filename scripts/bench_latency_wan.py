#!/usr/bin/env python3
"""Finality latency across a wide-area network: validators in network namespaces, delayed links.

What institutions of one region would see (issue 17 point 7). Setup: a fresh testnet of
`--validators` validators (key-value fixture app, LevelDB), each node a process in a network
namespace of its own (`scripts/netlab.py`: one namespace per institution, joined to the root
namespace by a veth pair, so peer links cross real interfaces). Every peer link goes through a
userspace TCP proxy in the root namespace that holds each chunk `--delay-ms` in each direction
(this kernel has no `netem`), so any two validators are `--delay-ms` apart one way. A client in
the root namespace offers `--offered` signed ~1 KB txs a second for `--seconds`, in requests of
`--open-batch` (1: single txs) on a fixed schedule (an open loop), round robin over the validators,
each request waiting for finality, after a warm-up of a few txs while the links come up (the
client's own link to its node is not delayed: an institution's systems sit beside its node).
Reported: submit-to-finality p50 and p99 and the finalized rate. Needs root (namespaces). All
processes share this machine's cores. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

from bench_cluster import PASSPHRASE, create_bench_testnet, run_open_loop
from bench_node import percentile, presign
from netlab import NamespacedCluster

#: Txs finalized before the measured run (one per validator, twice), once every link is up.
WARM_UP_TXS = 8


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--validators", type=int, default=4)
    parser.add_argument("--delay-ms", type=float, default=20.0, help="one-way delay between any two")
    parser.add_argument("--loss", type=float, default=0.0, help="chance a chunk breaks its link")
    parser.add_argument("--offered", type=float, default=500.0, help="txs offered per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--open-batch", type=int, default=1)
    parser.add_argument("--block-interval-ms", type=int, default=0)
    parser.add_argument("--keep-logs", type=Path, default=None, help="copy the node logs here")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_latency_wan: network namespaces need root", file=sys.stderr)
        return 2
    if args.validators < 2 or args.offered <= 0 or args.seconds <= 0 or args.open_batch < 1:
        parser.error("at least 2 validators, a positive rate and duration, batches of at least 1")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )
    total = int(args.offered * args.seconds)
    with tempfile.TemporaryDirectory(prefix="medledger-bench-wan-") as tmp:
        nodes = create_bench_testnet(Path(tmp) / "net", args.validators, args.block_interval_ms)
        print(f"signing {total:,} txs of ~1 KB ...", flush=True)
        signed = presign(total + WARM_UP_TXS, "medledger-testnet", senders=64)
        warm_up, raws = signed[:WARM_UP_TXS], signed[WARM_UP_TXS:]
        cluster = NamespacedCluster(
            nodes, delay_ms=args.delay_ms, loss=args.loss, env={"MEDLEDGER_KEY_PASSPHRASE": PASSPHRASE}
        )
        try:
            with cluster:
                print(
                    f"{args.validators} validators in namespaces "
                    f"{', '.join(s.namespace for s in cluster.lab.sites)} at {', '.join(cluster.urls)}; "
                    f"{args.delay_ms:g} ms one way between any two (userspace proxy, loss {args.loss:g}); "
                    f"offering {args.offered:,.0f} tx/s for {args.seconds:g} s "
                    f"in requests of {args.open_batch}",
                    flush=True,
                )
                try:
                    # Until every link is up the first heights wait for peers: not what is measured.
                    asyncio.run(run_open_loop(cluster.urls, warm_up, 10, 1))
                    run = asyncio.run(run_open_loop(cluster.urls, raws, args.offered, args.open_batch))
                except Exception:
                    for node, proc in zip(nodes, cluster.processes, strict=True):
                        tail = proc.read_log()[-3000:]
                        print(f"--- {node.name} log (last lines) ---\n{tail}", file=sys.stderr)
                    raise
        finally:
            if args.keep_logs is not None:
                args.keep_logs.mkdir(parents=True, exist_ok=True)
                for node, proc in zip(nodes, cluster.processes, strict=True):
                    (args.keep_logs / f"{node.name}.log").write_text(proc.read_log(), encoding="utf-8")
    if not run.latencies_ms:
        print("bench_latency_wan: nothing was finalized", file=sys.stderr)
        return 1
    p50, p99 = percentile(run.latencies_ms, 0.50), percentile(run.latencies_ms, 0.99)
    print(
        f"WAN {args.delay_ms:g} ms one way: offered {run.offered_tx_per_s:,.0f} tx/s (sent "
        f"{run.sent_tx_per_s:,.0f}), finalized {run.finalized:,} at {run.finalized_tx_per_s:,.0f} tx/s; "
        f"finality p50 {p50:.0f} ms, p99 {p99:.0f} ms; refused (429) {run.refused:,}"
    )
    print(
        json.dumps(
            {
                "bench": "latency_wan",
                "validators": args.validators,
                "one_way_delay_ms": args.delay_ms,
                "loss": args.loss,
                "batch": args.open_batch,
                "offered_tx_per_s": round(run.offered_tx_per_s, 1),
                "sent_tx_per_s": round(run.sent_tx_per_s, 1),
                "finalized_tx_per_s": round(run.finalized_tx_per_s, 1),
                "latency_p50_ms": round(p50, 1),
                "latency_p99_ms": round(p99, 1),
                "refused_txs": run.refused,
            }
        )
    )
    return 0 if run.finalized == total else 1


if __name__ == "__main__":
    sys.exit(main())
