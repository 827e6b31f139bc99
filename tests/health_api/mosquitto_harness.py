"""A real mosquitto broker for the event tests: installed with apt-get when missing, never mocked.

`Mosquitto` writes a config into a temporary directory (a loopback listener on a free port, no
anonymous access, the given ACL and password files), starts `mosquitto -c`, waits until the port
accepts connections, and stops (or kills) the process on request and on exit.
"""

from __future__ import annotations

import getpass
import json
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Final

import aiomqtt

DEADLINE_S: Final = 30.0
POLL_S: Final = 0.02


def ensure_mosquitto() -> str:
    """The mosquitto binary, installing Debian's package when missing (as scripts/bootstrap.sh does)."""
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if found is None:
        env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "mosquitto"], check=True, env=env, capture_output=True
        )
        found = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Mosquitto:
    def __init__(
        self, directory: Path, acl_file: Path, password_file: Path, *, pid_file: Path | None = None
    ) -> None:
        """`pid_file`: mosquitto writes its pid there (what a node's `[mqtt] broker_pid_file` reads)."""
        self.binary = ensure_mosquitto()
        self.port = free_port()
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.config = directory / "mosquitto.conf"
        self.config.write_text(
            # Run as whoever runs the tests (as root, mosquitto would switch to its own user, which
            # cannot read the test's temporary directory).
            f"user {getpass.getuser()}\n"
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous false\n"
            f"password_file {password_file}\n"
            f"acl_file {acl_file}\n"
            "persistence false\n"
            f"log_dest file {directory / 'mosquitto.log'}\n"
            "log_type all\n" + (f"pid_file {pid_file}\n" if pid_file is not None else ""),
            encoding="utf-8",
        )
        self.pid_file = pid_file
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> str:
        path = self.directory / "mosquitto.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def start(self) -> None:
        assert self.process is None
        self.process = subprocess.Popen(
            [self.binary, "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + DEADLINE_S
        while True:
            assert self.process.poll() is None, (
                self.process.stderr.read() if self.process.stderr else b"",
                self.log,
            )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                    listening = True
            except OSError:
                listening = False
            if listening and (self.pid_file is None or self.pid_file.exists()):
                return
            assert time.monotonic() < deadline, "mosquitto did not listen in time"
            time.sleep(POLL_S)  # polling a condition with a deadline

    def kill(self) -> None:
        """Stop the broker at once (SIGKILL: no goodbye to its clients)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=DEADLINE_S)
            if self.process.stderr is not None:
                self.process.stderr.close()
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=DEADLINE_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=DEADLINE_S)
            if self.process.stderr is not None:
                self.process.stderr.close()
            self.process = None


async def collect_raw(client: aiomqtt.Client, into: list[dict[str, Any]]) -> None:
    """Append every event a subscribed client receives (a message is a JSON array of a block's
    events for its topic) to `into`, until cancelled."""
    async for message in client.messages:
        assert isinstance(message.payload, bytes)
        into.extend(json.loads(message.payload))
