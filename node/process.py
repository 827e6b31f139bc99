"""Node processes on this machine: start, wait until ready, stop or kill.

Used by the tests (every process a test starts, the test stops), the benchmarks, and the local
cluster launcher. A node is started as `python -m medledger.node.cli start` with its own home, on
loopback, on free ports (`--api-port 0 --ops-port 0`; the node writes the bound URLs to
`api.json`). Readiness is `/readyz` on the operations address, polled with a deadline, never a
fixed sleep; `get_json` reads the API with the token from the node's home.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

from medledger.node.config import API_TOKEN_FILE
from medledger.node.errors import NodeError
from medledger.node.run import api_address_path
from medledger.node.tls import CERT_FILE

POLL_INTERVAL_S = 0.05


class NodeProcess:
    """One `medledger start` child process with its log in `HOME/node.log`."""

    def __init__(
        self,
        home: Path,
        *,
        extra_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        use_config_ports: bool = False,
        detach: bool = False,
        prefix: tuple[str, ...] = (),
    ) -> None:
        """`prefix`: an argv that runs the node, such as `ip netns exec NAME` (it must exec the node
        in the same process, as `ip netns exec` does, for the pid check of `wait_ready`)."""
        self.home = home
        self.prefix = prefix
        self.use_config_ports = use_config_ports
        self.detach = detach
        self.extra_args = extra_args
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.ops_url = ""
        self._log: IO[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.home / "node.log"

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            raise NodeError(f"node at {self.home} is already running")
        api_address_path(self.home).unlink(missing_ok=True)
        self._log = self.log_path.open("ab")
        env = dict(os.environ)
        env.update(self.env or {})
        argv = [sys.executable, "-m", "medledger.node.cli", "start", "--home", str(self.home)]
        if not self.use_config_ports:
            argv += ["--api-port", "0", "--ops-port", "0"]
        self.proc = subprocess.Popen(
            [*self.prefix, *argv, *self.extra_args],
            start_new_session=self.detach,  # a cluster outlives the command that started it
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )

    def wait_ready(self, timeout_s: float = 30.0, *, require_ready: bool = True) -> str:
        """Wait until the node serves `/readyz` (or, without `require_ready`, any answer to it).

        Returns its URL; raises if the process dies or the deadline passes.
        """
        deadline = time.monotonic() + timeout_s
        address = api_address_path(self.home)
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise NodeError(f"node at {self.home} exited early; log:\n{self.read_log()[-4000:]}")
            if address.exists():
                with contextlib.suppress(ValueError, KeyError, OSError):
                    data = json.loads(address.read_text(encoding="utf-8"))
                    if data["pid"] == self.proc.pid:
                        url, ops_url = str(data["url"]), str(data["ops_url"])
                        if _is_ready(ops_url, require_ready):
                            self.url, self.ops_url = url, ops_url
                            return url
            time.sleep(POLL_INTERVAL_S)
        raise NodeError(
            f"node at {self.home} not ready within {timeout_s} s; log:\n{self.read_log()[-4000:]}"
        )

    def read_log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    @property
    def token(self) -> str:
        """The node's API token (from its home)."""
        return (self.home / API_TOKEN_FILE).read_text(encoding="utf-8").strip()

    def get_json(self, path: str, timeout_s: float = 10.0) -> Any:
        """GET an API route with the node's token (TLS pinned to the home's certificate)."""
        request = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {self.token}"})  # noqa: S310 - loopback
        context = None
        if self.url.startswith("https:"):
            context = ssl.create_default_context(cafile=str(self.home / CERT_FILE))
        with urllib.request.urlopen(request, timeout=timeout_s, context=context) as response:  # noqa: S310
            return json.loads(response.read())

    def get_ops_json(self, path: str, timeout_s: float = 10.0) -> Any:
        """GET an operations route (`/status`, `/readyz`) on the node's operations address."""
        with urllib.request.urlopen(self.ops_url + path, timeout=timeout_s) as response:  # noqa: S310 - loopback
            return json.loads(response.read())

    def stop(self, timeout_s: float = 10.0) -> int:
        """SIGTERM and wait; SIGKILL if it does not exit in time. Returns the exit code."""
        return self._end(signal.SIGTERM, timeout_s)

    def kill(self) -> int:
        """SIGKILL: the crash the store must survive."""
        return self._end(signal.SIGKILL, 10.0)

    def _end(self, sig: signal.Signals, timeout_s: float) -> int:
        proc = self.proc
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        self.proc = None
        return proc.returncode

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def _is_ready(url: str, require_ready: bool = True) -> bool:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=2) as response:  # noqa: S310 - loopback
            return bool(response.status == 200)
    except urllib.error.HTTPError as exc:
        return not require_ready and exc.code == 503
    except (urllib.error.URLError, OSError):
        return False
