"""The `medledger` command line (click), operator-first: keys, init, start, status."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click

from medledger import __version__
from medledger.crypto import Identity, KeyFileError, load_identity, read_public_identity, save_identity
from medledger.errors import MedledgerError
from medledger.network.sim import FaultKind
from medledger.node.config import (
    ENV_PASSPHRASE,
    load_config,
    read_passphrase,
)
from medledger.node.home import PASSPHRASE_FILE, init_home
from medledger.node.run import api_address_path, run_node
from medledger.node.simulate import build_config
from medledger.node.simulate import simulate as run_simulation_summary
from medledger.node.testnet import cluster_down, cluster_up, create_testnet, read_cluster

DEFAULT_API_PORT = 26657


def _fail(message: str) -> None:
    raise click.ClickException(message)


def _passphrase(passphrase_file: Path | None, *, confirm: bool) -> bytes:
    """From --passphrase-file, else MEDLEDGER_KEY_PASSPHRASE, else a prompt on a terminal."""
    if passphrase_file is not None:
        try:
            return passphrase_file.read_bytes().rstrip(b"\r\n")
        except OSError as exc:
            _fail(f"{passphrase_file}: cannot be read: {exc.strerror}")
    if ENV_PASSPHRASE in os.environ:
        return os.environ[ENV_PASSPHRASE].encode()
    if not sys.stdin.isatty():
        _fail(f"no passphrase: pass --passphrase-file or set {ENV_PASSPHRASE}")
    value: str = click.prompt("Passphrase", hide_input=True, confirmation_prompt=confirm)
    return value.encode()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="medledger")
def main() -> None:
    """medledger: a permissioned ledger for patient data."""


# -- keys ----------------------------------------------------------------------------------


@main.group()
def keys() -> None:
    """Create and inspect identity key files (ed25519 signing + x25519 encryption)."""


@keys.command("new")
@click.option("--out", "out", type=click.Path(path_type=Path), required=True, help="Key file to write.")
@click.option("--passphrase-file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite an existing key file.")
def keys_new(out: Path, passphrase_file: Path | None, force: bool) -> None:
    """Generate a new identity and write it to a passphrase-protected key file (mode 0600)."""
    passphrase = _passphrase(passphrase_file, confirm=True)
    identity = Identity.generate()
    try:
        save_identity(out, identity, passphrase, overwrite=force)
    except KeyFileError as exc:
        _fail(exc.message)
    _print_public(out)


def _print_public(path: Path) -> None:
    public = read_public_identity(path)
    click.echo(f"key file:    {path}")
    click.echo(f"fingerprint: {public.fingerprint()}")
    click.echo(f"sign key:    {public.sign_key.hex()}")
    click.echo(f"enc key:     {public.enc_key.hex()}")


@keys.command("show")
@click.argument("key_file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--check", is_flag=True, help="Also decrypt the key file to check the passphrase.")
@click.option("--passphrase-file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
def keys_show(key_file: Path, check: bool, passphrase_file: Path | None) -> None:
    """Show a key file's public keys (no passphrase needed unless --check)."""
    try:
        _print_public(key_file)
        if check:
            load_identity(key_file, _passphrase(passphrase_file, confirm=False))
            click.echo("passphrase:  ok")
    except KeyFileError as exc:
        _fail(exc.message)


# -- init / start / status ---------------------------------------------------------------------


@main.command()
@click.option(
    "--home", type=click.Path(path_type=Path, file_okay=False), required=True, help="The node's home."
)
@click.option("--name", default="node0", show_default=True, help="This node's name.")
@click.option("--chain-id", default="medledger-local", show_default=True)
@click.option("--api-port", type=click.IntRange(0, 65535), default=DEFAULT_API_PORT, show_default=True)
@click.option("--block-interval-ms", type=click.IntRange(1, 60_000), default=200, show_default=True)
@click.option(
    "--passphrase-file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help=f"Protect the key with this passphrase (default: {ENV_PASSPHRASE}, else a generated one).",
)
@click.option(
    "--force", is_flag=True, help="Replace an existing config, key and genesis; moves old data aside."
)
def init(
    home: Path,
    name: str,
    chain_id: str,
    api_port: int,
    block_interval_ms: int,
    passphrase_file: Path | None,
    force: bool,
) -> None:
    """Create a node home: key file, single-validator genesis and config.toml."""
    passphrase = passphrase_file.read_bytes().rstrip(b"\r\n") if passphrase_file else None
    if passphrase is None and ENV_PASSPHRASE in os.environ:
        passphrase = os.environ[ENV_PASSPHRASE].encode()
    try:
        result = init_home(
            home,
            name=name,
            chain_id=chain_id,
            api_port=api_port,
            block_interval_ms=block_interval_ms,
            passphrase=passphrase,
            force=force,
        )
    except MedledgerError as exc:
        _fail(exc.message)
        return
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
    click.echo(f"  api:        http://127.0.0.1:{api_port}")
    click.echo(f"start it with: medledger start --home {result.home}")


@main.command()
@click.option("--home", type=click.Path(path_type=Path, file_okay=False, exists=True), required=True)
@click.option("--api-host", default=None, help="Override [api] host.")
@click.option(
    "--api-port", type=click.IntRange(0, 65535), default=None, help="Override [api] port (0: any free port)."
)
@click.option("--block-interval-ms", type=click.IntRange(1, 60_000), default=None)
def start(home: Path, api_host: str | None, api_port: int | None, block_interval_ms: int | None) -> None:
    """Run the node in the foreground until SIGINT/SIGTERM."""
    overrides: dict[str, dict[str, Any]] = {
        "api": {"host": api_host, "port": api_port},
        "consensus": {"block_interval_ms": block_interval_ms},
    }
    try:
        config = load_config(home.resolve(), overrides=overrides)
        logging.basicConfig(
            level=config.node.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
        read_passphrase(config)  # fail early with a clear message
        run_node(config)
    except MedledgerError as exc:
        _fail(exc.message)


def _api_url(home: Path | None, url: str | None) -> str:
    if url:
        return url.rstrip("/")
    if home is None:
        return f"http://127.0.0.1:{DEFAULT_API_PORT}"
    address = api_address_path(home)
    if address.exists():
        try:
            return str(json.loads(address.read_text(encoding="utf-8"))["url"])
        except (ValueError, KeyError, OSError):
            pass
    try:
        return load_config(home).api_url
    except MedledgerError as exc:
        _fail(exc.message)
        raise AssertionError("unreachable") from None


def fetch_json(url: str, timeout_s: float = 5.0) -> Any:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310 - our node
    with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
        return json.loads(response.read())


@main.command()
@click.option("--home", type=click.Path(path_type=Path, file_okay=False), default=None)
@click.option("--url", default=None, help="The node's API URL (default: from --home).")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON status.")
def status(home: Path | None, url: str | None, as_json: bool) -> None:
    """Ask a running node for its status over HTTP (never opens its store)."""
    base = _api_url(home, url)
    try:
        data = fetch_json(f"{base}/status")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        _fail(f"cannot reach the node at {base}: {getattr(exc, 'reason', exc)}")
        return
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


# -- local networks ------------------------------------------------------------------------------


@main.command()
@click.option("--validators", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option("--observers", type=click.IntRange(0, 64), default=0, show_default=True)
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True)
@click.option("--chain-id", default="medledger-testnet", show_default=True)
@click.option("--block-interval-ms", type=click.IntRange(1, 60_000), default=100, show_default=True)
@click.option(
    "--base-port", type=click.IntRange(0, 65000), default=0, help="First port (default: free ports)."
)
def testnet(
    validators: int, observers: int, out: Path, chain_id: str, block_interval_ms: int, base_port: int
) -> None:
    """Create node homes for a local network sharing one genesis (loopback ports)."""
    try:
        nodes = create_testnet(
            out.resolve(),
            validators=validators,
            observers=observers,
            chain_id=chain_id,
            block_interval_ms=block_interval_ms,
            base_port=base_port,
        )
    except MedledgerError as exc:
        _fail(exc.message)
        return
    for node in nodes:
        role = "validator" if node.validator else "observer"
        click.echo(f"{node.name:<12} {role:<9} api :{node.api_port}  p2p :{node.p2p_port}  {node.home}")
    click.echo(f"start them with: medledger cluster up --dir {out}")


@main.group()
def cluster() -> None:
    """Run a local network created by `medledger testnet` as background processes."""


@cluster.command("up")
@click.option(
    "--dir", "directory", type=click.Path(path_type=Path, file_okay=False, exists=True), required=True
)
def cluster_up_command(directory: Path) -> None:
    """Start every node of the testnet and wait until each serves its API."""
    try:
        record = cluster_up(directory.resolve())
    except MedledgerError as exc:
        _fail(exc.message)
        return
    for name, entry in record.items():
        click.echo(f"{name:<12} pid {entry['pid']:<8} {entry['url']}")
    click.echo(f"logs: {directory}/<node>/node.log; stop with: medledger cluster down --dir {directory}")


@cluster.command("down")
@click.option(
    "--dir", "directory", type=click.Path(path_type=Path, file_okay=False, exists=True), required=True
)
def cluster_down_command(directory: Path) -> None:
    """Stop every node of the testnet (SIGTERM, then SIGKILL after a grace period)."""
    stopped = cluster_down(directory.resolve())
    click.echo(f"stopped {len(stopped)} node(s)" + (f": {', '.join(stopped)}" if stopped else ""))


@cluster.command("status")
@click.option(
    "--dir", "directory", type=click.Path(path_type=Path, file_okay=False, exists=True), required=True
)
def cluster_status_command(directory: Path) -> None:
    """Each node's height, round, peers and last commit time."""
    try:
        record = read_cluster(directory.resolve())
    except MedledgerError as exc:
        _fail(exc.message)
        return
    now_ms = time.time_ns() // 1_000_000
    click.echo(f"{'node':<12} {'height':>7} {'round':>5} {'peers':>5} {'lag':>4}  last commit")
    for name, entry in record.items():
        try:
            data = fetch_json(f"{entry['url']}/status", timeout_s=3.0)
        except (urllib.error.URLError, OSError, ValueError):
            click.echo(f"{name:<12} {'down':>7}")
            continue
        ago = (now_ms - int(data["last_commit_time_ms"])) / 1000 if data["height"] else None
        last = f"{ago:.1f} s ago" if ago is not None else "never"
        height, round_, peers, lag = data["height"], data["round"], data["peers"], data["sync_lag_blocks"]
        click.echo(f"{name:<12} {height:>7} {round_:>5} {peers:>5} {lag:>4}  {last}")


@main.command()
@click.option("--nodes", type=click.IntRange(1, 31), default=4, show_default=True, help="Validators.")
@click.option("--seed", type=click.IntRange(0, 2**63), default=1, show_default=True, help="First seed.")
@click.option(
    "--runs", type=click.IntRange(1, 100_000), default=1, show_default=True, help="Seeds seed..seed+runs-1."
)
@click.option(
    "--twins", type=click.IntRange(0, 31), default=0, show_default=True, help="Byzantine twin validators."
)
@click.option(
    "--fault",
    "faults",
    type=click.Choice([k.value for k in FaultKind]),
    multiple=True,
    help="Fault kinds to draw from (repeatable; default: all).",
)
@click.option("--no-faults", is_flag=True, help="A fault-free run.")
def simulate(nodes: int, seed: int, runs: int, twins: int, faults: tuple[str, ...], no_faults: bool) -> None:
    """Run deterministic simulated networks and check every safety and liveness invariant."""
    if twins > nodes:
        _fail("--twins cannot exceed --nodes")
    kinds = tuple(FaultKind(k) for k in faults) if faults else tuple(FaultKind)
    failures = 0
    commits = events = evidence = 0
    for run_seed in range(seed, seed + runs):
        summary = run_simulation_summary(
            build_config(nodes=nodes, seed=run_seed, twins=twins, kinds=kinds, faults=not no_faults)
        )
        config, result = summary.config, summary.result
        injected = ", ".join(f.kind.value for f in config.faults) or "none"
        if result is not None:
            commits += result.commits
            events += result.events
            evidence += result.evidence
            heights = sorted(set(result.heights.values()))
            line = (
                f"seed {run_seed}: heights {heights}, {result.commits} commits, {result.events} events "
                f"(invariants checked after each), evidence {result.evidence}, faults [{injected}]"
            )
            if not result.live and config.expect_liveness:
                line += ", NOT LIVE"
            click.echo(line)
        if summary.failure is not None:
            failures += 1
            click.echo(f"seed {run_seed}: INVARIANT BROKEN\n{summary.failure}", err=True)
    click.echo(
        f"{runs} run(s), {nodes} validators, {twins} twin(s): {commits} commits, {events} events, "
        f"{evidence} equivocations recorded, {failures} run(s) broke an invariant"
    )
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
