"""The project's own WAN (issue 17 point 7, issue 16 point 6): network namespaces joined by veth
pairs, and a userspace proxy that delays every chunk, since this kernel has no `netem`.

Run as root (the suite is). The delay is checked as physics, not speed: an echo through the proxy
cannot come back in less than twice the one-way delay, and a 4-validator network behind it
cannot finalize a tx in less than the three one-way delays of a height (proposal, prevote,
precommit). `scripts/bench_latency_wan.py` prints the figures themselves.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))

from netlab import DelayProxy, Namespaces, Route  # noqa: E402 - needs the path above


async def _echo_round_trip(host: str, port: int) -> float:
    reader, writer = await asyncio.open_connection(host, port)
    started = time.monotonic()
    writer.write(b"ping")
    await writer.drain()
    assert await reader.readexactly(4) == b"ping"
    elapsed = time.monotonic() - started
    writer.close()
    return elapsed


def test_a_chunk_through_the_proxy_crosses_the_namespaces_and_is_held_both_ways() -> None:
    with Namespaces(1, prefix="mltest", net=202) as lab:
        (site,) = lab.sites
        # An echo server inside the namespace: a real interface away from the root namespace.
        echo = subprocess.Popen(
            [
                *site.exec_prefix(),
                sys.executable,
                "-c",
                "import socket\n"
                f"s = socket.create_server(({site.inside!r}, 7000))\n"
                "print('ready', flush=True)\n"
                "c, _ = s.accept()\n"
                "while (d := c.recv(65536)):\n"
                "    c.sendall(d)\n",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert echo.stdout is not None
            assert echo.stdout.readline().strip() == "ready"
            route = Route(site.outside, 7100, site.inside, 7000)
            with DelayProxy([route], delay_ms=50):
                elapsed = asyncio.run(_echo_round_trip(site.outside, 7100))
            assert elapsed >= 0.1  # 50 ms each way, at the least
            lab.set_link(0, up=False)  # a partition: the namespace is unreachable
            with pytest.raises(OSError):
                socket.create_connection((site.inside, 7000), timeout=1).close()
        finally:
            echo.kill()
            echo.wait(10)
            echo.stdout.close() if echo.stdout is not None else None
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert "mltest0" not in listed  # everything it made is gone


def test_the_wan_benchmark_runs_four_validators_in_namespaces_behind_the_delay() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench_latency_wan.py"), "--offered", "40", "--seconds", "2"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["bench"] == "latency_wan"
    assert (summary["validators"], summary["one_way_delay_ms"], summary["refused_txs"]) == (4, 20.0, 0)
    assert summary["latency_p50_ms"] >= 60  # a height is at least three one-way delays
    assert "namespaces mlw0, mlw1, mlw2, mlw3" in done.stdout
