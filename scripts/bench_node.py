#!/usr/bin/env python3
"""Benchmark one node: committed tx/s and submit-to-commit latency through the REST API.

Setup: this process initialises a fresh single-validator node home in a temporary directory,
starts the node as a separate process (`medledger start`, key-value fixture app, LevelDB with a
synced write batch per block), pre-signs ~1 KB `kv.set` transactions, then submits them through
`POST /v1/txs/batch?wait_ms=…` (msgpack bodies) from several concurrent client connections. Each
request returns when its txs are committed, so the request time is the submit-to-commit latency of
every tx in it. Throughput is committed txs divided by the time from the first submission to the
last commit. `verify_per_s` is this machine's raw ed25519 verification rate on one core (libsodium
through PyNaCl), for scale. The last line printed is one JSON object.
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
import time
from pathlib import Path

import aiohttp
import msgpack
import nacl.pwhash

from medledger.chain.txbuilder import sign_tx
from medledger.crypto import Identity, verify_signature
from medledger.node.fixture_app import encode_set_body
from medledger.node.home import init_home
from medledger.node.process import NodeProcess

PASSPHRASE = "bench-passphrase"


def measure_verify_per_s(seconds: float = 1.0) -> float:
    identity = Identity.generate()
    message = os.urandom(1000)
    signature = identity.sign(message)
    key = identity.public.sign_key
    count = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(200):
            verify_signature(key, message, signature)
        count += 200
    return count / (time.perf_counter() - started)


def presign(count: int, chain_id: str, senders: int) -> list[bytes]:
    identities = [Identity.generate() for _ in range(senders)]
    value = os.urandom(880)
    raws = []
    for i in range(count):
        body = encode_set_body(f"key-{i:08d}".encode(), value)
        _, raw, _ = sign_tx(identities[i % senders], chain_id=chain_id, kind="kv.set", body=body, nonce=i)
        raws.append(raw)
    return raws


async def run_load(url: str, raws: list[bytes], batch: int, clients: int) -> tuple[float, list[float], int]:
    batches = [raws[i : i + batch] for i in range(0, len(raws), batch)]
    queue: asyncio.Queue[list[bytes]] = asyncio.Queue()
    for b in batches:
        queue.put_nowait(b)
    latencies_ms: list[float] = []
    committed = 0
    timeout = aiohttp.ClientTimeout(total=120)

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal committed
        while not queue.empty():
            items = queue.get_nowait()
            body = msgpack.packb(items, use_bin_type=True)
            sent = time.perf_counter()
            async with session.post(
                f"{url}/v1/txs/batch?wait_ms=30000",
                data=body,
                headers={"Content-Type": "application/msgpack"},
            ) as response:
                data = await response.json(content_type=None)
                if response.status not in (200, 202):
                    raise RuntimeError(f"submission failed: {response.status} {data}")
            elapsed_ms = (time.perf_counter() - sent) * 1000
            done = sum(1 for r in data["results"] if r["status"] == "committed")
            committed += done
            latencies_ms.extend([elapsed_ms] * done)

    async with aiohttp.ClientSession(timeout=timeout) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return elapsed, latencies_ms, committed


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--txs", type=int, default=30_000, help="transactions to submit")
    parser.add_argument("--batch", type=int, default=250, help="transactions per API request")
    parser.add_argument("--clients", type=int, default=8, help="concurrent client connections")
    parser.add_argument("--block-interval-ms", type=int, default=50)
    args = parser.parse_args()

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )
    verify_per_s = measure_verify_per_s()
    print(f"raw ed25519 verify: {verify_per_s:,.0f}/s on one core")

    with tempfile.TemporaryDirectory(prefix="medledger-bench-") as tmp:
        home = Path(tmp) / "node"
        init = init_home(
            home,
            api_port=0,
            block_interval_ms=args.block_interval_ms,
            passphrase=PASSPHRASE.encode(),
            key_opslimit=nacl.pwhash.argon2id.OPSLIMIT_MIN,
            key_memlimit=nacl.pwhash.argon2id.MEMLIMIT_MIN,
        )
        print(f"signing {args.txs:,} txs of ~1 KB ...", flush=True)
        raws = presign(args.txs, init.genesis.chain_id, senders=64)
        print(f"mean tx size: {statistics.mean(len(r) for r in raws):.0f} bytes")
        node = NodeProcess(home, env={"MEDLEDGER_KEY_PASSPHRASE": PASSPHRASE})
        node.start()
        try:
            url = node.wait_ready()
            print(
                f"node at {url}; block interval {args.block_interval_ms} ms; "
                f"{args.clients} clients x batches of {args.batch} (msgpack, wait for commit)",
                flush=True,
            )
            elapsed, latencies, committed = asyncio.run(run_load(url, raws, args.batch, args.clients))
            status = node.get_json("/status")
        finally:
            code = node.stop()
        if committed != args.txs:
            print(f"only {committed} of {args.txs} txs were reported committed", file=sys.stderr)
            return 1
    tps = committed / elapsed
    p50, p99 = percentile(latencies, 0.50), percentile(latencies, 0.99)
    print(
        f"committed: {committed:,} txs in {elapsed:.2f} s over {status['height']} blocks "
        f"-> {tps:,.0f} tx/s; latency p50 {p50:.0f} ms, p99 {p99:.0f} ms; node exit code {code}"
    )
    print(
        json.dumps(
            {
                "bench": "node",
                "committed_tx_per_s": round(tps, 1),
                "latency_p50_ms": round(p50, 1),
                "latency_p99_ms": round(p99, 1),
                "verify_per_s": round(verify_per_s, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
