"""Attacks on the ledger events (issue 11, ADR 0015): SSE streams, MQTT publishing, cursor files.

Against real health node processes (`health_node`, `run_health_node`): a representative removed on
chain while their stream is open gets nothing from the removal on and the stream ends; streams are
capped per principal and per node (429 problem+json with `Retry-After`), and a closed stream frees
its slot; hostile queries (edge cursors, huge limits, garbage `Last-Event-ID`) are refused as
problems and change nothing. `medledger events` refuses a cursor file that is not exactly one event
number (garbage, huge, negative, a directory, a link) with a one-line error, and writes its cursor
atomically without following a link planted at its path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import stat
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from click.testing import CliRunner, Result
from node_harness import (
    DEADLINE_S,
    NODE_ENV,
    PROBLEM,
    NodeClient,
    Reply,
    make_health_home,
    run_health_node,
    wait_until,
)

from medledger.crypto import Identity
from medledger.health.auth import build_authorization
from medledger.health.events import SEQ_MAX, get_seq_height
from medledger.health.sdk import PatientClient
from medledger.health.types import compute_patient_id
from medledger.node.cli import main
from medledger.node.errors import NodeError
from medledger.node.private_files import save_event_cursor
from medledger.node.process import NodeProcess

#: A synthetic FHIR R4 observation (no real person behind it).
OBSERVATION: Final[dict[str, Any]] = {
    "resourceType": "Observation",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0", "display": "Glucose"}]},
    "valueQuantity": {"value": 5.4, "unit": "mmol/L"},
}
STREAM: Final = "/v1/events/stream?heartbeat_s=1"


def signed_header(node: NodeClient, identity: Identity, target: str, patient_id: bytes) -> str:
    """A patient signer's `Authorization` for one GET of `target`, over a fresh challenge."""
    reply = node.request("POST", "/v1/auth/challenge", token=None)
    assert reply.status == 201, reply
    challenge = reply.json()
    return build_authorization(
        identity,
        chain_id=challenge["chain_id"],
        challenge=bytes.fromhex(challenge["challenge"]),
        method="GET",
        target=target,
        time_ms=time.time_ns() // 1_000_000,
        patient_id=patient_id,
    )


@dataclasses.dataclass
class Stream:
    """One open SSE response, read line by line (the socket times out at the test's deadline)."""

    connection: http.client.HTTPConnection
    response: http.client.HTTPResponse
    events: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    comments: list[str] = dataclasses.field(default_factory=list)
    ended: bool = False

    def read_message(self) -> None:
        """Read up to the end of the next message or comment (sets `ended` at the end of the body)."""
        fields: dict[str, str] = {}
        while True:
            line = self.response.readline()
            if not line:
                self.ended = True
                return
            text = line.decode().rstrip("\n")
            if text.startswith(":"):
                self.comments.append(text)
                return
            if text:
                name, _, value = text.partition(": ")
                fields[name] = value
                continue
            if fields:
                payload = json.loads(fields["data"])
                assert int(fields["id"]) == payload["seq"]
                self.events.append(payload)
                return

    def read_until(self, kind: str) -> None:
        deadline = time.monotonic() + DEADLINE_S
        while kind not in [e["kind"] for e in self.events]:
            assert not self.ended, (kind, self.events)
            assert time.monotonic() < deadline, (kind, self.events)
            self.read_message()

    def read_to_end(self) -> None:
        deadline = time.monotonic() + DEADLINE_S
        while not self.ended:
            assert time.monotonic() < deadline, (self.events, self.comments)
            self.read_message()


@contextlib.contextmanager
def open_stream(node: NodeClient, target: str, headers: dict[str, str]) -> Iterator[Stream]:
    """An event stream that must open (200); closed on exit."""
    parsed = urllib.parse.urlsplit(node.url)
    assert parsed.port is not None
    connection = http.client.HTTPConnection("127.0.0.1", parsed.port, timeout=DEADLINE_S)
    try:
        connection.request("GET", target, headers=headers)
        response = connection.getresponse()
        assert response.status == 200, (response.status, response.read())
        assert response.getheader("Content-Type", "").startswith("text/event-stream")
        stream = Stream(connection, response)
        stream.read_message()  # the opening comment: the handler holds its slot from here on
        yield stream
    finally:
        connection.close()


def token_headers(node: NodeClient) -> dict[str, str]:
    return {"Authorization": f"Bearer {node.token}"}


def add_record(node: NodeClient, patient_id: bytes) -> int:
    """The institution writes a record for the patient; the height it committed at."""
    reply = node.post_json(
        "/v1/health/institution/records?wait_ms=10000",
        {"patient_id": patient_id.hex(), "resource": OBSERVATION},
    )
    assert reply.status == 201, reply
    return int(node.status()["height"])


def test_invalid_stream_of_a_removed_representative_ends_and_sends_nothing_from_the_removal(
    health_node: tuple[NodeProcess, NodeClient],
) -> None:
    _, node = health_node
    alice, carol = Identity.generate(), Identity.generate()
    alice_client = PatientClient(node.url, alice)
    alice_client.register()
    alice_id = compute_patient_id(alice.public.sign_key)
    alice_client.add_representative(carol.public.sign_key)

    carol_headers = {"Authorization": signed_header(node, carol, STREAM, alice_id)}
    alice_headers = {"Authorization": signed_header(node, alice, STREAM, alice_id)}
    with (
        open_stream(node, STREAM, carol_headers) as carols,
        open_stream(node, STREAM, alice_headers) as alices,
    ):
        carols.read_until("representative.added")  # the representative's stream is live
        removal = alice_client.remove_representative(carol.public.sign_key)
        later = add_record(node, alice_id)
        assert later > removal.height
        # The patient's own stream goes on and carries both.
        alices.read_until("record.added")
        assert "representative.removed" in [e["kind"] for e in alices.events]
        # The removed representative's ends, with nothing from the removal's block on.
        carols.read_to_end()
        assert ": access ended" in carols.comments
        assert all(e["height"] < removal.height for e in carols.events), carols.events
        assert "record.added" not in [e["kind"] for e in carols.events]

    # And a new stream is refused them at once.
    refused = node.request(
        "GET", STREAM, headers={"Authorization": signed_header(node, carol, STREAM, alice_id)}, token=None
    )
    assert refused.status == 403, refused
    assert refused.content_type == PROBLEM


def assert_too_many(node: NodeClient, headers: dict[str, str]) -> dict[str, Any]:
    reply = node.request("GET", STREAM, headers=headers, token=None)
    assert reply.status == 429, reply
    assert reply.content_type == PROBLEM, reply
    assert int(reply.headers["retry-after"]) >= 1
    problem: dict[str, Any] = reply.json()
    assert problem["status"] == 429
    assert problem["type"] == "urn:medledger:problem:too_many_streams"
    return problem


def test_invalid_streams_beyond_the_caps_are_refused_and_a_closed_stream_frees_its_slot(
    tmp_path: Path,
) -> None:
    env = {"MEDLEDGER_API_EVENT_STREAMS_PER_PRINCIPAL": "2", "MEDLEDGER_API_EVENT_STREAMS_MAX": "3"}
    with run_health_node(make_health_home(tmp_path / "clinic"), env) as (_, node):
        alice, bob, carol = Identity.generate(), Identity.generate(), Identity.generate()
        for patient in (alice, bob, carol):
            PatientClient(node.url, patient).register()
        alice_id, bob_id, carol_id = (compute_patient_id(i.public.sign_key) for i in (alice, bob, carol))

        def signed(identity: Identity, patient_id: bytes) -> dict[str, str]:
            return {"Authorization": signed_header(node, identity, STREAM, patient_id)}

        def streams_open() -> float:
            return open_metric(node, "medledger_event_streams")

        with contextlib.ExitStack() as open_streams:
            # Each principal has two: the token's third and Alice's third are refused.
            first = open_streams.enter_context(open_stream(node, STREAM, token_headers(node)))
            open_streams.enter_context(open_stream(node, STREAM, token_headers(node)))
            assert "per principal" in assert_too_many(node, token_headers(node))["detail"]
            alices = open_streams.enter_context(open_stream(node, STREAM, signed(alice, alice_id)))
            open_streams.enter_context(open_stream(node, STREAM, signed(alice, alice_id)))
            assert "per principal" in assert_too_many(node, signed(alice, alice_id))["detail"]
            # The node serves three signed streams: Bob's first is the third, Carol's is refused.
            open_streams.enter_context(open_stream(node, STREAM, signed(bob, bob_id)))
            assert "at most 3" in assert_too_many(node, signed(carol, carol_id))["detail"]
            # Refused streams took no slot; the patients filling the node lock the token out of
            # nothing: its own two are open beside them.
            assert streams_open() == 5
            assert open_metric(node, "medledger_event_streams_refused_total") == 3
            # A closed stream frees its slot, for its principal and for the node.
            first.connection.close()
            wait_until(lambda: streams_open() == 4, "the token's slot to be freed")
            open_streams.enter_context(open_stream(node, STREAM, token_headers(node)))
            alices.connection.close()
            wait_until(lambda: streams_open() == 4, "Alice's slot to be freed")
            open_streams.enter_context(open_stream(node, STREAM, signed(carol, carol_id)))
            assert_too_many(node, signed(alice, alice_id))  # the node's three are taken again
        # Every slot comes back when the streams close.
        wait_until(lambda: streams_open() == 0, "every slot to be freed")
        with (
            open_stream(node, STREAM, signed(carol, carol_id)),
            open_stream(node, STREAM, signed(bob, bob_id)),
        ):
            assert streams_open() == 2


def open_metric(node: NodeClient, name: str) -> float:
    """One unlabelled sample of the node's /metrics."""
    for line in node.ops_get("/metrics").body.decode().splitlines():
        metric, _, value = line.partition(" ")
        if metric == name:
            return float(value)
    raise AssertionError(f"{name} is not in /metrics")


def test_invalid_event_cursors_and_limits_are_refused_and_change_nothing(
    health_node: tuple[NodeProcess, NodeClient],
) -> None:
    _, node = health_node
    before = node.get("/v1/events?after=0").json()
    bad = [
        "after=-1",
        f"after={SEQ_MAX + 1}",
        "after=18446744073709551616",
        "after=99999999999999999999",
        "after=1e3",
        "after=0x10",
        "after=%20",
        "after=",
        "after=１",  # a full-width digit: isdigit() but not ASCII
        "limit=0",
        "limit=1001",
        "limit=99999999999",
        "limit=-5",
        "limit=10.0",
    ]
    for query in bad:
        for route in ("/v1/events", "/v1/events/stream"):
            if route.endswith("stream") and query.startswith("limit"):
                continue  # the stream takes no limit
            reply = node.get(f"{route}?{urllib.parse.quote(query, safe='=')}")
            assert reply.status == 400, (route, query, reply)
            assert reply.content_type == PROBLEM, (route, query)
    for last_id in ["-1", "1e3", "abc", "9" * 21, str(SEQ_MAX + 1), "1;2", "\xb2", "1 2", "+1"]:
        reply = node.request("GET", "/v1/events/stream", headers={"Last-Event-ID": last_id}, token=None)
        assert reply.status == 401, (last_id, reply)  # no credentials: refused before parsing
        reply = node.request(
            "GET", "/v1/events/stream", headers={"Last-Event-ID": last_id, **token_headers(node)}, token=None
        )
        assert reply.status == 400, (last_id, reply)
        assert reply.content_type == PROBLEM
    # The largest number is a valid cursor: nothing after it, and the cursor stays put.
    top = node.get(f"/v1/events?after={SEQ_MAX}&limit=1000").json()
    assert top["events"] == []
    assert top["next"] == SEQ_MAX
    # A cursor past the tip returns nothing and does not move backwards.
    far = (int(node.status()["height"]) + 1000) << 24
    page = node.get(f"/v1/events?after={far}").json()
    assert page["events"] == []
    assert page["next"] == far
    assert get_seq_height(page["next"]) > page["latest_height"]
    assert node.get("/v1/events?after=0").json()["events"] == before["events"]


def run_events(home: Path) -> Result:
    return CliRunner().invoke(main, ["events", "--home", str(home)])


def assert_cli_refused(result: Result, *words: str) -> None:
    """A clear one-line error on stderr, exit 1, no traceback."""
    assert result.exit_code == 1, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: "), result.output
    for word in words:
        assert word in lines[0], result.output


def test_invalid_cursor_files_stop_the_events_command_and_are_never_read_as_zero(
    health_node: tuple[NodeProcess, NodeClient], tmp_path: Path
) -> None:
    _, node = health_node
    alice = Identity.generate()
    PatientClient(node.url, alice).register()
    add_record(node, compute_patient_id(alice.public.sign_key))
    cursor = node.home / "events.cursor"
    garbage = [
        b"",
        b"abc",
        b"-1",
        b"+5",
        b" 5",
        b"5 5",
        b"0x10",
        b"1e3",
        b"9" * 21,
        str(SEQ_MAX + 1).encode(),
        b"9" * 100_000,  # huge: refused by size, not parsed
        b"\xff\xfe5",
        "５".encode(),
    ]
    for content in garbage:
        cursor.write_bytes(content)
        assert_cli_refused(run_events(node.home), str(cursor))
        assert cursor.read_bytes() == content  # left as it was: nothing printed, nothing reset
    # A directory, and a link to a file elsewhere (even one holding a good number): refused.
    cursor.unlink()
    cursor.mkdir()
    assert_cli_refused(run_events(node.home), "not a regular file")
    cursor.rmdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("0\n")
    cursor.symlink_to(elsewhere)
    assert_cli_refused(run_events(node.home), "symbolic link")
    assert elsewhere.read_text() == "0\n"
    cursor.unlink()

    # A good cursor: the events after it are printed and the new position saved as a private file.
    cursor.write_text("0\n")
    printed = run_events(node.home)
    assert printed.exit_code == 0, (printed.output, printed.exception)
    kinds = [json.loads(line)["kind"] for line in printed.output.splitlines()]
    assert kinds == ["record.added"]
    saved = int(cursor.read_text())
    assert get_seq_height(saved) >= 1
    assert stat.S_IMODE(cursor.lstat().st_mode) == 0o600
    # Nothing new: nothing printed, the position kept.
    again = run_events(node.home)
    assert again.exit_code == 0
    assert again.output == ""


def test_invalid_links_at_a_cursor_path_are_replaced_never_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("the victim's own content\n")
    cursor = tmp_path / "events.cursor"
    cursor.symlink_to(victim)
    save_event_cursor(cursor, 42)
    assert victim.read_text() == "the victim's own content\n"
    assert not cursor.is_symlink()
    assert cursor.read_text() == "42"
    assert stat.S_IMODE(cursor.lstat().st_mode) == 0o600
    # A dangling link too (a write through it would create the file it names).
    (tmp_path / "dangling.cursor").symlink_to(tmp_path / "created-elsewhere")
    save_event_cursor(tmp_path / "dangling.cursor", 7)
    assert not (tmp_path / "created-elsewhere").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling.cursor", "events.cursor", "victim"]


def signed_events(node: NodeClient, identity: Identity, patient_id: bytes, target: str) -> Reply:
    """A patient signer's GET of `target` (acting for `patient_id`)."""
    header = signed_header(node, identity, target, patient_id)
    return node.request("GET", target, headers={"Authorization": header}, token=None)


def test_invalid_readers_see_no_event_of_a_patient_they_do_not_act_for(
    health_node: tuple[NodeProcess, NodeClient],
) -> None:
    _, node = health_node
    alice, bob, carol = Identity.generate(), Identity.generate(), Identity.generate()
    alice_client = PatientClient(node.url, alice)
    alice_client.register()
    alice_client.add_representative(carol.public.sign_key)
    PatientClient(node.url, bob).register()
    alice_id, bob_id = (compute_patient_id(i.public.sign_key) for i in (alice, bob))
    target = "/v1/events?after=0&limit=1000"

    alices = signed_events(node, alice, alice_id, target).json()["events"]
    assert [e["kind"] for e in alices] == ["patient.registered", "representative.added"]
    # The representative reads the patient's, exactly.
    assert signed_events(node, carol, alice_id, target).json()["events"] == alices
    # Another patient sees only their own; claiming Alice's id with Bob's key is refused.
    bobs = signed_events(node, bob, bob_id, target).json()["events"]
    assert [e["kind"] for e in bobs] == ["patient.registered"]
    assert not {e["seq"] for e in bobs} & {e["seq"] for e in alices}
    for identity in (bob, Identity.generate()):
        refused = signed_events(node, identity, alice_id, target)
        assert refused.status == 403, refused
        assert alice_id.hex() not in refused.body.decode()
        refused = signed_events(node, identity, alice_id, STREAM)
        assert refused.status == 403, refused
    # The institution's token sees only what concerns the institution: none of these.
    assert node.get(target).json()["events"] == []
    with open_stream(node, STREAM, token_headers(node)) as stream:
        record = add_record(node, alice_id)
        stream.read_until("record.added")
        assert [e["kind"] for e in stream.events] == ["record.added"]
        assert stream.events[0]["height"] == record
    # No payload names a patient, a key or anything but kinds and ledger ids.
    for event in alices + bobs + stream.events:
        text = json.dumps(event)
        for secret in (alice_id, bob_id, alice.public.sign_key, carol.public.sign_key, alice.public.enc_key):
            assert secret.hex() not in text


def test_invalid_heartbeats_are_refused(health_node: tuple[NodeProcess, NodeClient]) -> None:
    _, node = health_node
    for value in ("0", "301", "-1", "1e2", "", "9999", "1.5", "0x1"):
        reply = node.get(f"/v1/events/stream?heartbeat_s={urllib.parse.quote(value)}")
        assert reply.status == 400, (value, reply)
        assert reply.content_type == PROBLEM


def test_invalid_publisher_cursor_stops_the_node_at_start_with_its_name(tmp_path: Path) -> None:
    home = make_health_home(tmp_path / "clinic")
    with (home / "config.toml").open("a") as config:
        # No broker needs to listen: the cursor is read before the publisher connects.
        config.write('\n[mqtt]\nurl = "mqtt://127.0.0.1:9"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("5\n")
    for plant in ("garbage", "-1", str(SEQ_MAX + 1), "link"):
        cursor = home / "mqtt.cursor"
        if plant == "link":
            cursor.unlink()
            cursor.symlink_to(elsewhere)
        else:
            cursor.write_text(plant)
        process = NodeProcess(home, env=dict(NODE_ENV))
        process.start()
        try:
            with pytest.raises(NodeError, match="exited early") as stopped:
                process.wait_ready()
        finally:
            process.stop()
        assert "mqtt.cursor" in str(stopped.value), (plant, str(stopped.value)[-2000:])
        assert "Traceback" not in str(stopped.value), plant
    assert elsewhere.read_text() == "5\n"
