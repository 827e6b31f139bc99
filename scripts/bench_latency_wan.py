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
import re
import sys
import tempfile
from pathlib import Path

import nacl.pwhash
from bench_cluster import run_open_loop
from bench_node import percentile, presign
from netlab import DelayProxy, Namespaces, mesh_routes

from medledger.node.process import NodeProcess
from medledger.node.testnet import create_testnet

PASSPHRASE = "bench-passphrase"
#: Ports inside each namespace (each has its own port space).
API_PORT, P2P_PORT, OPS_PORT = 26657, 26656, 26660
#: Node i reaches node j at port LISTEN_BASE + j of i's root-side address (the proxy).
LISTEN_BASE = 36000
#: Txs finalized before the measured run (one per validator, twice), once every link is up.
WARM_UP_TXS = 8


def place(config: Path, inside: str, peers: list[str]) -> None:
    """Point a node's config at its namespace: its endpoints inside, its peers through the proxy."""
    text = config.read_text(encoding="utf-8")
    text = re.sub(r'(?m)^host = "127\.0\.0\.1"$', f'host = "{inside}"', text)
    text = re.sub(r'(?m)^ops_host = "127\.0\.0\.1"$', f'ops_host = "{inside}"', text)
    ports = {"[api]": API_PORT, "[p2p]": P2P_PORT}
    sections = []
    for section in re.split(r"(?m)^(?=\[)", text):
        port = next((p for name, p in ports.items() if section.startswith(name)), None)
        placed = section if port is None else re.sub(r"(?m)^port = \d+$", f"port = {port}", section)
        sections.append(re.sub(r"(?m)^ops_port = \d+$", f"ops_port = {OPS_PORT}", placed))
    text = "".join(sections)
    text = re.sub(r"(?m)^peers = \[.*\]$", "peers = [" + ", ".join(f'"{p}"' for p in peers) + "]", text)
    config.write_text(text, encoding="utf-8")


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
    with (
        tempfile.TemporaryDirectory(prefix="medledger-bench-wan-") as tmp,
        Namespaces(args.validators) as lab,
    ):
        nodes = create_testnet(
            Path(tmp) / "net",
            validators=args.validators,
            block_interval_ms=args.block_interval_ms,
            passphrase=PASSPHRASE.encode(),
            key_opslimit=nacl.pwhash.argon2id.OPSLIMIT_MIN,
            key_memlimit=nacl.pwhash.argon2id.MEMLIMIT_MIN,
        )
        routes = list(mesh_routes(lab.sites, P2P_PORT, LISTEN_BASE))
        for node, site in zip(nodes, lab.sites, strict=True):
            peers = [f"http://{r.listen}:{r.listen_port}" for i, _, r in routes if i == site.index]
            place(node.home / "config.toml", site.inside, peers)
        print(f"signing {total:,} txs of ~1 KB ...", flush=True)
        signed = presign(total + WARM_UP_TXS, "medledger-testnet", senders=64)
        warm_up, raws = signed[:WARM_UP_TXS], signed[WARM_UP_TXS:]
        with DelayProxy([r for _, _, r in routes], delay_ms=args.delay_ms, loss=args.loss):
            procs = [
                NodeProcess(
                    n.home,
                    env={"MEDLEDGER_KEY_PASSPHRASE": PASSPHRASE},
                    use_config_ports=True,
                    prefix=site.exec_prefix(),
                )
                for n, site in zip(nodes, lab.sites, strict=True)
            ]
            try:
                for proc in procs:
                    proc.start()
                urls = [proc.wait_ready(60, require_ready=False) for proc in procs]
                print(
                    f"{args.validators} validators in namespaces {', '.join(s.namespace for s in lab.sites)} "
                    f"at {', '.join(urls)}; {args.delay_ms:g} ms one way between any two "
                    f"(userspace proxy, loss {args.loss:g}); offering {args.offered:,.0f} tx/s for "
                    f"{args.seconds:g} s in requests of {args.open_batch}",
                    flush=True,
                )
                try:
                    # Until every link is up the first heights wait for peers: not what is measured.
                    asyncio.run(run_open_loop(urls, warm_up, 10, 1))
                    run = asyncio.run(run_open_loop(urls, raws, args.offered, args.open_batch))
                except Exception:
                    for node, proc in zip(nodes, procs, strict=True):
                        print(
                            f"--- {node.name} log (last lines) ---\n{proc.read_log()[-3000:]}",
                            file=sys.stderr,
                        )
                    raise
            finally:
                for proc in procs:
                    proc.stop()
                if args.keep_logs is not None:
                    args.keep_logs.mkdir(parents=True, exist_ok=True)
                    for node, proc in zip(nodes, procs, strict=True):
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
