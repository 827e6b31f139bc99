"""Issue 14 [RECORDS], defect 8: what an operator meets around the records API.

- `bash scripts/demo.sh --once` hands `--once` to the demo, never to pip;
- `medledger patient grant --help` shows the help without a key;
- a port in use is one line naming it, not a traceback;
- `medledger cluster status` sees the demo's network, and every node of that multi-node network
  records `medledger_block_commit_seconds`;
- malformed request lines leave no ERROR traceback in the node's log.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import IO, Final

from click.testing import CliRunner
from health_harness import HealthNet

from medledger.node.cli import main

REPO: Final = Path(__file__).resolve().parents[2]
DEADLINE_S: Final = 120.0


def test_records_8_demo_sh_gives_once_to_the_demo_not_to_pip(tmp_path: Path) -> None:
    """The real scripts, with a venv whose python and medledger only write down their arguments."""
    (tmp_path / "scripts").mkdir()
    for name in ("demo.sh", "bootstrap.sh"):
        shutil.copy(REPO / "scripts" / name, tmp_path / "scripts" / name)
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for tool in ("python", "medledger"):
        script = bin_dir / tool
        script.write_text(f'#!/bin/sh\necho "{tool} $*" >> "{tmp_path}/calls.log"\n', encoding="utf-8")
        script.chmod(0o755)
    # The web app's step: its inputs, and a node and npm that only write down their arguments
    # (npm ci and the build make the folders the real ones would).
    (tmp_path / "web").mkdir()
    for name in ("package.json", "package-lock.json"):
        shutil.copy(REPO / "web" / name, tmp_path / "web" / name)
    tools_dir = tmp_path / "tools"
    tools_dir.mkdir()
    (tools_dir / "node").write_text(
        f'#!/bin/sh\necho "node $*" >> "{tmp_path}/calls.log"\necho 20\n', encoding="utf-8"
    )
    (tools_dir / "npm").write_text(
        f'#!/bin/sh\necho "npm $*" >> "{tmp_path}/calls.log"\nmkdir -p node_modules dist\n', encoding="utf-8"
    )
    for tool in ("node", "npm"):
        (tools_dir / tool).chmod(0o755)
    path = f"{tools_dir}:{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
    env = {**os.environ, "PATH": path}
    result = subprocess.run(
        ["bash", str(tmp_path / "scripts" / "demo.sh"), "--once"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "calls.log").read_text(encoding="utf-8").splitlines()
    installs = [c for c in calls if " -e " in c]
    assert installs, calls
    assert all("--once" not in c for c in calls if c.startswith("python")), calls
    assert re.search(r" -e \. ", installs[0]), installs  # the plain install, no extra
    assert calls[-1] == "medledger demo --home .demo --once", calls
    assert "npm ci --no-audit --no-fund --loglevel=error" in calls, calls  # the web app, from its lock


def test_records_8_patient_subcommand_help_needs_no_key() -> None:
    for command in ("grant", "deny", "records", "audit"):
        result = CliRunner().invoke(main, ["patient", command, "--help"])
        assert result.exit_code == 0, result.output
        assert f"patient {command} [OPTIONS]" in result.output
    result = CliRunner().invoke(main, ["patient", "audit"])
    assert result.exit_code == 2
    assert "Missing option '--key'" in result.output


def test_records_8_a_port_in_use_is_one_line(shared_net: HealthNet) -> None:
    clinic = shared_net["clinic"]
    port = int(clinic.url.rsplit(":", 1)[1])  # the running clinic node holds it
    # Its own peer and operations ports (free ones), the clinic's API port: only that one clashes.
    env = {**os.environ, "MEDLEDGER_KEY_PASSPHRASE": "test-pass", "MEDLEDGER_P2P_PORT": "0"}
    env["MEDLEDGER_API_OPS_PORT"] = "0"
    home = clinic.home.parent / "second-home"
    shutil.copytree(
        clinic.home, home, ignore=shutil.ignore_patterns("data", "idempotency", "api.json", "*.log")
    )
    argv = [sys.executable, "-m", "medledger.node.cli", "start", "--home", str(home), "--api-port", str(port)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, check=False)
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    assert f"127.0.0.1:{port} is already in use" in errors[0]
    assert "--api-port" in errors[0]


def test_records_8_malformed_request_lines_log_no_error(shared_net: HealthNet) -> None:
    clinic = shared_net["clinic"]
    port = int(clinic.url.rsplit(":", 1)[1])
    for junk in (
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00",
        b"GET /\xff HTTP/1.1\r\n\r\n",
    ):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            connection.sendall(junk)
            assert connection.recv(100).startswith(b"HTTP/1.")
    assert clinic.get("/v1/health/institution").status == 200  # answered after the junk: logged
    log = (clinic.home / "node.log").read_text(encoding="utf-8", errors="replace")
    assert "Traceback" not in log
    assert not [line for line in log.splitlines() if " ERROR " in line]


def _wait_for_line(stream: IO[str], marker: str, seen: list[str]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        seen.append(line)
        if marker in line:
            return
    raise AssertionError("".join(seen))


def test_records_8_cluster_status_sees_the_demo_and_every_node_times_its_commits(tmp_path: Path) -> None:
    home = tmp_path / "demo"
    argv = [sys.executable, "-m", "medledger.node.cli", "demo", "--base-port", "0", "--home", str(home)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    seen: list[str] = []
    try:
        assert proc.stdout is not None
        _wait_for_line(proc.stdout, "The network keeps running", seen)
        result = CliRunner().invoke(main, ["cluster", "status", "--dir", str(home)])
        assert result.exit_code == 0, result.output
        rows = [line.split() for line in result.output.splitlines()[1:] if line.strip()]
        assert sorted(r[0] for r in rows) == ["clinic", "hospital", "insurer", "research"], result.output
        assert all(int(r[1]) > 0 for r in rows), result.output  # each node answered with its height
        record = (home / "network" / "cluster.json").read_text(encoding="utf-8")
        for ops_url in re.findall(r'"ops_url": "([^"]+)"', record):
            with urllib.request.urlopen(f"{ops_url}/metrics", timeout=10) as response:
                metrics = response.read().decode()
            count = re.search(r"^medledger_block_commit_seconds_count (\S+)$", metrics, re.MULTILINE)
            assert count is not None, ops_url
            assert float(count.group(1)) > 0, ops_url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert proc.returncode == 0, "".join(seen)
    assert not (home / "network" / "cluster.json").exists()  # the record goes with the network
