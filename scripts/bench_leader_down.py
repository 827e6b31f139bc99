#!/usr/bin/env python3
"""Heights per period with one validator killed: plain round-robin against leader skipping.

For each genesis version asked (`--genesis v1|v2|both`), this process creates a fresh testnet of
4 validators (key-value fixture app; v1: a genesis without consensus params, plain round-robin;
v2: `NEW_NETWORK_CONSENSUS_PARAMS`, leader skipping on, docs/adr/0023) and starts each validator
as its own process. A steady offered load (`--rate` ~1 KB `kv.set` txs a second, in batches every
50 ms, spread over the validators still up) keeps heights coming. It counts the heights one
validator commits in `--period-s` windows: one with all four up, then it SIGKILLs one validator
and counts `--periods-after` more. Every process shares this machine's cores, so the figures are
indicative. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import nacl.pwhash
from bench_node import presign

from medledger.node.process import NodeProcess
from medledger.node.testnet import NEW_NETWORK_CONSENSUS_PARAMS, create_testnet

PASSPHRASE = "bench-passphrase"
BATCH_EVERY_S = 0.05


async def offer_load(procs: list[NodeProcess], up: list[bool], raws: list[bytes], rate: int) -> None:
    """Submit `rate` txs a second (without waiting for finality) until cancelled."""
    per_batch = max(1, round(rate * BATCH_EVERY_S))
    tokens = [p.token for p in procs]
    next_at = time.monotonic()
    turn = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        for start in range(0, len(raws), per_batch):
            alive = [i for i, ok in enumerate(up) if ok]
            target = alive[turn % len(alive)]
            turn += 1
            body = msgpack.packb(raws[start : start + per_batch], use_bin_type=True)
            try:
                async with session.post(
                    f"{procs[target].url}/v1/txs/batch",
                    data=body,
                    headers={
                        "Content-Type": "application/msgpack",
                        "Authorization": f"Bearer {tokens[target]}",
                    },
                ) as response:
                    await response.read()
            except (aiohttp.ClientError, TimeoutError):
                pass  # a node just killed; the next batch goes elsewhere
            next_at += BATCH_EVERY_S
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))


async def height_of(proc: NodeProcess) -> int:
    status: dict[str, Any] = await asyncio.to_thread(proc.get_json, "/status")
    height: int = status["height"]
    return height


async def measure(procs: list[NodeProcess], args: argparse.Namespace) -> dict[str, Any]:
    up = [True] * len(procs)
    raws = presign(args.rate * args.period_s * (args.periods_after + 2), "medledger-testnet", senders=64)
    load = asyncio.create_task(offer_load(procs, up, raws, args.rate))
    try:
        await asyncio.sleep(3.0)  # warm-up: links up, first heights
        watch = procs[0]
        before = await height_of(watch)
        await asyncio.sleep(args.period_s)
        all_up = await height_of(watch) - before
        print(f"  all 4 up:          {all_up} heights in {args.period_s} s", flush=True)
        killed = len(procs) - 1
        up[killed] = False
        procs[killed].kill()
        after: list[int] = []
        for period in range(args.periods_after):
            start = await height_of(watch)
            await asyncio.sleep(args.period_s)
            after.append(await height_of(watch) - start)
            print(f"  1 of 4 down, #{period + 1}:  {after[-1]} heights in {args.period_s} s", flush=True)
        return {"all_up": all_up, "one_down": after}
    finally:
        load.cancel()


def run_mode(version: str, args: argparse.Namespace) -> dict[str, Any]:
    print(f"genesis {version}:", flush=True)
    with tempfile.TemporaryDirectory(prefix="medledger-bench-leader-") as tmp:
        nodes = create_testnet(
            Path(tmp) / "net",
            validators=4,
            block_interval_ms=args.block_interval_ms,
            passphrase=PASSPHRASE.encode(),
            key_opslimit=nacl.pwhash.argon2id.OPSLIMIT_MIN,
            key_memlimit=nacl.pwhash.argon2id.MEMLIMIT_MIN,
            consensus_params=NEW_NETWORK_CONSENSUS_PARAMS if version == "v2" else None,
        )
        procs = [
            NodeProcess(n.home, env={"MEDLEDGER_KEY_PASSPHRASE": PASSPHRASE}, use_config_ports=True)
            for n in nodes
        ]
        try:
            for proc in procs:
                proc.start()
            for proc in procs:
                proc.wait_ready(60, require_ready=False)
            return asyncio.run(measure(procs, args))
        finally:
            for proc in procs:
                if proc.running:
                    proc.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--genesis", choices=("v1", "v2", "both"), default="both")
    parser.add_argument("--rate", type=int, default=200, help="offered txs per second")
    parser.add_argument("--period-s", type=int, default=20)
    parser.add_argument("--periods-after", type=int, default=2)
    parser.add_argument("--block-interval-ms", type=int, default=100)
    args = parser.parse_args()
    versions = ("v1", "v2") if args.genesis == "both" else (args.genesis,)
    figures = {version: run_mode(version, args) for version in versions}
    print(
        json.dumps(
            {
                "bench": "leader_down",
                "period_s": args.period_s,
                "offered_tx_per_s": args.rate,
                **{f"heights_{v}": f for v, f in figures.items()},
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
