"""A subscription to ledger events that hides the MQTT/ledger choice (docs/adr/0015-ledger-events.md).

Live events come from the broker; whatever the broker did not deliver (it was down, the node's
queue dropped it, the subscriber was away) comes from the ledger (`GET /v1/events`, through the
`fetch` function given). Events are yielded in chain order, each exactly once: an event is
delivered only if its number is above the last one delivered.

Why nothing is lost: on every (re)connection the subscription first subscribes, then reads the
ledger after its last number. An event committed before that read is in it; one committed after
it is published after the subscription existed, so the broker delivers it. While the broker is
unreachable, the ledger is read at every retry, so events keep flowing (late, not lost). While the
node is unreachable (restarting, say), `fetch` raises a `transient` error (by default any
`OSError`, which the SDK's `NodeUnreachableError` is): the read is tried again with backoff and
live messages wait in the client's queue meanwhile. Any other error from `fetch` (a node that lies,
say) ends the subscription with that error.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

import aiomqtt

#: A page of events after a number, and the number to continue from (`PatientClient.list_events`).
Fetch = Callable[[int], tuple[list[dict[str, Any]], int]]

BACKOFF_S_MIN: Final = 0.1
BACKOFF_S_MAX: Final = 5.0
#: Largest event message accepted from the broker (a JSON array of up to 200 events of a block,
#: a few hundred bytes each).
MESSAGE_BYTES_MAX: Final = 256 * 1024
#: Largest event page accepted from a node (1,000 events of a few hundred bytes each).
PAGE_BYTES_MAX: Final = 4 * 1024 * 1024
PAGE_LIMIT: Final = 1000
#: Statuses after which the same read may well succeed: the node is starting or overloaded.
RETRY_STATUSES: Final = frozenset({429, 502, 503, 504})


class EventPageError(Exception):
    """A node refused an event page for good (a wrong token, say) or sent a malformed one."""


def fetch_institution_events(
    url: str, token: str, *, ca_file: str | None = None, timeout_s: float = 10.0
) -> Fetch:
    """An institution's `fetch`: `GET /v1/events` on its node with the API token.

    Unreachable, 429 and 5xx raise `ConnectionError` (an `OSError`: `EventSubscription` tries
    again); any other refusal or a malformed page raises `EventPageError`.
    """
    base = url.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise ValueError(f"{url!r} is not an http(s) URL")
    context = ssl.create_default_context(cafile=ca_file) if base.startswith("https://") else None

    def fetch(after: int) -> tuple[list[dict[str, Any]], int]:
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
            f"{base}/v1/events?after={int(after)}&limit={PAGE_LIMIT}",
            headers={"Accept": "application/json", "Authorization": f"Bearer {token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout_s, context=context) as response:  # noqa: S310
                body = json.loads(response.read(PAGE_BYTES_MAX))
        except urllib.error.HTTPError as exc:
            if exc.code in RETRY_STATUSES:
                raise ConnectionError(f"{base}: {exc.code} {exc.reason}") from None
            raise EventPageError(f"{base} refused the event page: {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise ConnectionError(f"cannot reach {base}: {getattr(exc, 'reason', exc)}") from None
        except ValueError:
            raise EventPageError(f"{base} sent an event page that is not JSON") from None
        try:
            events, cursor = body["events"], int(body["next"])
        except (KeyError, TypeError, ValueError):
            raise EventPageError(f"{base} sent a malformed event page") from None
        if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
            raise EventPageError(f"{base} sent a malformed event page")
        return events, cursor

    return fetch


class EventSubscription:
    """Events for one audience: `topic` on the broker at `host:port`, gaps from `fetch`."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        username: str,
        password: str,
        topic: str,
        fetch: Fetch,
        after: int = 0,
        identifier: str | None = None,
        transient: tuple[type[Exception], ...] = (OSError,),
    ) -> None:
        self.host, self.port = host, port
        self.username, self.password = username, password
        self.topic = topic
        self.fetch = fetch
        #: The number of the last event delivered (resume from it after a restart).
        self.last = after
        self._cursor = after
        self.identifier = identifier
        self.transient = transient
        #: How many times the broker connection was (re)established.
        self.connections = 0
        #: How many ledger reads failed with a transient error (each was tried again).
        self.fetch_failures = 0
        #: True while subscribed and caught up with the ledger: what is committed now arrives live.
        self.listening = False
        #: Events delivered from the broker (the others were filled from the ledger).
        self.from_broker = 0
        #: Whether the last event yielded came from the broker (False: from the ledger).
        self.last_from_broker = False

    def _accept(self, event: Any, *, from_broker: bool) -> dict[str, Any] | None:
        if not isinstance(event, dict) or not isinstance(event.get("seq"), int):
            return None
        if event["seq"] <= self.last:
            return None  # a duplicate (QoS 1 is at least once) or already filled from the ledger
        self.last = event["seq"]
        self.last_from_broker = from_broker
        if from_broker:
            self.from_broker += 1
        return event

    async def _fill(self) -> AsyncIterator[dict[str, Any]]:
        """Everything on the ledger after the last event delivered, up to the tip."""
        self._cursor = max(self._cursor, self.last)
        while True:
            page, cursor = await asyncio.to_thread(self.fetch, self._cursor)
            for event in page:
                accepted = self._accept(event, from_broker=False)
                if accepted is not None:
                    yield accepted
            if cursor <= self._cursor:
                return
            self._cursor = cursor
            if not page:
                # An empty page moved past empty blocks; the tip is reached when it stops moving.
                continue

    async def _fill_until_done(self) -> AsyncIterator[dict[str, Any]]:
        """`_fill`, tried again with backoff while the node is unreachable (nothing delivered twice)."""
        backoff = BACKOFF_S_MIN
        while True:
            try:
                async for event in self._fill():
                    yield event
                return
            except self.transient:
                self.fetch_failures += 1
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_S_MAX)

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """The events, forever, in chain order, exactly once."""
        backoff = BACKOFF_S_MIN
        while True:
            try:
                async with aiomqtt.Client(
                    self.host,
                    self.port,
                    username=self.username,
                    password=self.password,
                    identifier=self.identifier,
                ) as client:
                    await client.subscribe(self.topic, qos=1)
                    self.connections += 1
                    backoff = BACKOFF_S_MIN
                    async for event in self._fill_until_done():
                        yield event
                    self.listening = True
                    async for message in client.messages:
                        payload = message.payload
                        if not isinstance(payload, bytes | bytearray) or len(payload) > MESSAGE_BYTES_MAX:
                            continue
                        try:
                            decoded = json.loads(payload)
                        except ValueError:
                            continue
                        # A message is a JSON array of one block's events for this topic.
                        for item in decoded if isinstance(decoded, list) else (decoded,):
                            accepted = self._accept(item, from_broker=True)
                            if accepted is not None:
                                yield accepted
            except aiomqtt.MqttError:
                self.listening = False
                # The broker is away: what it would have carried comes from the ledger meanwhile
                # (if the node is away too, the next round tries again).
                try:
                    async for event in self._fill():
                        yield event
                except self.transient:
                    self.fetch_failures += 1
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_S_MAX)
