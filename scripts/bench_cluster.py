#!/usr/bin/env python3
"""Benchmark a 4-validator cluster: finalized tx/s and submit-to-finality latency.

Setup: this process creates a fresh testnet (4 validators unless `--validators`, key-value
fixture app, LevelDB with a synced write batch per block) in a temporary directory and starts
each validator as a separate process on 127.0.0.1 (Tendermint-style BFT consensus over
authenticated websocket links). It then pre-signs ~1 KB `kv.set` txs and submits them through
`POST /v1/txs/batch?wait_ms=…` (msgpack), spreading concurrent clients over all the validators.
A request returns when its txs are finalized (committed with a quorum certificate), so its
duration is the submit-to-finality latency of each tx in it. Throughput is finalized txs over the
time from the first submission to the last finality; `cpu_us_per_tx_per_validator` is the CPU
(user + system, all threads) the node processes used during the load per finalized tx, divided by
the validators: less moved by other load on the machine than the rate. `verify_per_s` is this
machine's raw ed25519 verification rate on one core, for scale. All processes share this
machine's cores. The last line printed is one JSON object.

`--offered RATE` is the open loop instead (issue 17): requests of `--open-batch` txs (1: single
txs) are sent on a fixed schedule, `RATE` txs a second for `--seconds`, round robin over the
validators, whether or not earlier ones have returned; each waits for finality, so its duration
is the submit-to-finality latency of its txs. It reports p50/p99 of that, the finalized rate, the
rate the client actually managed to offer (the client shares the cores with the nodes), and any
refusals (429). `--overload` first measures the capacity closed loop as above, then offers twice
that in the open loop on the same network: the finalized rate against the capacity, the latency
of what was admitted, how many txs were refused with 429 and how fast (p99), and the highest
resident memory (VmHWM) of any node process.

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
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
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
from medledger.node.testnet import TestnetNode, create_testnet

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


@dataclasses.dataclass
class OpenLoop:
    """What an open-loop run measured (times in ms, rates in tx/s)."""

    offered_tx_per_s: float
    sent_tx_per_s: float
    finalized: int
    finalized_tx_per_s: float
    latencies_ms: list[float]
    refused: int
    refused_ms: list[float]


async def run_open_loop(urls: list[str], raws: list[bytes], offered: float, batch: int) -> OpenLoop:
    """Send `raws` in requests of `batch` at `offered` tx/s, round robin over `urls`, each waiting
    for finality; the schedule does not wait for answers (an open loop)."""
    requests = [raws[i : i + batch] for i in range(0, len(raws), batch)]
    interval_s = batch / offered
    latencies_ms: list[float] = []
    refused_ms: list[float] = []
    counts = {"finalized": 0, "refused": 0}
    last_done = 0.0

    async def send(session: aiohttp.ClientSession, url: str, items: list[bytes]) -> None:
        nonlocal last_done
        body = msgpack.packb(items, use_bin_type=True)
        sent = time.perf_counter()
        async with session.post(
            f"{url}/v1/txs/batch?wait_ms=30000", data=body, headers={"Content-Type": "application/msgpack"}
        ) as response:
            data = await response.json(content_type=None)
        done_at = time.perf_counter()
        elapsed_ms = (done_at - sent) * 1000
        if response.status == 429:
            counts["refused"] += len(items)
            refused_ms.append(elapsed_ms)
            return
        if response.status not in (200, 202):
            raise RuntimeError(f"submission failed: {response.status} {data}")
        done = sum(1 for r in data["results"] if r["status"] == "committed")
        counts["finalized"] += done
        latencies_ms.extend([elapsed_ms] * done)
        last_done = max(last_done, done_at)

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=120), connector=connector
    ) as session:
        tasks: list[asyncio.Task[None]] = []
        started = time.perf_counter()
        for index, items in enumerate(requests):
            delay = started + index * interval_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)  # the schedule of the open loop (pacing, not synchronisation)
            tasks.append(asyncio.create_task(send(session, urls[index % len(urls)], items)))
        sending_s = time.perf_counter() - started
        await asyncio.gather(*tasks)
    span = max(last_done - started, 1e-9)
    return OpenLoop(
        offered_tx_per_s=offered,
        sent_tx_per_s=len(raws) / max(sending_s + interval_s, 1e-9),
        finalized=counts["finalized"],
        finalized_tx_per_s=counts["finalized"] / span,
        latencies_ms=latencies_ms,
        refused=counts["refused"],
        refused_ms=refused_ms,
    )


def create_bench_testnet(out: Path, validators: int, block_interval_ms: int) -> list[TestnetNode]:
    """A fresh key-value testnet's homes (cheap key derivation: a benchmark's, never a real one)."""
    return create_testnet(
        out,
        validators=validators,
        block_interval_ms=block_interval_ms,
        passphrase=PASSPHRASE.encode(),
        key_opslimit=nacl.pwhash.argon2id.OPSLIMIT_MIN,
        key_memlimit=nacl.pwhash.argon2id.MEMLIMIT_MIN,
    )


def cpu_seconds(procs: list[NodeProcess]) -> float:
    """User + system CPU the node processes have used so far (their threads included), in seconds."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for proc in procs:
        if proc.proc is not None:
            fields = Path(f"/proc/{proc.proc.pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / ticks


def peak_rss_mb(procs: list[NodeProcess]) -> float:
    """The highest resident set (VmHWM) of the node processes, in MB."""
    peak = 0
    for proc in procs:
        if proc.proc is None:
            continue
        status = Path(f"/proc/{proc.proc.pid}/status").read_text(encoding="ascii")
        line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
        peak = max(peak, int(line.split()[1]))
    return peak / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--txs", type=int, default=30_000)
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--clients", type=int, default=1, help="concurrent connections per validator")
    parser.add_argument("--block-interval-ms", type=int, default=0)
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
    parser.add_argument("--offered", type=float, default=None, help="open loop: txs offered per second")
    parser.add_argument(
        "--overload", action="store_true", help="measure the capacity, then offer twice that (open loop)"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="open loop: how long to offer")
    parser.add_argument(
        "--open-batch", type=int, default=1, help="open loop: txs per request (1: single txs)"
    )
    args = parser.parse_args()
    if args.rounds < 1 or args.validators < 1:
        parser.error("--rounds and --validators must be at least 1")
    if args.offered is not None and (args.offered <= 0 or args.overload):
        parser.error("--offered is a positive rate, and not with --overload")
    if args.seconds <= 0 or args.open_batch < 1:
        parser.error("--seconds must be positive and --open-batch at least 1")
    if args.mqtt is not None:
        return main_mqtt(args)

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )
    verify_per_s = measure_verify_per_s()
    print(f"raw ed25519 verify: {verify_per_s:,.0f}/s on one core")
    with tempfile.TemporaryDirectory(prefix="medledger-bench-cluster-") as tmp:
        nodes = create_bench_testnet(Path(tmp) / "net", args.validators, args.block_interval_ms)
        total = args.txs
        if args.offered is not None:
            total = int(args.offered * args.seconds)
        elif args.overload:
            # Enough for twice a capacity up to the signature limit (2 cores / 4 validators).
            total = args.txs + int(2 * verify_per_s * 2 / max(args.validators, 1) * args.seconds)
        print(f"signing {total:,} txs of ~1 KB ...", flush=True)
        raws = presign(total, "medledger-testnet", senders=64)
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
                if args.offered is not None:
                    return report_open(
                        asyncio.run(run_open_loop(urls, raws, args.offered, args.open_batch)), args
                    )
                cpu_before = cpu_seconds(procs)
                elapsed, latencies, committed = asyncio.run(
                    run_spread(urls, raws[: args.txs], args.batch, args.clients)
                )
                # CPU per finalized tx per validator: a figure the other load on the machine moves less.
                cpu_us_per_tx = (cpu_seconds(procs) - cpu_before) / max(committed, 1) / len(procs) * 1e6
                if args.overload:
                    capacity = committed / elapsed
                    print(
                        f"capacity (closed loop): {capacity:,.0f} tx/s; now offering twice that", flush=True
                    )
                    rest = raws[args.txs :][: int(2 * capacity * args.seconds)]
                    run = asyncio.run(run_open_loop(urls, rest, 2 * capacity, args.open_batch))
                    return report_overload(capacity, run, peak_rss_mb(procs), args)
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
        f"latency p50 {p50:.0f} ms, p99 {p99:.0f} ms; {cpu_us_per_tx:.0f} µs of CPU per tx per validator"
    )
    print(
        json.dumps(
            {
                "bench": "cluster",
                "validators": args.validators,
                "finalized_tx_per_s": round(tps, 1),
                "cpu_us_per_tx_per_validator": round(cpu_us_per_tx, 1),
                "latency_p50_ms": round(p50, 1),
                "latency_p99_ms": round(p99, 1),
                "verify_per_s": round(verify_per_s, 1),
            }
        )
    )
    return 0


def _ms(values: list[float], q: float) -> float | None:
    return round(percentile(values, q), 1) if values else None


def report_open(run: OpenLoop, args: argparse.Namespace) -> int:
    p50, p99 = _ms(run.latencies_ms, 0.50), _ms(run.latencies_ms, 0.99)
    print(
        f"open loop: offered {run.offered_tx_per_s:,.0f} tx/s (sent {run.sent_tx_per_s:,.0f}) in requests of "
        f"{args.open_batch}; finalized {run.finalized:,} at {run.finalized_tx_per_s:,.0f} tx/s; "
        f"latency p50 {p50} ms, p99 {p99} ms; refused (429) {run.refused:,}"
    )
    print(
        json.dumps(
            {
                "bench": "cluster",
                "mode": "open",
                "validators": args.validators,
                "batch": args.open_batch,
                "offered_tx_per_s": round(run.offered_tx_per_s, 1),
                "sent_tx_per_s": round(run.sent_tx_per_s, 1),
                "finalized_tx_per_s": round(run.finalized_tx_per_s, 1),
                "latency_p50_ms": p50,
                "latency_p99_ms": p99,
                "refused_txs": run.refused,
            }
        )
    )
    return 0


def report_overload(capacity: float, run: OpenLoop, rss_mb: float, args: argparse.Namespace) -> int:
    p50, p99 = _ms(run.latencies_ms, 0.50), _ms(run.latencies_ms, 0.99)
    refused_p99 = _ms(run.refused_ms, 0.99)
    share = run.finalized_tx_per_s / capacity
    print(
        f"overload: offered {run.offered_tx_per_s:,.0f} tx/s (sent {run.sent_tx_per_s:,.0f}), finalized "
        f"{run.finalized_tx_per_s:,.0f} tx/s = {share:.0%} of capacity; admitted latency p50 {p50} ms, "
        f"p99 {p99} ms; refused (429) {run.refused:,} txs, answered in p99 {refused_p99} ms; "
        f"peak node RSS {rss_mb:,.0f} MB"
    )
    print(
        json.dumps(
            {
                "bench": "cluster",
                "mode": "overload",
                "validators": args.validators,
                "batch": args.open_batch,
                "capacity_tx_per_s": round(capacity, 1),
                "offered_tx_per_s": round(run.offered_tx_per_s, 1),
                "sent_tx_per_s": round(run.sent_tx_per_s, 1),
                "finalized_tx_per_s": round(run.finalized_tx_per_s, 1),
                "finalized_of_capacity": round(share, 3),
                "admitted_p50_ms": p50,
                "admitted_p99_ms": p99,
                "refused_txs": run.refused,
                "refused_p99_ms": refused_p99,
                "rss_max_mb": round(rss_mb, 1),
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
