"""`medledger mqtt acl`: the broker's ACL and password files for this node's events (ADR 0015).

Run on a stopped node's home (it reads the patients from the store, and the node key to derive
each patient's topic token and password). Writes into `--out`: `acl` (mosquitto `acl_file`),
`passwd` (mosquitto `password_file`), and `credentials.json` with the node's and each
institution's password (hand each institution its own; patients derive theirs). Passwords
already in `--out/credentials.json` are kept, so a rerun locks no one out.

A running node keeps the same files current itself when `[mqtt] acl_dir` names the directory
(`medledger.node.mqtt_acl.LiveBrokerAccess`); this command is for a stopped node, e.g. to have
the files before the broker first starts.
"""

from __future__ import annotations

from pathlib import Path

import click

from medledger.node.cli._common import home_option, reports_errors
from medledger.node.config import load_config
from medledger.node.mqtt_acl import ACL_FILE, CREDENTIALS_FILE, PASSWD_FILE, export_broker_access


@click.group("mqtt")
def mqtt() -> None:
    """MQTT publishing of ledger events (docs/adr/0015-ledger-events.md)."""


@mqtt.command("acl")
@home_option
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Directory to write acl, passwd and credentials.json into (passwords already there are kept).",
)
@reports_errors
def acl(home: Path, out: Path) -> None:
    """Write the mosquitto ACL and password files: each institution and patient reads only its own topics."""
    access = export_broker_access(load_config(home), out)
    click.echo(f"wrote {out / ACL_FILE}, {out / PASSWD_FILE} and {out / CREDENTIALS_FILE}")
    click.echo(f"users: 1 node, {len(access.handed_out) - 1} institutions, {access.patients} patients")
