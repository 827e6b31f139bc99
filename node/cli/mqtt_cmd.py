"""`medledger mqtt acl`: the broker's ACL and password files for this node's events (ADR 0015).

Run on a stopped node's home (it reads the patients from the store, and the node key to derive
each patient's topic token and password). Writes into `--out`: `acl` (mosquitto `acl_file`),
`passwd` (mosquitto `password_file`), and `credentials.json` with the node's and each
institution's generated password (hand each institution its own; patients derive theirs).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from medledger.chain.codec import decode
from medledger.chain.store import BlockStore
from medledger.crypto import load_identity
from medledger.health import state as st
from medledger.health.app import decode_genesis
from medledger.health.types import STATE_VALUE_BYTES_MAX, PatientState
from medledger.node.cli._common import fail, home_option, reports_errors
from medledger.node.config import load_config, read_passphrase
from medledger.node.genesis_file import load_genesis
from medledger.node.mqtt_acl import build_broker_access

_PATIENTS_PREFIX = st.LAYOUT_PREFIX + b"pat/"


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
    help="Directory to write acl, passwd and credentials.json into.",
)
@reports_errors
def acl(home: Path, out: Path) -> None:
    """Write the mosquitto ACL and password files: each institution and patient reads only its own topics."""
    config = load_config(home)
    genesis = load_genesis(config.genesis_file)
    identity = load_identity(config.key_file, read_passphrase(config))
    institutions = [i.sign_key for i in decode_genesis(genesis.app_state).institutions]
    try:
        store = BlockStore.open(config.data_dir, create=False)
    except Exception as exc:
        fail(f"cannot open the store at {config.data_dir} (stop the node first): {exc}")
    try:
        enc_keys = [
            decode(PatientState, raw, max_bytes=STATE_VALUE_BYTES_MAX).enc_key
            for _, raw in store.iter_app(_PATIENTS_PREFIX)
        ]
    finally:
        store.close()
    access = build_broker_access(identity, genesis.chain_id, config.mqtt.topic_prefix, institutions, enc_keys)
    out.mkdir(parents=True, exist_ok=True)
    (out / "acl").write_text(access.acl, encoding="utf-8")
    for name, text in (
        ("passwd", access.passwd),
        ("credentials.json", json.dumps(access.handed_out, indent=2) + "\n"),
    ):
        path = out / name
        path.write_text(text, encoding="utf-8")
        os.chmod(path, 0o600)
    click.echo(f"wrote {out / 'acl'}, {out / 'passwd'} and {out / 'credentials.json'}")
    click.echo(f"users: 1 node, {len(institutions)} institutions, {access.patients} patients")
