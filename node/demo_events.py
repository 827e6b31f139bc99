"""The demo's MQTT side: a real mosquitto broker, and the patient's notifications (ADR 0015).

`DemoBroker` runs Debian's mosquitto with a configuration written into the demo's network
directory: one loopback listener per node (`per_listener_settings`: each listener has that
node's own `acl` and `passwd`, as if each institution ran its own broker), no anonymous access,
a pid file, a log file. Each node publishes to its listener and keeps its files current itself
(`[mqtt] acl_dir`, `broker_pid_file`: a patient who registers is added and mosquitto is sent
SIGHUP), so the patient of the story can subscribe moments after registering.

`PatientNotifications` runs the patient's `EventSubscription` (credentials derived on the
patient's side from their key and the node's public keys, `health.event_topics`) in a thread of
its own; the story prints what it delivers, kinds and ids only, where it happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import queue
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from medledger.health.event_subscription import EventSubscription
from medledger.health.events import ID_FIELDS
from medledger.node.errors import ConfigError, NodeError

BROKER_HOST: Final = "127.0.0.1"
PID_FILE: Final = "mosquitto.pid"
LOG_FILE: Final = "mosquitto.log"
#: mosquitto's own output (a configuration it refuses is reported there, before the log opens).
OUTPUT_FILE: Final = "mosquitto.out"
BROKER_READY_TIMEOUT_S: Final = 30.0
BROKER_STOP_TIMEOUT_S: Final = 10.0
#: How long the story waits for a notification (or for the subscription to be live).
NOTIFICATION_TIMEOUT_S: Final = 60.0
POLL_S: Final = 0.02
INSTALL_HINT: Final = (
    "mosquitto (the MQTT broker the demo's notifications go through) is not installed: "
    "install Debian's package (`apt-get install mosquitto`), or run `bash scripts/demo.sh`, "
    "which installs it when missing"
)
#: How an id field is named in a notification line.
ID_LABELS: Final = {
    "record_id": "record",
    "supersedes": "supersedes",
    "inquiry_id": "inquiry",
    "grant_id": "grant",
    "request_id": "request",
    "amendment_id": "amendment",
    "claim_id": "claim",
}

Echo = Callable[[str], None]


def find_mosquitto(named: str | None = None) -> str:
    """The mosquitto binary (`named`, else on PATH, else Debian's), or an error saying how to install it."""
    if named is not None:
        found = shutil.which(named)
        if found is None:
            raise ConfigError(f"{named} is not an executable. {INSTALL_HINT}")
        return found
    found = shutil.which("mosquitto") or shutil.which("/usr/sbin/mosquitto")
    if found is None:
        raise ConfigError(INSTALL_HINT)
    return found


def pick_free_port() -> int:
    with socket.socket() as sock:
        sock.bind((BROKER_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _is_listening(port: int) -> bool:
    try:
        with socket.create_connection((BROKER_HOST, port), timeout=1.0):
            return True
    except OSError:
        return False


class DemoBroker:
    """mosquitto with one listener per node, each with that node's ACL and password file."""

    def __init__(self, binary: str, directory: Path, listeners: list[tuple[int, Path]]) -> None:
        """`listeners`: (port, the node's acl_dir holding `acl` and `passwd`) per node."""
        self.binary = binary
        self.directory = directory
        self.listeners = listeners
        self.pid_file = directory / PID_FILE
        self.log_file = directory / LOG_FILE
        self.config_file = directory / "mosquitto.conf"
        self.process: subprocess.Popen[bytes] | None = None

    def write_config(self) -> None:
        lines = [
            "# Written by `medledger demo` (node/demo_events.py); replaced at every run.",
            "per_listener_settings true",
            # As whoever runs the demo: as root, mosquitto would switch to a user of its own, which
            # cannot read the demo's (mode 0600) files.
            f"user {getpass.getuser()}",
            f"pid_file {self.pid_file}",
            "persistence false",
            f"log_dest file {self.log_file}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "log_type subscribe",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        ]
        for port, acl_dir in self.listeners:
            lines += [
                "",
                f"listener {port} {BROKER_HOST}",
                "allow_anonymous false",
                f"password_file {acl_dir / 'passwd'}",
                f"acl_file {acl_dir / 'acl'}",
            ]
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def start(self) -> None:
        self.write_config()
        with (self.directory / OUTPUT_FILE).open("wb") as output:
            self.process = subprocess.Popen(
                [self.binary, "-c", str(self.config_file)], stdout=output, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + BROKER_READY_TIMEOUT_S
        while not (self.pid_file.exists() and all(_is_listening(port) for port, _ in self.listeners)):
            if self.process.poll() is not None:
                raise NodeError(f"mosquitto exited at start: {self.read_output()}")
            if time.monotonic() > deadline:
                raise NodeError(
                    f"mosquitto did not listen within {BROKER_READY_TIMEOUT_S} s: {self.read_output()}"
                )
            time.sleep(POLL_S)  # polling a condition with a deadline

    def read_output(self) -> str:
        texts = []
        for path in (self.directory / OUTPUT_FILE, self.log_file):
            if path.exists():
                texts.append(path.read_text(encoding="utf-8", errors="replace")[-2000:].strip())
        return " | ".join(t for t in texts if t) or "(no output)"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=BROKER_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=BROKER_STOP_TIMEOUT_S)
        self.process = None


def describe_notification(event: dict[str, Any], *, from_broker: bool) -> str:
    """`notification: inquiry.filed (inquiry 3fa2…)`: the kind and the ids, nothing else."""
    ids = [
        f"{ID_LABELS.get(f, f.removesuffix('_id'))} {str(event[f])[:8]}…"
        for f in ID_FIELDS
        if isinstance(event.get(f), str)
    ]
    line = f"notification: {event.get('kind')}" + (f" ({', '.join(ids)})" if ids else "")
    return line if from_broker else line + " [filled from the ledger]"


class PatientNotifications:
    """The patient's subscription in a thread; `expect` prints deliveries until the one awaited."""

    def __init__(self, subscription: EventSubscription, echo: Echo) -> None:
        self.subscription = subscription
        self.echo = echo
        self._queue: queue.Queue[tuple[dict[str, Any], bool]] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="patient-notifications", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[Any] | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        #: Notifications printed so far, and how many of them came through the broker.
        self.shown = 0
        self.shown_from_broker = 0

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.current_task()
            self._started.set()
            async for event in self.subscription.events():
                self._queue.put((event, self.subscription.last_from_broker))

        try:
            asyncio.run(main())
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # reported by the next `expect`
            self._error = exc
        finally:
            self._started.set()

    def start(self) -> None:
        self._thread.start()
        self._started.wait(BROKER_READY_TIMEOUT_S)

    def stop(self) -> None:
        loop, task = self._loop, self._task
        if loop is not None and task is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(task.cancel)
        self._thread.join(BROKER_STOP_TIMEOUT_S)

    def _check(self) -> None:
        if self._error is not None:
            raise NodeError(
                f"the patient's subscription stopped: {type(self._error).__name__}: {self._error}"
            )

    def wait_live(self, what: str) -> None:
        """Wait until the subscription is connected and caught up (the broker knows the patient)."""
        deadline = time.monotonic() + NOTIFICATION_TIMEOUT_S
        while not self.subscription.listening:
            self._check()
            if time.monotonic() > deadline:
                raise NodeError(
                    f"the patient's subscription was not live within {NOTIFICATION_TIMEOUT_S} s: {what}"
                )
            time.sleep(POLL_S)  # polling a condition with a deadline

    def _show(self, event: dict[str, Any], from_broker: bool) -> None:
        self.echo("   " + describe_notification(event, from_broker=from_broker))
        self.shown += 1
        if from_broker:
            self.shown_from_broker += 1

    def expect(self, kind: str, **ids: str) -> None:
        """Print each delivered notification until one of `kind` with these ids is printed."""
        deadline = time.monotonic() + NOTIFICATION_TIMEOUT_S
        while True:
            self._check()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NodeError(
                    f"the patient's notification {kind} did not arrive within {NOTIFICATION_TIMEOUT_S} s"
                )
            try:
                event, from_broker = self._queue.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            self._show(event, from_broker)
            if event.get("kind") == kind and all(event.get(k) == v for k, v in ids.items()):
                return

    def show_arrived(self) -> None:
        """Print whatever was delivered meanwhile (while the network runs after the story)."""
        while True:
            try:
                event, from_broker = self._queue.get_nowait()
            except queue.Empty:
                return
            self._show(event, from_broker)
