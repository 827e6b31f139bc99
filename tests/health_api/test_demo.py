"""`medledger demo --once` runs the whole scenario on four real node processes and exits cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_demo_once_runs_the_scenario_and_stops_its_nodes(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "medledger.node.cli", "demo", "--once", "--base-port", "0"]
    argv += ["--home", str(tmp_path / "demo"), "--config", str(REPO / "configs" / "demo.toml")]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        output, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:  # the demo stops its nodes on SIGTERM
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=60)
    text = output.decode()
    assert proc.returncode == 0, text
    assert "4 institutions up" in text
    assert "the patient granted inquiry" in text
    assert "the patient reads the sealed reason: 'referral for a diabetes follow-up'" in text
    trail = text.split("audit trail", 1)[1]
    events = [line.split()[4] for line in trail.splitlines()[2:] if line.strip()[:1].isdigit()]
    assert events == ["inquiry", "grant", "read", "read"], text
    for name in ("clinic", "hospital", "insurer", "research"):
        assert f"  {name} " in text
    # Every node process it started has stopped: their address files are gone.
    assert not list((tmp_path / "demo" / "network").glob("*/api.json"))
