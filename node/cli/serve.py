"""`medledger start` and `medledger status`: run a node in the foreground, ask a running one.

`status` talks to the node's operations address over HTTP and never opens its store, so it works
while the node runs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import urllib.error
from pathlib import Path
from typing import Any

import click

from medledger.errors import MedledgerError
from medledger.node.cli._common import fail, fetch_json, home_option, json_option, reports_errors
from medledger.node.config import OPS_PORT_DEFAULT, load_config, read_passphrase
from medledger.node.run import api_address_path, run_node


@click.command("start")
@home_option
@click.option("--api-host", default=None, help="Override [api] host.")
@click.option(
    "--api-port", type=click.IntRange(0, 65535), default=None, help="Override [api] port (0: any free port)."
)
@click.option("--ops-host", default=None, help="Override [api] ops_host.")
@click.option(
    "--ops-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Override [api] ops_port (0: any free port).",
)
@click.option("--block-interval-ms", type=click.IntRange(0, 60_000), default=None)
@reports_errors
def start(
    home: Path,
    api_host: str | None,
    api_port: int | None,
    ops_host: str | None,
    ops_port: int | None,
    block_interval_ms: int | None,
) -> None:
    """Run the node in the foreground until SIGINT/SIGTERM."""
    overrides: dict[str, dict[str, Any]] = {
        "api": {"host": api_host, "port": api_port, "ops_host": ops_host, "ops_port": ops_port},
        "consensus": {"block_interval_ms": block_interval_ms},
    }
    config = load_config(home.resolve(), overrides=overrides)
    logging.basicConfig(
        level=config.node.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    read_passphrase(config)  # fail early with a clear message
    try:
        run_node(config)
    except MedledgerError as exc:  # e.g. a port in use: one line, not a traceback
        fail(exc.message)


def _ops_url(home: Path | None, url: str | None) -> str:
    """The operations address: --url, else the running node's `api.json`, else its config."""
    if url:
        return url.rstrip("/")
    if home is None:
        return f"http://127.0.0.1:{OPS_PORT_DEFAULT}"
    address = api_address_path(home)
    if address.exists():
        try:
            return str(json.loads(address.read_text(encoding="utf-8"))["ops_url"])
        except (ValueError, KeyError, OSError):
            pass
    try:
        return load_config(home).ops_url
    except MedledgerError as exc:
        fail(exc.message)


def _home_token(home: Path | None) -> str | None:
    """The API token in `home`, if there is one (sent when `status --url` names the API)."""
    if home is None:
        return None
    with contextlib.suppress(OSError, MedledgerError):
        return load_config(home).api_token_file.read_text(encoding="utf-8").strip() or None
    return None


@click.command("status")
@click.option("--home", type=click.Path(path_type=Path, file_okay=False), default=None)
@click.option(
    "--url",
    default=None,
    help="The node's operations URL (default: from --home); or its API URL, with --home for the token.",
)
@json_option("Print the raw JSON status.")
def status(home: Path | None, url: str | None, as_json: bool) -> None:
    """Ask a running node for its status on its operations address (never opens its store)."""
    base = _ops_url(home, url)
    try:
        data = fetch_json(f"{base}/status", token=_home_token(home) if url else None)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        fail(f"cannot reach the node at {base}: {getattr(exc, 'reason', exc)}")
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"node:        {data['node']} ({base})")
    click.echo(f"chain:       {data['chain_id']}")
    click.echo(f"height:      {data['height']}")
    click.echo(f"last block:  {data['latest_block_hash'][:16]}… at {data['latest_block_time_ms']} ms")
    click.echo(f"state root:  {data['state_root'][:16]}…")
    click.echo(f"mempool:     {data['mempool']['txs']} txs, {data['mempool']['bytes']} bytes")
    click.echo(f"validator:   {'yes' if data['validator'] else 'no'} ({data['validators']} in set)")
