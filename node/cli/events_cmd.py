"""`medledger events` (an institution, with its node's home) and `medledger patient events` (a
patient, with their key): print ledger events as JSON lines, resuming where the last run stopped.

The position is kept in a cursor file (`HOME/events.cursor`, or `<key file>.events-cursor`),
written after each printed page (atomically, never through a link: `node.private_files`; a file
that is not exactly one event number stops the command, it is never read as 0), so `--follow`
stopped and started again prints nothing twice and skips nothing (docs/adr/0015-ledger-events.md).
Events come from `GET /v1/events`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from medledger.health.event_subscription import EventPageError, Fetch, fetch_institution_events
from medledger.node.cli._common import fail, home_option, reports_errors
from medledger.node.cli.patient import _client, _key_file, patient
from medledger.node.config import load_config
from medledger.node.private_files import PrivateFileError, load_event_cursor, save_event_cursor
from medledger.node.run import api_address_path
from medledger.node.tls import CERT_FILE

FOLLOW_POLL_S = 0.5


def _read_cursor(path: Path) -> int:
    """Where the last run stopped (0 with no cursor file yet); a bad file stops the command."""
    try:
        seq = load_event_cursor(path)
    except PrivateFileError as exc:
        fail(f"{exc.message}; fix it, or delete it to start from the beginning")
    return 0 if seq is None else seq


def _write_cursor(path: Path, seq: int) -> None:
    """Save the position atomically, never through a link planted at the cursor's path."""
    try:
        save_event_cursor(path, seq)
    except OSError as exc:
        fail(f"{path}: the cursor cannot be written: {exc.strerror}")


def _print_events(fetch: Fetch, cursor_file: Path, *, follow: bool, limit: int | None) -> None:
    after = _read_cursor(cursor_file)
    printed = 0
    away = False
    while True:
        try:
            events, cursor = fetch(after)
        except ConnectionError as exc:
            if not follow:
                raise
            if not away:  # once per outage, on stderr: the JSON lines on stdout stay clean
                click.echo(f"{exc}; trying again every {FOLLOW_POLL_S} s", err=True)
                away = True
            time.sleep(FOLLOW_POLL_S)
            continue
        if away:
            click.echo("the node answers again", err=True)
            away = False
        for event in events:
            click.echo(json.dumps(event, separators=(",", ":")))
            printed += 1
            if limit is not None and printed >= limit:
                _write_cursor(cursor_file, int(event["seq"]))
                return
        if cursor != after:
            _write_cursor(cursor_file, cursor)
        if not events and cursor == after:
            if not follow:
                return
            time.sleep(FOLLOW_POLL_S)
        after = cursor


_follow = click.option("--follow", is_flag=True, help="Keep printing events as they are committed.")
_count = click.option("--count", type=click.IntRange(1), default=None, help="Stop after this many events.")


@click.command("events")
@home_option
@_follow
@_count
@reports_errors
def events(home: Path, follow: bool, count: int | None) -> None:
    """Print the events that concern this node's institution (JSON lines), from where the last run stopped."""
    config = load_config(home)
    url = config.api_url
    address = api_address_path(home)
    if address.exists():
        url = str(json.loads(address.read_text(encoding="utf-8"))["url"])
    token = config.api_token_file.read_text(encoding="utf-8").strip()
    ca_file = str(home / CERT_FILE) if url.startswith("https:") else None
    fetch = fetch_institution_events(url, token, ca_file=ca_file)
    try:
        _print_events(fetch, home / "events.cursor", follow=follow, limit=count)
    except (ConnectionError, EventPageError) as exc:
        fail(str(exc))


@patient.command("events")
@_follow
@_count
@click.pass_context
@reports_errors
def patient_events(ctx: click.Context, follow: bool, count: int | None) -> None:
    """Print your events (JSON lines: kinds and ids), from where the last run stopped."""
    client = _client(ctx)
    cursor_file = Path(str(_key_file(ctx.obj)) + ".events-cursor")
    _print_events(lambda after: client.list_events(after, 1000), cursor_file, follow=follow, limit=count)
