#!/usr/bin/env python3
"""Benchmark a 4-validator cluster: finalized tx/s and submit-to-finality latency.

Setup: this process creates a fresh testnet (4 validators unless `--validators`, key-value
fixture app, LevelDB with a synced write batch per block) in a temporary directory and starts
each validator as a separate process on 127.0.0.1 (Tendermint-style BFT consensus over
authenticated websocket links). It then pre-signs ~1 KB `kv.set` txs and submits them through
`POST /v1/txs/batch?wait_ms=…` (msgpack), spreading concurrent clients over all the validators.
A request returns when its txs are finalized (committed with a quorum certificate), so its
duration is the submit-to-finality latency of each tx in it. Throughput is finalized txs over the
time from the first submission to the last finality. `verify_per_s` is this machine's raw ed25519
verification rate on one core, for scale. All processes share this machine's cores. The last
line printed is one JSON object.

`--mqtt off|on|both` measures the health application instead, to show that publishing ledger
events does not slow consensus (issue 11). Each phase builds a fresh health testnet of the
validators as institutions (clinic, hospital, insurer, research, then more clinics); for the "on"
phase it also starts a real mosquitto with the access files `medledger mqtt acl` would write and
gives each node its `[mqtt]` section (helpers of scripts/bench_events.py). The nodes start, 16
synthetic patients register, then the load runs. The txs are pre-signed
`health.add_record` txs by the clinic (one `record.added` event each, which every node publishes
on the patient's topic and the clinic's node on its institution topic), submitted as above. In
the "on" phase a subscriber process follows the clinic's institution topic, and
`events_delivered` (distinct events it received) must equal `events_committed` (the load's
events on the ledger, read with `GET /v1/events`). The broker and that subscriber share the
cores too, so the "on" phase carries their load as well as the nodes' publishing. `both` runs off
then on in the same invocation, each on its own fresh testnet, and prints the ratio on / off
(issue 11: within 10%); `--rounds N` alternates the phases N times (off, on, off, on, ...) and
compares the medians, so that a load on the machine that changes over the run weighs on both
(the events counts are then summed over the rounds).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import nacl.pwhash
from bench_events import (
    BenchError,
    Broker,
    Subscribers,
    close_all,
    count_ledger_events,
    create_health_net,
    enable_mqtt,
    institution_subscription,
    presign_records,
    read_publisher_figures,
    register_patients,
    start_nodes,
    tip_seq,
    wait_synced,
)
from bench_node import measure_verify_per_s, percentile, presign, run_load

from medledger.chain.types import compute_tx_id
from medledger.crypto import Identity
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
    parser.add_argument("--validators", type=int, default=4)
    parser.add_argument("--keep-logs", type=Path, default=None, help="copy the node logs here")
    parser.add_argument(
        "--mqtt",
        choices=("off", "on", "both"),
        default=None,
        help="the health app with event publishing off, on, or both in turn (default: key-value app)",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="with --mqtt: repeat the phases (off, on, off, on, ...)"
    )
    args = parser.parse_args()
    if args.rounds < 1 or args.validators < 1:
        parser.error("--rounds and --validators must be at least 1")
    if args.mqtt is not None:
        return main_mqtt(args)

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )
    verify_per_s = measure_verify_per_s()
    print(f"raw ed25519 verify: {verify_per_s:,.0f}/s on one core")
    with tempfile.TemporaryDirectory(prefix="medledger-bench-cluster-") as tmp:
        nodes = create_testnet(
            Path(tmp) / "net",
            validators=args.validators,
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
                f"{args.validators} validators at {', '.join(urls)}; "
                f"block interval {args.block_interval_ms} ms; "
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
                "validators": args.validators,
                "finalized_tx_per_s": round(tps, 1),
                "latency_p50_ms": round(p50, 1),
                "latency_p99_ms": round(p99, 1),
                "verify_per_s": round(verify_per_s, 1),
            }
        )
    )
    return 0


MQTT_PATIENTS = 16


def main_mqtt(args: argparse.Namespace) -> int:
    """The health app's add_record load with event publishing off and/or on (one fresh net each)."""
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )
    verify_per_s = measure_verify_per_s()
    print(f"raw ed25519 verify: {verify_per_s:,.0f}/s on one core")
    phases = (["off", "on"] if args.mqtt == "both" else [args.mqtt]) * args.rounds
    runs: dict[str, list[dict[str, Any]]] = {}
    try:
        for phase in phases:
            with tempfile.TemporaryDirectory(prefix=f"medledger-bench-cluster-mqtt-{phase}-") as tmp:
                runs.setdefault(phase, []).append(run_health_phase(Path(tmp), phase == "on", args))
    except BenchError as exc:
        print(f"bench_cluster: {exc}", file=sys.stderr)
        return 2
    summary: dict[str, Any] = {
        "bench": "cluster",
        "validators": args.validators,
        "app": "health",
        "mqtt": args.mqtt,
        "rounds": args.rounds,
    }
    for phase, results in runs.items():
        median = {
            key: round(statistics.median(r[key] for r in results), 1)
            for key in ("finalized_tx_per_s", "latency_p50_ms", "latency_p99_ms")
        }
        if phase == "on":
            median |= {
                key: sum(r[key] for r in results)
                for key in ("events_committed", "events_delivered", "publisher_dropped")
            }
        summary[f"mqtt_{phase}"] = median | ({"runs": results} if args.rounds > 1 else {})
    if len(runs) == 2:
        off, on = summary["mqtt_off"], summary["mqtt_on"]
        summary["on_off_tx_per_s_ratio"] = round(on["finalized_tx_per_s"] / off["finalized_tx_per_s"], 3)
        summary["on_off_latency_p50_ratio"] = round(on["latency_p50_ms"] / off["latency_p50_ms"], 3)
        print(
            f"MQTT on / off{' (medians of the rounds)' if args.rounds > 1 else ''}: throughput "
            f"x{summary['on_off_tx_per_s_ratio']}, latency p50 x{summary['on_off_latency_p50_ratio']}"
        )
    summary["verify_per_s"] = round(verify_per_s, 1)
    print(json.dumps(summary))
    return 0


def run_health_phase(tmp: Path, mqtt: bool, args: argparse.Namespace) -> dict[str, Any]:
    nodes = create_health_net(tmp / "net", args.validators, args.block_interval_ms)
    clinic = nodes[0]
    processes: list[NodeProcess] = []
    broker: Broker | None = None
    subscribers: Subscribers | None = None
    try:
        patients = [Identity.generate() for _ in range(MQTT_PATIENTS)]
        if mqtt:
            (tmp / "broker").mkdir()
            broker, credentials = enable_mqtt(nodes, patients, tmp / "broker")
            subscribers = Subscribers(broker.port, [institution_subscription(clinic, credentials)])
            subscribers.start()  # the broker is up; the nodes start meanwhile
        processes = start_nodes(nodes)
        if subscribers is not None:
            subscribers.wait_ready()
        register_patients(processes[0].url, patients)
        wait_synced(processes)
        print(f"phase MQTT {'on' if mqtt else 'off'}: signing {args.txs:,} add_record txs ...", flush=True)
        raws = presign_records(clinic.identity, patients, args.txs)
        start_seq = tip_seq(processes[0])
        urls = [process.url for process in processes]
        print(
            f"{args.validators} validators at {', '.join(urls)}; "
            f"block interval {args.block_interval_ms} ms; "
            f"{args.clients} clients per validator x batches of {args.batch}"
            + (f"; every node publishing to mosquitto on port {broker.port}" if broker is not None else ""),
            flush=True,
        )
        try:
            elapsed, latencies, committed = asyncio.run(run_spread(urls, raws, args.batch, args.clients))
            wait_synced(processes)
            statuses = [process.get_json("/status") for process in processes]
        except Exception:
            for node, process in zip(nodes, processes, strict=True):
                print(f"--- {node.name} log (last lines) ---\n{process.read_log()[-3000:]}", file=sys.stderr)
            raise
        delivered: int | None = None
        if subscribers is not None:
            tx_ids = {compute_tx_id(raw).hex() for raw in raws}
            ledger = {e["seq"] for e in count_ledger_events(processes[0], start_seq, tx_ids)}
            deliveries, _ = subscribers.finish({"inst": len(ledger)})
            events_committed = len(ledger)
            delivered = len({seq for _, seq, _, _, _ in deliveries} & ledger)
            dropped = read_publisher_figures(processes).dropped
    finally:
        close_all(subscribers, processes, broker)
    if committed != args.txs:
        raise BenchError(f"only {committed} of {args.txs} txs were reported finalized")
    heights = sorted({s["height"] for s in statuses})
    tps = committed / elapsed
    p50, p99 = percentile(latencies, 0.50), percentile(latencies, 0.99)
    print(
        f"MQTT {'on' if mqtt else 'off'}: {committed:,} txs finalized in {elapsed:.2f} s (heights {heights}) "
        f"-> {tps:,.0f} tx/s; latency p50 {p50:.0f} ms, p99 {p99:.0f} ms"
        + (f"; {delivered:,} of {committed:,} events delivered to the clinic's subscriber" if mqtt else ""),
        flush=True,
    )
    result: dict[str, Any] = {
        "finalized_tx_per_s": round(tps, 1),
        "latency_p50_ms": round(p50, 1),
        "latency_p99_ms": round(p99, 1),
    }
    if delivered is not None:
        result |= {
            "events_committed": events_committed,
            "events_delivered": delivered,
            "publisher_dropped": dropped,
        }
    return result


if __name__ == "__main__":
    sys.exit(main())
