#!/usr/bin/env python3
"""Benchmark a 4-validator cluster: finalized tx/s and submit-to-finality latency.

Setup: this process creates a fresh testnet (4 validators, key-value fixture app, LevelDB with a
synced write batch per block) in a temporary directory and starts each validator as a separate
process on 127.0.0.1 (Tendermint-style BFT consensus over authenticated websocket links). It then
pre-signs ~1 KB `kv.set` txs and submits them through `POST /v1/txs/batch?wait_ms=…` (msgpack),
spreading concurrent clients over all four validators. A request returns when its txs are
finalized (committed with a quorum certificate), so its duration is the submit-to-finality latency
of each tx in it. Throughput is finalized txs over the time from the first submission to the last
finality. `verify_per_s` is this machine's raw ed25519 verification rate on one core, for scale.
All processes share this machine's cores. The last line printed is one JSON object.
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

import nacl.pwhash
from bench_node import measure_verify_per_s, percentile, presign, run_load

from medledger.node.process import NodeProcess
from medledger.node.testnet import create_testnet

PASSPHRASE = "bench-passphrase"


async def run_spread(
    urls: list[str], raws: list[bytes], batch: int, clients: int
) -> tuple[float, list[float], int]:
    """Split the txs over the validators; each gets `clients` connections of its own."""
    shares = [raws[i :: len(urls)] for i in range(len(urls))]
    results = await asyncio.gather(
        *(run_load(url, share, batch, clients) for url, share in zip(urls, shares, strict=True))
    )
    elapsed = max(r[0] for r in results)
    latencies = [latency for r in results for latency in r[1]]
    committed = sum(r[2] for r in results)
    return elapsed, latencies, committed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--txs", type=int, default=30_000)
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--clients", type=int, default=1, help="concurrent connections per validator")
    parser.add_argument("--block-interval-ms", type=int, default=50)
    parser.add_argument("--keep-logs", type=Path, default=None, help="copy the node logs here")
    args = parser.parse_args()

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )
    verify_per_s = measure_verify_per_s()
    print(f"raw ed25519 verify: {verify_per_s:,.0f}/s on one core")
    with tempfile.TemporaryDirectory(prefix="medledger-bench-cluster-") as tmp:
        nodes = create_testnet(
            Path(tmp) / "net",
            validators=4,
            block_interval_ms=args.block_interval_ms,
            passphrase=PASSPHRASE.encode(),
            key_opslimit=nacl.pwhash.argon2id.OPSLIMIT_MIN,
            key_memlimit=nacl.pwhash.argon2id.MEMLIMIT_MIN,
        )
        print(f"signing {args.txs:,} txs of ~1 KB ...", flush=True)
        raws = presign(args.txs, "medledger-testnet", senders=64)
        procs = [
            NodeProcess(n.home, env={"MEDLEDGER_KEY_PASSPHRASE": PASSPHRASE}, use_config_ports=True)
            for n in nodes
        ]
        try:
            for proc in procs:
                proc.start()
            urls = [proc.wait_ready(60, require_ready=False) for proc in procs]
            print(
                f"4 validators at {', '.join(urls)}; block interval {args.block_interval_ms} ms; "
                f"{args.clients} clients per validator x batches of {args.batch}",
                flush=True,
            )
            try:
                elapsed, latencies, committed = asyncio.run(run_spread(urls, raws, args.batch, args.clients))
                statuses = [proc.get_json("/status") for proc in procs]
            except Exception:
                for node, proc in zip(nodes, procs, strict=True):
                    print(f"--- {node.name} log (last lines) ---\n{proc.read_log()[-3000:]}", file=sys.stderr)
                raise
        finally:
            for proc in procs:
                proc.stop()
            if args.keep_logs is not None:
                args.keep_logs.mkdir(parents=True, exist_ok=True)
                for node, proc in zip(nodes, procs, strict=True):
                    (args.keep_logs / f"{node.name}.log").write_text(proc.read_log(), encoding="utf-8")
    if committed != args.txs:
        print(f"only {committed} of {args.txs} txs were reported finalized", file=sys.stderr)
        return 1
    heights = sorted({s["height"] for s in statuses})
    tps = committed / elapsed
    p50, p99 = percentile(latencies, 0.50), percentile(latencies, 0.99)
    print(
        f"finalized: {committed:,} txs in {elapsed:.2f} s (heights {heights}) -> {tps:,.0f} tx/s; "
        f"latency p50 {p50:.0f} ms, p99 {p99:.0f} ms"
    )
    print(
        json.dumps(
            {
                "bench": "cluster",
                "validators": 4,
                "finalized_tx_per_s": round(tps, 1),
                "latency_p50_ms": round(p50, 1),
                "latency_p99_ms": round(p99, 1),
                "verify_per_s": round(verify_per_s, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
