#!/usr/bin/env python3
"""Benchmark ledger events through a real mosquitto: commit-to-delivery latency and events/s.

Machine: whatever runs it (printed: CPU count, platform). Every process (the validators, the
broker, the subscribers and this load generator) shares this machine's cores.

Setup, in a temporary directory:

1. A health testnet of `--validators` institutions (clinic, hospital, insurer, research, then more
   clinics), each a `medledger start` process on loopback, block interval `--block-interval-ms`,
   and a mosquitto broker this script starts (Debian's package: found on PATH or /usr/sbin, else
   installed with apt-get as the test harness does; a clear error if neither works; it logs
   errors and warnings only). Its ACL and password file are what `medledger mqtt acl` writes for
   each node (`node/mqtt_acl.py`'s `build_broker_access`), merged (each user once) and built from
   the keys generated here, so the `--patients` synthetic patients are in it before they register
   and no node has to stop. Each node has its `[mqtt]` section (url, its broker user, password
   file) from the start, so every node publishes, QoS 1, through its bounded queue (node/mqtt.py).
2. The patients register (pre-signed `health.register_patient` txs, committed before the load).
3. Subscribers, in a child process of their own so that the load generator does not delay their
   clock readings: the clinic's institution user on the clinic's institution topic (it sees every
   event of the load), and each patient, with the credentials their device derives, on their topic
   as published by one node (patient i at node i mod N). All subscribe at QoS 1.
4. The load: `--events-per-s` x `--seconds` `health.add_record` txs (an Observation, encrypted for
   the patient and the clinic, signed by the clinic's key), pre-signed before the clock starts so
   the generator is not the bottleneck, then offered to the clinic's node on a fixed schedule (a
   `POST /v1/txs/batch?wait_ms=0` every `TICK_S`, carrying the txs due by then). Each commits as one
   `record.added` event, published by the clinic's node on its institution topic and by every
   node on the patient's topic.

Measured, never asserted:

- commit-to-delivery latency, per delivery (one per subscription and event): the wall time at which
  the subscriber process received the message minus the wall time at which the *publishing node*
  committed the event's block. The commit time is the timestamp of that node's own log line
  `committed block H` (network/reactor.py), written right after the block, its certificate and its
  state changes were durably written (the moment the node's publisher can first see the event),
  at millisecond resolution (truncated, so the latency is overstated by < 1 ms). Both clocks are
  this machine's wall clock. It therefore covers the node's follower poll, the queue, the publish,
  the broker and the subscriber, not consensus. Polling `/status` for the height instead would
  add its own interval and load, and the block time in the payload precedes the commit. For
  context, `block_to_delivery_*` measures from the event's `time_ms` (the block time: the
  proposer's clock at proposal), which adds consensus and the synced write. A node logs that
  line only for blocks decided by consensus: heights a node that fell behind fetched by block
  sync have none, and their deliveries are counted in `deliveries_without_commit_time` and left
  out of the commit-to-delivery percentiles (not out of `block_to_delivery_*`).
- events/s through the broker: distinct events the clinic's subscriber received over the time from
  the first submission to its last delivery. `offered_events_per_s` is the load the node actually
  took: txs over the time from the first submission to the node's answer to the last batch (a node
  slower to admit than the schedule lowers it); `committed_events_per_s` the events on the ledger
  (counted with `GET /v1/events` once no node has a pending tx) over the time from the first
  submission to the clinic's last commit. `node_commit_to_ack_*` is the nodes' share of the
  latency, from their own `medledger_mqtt_commit_to_ack_seconds` histogram (commit listener to the
  broker's PUBACK, per message, blocks fetched by block sync included): its mean, and the upper
  bound of the bucket holding its median. `publisher_dropped` sums the nodes'
  `medledger_mqtt_dropped_total` (messages dropped from a full publishing queue).
- `events_delivered` (the clinic's subscriber) and `patient_events_delivered` (the patients'
  subscriptions together) against `events_committed`: with nothing lost, all three are equal.

Target (issue 11): p50 under 50 ms at 1,000 events/s. The last line printed is one JSON object:
{"bench": "events", "events_per_s": …, "delivery_p50_ms": …, "delivery_p99_ms": …, …setup fields}.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import dataclasses
import datetime
import getpass
import json
import multiprocessing
import multiprocessing.connection
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import aiohttp
import aiomqtt
import msgpack
import nacl.pwhash.argon2id

from medledger.chain.types import compute_tx_id
from medledger.crypto import Identity
from medledger.health.client import build_add_record, build_register_patient
from medledger.health.event_topics import (
    compute_patient_subscription,
    get_institution_topic,
    get_institution_username,
)
from medledger.health.events import EVENT_INDEX_MAX, EVENT_RECORD_ADDED, TX_INDEX_MAX, compute_seq
from medledger.health.fhir import validate_record
from medledger.health.records import encrypt_record
from medledger.health.types import compute_patient_id
from medledger.node.mqtt_acl import build_broker_access, get_node_username
from medledger.node.process import NodeProcess
from medledger.node.testnet import TestnetNode, create_testnet

PASSPHRASE: Final = "bench-passphrase"
NODE_ENV: Final = {"MEDLEDGER_KEY_PASSPHRASE": PASSPHRASE}
CHAIN_ID: Final = "medledger-bench-events"
TOPIC_PREFIX: Final = "medledger"
INSTITUTIONS: Final = (
    ("clinic", "clinic"),
    ("hospital", "hospital"),
    ("insurer", "insurer"),
    ("research", "research"),
)
#: Seconds between two submissions of the load generator.
TICK_S: Final = 0.01
#: Submissions in flight at once (each is admitted by the node, not waited for).
IN_FLIGHT_MAX: Final = 8
DEADLINE_S: Final = 120.0
#: Seconds without a delivery after which the subscribers stop waiting for the rest: far more
#: than the publisher's longest reconnect backoff (node/mqtt.py BACKOFF_S_MAX) plus an MQTT
#: operation's timeout, so that what is missing was lost, not late.
IDLE_S: Final = 60.0
DRAIN_S_MAX: Final = 900.0
#: Events per `GET /v1/events` page (the route's maximum).
EVENTS_PAGE_MAX: Final = 1000
#: Records one signing worker builds per task.
SIGN_CHUNK: Final = 1000
POLL_S: Final = 0.02
COMMIT_LINE: Final = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) INFO \S+: committed block (\d+):")
OBSERVATION: Final = {
    "resourceType": "Observation",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0", "display": "Glucose"}]},
    "subject": {"reference": "Patient/synthetic-bench"},
    "effectiveDateTime": "2024-01-05T08:30:00Z",
    "valueQuantity": {"value": 5.4, "unit": "mmol/L", "system": "http://unitsofmeasure.org"},
}


# --- the broker ---------------------------------------------------------------------------------


class BenchError(Exception):
    """A set-up step failed; the message says which and why."""


def find_mosquitto() -> str:
    """Debian's mosquitto binary, installed with apt-get when missing (as the test harness does)."""
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and Path(candidate).exists():
            return candidate
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    try:
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "mosquitto"], check=True, env=env, capture_output=True
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        raise BenchError(
            f"mosquitto is not installed and `apt-get install mosquitto` failed ({exc}); install "
            "Debian's mosquitto package (scripts/bootstrap.sh dev does) and run again"
        ) from None
    found = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(found).exists():
        raise BenchError("apt-get installed mosquitto but no mosquitto binary was found")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Broker:
    """One mosquitto process: loopback listener, no anonymous users, the given ACL and passwords."""

    def __init__(self, directory: Path, acl_file: Path, password_file: Path) -> None:
        self.binary = find_mosquitto()
        self.port = free_port()
        self.directory = directory
        self.log_file = directory / "mosquitto.log"
        self.config = directory / "mosquitto.conf"
        self.config.write_text(
            f"user {getpass.getuser()}\n"  # as root it would switch to a user that cannot read tmp
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous false\n"
            f"password_file {password_file}\n"
            f"acl_file {acl_file}\n"
            "persistence false\n"
            f"log_dest file {self.log_file}\n"
            "log_type error\nlog_type warning\n",  # not one line per message: that would cost
            encoding="utf-8",
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                log = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
                raise BenchError(f"mosquitto exited at start (code {self.process.returncode}): {log[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise BenchError("mosquitto did not listen within 30 s") from None
                time.sleep(POLL_S)  # polling a condition with a deadline

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
            self.process = None


# --- the network ----------------------------------------------------------------------------------


def create_health_net(out: Path, validators: int, block_interval_ms: int) -> list[TestnetNode]:
    """A health testnet: clinic, hospital, insurer, research, then more clinics."""
    pairs = list(INSTITUTIONS[:validators]) + [
        (f"clinic{i}", "clinic") for i in range(len(INSTITUTIONS), validators)
    ]
    return create_testnet(
        out,
        validators=validators,
        chain_id=CHAIN_ID,
        block_interval_ms=block_interval_ms,
        passphrase=PASSPHRASE.encode(),
        key_opslimit=nacl.pwhash.argon2id.OPSLIMIT_MIN,
        key_memlimit=nacl.pwhash.argon2id.MEMLIMIT_MIN,
        app="health",
        names=[name for name, _ in pairs],
        roles=[role for _, role in pairs],
    )


def start_nodes(nodes: Sequence[TestnetNode]) -> list[NodeProcess]:
    processes = [NodeProcess(n.home, env=dict(NODE_ENV), use_config_ports=True) for n in nodes]
    for process in processes:
        process.start()
    for process in processes:
        process.wait_ready(60.0)
    return processes


def stop_nodes(processes: Sequence[NodeProcess]) -> None:
    errors: list[BaseException] = []
    for process in processes:
        try:
            process.stop()
        except Exception as exc:  # stop the others all the same
            errors.append(exc)
    if errors:
        raise errors[0]


def post_batch(url: str, raws: Sequence[bytes], wait_ms: int) -> list[dict[str, Any]]:
    request = urllib.request.Request(
        f"{url}/v1/txs/batch?wait_ms={wait_ms}",
        data=msgpack.packb(list(raws), use_bin_type=True),
        headers={"Content-Type": "application/msgpack"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=wait_ms / 1000 + 30) as response:
        results: list[dict[str, Any]] = json.loads(response.read())["results"]
        return results


def register_patients(url: str, patients: Sequence[Identity]) -> None:
    """Register synthetic patients and wait for the commit (one batch)."""
    raws = [build_register_patient(p, chain_id=CHAIN_ID)[1] for p in patients]
    results = post_batch(url, raws, 30_000)
    if not all(r["status"] == "committed" for r in results):
        raise BenchError(f"the patients' registrations did not all commit: {results[:3]}")


def wait_synced(processes: Sequence[NodeProcess]) -> int:
    """Wait until every node has the height the highest had when called; returns it."""
    target = max(int(p.get_json("/status")["height"]) for p in processes)
    deadline = time.monotonic() + DEADLINE_S
    while min(int(p.get_json("/status")["height"]) for p in processes) < target:
        if time.monotonic() > deadline:
            raise BenchError(f"the nodes did not all reach height {target}")
        time.sleep(POLL_S)  # polling a condition with a deadline
    return target


def enable_mqtt(
    nodes: Sequence[TestnetNode], patients: Sequence[Identity], directory: Path
) -> tuple[Broker, dict[str, str]]:
    """Before the nodes start: the broker's access files for every node, the broker, each [mqtt].

    The files are what `medledger mqtt acl` writes for each node (`build_broker_access`, which it
    calls), built here from the keys this script generated, so that no node has to be stopped to
    read its patients and the ACL knows the patients before they register. Each call gives every
    institution user a fresh random password, so the merged password file keeps each user's first
    line, and the credentials returned match it.
    """
    institutions = [n.identity.public.sign_key for n in nodes]
    enc_keys = [p.public.enc_key for p in patients]
    acl: list[str] = []
    passwd: dict[str, str] = {}
    credentials: dict[str, str] = {}
    for node in nodes:
        access = build_broker_access(node.identity, CHAIN_ID, TOPIC_PREFIX, institutions, enc_keys)
        acl.append(access.acl)
        for line in access.passwd.splitlines():
            passwd.setdefault(line.split(":", 1)[0], line)
        for user, password in access.handed_out.items():
            credentials.setdefault(user, password)
    acl_file, passwd_file = directory / "acl", directory / "passwd"
    acl_file.write_text("\n".join(acl), encoding="utf-8")
    passwd_file.write_text("\n".join(passwd.values()) + "\n", encoding="utf-8")
    os.chmod(passwd_file, 0o600)
    broker = Broker(directory, acl_file, passwd_file)
    broker.start()
    for node in nodes:
        user = get_node_username(node.identity.public.sign_key)
        (node.home / "mqtt.password").write_text(credentials[user], encoding="utf-8")
        with (node.home / "config.toml").open("a", encoding="utf-8") as config:
            config.write(
                f'\n[mqtt]\nurl = "mqtt://127.0.0.1:{broker.port}"\nusername = "{user}"\n'
                'password_file = "mqtt.password"\n'
            )
    return broker, credentials


def presign_records(author: Identity, patients: Sequence[Identity], count: int) -> list[bytes]:
    """`count` add_record txs by `author`, patients in turn, signed by a pool of one worker per CPU."""
    secrets = author.secrets()
    keys: list[tuple[bytes, bytes]] = [
        (compute_patient_id(p.public.sign_key), p.public.enc_key) for p in patients
    ]
    chunks = [range(start, min(count, start + SIGN_CHUNK)) for start in range(0, count, SIGN_CHUNK)]
    workers = min(os.cpu_count() or 1, len(chunks))
    if workers <= 1:  # not worth starting a pool
        return [raw for chunk in chunks for raw in _sign_records(secrets, keys, chunk)]
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        signed = pool.map(_sign_records, [secrets] * len(chunks), [keys] * len(chunks), chunks)
        return [raw for chunk in signed for raw in chunk]


def _sign_records(
    secrets: tuple[bytes, bytes], patients: list[tuple[bytes, bytes]], indices: range
) -> list[bytes]:
    """A worker: the records `indices` (patient `i mod len(patients)`); the FHIR check runs once."""
    author = Identity.from_secrets(*secrets)
    validated = validate_record(json.dumps(OBSERVATION))
    raws = []
    for i in indices:
        patient_id, enc_key = patients[i % len(patients)]
        readers = sorted({enc_key, author.public.enc_key})
        encrypted = encrypt_record(
            validated, patient_id=patient_id, author=author.public.sign_key, readers=readers
        )
        raws.append(build_add_record(author, patient_id, encrypted, chain_id=CHAIN_ID)[1])
    return raws


def read_commit_times(home: Path) -> dict[int, float]:
    """Height → wall time (s since the epoch) at which this node logged committing that block."""
    times: dict[int, float] = {}
    for line in (home / "node.log").read_text(encoding="utf-8", errors="replace").splitlines():
        match = COMMIT_LINE.match(line)
        if match is not None:
            local = datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S")
            times[int(match.group(3))] = local.timestamp() + int(match.group(2)) / 1000
    return times


def count_reconnects(home: Path) -> int:
    """How often this node's publisher lost the broker (its log's warning before each retry)."""
    text = (home / "node.log").read_text(encoding="utf-8", errors="replace")
    return sum(1 for line in text.splitlines() if " WARNING " in line and "MQTT broker" in line)


def count_ledger_events(process: NodeProcess, after: int, tx_ids: set[str]) -> list[dict[str, Any]]:
    """The clinic's committed events after `after` whose tx is one of the load's (every page)."""
    events: list[dict[str, Any]] = []
    while True:
        page = process.get_json(f"/v1/events?after={after}&limit={EVENTS_PAGE_MAX}")
        events += [e for e in page["events"] if e["tx_id"] in tx_ids]
        after = int(page["next"])
        if not page["events"] and get_height(after) >= int(page["latest_height"]):
            return events


def get_height(seq: int) -> int:
    return seq >> 24


def tip_seq(process: NodeProcess) -> int:
    return compute_seq(int(process.get_json("/status")["height"]), TX_INDEX_MAX, EVENT_INDEX_MAX)


def close_all(
    subscribers: Subscribers | None, processes: Sequence[NodeProcess], broker: Broker | None
) -> None:
    """Stop what a run started, every step even when one fails (the first failure is raised)."""
    steps: list[Callable[[], None]] = []
    if subscribers is not None:
        steps.append(subscribers.stop)
    steps.append(lambda: stop_nodes(processes))
    if broker is not None:
        steps.append(broker.stop)
    failed: Exception | None = None
    for step in steps:
        try:
            step()
        except Exception as exc:
            failed = failed or exc
    if failed is not None:
        raise failed


# --- the subscribers (a child process) ------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Subscription:
    label: str
    username: str
    password: str
    topic: str


#: One delivery: subscription label, event seq, height, block time_ms, wall time received (s).
Delivery = tuple[str, int, int, int, float]


def run_subscribers(
    port: int, subscriptions: list[Subscription], conn: multiprocessing.connection.Connection
) -> None:
    """Child process: subscribe, say "ready", collect until told how many to expect, send them back."""
    asyncio.run(_subscribe(port, subscriptions, conn))


async def _subscribe(
    port: int, subscriptions: list[Subscription], conn: multiprocessing.connection.Connection
) -> None:
    deliveries: list[Delivery] = []
    seen: dict[str, set[int]] = {s.label: set() for s in subscriptions}
    duplicates = 0
    done = asyncio.Event()
    expected: dict[str, int] | None = None

    def check_done() -> None:
        if expected is not None and all(len(seen[label]) >= n for label, n in expected.items()):
            done.set()

    async def collect(client: aiomqtt.Client, label: str) -> None:
        nonlocal duplicates
        async for message in client.messages:
            received = time.time()
            assert isinstance(message.payload, bytes)
            for event in json.loads(message.payload):  # a JSON array of a block's events
                if event["kind"] != EVENT_RECORD_ADDED:
                    continue  # the patients' registrations
                if event["seq"] in seen[label]:
                    duplicates += 1  # QoS 1 is at least once
                    continue
                seen[label].add(event["seq"])
                deliveries.append((label, event["seq"], event["height"], event["time_ms"], received))
            check_done()

    clients = [
        aiomqtt.Client(
            "127.0.0.1", port, username=s.username, password=s.password, identifier=f"bench-{s.label}"
        )
        for s in subscriptions
    ]
    tasks: list[asyncio.Task[None]] = []
    try:
        for client, subscription in zip(clients, subscriptions, strict=True):
            await client.__aenter__()
            await client.subscribe(subscription.topic, qos=1)
            tasks.append(asyncio.create_task(collect(client, subscription.label)))
        conn.send("ready")
        while expected is None:
            if await asyncio.to_thread(conn.poll, 0.2):
                expected = conn.recv()
        check_done()
        # Until everything expected arrived, or nothing arrived for IDLE_S (a queue dropped some:
        # the parent reports what arrived and the publishers' drop counts).
        while not done.is_set():
            count = len(deliveries)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), IDLE_S)
            if len(deliveries) == count:
                break
        conn.send((deliveries, duplicates))
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task
        for client in clients:
            with contextlib.suppress(aiomqtt.MqttError):
                await client.__aexit__(None, None, None)


class Subscribers:
    """The subscriber child process, started and stopped by the caller."""

    def __init__(self, port: int, subscriptions: list[Subscription]) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=run_subscribers, args=(port, subscriptions, child), daemon=True)

    def start(self) -> None:
        self.process.start()

    def wait_ready(self) -> None:
        if not self.conn.poll(60) or self.conn.recv() != "ready":
            raise BenchError("the subscribers did not connect within 60 s")

    def finish(self, expected: dict[str, int]) -> tuple[list[Delivery], int]:
        self.conn.send(expected)
        # They answer IDLE_S after the last delivery at the latest; a backlog drains at the
        # publishers' pace, so the bound is generous.
        if not self.conn.poll(DRAIN_S_MAX):
            raise BenchError("the subscribers did not answer")
        deliveries, duplicates = self.conn.recv()
        return deliveries, duplicates

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.terminate()
        self.process.join(10)


def institution_subscription(node: TestnetNode, credentials: dict[str, str]) -> Subscription:
    sign_key = node.identity.public.sign_key
    user = get_institution_username(sign_key)
    return Subscription("inst", user, credentials[user], get_institution_topic(TOPIC_PREFIX, sign_key))


def patient_subscription(index: int, patient: Identity, node: TestnetNode) -> Subscription:
    public = node.identity.public
    user, password, topic = compute_patient_subscription(patient, CHAIN_ID, public.sign_key, public.enc_key)
    return Subscription(f"pat{index}", user, password, topic)


# --- the load -------------------------------------------------------------------------------------


async def offer_load(url: str, raws: list[bytes], rate: float) -> tuple[float, float]:
    """Send `raws` at `rate` per second on a fixed schedule, each batch as soon as it is due.

    Returns wall times (s): the first submission, and the last admission (the node answered the
    last batch: its txs are in the mempool). A node slower to admit than the schedule shows here.
    """
    slots = asyncio.Semaphore(IN_FLIGHT_MAX)
    tasks: list[asyncio.Task[None]] = []
    last_admitted = 0.0

    async def send(session: aiohttp.ClientSession, batch: list[bytes]) -> None:
        nonlocal last_admitted
        async with (
            slots,
            session.post(
                f"{url}/v1/txs/batch?wait_ms=0",
                data=msgpack.packb(batch, use_bin_type=True),
                headers={"Content-Type": "application/msgpack"},
            ) as response,
        ):
            body = await response.json(content_type=None)
            if response.status not in (200, 202):
                raise BenchError(f"the node refused a batch: {response.status} {body}")
        last_admitted = max(last_admitted, time.time())

    sent = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        first = time.time()
        started = time.monotonic()
        while sent < len(raws):
            due = min(len(raws), int((time.monotonic() - started) * rate) + 1)
            if due > sent:
                tasks.append(asyncio.create_task(send(session, raws[sent:due])))
                sent = due
            await asyncio.sleep(TICK_S)
        await asyncio.gather(*tasks)
    return first, last_admitted


def wait_drained(processes: Sequence[NodeProcess]) -> None:
    """Wait until no node has a pending tx (the load is committed), then until they agree."""
    deadline = time.monotonic() + DEADLINE_S
    while any(int(p.get_json("/status")["mempool"]["txs"]) for p in processes):
        if time.monotonic() > deadline:
            raise BenchError(f"the load was not committed within {DEADLINE_S:.0f} s")
        time.sleep(0.1)  # polling a condition with a deadline
    wait_synced(processes)


@dataclasses.dataclass
class PublisherFigures:
    """What the nodes' publishers say of themselves on `/metrics`, summed over the nodes."""

    dropped: int = 0
    #: `medledger_mqtt_commit_to_ack_seconds`: commit to the broker's PUBACK, per message.
    ack_count: int = 0
    ack_sum_s: float = 0.0
    ack_buckets: dict[float, float] = dataclasses.field(default_factory=dict)

    def ack_median_bound_ms(self) -> float:
        """The upper bound of the histogram bucket that holds the median (`le`), in ms."""
        for bound in sorted(self.ack_buckets):
            if self.ack_buckets[bound] >= self.ack_count / 2:
                return bound * 1000
        return float("nan")


ACK_BUCKET: Final = re.compile(r'^medledger_mqtt_commit_to_ack_seconds_bucket\{le="([^"]+)"\} (\S+)$')


def read_publisher_figures(processes: Sequence[NodeProcess]) -> PublisherFigures:
    figures = PublisherFigures()
    for process in processes:
        with urllib.request.urlopen(process.ops_url + "/metrics", timeout=10) as response:
            for line in response.read().decode().splitlines():
                name, _, value = line.partition(" ")
                if name == "medledger_mqtt_dropped_total":
                    figures.dropped += int(float(value))
                elif name == "medledger_mqtt_commit_to_ack_seconds_count":
                    figures.ack_count += int(float(value))
                elif name == "medledger_mqtt_commit_to_ack_seconds_sum":
                    figures.ack_sum_s += float(value)
                elif (bucket := ACK_BUCKET.match(line)) is not None:
                    bound = float(bucket.group(1))  # "+Inf" parses as inf
                    figures.ack_buckets[bound] = figures.ack_buckets.get(bound, 0.0) + float(bucket.group(2))
    return figures


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events-per-s", type=float, default=1000.0, help="offered load (records/s)")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long the load is offered")
    parser.add_argument("--validators", type=int, default=4)
    parser.add_argument("--patients", type=int, default=16, help="synthetic patients, each subscribed")
    parser.add_argument("--block-interval-ms", type=int, default=50)
    args = parser.parse_args()
    if args.validators < 1 or args.patients < 1 or args.events_per_s <= 0 or args.seconds <= 0:
        parser.error("--validators, --patients, --events-per-s and --seconds must be positive")
    print(f"machine: {os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}")
    try:
        with tempfile.TemporaryDirectory(prefix="medledger-bench-events-") as tmp:
            result = run(Path(tmp), args)
    except BenchError as exc:
        print(f"bench_events: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"bench": "events", **result}))
    return 0


def run(tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    nodes = create_health_net(tmp / "net", args.validators, args.block_interval_ms)
    clinic = nodes[0]
    count = round(args.events_per_s * args.seconds)
    processes: list[NodeProcess] = []
    broker: Broker | None = None
    subscribers: Subscribers | None = None
    try:
        patients = [Identity.generate() for _ in range(args.patients)]
        (tmp / "broker").mkdir()
        broker, credentials = enable_mqtt(nodes, patients, tmp / "broker")
        subscriptions = [institution_subscription(clinic, credentials)] + [
            patient_subscription(i, p, nodes[i % len(nodes)]) for i, p in enumerate(patients)
        ]
        subscribers = Subscribers(broker.port, subscriptions)
        subscribers.start()  # the broker is up; the nodes start meanwhile
        processes = start_nodes(nodes)
        subscribers.wait_ready()
        register_patients(processes[0].url, patients)
        wait_synced(processes)
        print(
            f"{args.validators} validators ({', '.join(n.name for n in nodes)}), block interval "
            f"{args.block_interval_ms} ms, every node publishing to mosquitto on port {broker.port}; "
            f"{args.patients} patients",
            flush=True,
        )

        started = time.perf_counter()
        raws = presign_records(clinic.identity, patients, count)
        signing_s = time.perf_counter() - started
        print(
            f"pre-signed {count:,} add_record txs in {signing_s:.1f} s ({count / signing_s:,.0f}/s)",
            flush=True,
        )
        tx_ids = {compute_tx_id(raw).hex() for raw in raws}
        start_seq = tip_seq(processes[0])
        first_send, last_admitted = asyncio.run(offer_load(processes[0].url, raws, args.events_per_s))

        # Every tx committed, then the ledger's count of the load's events (by /v1/events).
        wait_drained(processes)
        events = count_ledger_events(processes[0], start_seq, tx_ids)
        per_patient = [0] * len(patients)
        for i in range(count):
            per_patient[i % len(patients)] += 1
        expected = {"inst": len(events)} | {f"pat{i}": n for i, n in enumerate(per_patient)}
        deliveries, duplicates = subscribers.finish(expected)
        commit_times = [read_commit_times(n.home) for n in nodes]
        reconnects = sum(count_reconnects(n.home) for n in nodes)
        publishers = read_publisher_figures(processes)
        dropped = publishers.dropped
    finally:
        close_all(subscribers, processes, broker)

    committed = len(events)
    ledger_seqs = {e["seq"] for e in events}
    latencies: list[float] = []
    block_latencies: list[float] = []
    missing_commit_time = 0
    inst_seqs: set[int] = set()
    patient_seqs = 0
    last_inst = first_send
    for label, seq, height, time_ms, received in deliveries:
        node_index = 0 if label == "inst" else int(label[3:]) % len(nodes)
        if label == "inst":
            inst_seqs.add(seq)
            last_inst = max(last_inst, received)
        elif seq in ledger_seqs:
            patient_seqs += 1
        committed_at = commit_times[node_index].get(height)
        if committed_at is None:
            missing_commit_time += 1
        else:
            latencies.append((received - committed_at) * 1000)
        block_latencies.append(received * 1000 - time_ms)
    delivered = len(inst_seqs & ledger_seqs)
    commit_walls = [commit_times[0][e["height"]] for e in events if e["height"] in commit_times[0]]
    last_commit = max(commit_walls, default=first_send)
    offered = count / max(last_admitted - first_send, 1e-9)
    committed_rate = committed / max(last_commit - first_send, 1e-9)
    events_per_s = delivered / max(last_inst - first_send, 1e-9)
    p50, p99 = percentile(latencies, 0.50), percentile(latencies, 0.99)
    b50, b99 = percentile(block_latencies, 0.50), percentile(block_latencies, 0.99)
    print(
        f"offered {count:,} records at {offered:,.0f}/s; committed {committed:,} events "
        f"({committed_rate:,.0f}/s); the clinic's subscriber got {delivered:,} "
        f"({events_per_s:,.0f} events/s), the patients' {patient_seqs:,}; {duplicates} duplicates, "
        f"{missing_commit_time} deliveries without a logged commit time; {dropped} messages dropped by "
        f"the nodes' publishers, which lost the broker {reconnects} times"
    )
    print(
        f"commit-to-delivery over {len(latencies):,} deliveries: p50 {p50:.1f} ms, p99 {p99:.1f} ms; "
        f"block time to delivery: p50 {b50:.1f} ms, p99 {b99:.1f} ms"
    )
    ack_mean = publishers.ack_sum_s / max(publishers.ack_count, 1) * 1000
    ack_median = publishers.ack_median_bound_ms()
    print(
        f"the nodes' share (commit to the broker's PUBACK, {publishers.ack_count:,} messages): "
        f"mean {ack_mean:.1f} ms, median <= {ack_median:g} ms"
    )
    return {
        "events_per_s": round(events_per_s, 1),
        "delivery_p50_ms": round(p50, 1),
        "delivery_p99_ms": round(p99, 1),
        "block_to_delivery_p50_ms": round(b50, 1),
        "block_to_delivery_p99_ms": round(b99, 1),
        "offered_events_per_s": round(offered, 1),
        "committed_events_per_s": round(committed_rate, 1),
        "target_events_per_s": args.events_per_s,
        "events_committed": committed,
        "events_delivered": delivered,
        "patient_events_delivered": patient_seqs,
        "duplicates": duplicates,
        "publisher_dropped": dropped,
        "publisher_reconnects": reconnects,
        "node_commit_to_ack_mean_ms": round(ack_mean, 1),
        "node_commit_to_ack_median_le_ms": ack_median,
        "deliveries_without_commit_time": missing_commit_time,
        "validators": args.validators,
        "patients": args.patients,
        "seconds": args.seconds,
        "block_interval_ms": args.block_interval_ms,
        "cpus": os.cpu_count(),
    }


if __name__ == "__main__":
    sys.exit(main())
