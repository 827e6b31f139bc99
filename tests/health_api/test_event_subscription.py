"""`EventSubscription` and the event page readers when the node goes away (ADR 0015).

A node restarting under a subscriber is normal operation: its ledger reads fail for a while. The
subscription must wait for it (and lose nothing, deliver nothing twice), the CLI's `--follow` must
wait for it, and a node that refuses for good or answers garbage must end them with a clear error.
The broker is a real mosquitto; the failing "node" is a real HTTP server on a free port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from aiohttp import web
from health_harness import DEADLINE_S, POLL_S
from mosquitto_harness import Mosquitto, free_port

from medledger.health.event_subscription import (
    EventPageError,
    EventSubscription,
    fetch_institution_events,
)
from medledger.node.cli.events_cmd import _print_events
from medledger.node.mqtt_acl import hash_mosquitto_password

USER, PASSWORD, TOPIC = "p-test", "secret-password", "medledger/pat/test"


def event(seq: int) -> dict[str, Any]:
    return {"seq": seq, "kind": "record.added", "height": seq >> 24}


class FlakyLedger:
    """A ledger of events whose reads fail `failures` times (a node restarting) before answering."""

    def __init__(self, events: list[dict[str, Any]], failures: int, error: Exception) -> None:
        self.events = events
        self.failures = failures
        self.error = error
        self.calls = 0

    def fetch(self, after: int) -> tuple[list[dict[str, Any]], int]:
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            raise self.error
        page = [e for e in self.events if e["seq"] > after]
        return page, max([after, *(e["seq"] for e in page)])


@pytest.fixture
def broker(tmp_path: Path) -> Any:
    (tmp_path / "acl").write_text(f"user {USER}\ntopic readwrite {TOPIC}\n", encoding="utf-8")
    (tmp_path / "passwd").write_text(f"{USER}:{hash_mosquitto_password(PASSWORD)}\n", encoding="utf-8")
    (tmp_path / "acl").chmod(0o600)
    (tmp_path / "passwd").chmod(0o600)
    mosquitto = Mosquitto(tmp_path / "mosquitto", tmp_path / "acl", tmp_path / "passwd")
    mosquitto.start()
    try:
        yield mosquitto
    finally:
        mosquitto.stop()


def subscription(broker: Mosquitto, ledger: FlakyLedger) -> EventSubscription:
    return EventSubscription(
        host="127.0.0.1", port=broker.port, username=USER, password=PASSWORD, topic=TOPIC, fetch=ledger.fetch
    )


async def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + DEADLINE_S
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(POLL_S)  # polling a condition with a deadline


@contextlib.asynccontextmanager
async def collecting(sub: EventSubscription, into: list[dict[str, Any]]) -> AsyncIterator[asyncio.Task[None]]:
    async def collect() -> None:
        async for e in sub.events():
            into.append(e)

    task = asyncio.create_task(collect())
    try:
        yield task
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_the_subscription_waits_for_an_unreachable_node_and_delivers_every_event_once(
    broker: Mosquitto,
) -> None:
    ledger = FlakyLedger(
        [event(1 << 24), event(2 << 24)], failures=3, error=ConnectionError("node restarting")
    )
    sub = subscription(broker, ledger)
    got: list[dict[str, Any]] = []
    async with collecting(sub, got) as task:
        await wait_for(lambda: len(got) == 2, f"the ledger's events after the node came back: {got}")
        assert sub.fetch_failures == 3
        # Live events from the broker go on; one the ledger already gave is not delivered again.
        async with aiomqtt.Client("127.0.0.1", broker.port, username=USER, password=PASSWORD) as publisher:
            for seq in (2 << 24, 3 << 24, 4 << 24):
                await publisher.publish(TOPIC, json.dumps(event(seq)).encode(), qos=1)
            await wait_for(lambda: len(got) == 4, f"live events: {got}")
        assert not task.done()
    assert [e["seq"] for e in got] == [1 << 24, 2 << 24, 3 << 24, 4 << 24]


async def test_a_node_that_refuses_for_good_ends_the_subscription_with_its_error(broker: Mosquitto) -> None:
    ledger = FlakyLedger([event(1 << 24)], failures=1, error=EventPageError("refused: 401 Unauthorized"))
    sub = subscription(broker, ledger)
    got: list[dict[str, Any]] = []
    async with collecting(sub, got) as task:
        await wait_for(task.done, "the subscription ended")
        with pytest.raises(EventPageError, match="401"):
            task.result()
    assert got == []
    assert ledger.calls == 1


@contextlib.asynccontextmanager
async def hostile_node(handler: Callable[[web.Request], Any]) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/v1/events", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("status", "body", "error", "message"),
    [
        (503, "{}", ConnectionError, "503"),
        (429, "{}", ConnectionError, "429"),
        (401, "{}", EventPageError, "401"),
        (200, "not json", EventPageError, "not JSON"),
        (200, '{"events": "x", "next": 1}', EventPageError, "malformed"),
        (200, '{"events": [1], "next": 1}', EventPageError, "malformed"),
        (200, '{"events": []}', EventPageError, "malformed"),
    ],
)
async def test_institution_event_pages_tell_a_pause_from_a_refusal(
    status: int, body: str, error: type[Exception], message: str
) -> None:
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.Response(status=status, text=body, content_type="application/json")

    async with hostile_node(handler) as url:
        fetch = fetch_institution_events(url, "the-token")
        with pytest.raises(error, match=message):
            await asyncio.to_thread(fetch, 0)
    assert seen == ["Bearer the-token"]


def test_an_unreachable_institution_node_is_a_connection_error() -> None:
    fetch = fetch_institution_events(f"http://127.0.0.1:{free_port()}", "token")
    with pytest.raises(ConnectionError, match="cannot reach"):
        fetch(0)
    with pytest.raises(ValueError, match="not an http"):
        fetch_institution_events("file:///etc/passwd", "token")


def test_follow_waits_for_the_node_and_says_so_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = FlakyLedger(
        [event(1 << 24), event(2 << 24)], failures=2, error=ConnectionError("cannot reach it")
    )
    cursor = tmp_path / "cursor"
    _print_events(ledger.fetch, cursor, follow=True, limit=2)
    out, err = capsys.readouterr()
    assert [json.loads(line)["seq"] for line in out.splitlines()] == [1 << 24, 2 << 24]
    assert err.count("cannot reach it") == 1
    assert "answers again" in err
    assert cursor.read_text(encoding="ascii") == str(2 << 24)
    # Without --follow an unreachable node is the command's error.
    ledger = FlakyLedger([], failures=1, error=ConnectionError("cannot reach it"))
    with pytest.raises(ConnectionError):
        _print_events(ledger.fetch, cursor, follow=False, limit=None)
