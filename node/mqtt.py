"""Publishing ledger events to an MQTT broker, off the consensus path (docs/adr/0015-ledger-events.md).

Two tasks, started with the API when `[mqtt] url` is set:

- the follower reads the node's committed events (`EventLog`, in a worker thread) from where it
  last stopped (`HOME/mqtt.cursor`), woken by each commit, and appends one message per topic and
  block (a JSON array of that block's events for that topic) to a bounded queue: the node's
  institution topic for the events that concern it, and each concerned patient's topic token
  (`health.event_topics`) for theirs. A full queue drops its oldest message and counts it
  (`medledger_mqtt_dropped_total`); subscribers fill any gap from `GET /v1/events`.
- the sender publishes the queue in order at QoS 1 through aiomqtt, and on any broker error
  reconnects with exponential backoff (`BACKOFF_S_MIN` to `BACKOFF_S_MAX`), putting the messages in
  flight back first (up to `PUBLISH_WINDOW` await their PUBACK at once). The cursor moves when the
  last message of a block is acknowledged (with all before it); it is saved when the queue
  drains and every `CURSOR_SAVE_EVERY` messages, so a restarted node resumes where the broker
  last acknowledged (QoS 1 is at least once: subscribers drop duplicates by `seq`).

With `[mqtt] acl_dir` the follower also keeps the broker's ACL and password files current
(`mqtt_acl.LiveBrokerAccess`): written for every stored patient when it starts, then extended by
the patients of each `patient.registered` event it reads, before any message of theirs is queued,
and the broker is sent SIGHUP (`[mqtt] broker_pid_file`) to reload them.

Nothing here is awaited by block production: a down or slow broker only grows (then trims) the
queue.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import itertools
import json
import logging
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Final, Protocol

import aiomqtt
from aiohttp import web
from prometheus_client import Counter, Gauge, Histogram

from medledger.chain.execution import ExecutedBlock
from medledger.crypto import CryptoError, Identity
from medledger.health import state as st
from medledger.health.app import decode_genesis
from medledger.health.event_topics import (
    compute_patient_topic_token,
    compute_shared_secret,
    get_institution_topic,
    get_institution_username,
    get_patient_topic,
)
from medledger.health.events import (
    EVENT_INDEX_MAX,
    EVENT_PATIENT_REGISTERED,
    TX_INDEX_MAX,
    LedgerEvent,
    compute_seq,
    get_seq_height,
)
from medledger.node.errors import ConfigError
from medledger.node.mqtt_acl import BrokerAccessError, LiveBrokerAccess, read_password
from medledger.node.node import Node
from medledger.node.private_files import PrivateFileError, load_event_cursor, save_event_cursor

log = logging.getLogger("medledger.mqtt")

CURSOR_FILE: Final = "mqtt.cursor"
BACKOFF_S_MIN: Final = 0.1
BACKOFF_S_MAX: Final = 5.0
#: The follower looks for new blocks at least this often (it is woken by each commit).
FOLLOW_POLL_S: Final = 1.0
CURSOR_SAVE_EVERY: Final = 100
#: Messages published and not yet acknowledged, at most (also the MQTT client's in-flight limit).
PUBLISH_WINDOW: Final = 64
#: How long a stopping node waits for the broker to acknowledge what it queued, at most.
DRAIN_S: Final = 2.0
#: Events in one message, at most (a payload is about 300 bytes each).
EVENTS_PER_MESSAGE_MAX: Final = 200
#: Events read from the log per step of the follower.
FOLLOW_PAGE_MAX: Final = 1000
#: Patients whose topic token is kept (one x25519 and one BLAKE2b each to recompute).
TOKEN_CACHE_MAX: Final = 65_536
#: Commit times kept for the latency metric (a follower is at most a few blocks behind).
COMMIT_TIMES_MAX: Final = 1024


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    #: The number of the last event in the message.
    seq: int
    topic: str
    #: A JSON array of event payloads (`LedgerEvent.to_payload`).
    payload: bytes
    #: Where the publisher's cursor may move once this message is acknowledged (the last message
    #: of a block's events), or None.
    cursor_after: int | None = None
    #: When this node committed the message's block (`time.monotonic`), if it saw the commit.
    committed_at: float | None = None


def parse_broker_url(url: str) -> tuple[str, int]:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != "mqtt" or not parsed.hostname or parsed.username or parsed.path not in ("", "/"):
        raise ConfigError(
            f"[mqtt] url must be mqtt://host[:port] (credentials go in username/password_file), got {url!r}"
        )
    return parsed.hostname, parsed.port or 1883


def compute_node_patient_token(identity: Identity, chain_id: str, patient_enc_key: bytes) -> bytes:
    """The topic token of a patient's events as this node publishes them (`CryptoError`: none)."""
    secret = compute_shared_secret(identity, patient_enc_key)
    return compute_patient_topic_token(secret, chain_id, identity.public.sign_key)


def compute_event_messages(
    events: Sequence[LedgerEvent],
    prefix: str,
    own_sign_key: bytes,
    get_patient_token: Callable[[bytes], bytes | None],
) -> list[Message]:
    """What a node (signing key `own_sign_key`) publishes for `events` (in chain order).

    An event goes to the node's own institution topic if it concerns that institution, and to the
    patient's token topic (a patient unknown to `get_patient_token` has none). A message carries,
    as a JSON array, the events of one block for one topic (at most `EVENTS_PER_MESSAGE_MAX`), so a
    busy block is a few messages, not one per event. The last message of each block's run of
    events carries `cursor_after`: once it and everything queued before it is acknowledged, the
    publisher has sent every event up to it.
    """
    messages: list[Message] = []
    for _, block_events in itertools.groupby(events, key=lambda e: e.height):
        by_topic: dict[str, list[LedgerEvent]] = {}
        last_seq = 0
        for event in block_events:
            last_seq = event.seq
            if event.is_for_institution(own_sign_key):
                by_topic.setdefault(get_institution_topic(prefix, own_sign_key), []).append(event)
            if event.patient_id is not None:
                token = get_patient_token(event.patient_id)
                if token is not None:
                    by_topic.setdefault(get_patient_topic(prefix, token), []).append(event)
        start = len(messages)
        for topic, topic_events in by_topic.items():
            for at in range(0, len(topic_events), EVENTS_PER_MESSAGE_MAX):
                part = topic_events[at : at + EVENTS_PER_MESSAGE_MAX]
                payload = json.dumps([e.to_payload() for e in part], separators=(",", ":")).encode()
                messages.append(Message(part[-1].seq, topic, payload))
        if len(messages) > start:
            messages[-1] = dataclasses.replace(messages[-1], cursor_after=last_seq)
    return messages


class EventLogLike(Protocol):
    """What the publisher needs of `node.events_api.EventLog` (typed here to keep the import one-way)."""

    def list_events(self, after: int, limit: int, audience: None) -> tuple[list[LedgerEvent], int]: ...


class EventPublisher:
    """The bounded queue between the node's events and the broker, and the two tasks around it."""

    def __init__(self, node: Node, events: EventLogLike, cursor_file: Path) -> None:
        self.node = node
        self.events = events
        self.cursor_file = cursor_file
        config = node.config.mqtt
        self.host, self.port = parse_broker_url(config.url)
        self.username = config.username or None
        self.password = read_password(node.config)
        self.prefix = config.topic_prefix
        self.queue: collections.deque[Message] = collections.deque()
        self.queue_max = config.queue_max
        self._wake = asyncio.Event()
        self._committed = asyncio.Event()
        #: Set while connected with nothing queued or awaiting its PUBACK.
        self._idle = asyncio.Event()
        self.is_connected = False
        self._tokens: dict[bytes, bytes] = {}
        #: The follower's own worker thread: in the shared default pool its block would queue
        #: behind every API request's admission work (hundreds a second under load), and the
        #: event would wait for all of them before it is published.
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mqtt-follow")
        self.published_seq = self._load_cursor()
        self.access = self._make_access()
        self._unsaved = 0
        registry = node.metrics.registry
        self.dropped = Counter(
            "medledger_mqtt_dropped", "Event messages dropped from a full queue.", registry=registry
        )
        self.published = Counter(
            "medledger_mqtt_published", "Event messages the broker acknowledged.", registry=registry
        )
        self.queued = Gauge(
            "medledger_mqtt_queue", "Event messages waiting for the broker.", registry=registry
        )
        self.commit_to_ack = Histogram(
            "medledger_mqtt_commit_to_ack_seconds",
            "From this node's commit of a block to the broker's acknowledgement of each of its "
            "event messages (the node's share of the delivery latency).",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=registry,
        )
        #: Heights this node committed while running, and when (for `commit_to_ack`).
        self._commit_times: collections.OrderedDict[int, float] = collections.OrderedDict()
        self.connected = Gauge(
            "medledger_mqtt_connected", "1 while connected to the broker.", registry=registry
        )
        self.patients_without_topic = Counter(
            "medledger_mqtt_patients_without_topic",
            "Patients whose topic cannot be derived (a low-order encryption key on an older chain): "
            "their events go to no patient topic.",
            registry=registry,
        )

    def _make_access(self) -> LiveBrokerAccess | None:
        config = self.node.config
        if not config.mqtt.acl_dir:
            return None
        pid_file = config.mqtt.broker_pid_file
        return LiveBrokerAccess(
            self.node.identity,
            self.node.genesis.chain_id,
            self.prefix,
            [i.sign_key for i in decode_genesis(self.node.genesis.app_state).institutions],
            config.resolve(config.mqtt.acl_dir),
            pid_file=config.resolve(pid_file) if pid_file else None,
            node_password=self.password,
        )

    def load_access(self) -> None:
        """Write the broker's files for every patient in the store (blocking: a worker thread)."""
        if self.access is not None:
            self.access.load(p.enc_key for p in st.iter_patients(self.node.store))

    def _update_access(self, events: list[LedgerEvent]) -> None:
        if self.access is None:
            return
        registered = [e.patient_id for e in events if e.kind == EVENT_PATIENT_REGISTERED and e.patient_id]
        if not registered and not self.access.is_dirty:
            return
        patients = (st.get_patient(self.node.store, patient_id) for patient_id in registered)
        try:
            self.access.add_patients(p.enc_key for p in patients if p is not None)
        except BrokerAccessError as exc:  # retried with the next page; publishing goes on
            log.error("%s", exc)

    def _load_cursor(self) -> int | None:
        try:
            return load_event_cursor(self.cursor_file)
        except PrivateFileError as exc:
            raise ConfigError(f"{exc.message}; delete it to start from the tip") from None

    def save_cursor(self) -> None:
        """Save where publishing stands (atomically, never through a link); a failure is logged
        and retried at the next save, and publishing goes on."""
        if self.published_seq is None:
            return
        try:
            save_event_cursor(self.cursor_file, self.published_seq)
        except OSError as exc:
            log.error("cannot save the MQTT cursor %s: %s", self.cursor_file, exc.strerror)
            return
        self._unsaved = 0

    # -- the follower -------------------------------------------------------------------------

    def _patient_token(self, patient_id: bytes) -> bytes | None:
        """The patient's topic token; None for no patient topic (unknown, or no token derivable)."""
        token = self._tokens.get(patient_id)
        if token is None:
            patient = st.get_patient(self.node.store, patient_id)
            if patient is None:
                return None
            try:
                token = compute_node_patient_token(
                    self.node.identity, self.node.genesis.chain_id, patient.enc_key
                )
            except CryptoError:
                # Counted once per patient (remembered as b""); everything else publishes on.
                token = b""
                self.patients_without_topic.inc()
            if len(self._tokens) >= TOKEN_CACHE_MAX:
                self._tokens.clear()
            self._tokens[patient_id] = token
        return token or None

    def compute_messages(self, events: Sequence[LedgerEvent]) -> list[Message]:
        return compute_event_messages(
            events, self.prefix, self.node.identity.public.sign_key, self._patient_token
        )

    def enqueue(self, message: Message) -> None:
        if len(self.queue) >= self.queue_max:
            self.queue.popleft()
            self.dropped.inc()
        self.queue.append(message)
        self.queued.set(len(self.queue))
        self._wake.set()

    def _follow_step(self, after: int) -> tuple[list[Message], int]:
        events, cursor = self.events.list_events(after, FOLLOW_PAGE_MAX, None)
        self._update_access(events)  # a new patient can subscribe before their first message
        return self.compute_messages(events), cursor

    def _stamp(self, messages: list[Message]) -> list[Message]:
        """Give each message the time its block was committed here (on the loop's thread)."""
        times = self._commit_times
        return [dataclasses.replace(m, committed_at=times.get(get_seq_height(m.seq))) for m in messages]

    async def start(self) -> None:
        """Fix where following starts, then write the broker's files (errors stop the start-up)."""
        if self.published_seq is None:  # first start: from the tip (history is on the ledger)
            self.published_seq = compute_seq(self.node.store.height, TX_INDEX_MAX, EVENT_INDEX_MAX)
            self.save_cursor()
        # After the cursor is fixed: a patient registered from here on is also in a followed event.
        await asyncio.to_thread(self.load_access)

    async def follow(self) -> None:
        store = self.node.store
        if self.published_seq is None:
            raise RuntimeError("EventPublisher.start must run before follow")  # a bug
        after: int = self.published_seq
        while True:
            self._committed.clear()
            if get_seq_height(after) < store.height:
                loop = asyncio.get_running_loop()
                messages, after = await loop.run_in_executor(self._executor, self._follow_step, after)
                for message in self._stamp(messages):
                    self.enqueue(message)
                continue
            # Woken by the next commit; the timeout only guards against a missed wake-up.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._committed.wait(), FOLLOW_POLL_S)

    async def drain(self, timeout_s: float) -> bool:
        """Wait (at most `timeout_s`) until every queued message is acknowledged; True if so.

        A graceful stop drains before saving the cursor, so the restarted node republishes
        nothing the broker already acknowledged (after a crash it may: QoS 1 is at least once).
        """
        if not self.is_connected:
            return not self.queue
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        """Stop the follower's thread (after `follow` has ended)."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    def note_committed(self, executed: ExecutedBlock) -> None:
        """A commit listener (`Node.commit_listeners`): wake the follower."""
        self._commit_times[executed.block.header.height] = time.monotonic()
        while len(self._commit_times) > COMMIT_TIMES_MAX:
            self._commit_times.popitem(last=False)
        self._committed.set()

    # -- the sender ---------------------------------------------------------------------------

    async def send(self) -> None:
        backoff = BACKOFF_S_MIN
        identifier = get_institution_username(self.node.identity.public.sign_key) + "-node"
        while True:
            try:
                async with aiomqtt.Client(
                    self.host,
                    self.port,
                    username=self.username,
                    password=self.password,
                    identifier=identifier,
                    max_inflight_messages=PUBLISH_WINDOW,
                ) as client:
                    self.connected.set(1)
                    self.is_connected = True
                    backoff = BACKOFF_S_MIN
                    log.info("connected to the MQTT broker at %s:%d", self.host, self.port)
                    await self._publish_all(client)
            except aiomqtt.MqttError as exc:
                self.connected.set(0)
                self.is_connected = False
                log.warning("MQTT broker %s:%d: %s; retrying in %.1f s", self.host, self.port, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_S_MAX)

    async def _publish_all(self, client: aiomqtt.Client) -> None:
        """Publish the queue with up to `PUBLISH_WINDOW` messages awaiting their PUBACK at once.

        One at a time, each message would wait a broker round trip (about 1,000 to 2,000 messages/s
        here, below the chain's rate); a window keeps the link busy. Messages leave in queue order
        (each publish is handed to the client when its task starts, in creation order) and are
        retired in that order, so the cursor only passes a block once all its messages and all
        before them are acknowledged.
        """
        inflight: collections.deque[tuple[Message, asyncio.Task[None]]] = collections.deque()
        try:
            while True:
                while self.queue and len(inflight) < PUBLISH_WINDOW:
                    message = self.queue.popleft()
                    task = asyncio.create_task(client.publish(message.topic, message.payload, qos=1))
                    inflight.append((message, task))
                self.queued.set(len(self.queue))
                if not inflight:
                    self.save_cursor()
                    self._wake.clear()
                    self._idle.set()
                    await self._wake.wait()
                    self._idle.clear()
                    continue
                await inflight[0][1]  # raises the broker's error: everything unacknowledged is requeued
                while inflight and inflight[0][1].done() and not inflight[0][1].exception():
                    message, _ = inflight.popleft()
                    self.published.inc()
                    if message.committed_at is not None:
                        self.commit_to_ack.observe(time.monotonic() - message.committed_at)
                    if message.cursor_after is not None:  # every message of its block is out
                        self.published_seq = message.cursor_after
                    self._unsaved += 1
                if self._unsaved >= CURSOR_SAVE_EVERY:
                    self.save_cursor()
        finally:
            self._idle.clear()
            # Whatever is not acknowledged goes back to the front, in order, for the next connection.
            for _, task in inflight:
                if task.done():
                    if not task.cancelled():
                        task.exception()  # retrieved: its error is the one being handled
                else:
                    task.cancel()
            unacknowledged = [message for message, _ in inflight]
            room = self.queue_max - len(self.queue)
            if len(unacknowledged) > room:
                dropped = len(unacknowledged) - max(room, 0)
                self.dropped.inc(dropped)
                unacknowledged = unacknowledged[dropped:]
            self.queue.extendleft(reversed(unacknowledged))
            self.queued.set(len(self.queue))


def add_mqtt_publisher(app: web.Application, node: Node, events: EventLogLike) -> None:
    """Start and stop the publisher with the API app, when `[mqtt] url` is configured."""
    if not node.config.mqtt.url:
        return

    async def publisher_ctx(app: web.Application) -> AsyncIterator[None]:
        publisher = EventPublisher(node, events, node.config.home / CURSOR_FILE)
        await publisher.start()
        node.commit_listeners.append(publisher.note_committed)
        follower = asyncio.create_task(publisher.follow())
        sender = asyncio.create_task(publisher.send())
        yield
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
        if not await publisher.drain(DRAIN_S):
            unpublished = len(publisher.queue)
            log.info("stopping with %d event messages unpublished (they are on the ledger)", unpublished)
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
        node.commit_listeners.remove(publisher.note_committed)
        publisher.save_cursor()
        publisher.close()

    app.cleanup_ctx.append(publisher_ctx)
