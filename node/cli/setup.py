"""`medledger init` and `medledger testnet`: create node homes (key, genesis, API token, config).

`init` makes one single-validator home; `testnet` makes a local network of homes sharing one
genesis, which `medledger cluster` then runs.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import click

from medledger.chain.limits import BLOCK_BYTES_MAX, BLOCK_TXS_MAX
from medledger.chain.types import (
    BLOCK_BYTES_CAP_MIN,
    BLOCK_OVERHEAD_BYTES_MAX,
    LEADER_WINDOW_MAX,
    ConsensusParams,
)
from medledger.health.types import RESEARCH_K_MAX, RESEARCH_K_MIN_DEFAULT, RESEARCH_K_MIN_LOWEST, ROLES
from medledger.node.cli._common import DEFAULT_API_PORT, passphrase_file_option, reports_errors
from medledger.node.config import API_TOKEN_FILE, APPS, ENV_PASSPHRASE, OPS_PORT_DEFAULT
from medledger.node.home import PASSPHRASE_FILE, init_home
from medledger.node.testnet import NEW_NETWORK_CONSENSUS_PARAMS, create_testnet
from medledger.node.tls import CERT_FILE

#: `--app`: the application a new home's chain runs.
app_option = click.option("--app", type=click.Choice(APPS), default="kv-fixture", show_default=True)


@click.command("init")
@click.option(
    "--home", type=click.Path(path_type=Path, file_okay=False), required=True, help="The node's home."
)
@click.option("--name", default="node0", show_default=True, help="This node's name.")
@click.option("--chain-id", default="medledger-local", show_default=True)
@click.option("--api-port", type=click.IntRange(0, 65535), default=DEFAULT_API_PORT, show_default=True)
@click.option("--block-interval-ms", type=click.IntRange(0, 60_000), default=0, show_default=True)
@passphrase_file_option(
    help_text=f"Protect the key with this passphrase (default: {ENV_PASSPHRASE}, else a generated one)."
)
@click.option(
    "--force", is_flag=True, help="Replace an existing config, key and genesis; moves old data aside."
)
@app_option
@click.option(
    "--role",
    type=click.Choice(sorted(ROLES)),
    default="clinic",
    show_default=True,
    help="With --app health: this node's institution role.",
)
@click.option(
    "--ops-port",
    type=click.IntRange(0, 65535),
    default=OPS_PORT_DEFAULT,
    show_default=True,
    help="Port of the operations endpoints (/livez, /readyz, /metrics, /status) on loopback.",
)
@click.option(
    "--tls", is_flag=True, help="Make a self-signed certificate (tls_cert.pem) and serve the API over TLS."
)
@click.option(
    "--tls-host",
    "tls_hosts",
    multiple=True,
    help="With --tls: another host name or IP the certificate names (repeatable; loopback always).",
)
@reports_errors
def init(
    home: Path,
    name: str,
    chain_id: str,
    api_port: int,
    block_interval_ms: int,
    passphrase_file: Path | None,
    force: bool,
    app: str,
    role: str,
    ops_port: int,
    tls: bool,
    tls_hosts: tuple[str, ...],
) -> None:
    """Create a node home: key file, single-validator genesis, API token and config.toml."""
    passphrase = passphrase_file.read_bytes().rstrip(b"\r\n") if passphrase_file else None
    if passphrase is None and ENV_PASSPHRASE in os.environ:
        passphrase = os.environ[ENV_PASSPHRASE].encode()
    result = init_home(
        home,
        name=name,
        chain_id=chain_id,
        api_port=api_port,
        block_interval_ms=block_interval_ms,
        passphrase=passphrase,
        force=force,
        app=app,
        role=role,
        tls=tls,
        tls_hosts=tls_hosts,
        ops_port=ops_port,
    )
    if passphrase_file is not None:
        target = result.home / PASSPHRASE_FILE
        shutil.copyfile(passphrase_file, target)
        os.chmod(target, 0o600)
    if result.moved_data_to is not None:
        click.echo(f"moved the old data directory to {result.moved_data_to}")
    if result.passphrase_written:
        click.echo(
            f"generated a passphrase in {result.home / PASSPHRASE_FILE} (mode 0600): "
            "move it to your secret store"
        )
    public = result.identity.public
    click.echo(f"initialised {result.home}")
    click.echo(f"  node:       {name} (validator {public.fingerprint()})")
    click.echo(f"  chain id:   {chain_id}")
    scheme = "https" if tls else "http"
    click.echo(f"  api:        {scheme}://127.0.0.1:{api_port} (token: {result.home / API_TOKEN_FILE})")
    if tls:
        click.echo(f"  tls:        self-signed; clients pin {result.home / CERT_FILE} as their CA file")
    click.echo(f"  operations: http://127.0.0.1:{ops_port} (/livez /readyz /metrics /status)")
    click.echo(f"start it with: medledger start --home {result.home}")


@click.command("testnet")
@click.option("--validators", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option("--observers", type=click.IntRange(0, 64), default=0, show_default=True)
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True)
@click.option("--chain-id", default="medledger-testnet", show_default=True)
@click.option("--block-interval-ms", type=click.IntRange(0, 60_000), default=0, show_default=True)
@click.option(
    "--base-port", type=click.IntRange(0, 65000), default=0, help="First port (default: free ports)."
)
@app_option
@click.option(
    "--roles",
    default="clinic,hospital,insurer,research",
    show_default=True,
    help="With --app health: institution roles, comma-separated, repeated over the validators.",
)
@click.option("--tls", is_flag=True, help="Give each node a self-signed certificate; APIs serve TLS.")
@click.option(
    "--research-k-min",
    type=click.IntRange(RESEARCH_K_MIN_LOWEST, RESEARCH_K_MAX),
    default=RESEARCH_K_MIN_DEFAULT,
    show_default=True,
    help="With --app health: the smallest cell any research answer may show (a network policy).",
)
@click.option(
    "--block-txs-max",
    type=click.IntRange(1, BLOCK_TXS_MAX),
    default=NEW_NETWORK_CONSENSUS_PARAMS.block_txs_max,
    show_default=True,
    help="Genesis cap: most txs in one block.",
)
@click.option(
    "--block-bytes-max",
    type=click.IntRange(BLOCK_BYTES_CAP_MIN, BLOCK_BYTES_MAX - BLOCK_OVERHEAD_BYTES_MAX),
    default=NEW_NETWORK_CONSENSUS_PARAMS.block_bytes_max,
    show_default=True,
    help="Genesis cap: most bytes of txs in one block.",
)
@click.option(
    "--leader-window",
    type=click.IntRange(0, LEADER_WINDOW_MAX),
    default=NEW_NETWORK_CONSENSUS_PARAMS.leader_window,
    show_default=True,
    help="Skip at round 0 a validator that proposed none of this many recent blocks "
    "(at least two rotations); 0 keeps plain round-robin.",
)
@click.option(
    "--v1-genesis",
    is_flag=True,
    help="Write a genesis without consensus params (chain/limits.py's caps, plain round-robin), "
    "as networks were made before these options.",
)
@reports_errors
def testnet(
    validators: int,
    observers: int,
    out: Path,
    chain_id: str,
    block_interval_ms: int,
    base_port: int,
    app: str,
    roles: str,
    tls: bool,
    research_k_min: int,
    block_txs_max: int,
    block_bytes_max: int,
    leader_window: int,
    v1_genesis: bool,
) -> None:
    """Create node homes for a local network sharing one genesis (loopback ports)."""
    cycle = [r.strip() for r in roles.split(",") if r.strip()] or ["clinic"]
    nodes = create_testnet(
        out.resolve(),
        validators=validators,
        observers=observers,
        chain_id=chain_id,
        block_interval_ms=block_interval_ms,
        base_port=base_port,
        app=app,
        roles=[cycle[i % len(cycle)] for i in range(validators)] if app == "health" else None,
        tls=tls,
        research_k_min=research_k_min,
        consensus_params=None
        if v1_genesis
        else ConsensusParams(
            block_txs_max=block_txs_max, block_bytes_max=block_bytes_max, leader_window=leader_window
        ),
    )
    for node in nodes:
        role = "validator" if node.validator else "observer"
        click.echo(
            f"{node.name:<12} {role:<9} api :{node.api_port}  p2p :{node.p2p_port}  "
            f"ops :{node.ops_port}  {node.home}"
        )
    click.echo(f"start them with: medledger cluster up --dir {out}")
