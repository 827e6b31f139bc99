"""The event benchmarks run end to end at a tiny size (issue 11): real nodes, a real mosquitto.

`scripts/bench_events.py` and `scripts/bench_cluster.py --mqtt both` each run for a few seconds;
their JSON last line has the keys the issue and the reports rely on, and every committed event of
the load reached its subscribers. No timing is asserted (the figures are the scripts' to print).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from mosquitto_harness import ensure_mosquitto

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
RESULT_KEYS = {"finalized_tx_per_s", "latency_p50_ms", "latency_p99_ms"}


def run_script(name: str, *args: str) -> dict[str, Any]:
    """Run a benchmark script; returns its JSON last line (asserting it succeeded)."""
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / name), *args], capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return summary


def test_bench_events_delivers_every_committed_event() -> None:
    ensure_mosquitto()  # installed by the test command when missing, as for the other event tests
    summary = run_script(
        "bench_events.py", "--events-per-s", "275", "--seconds", "4", "--validators", "2", "--patients", "3"
    )
    assert summary["bench"] == "events"
    for key in ("events_per_s", "delivery_p50_ms", "delivery_p99_ms", "offered_events_per_s", "validators"):
        assert isinstance(summary[key], int | float), (key, summary)
    assert summary["events_committed"] == 1100  # more than one page of GET /v1/events
    assert summary["events_delivered"] == summary["events_committed"]
    assert summary["patient_events_delivered"] == summary["events_committed"]


def test_bench_cluster_with_mqtt_off_and_on_delivers_every_committed_event() -> None:
    ensure_mosquitto()
    summary = run_script(
        "bench_cluster.py", "--mqtt", "both", "--validators", "1", "--txs", "100", "--batch", "50"
    )
    assert summary["bench"] == "cluster"
    assert summary["mqtt"] == "both"
    assert summary["mqtt_off"].keys() >= RESULT_KEYS
    assert summary["mqtt_on"].keys() >= RESULT_KEYS
    assert isinstance(summary["on_off_tx_per_s_ratio"], float)
    assert isinstance(summary["on_off_latency_p50_ratio"], float)
    assert summary["mqtt_on"]["events_committed"] == 100
    assert summary["mqtt_on"]["events_delivered"] == summary["mqtt_on"]["events_committed"]
