"""The `medledger` command line (click), operator-first: keys, init, start, status."""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import logging
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from medledger import __version__
from medledger.chain.app import App
from medledger.chain.errors import StoreCorruptedError, StoreError
from medledger.chain.integrity import IntegrityReport, check_all
from medledger.chain.store import BlockStore, copy_signing_state
from medledger.chain.types import Genesis
from medledger.crypto import (
    HASH_SIZE,
    Identity,
    KeyFileError,
    load_identity,
    read_public_identity,
    save_identity,
)
from medledger.errors import MedledgerError
from medledger.health.preview import GrantPreview, ScopeNotShowableError
from medledger.health.sdk import (
    LocalRecord,
    PatientClient,
    describe_audit,
    format_audit,
    get_genesis_pin_path,
    load_genesis_pin,
    save_genesis_pin,
)
from medledger.health.types import ROLES, compute_patient_id
from medledger.network.sim import FaultKind, TimeSkew
from medledger.node.config import (
    API_TOKEN_FILE,
    APPS,
    ENV_PASSPHRASE,
    OPS_PORT_DEFAULT,
    NodeConfig,
    load_config,
    read_passphrase,
)
from medledger.node.demo import find_demo_config, run_demo
from medledger.node.genesis_file import load_genesis
from medledger.node.home import PASSPHRASE_FILE, init_home
from medledger.node.run import api_address_path, build_chain_app, run_node
from medledger.node.simulate import build_config
from medledger.node.simulate import simulate as run_simulation_summary
from medledger.node.testnet import cluster_down, cluster_up, create_testnet, read_cluster
from medledger.node.tls import CERT_FILE

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


ENV_BACKUP_PASSPHRASE = "MEDLEDGER_BACKUP_PASSPHRASE"


def _secret(passphrase_file: Path | None, env: str, prompt: str, *, confirm: bool) -> bytes:
    """From the file, else the environment variable `env`, else a prompt on a terminal."""
    if passphrase_file is not None:
        try:
            return passphrase_file.read_bytes().rstrip(b"\r\n")
        except OSError as exc:
            _fail(f"{passphrase_file}: cannot be read: {exc.strerror}")
    if env in os.environ:
        return os.environ[env].encode()
    if not sys.stdin.isatty():
        _fail(f"no passphrase for {prompt.lower()}: pass a passphrase file or set {env}")
    value: str = click.prompt(prompt, hide_input=True, confirmation_prompt=confirm)
    return value.encode()


@keys.command("export")
@click.option(
    "--key", "key_file", type=click.Path(path_type=Path, exists=True, dir_okay=False), required=True
)
@click.option("--out", "out", type=click.Path(path_type=Path, dir_okay=False), required=True)
@click.option(
    "--key-passphrase-file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help=f"The key file's passphrase (default: {ENV_PASSPHRASE}, else a prompt).",
)
@click.option(
    "--passphrase-file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help=f"The backup's passphrase (default: {ENV_BACKUP_PASSPHRASE}, else a prompt).",
)
@click.option("--force", is_flag=True, help="Overwrite an existing backup file.")
def keys_export(
    key_file: Path, out: Path, key_passphrase_file: Path | None, passphrase_file: Path | None, force: bool
) -> None:
    """Write a backup of a key file, re-encrypted under a separate backup passphrase (mode 0600).

    Keep the backup and its passphrase apart (e.g. offline media and a safe): with both, anyone
    can act as this node.
    """
    try:
        identity = load_identity(
            key_file, _secret(key_passphrase_file, ENV_PASSPHRASE, "Key passphrase", confirm=False)
        )
        backup_passphrase = _secret(passphrase_file, ENV_BACKUP_PASSPHRASE, "Backup passphrase", confirm=True)
        save_identity(out, identity, backup_passphrase, overwrite=force)
    except KeyFileError as exc:
        _fail(exc.message)
    click.echo(f"backup:      {out} (mode 0600, encrypted under the backup passphrase)")
    click.echo(f"fingerprint: {identity.public.fingerprint()}")


@keys.command("import")
@click.option("--in", "backup", type=click.Path(path_type=Path, exists=True, dir_okay=False), required=True)
@click.option("--out", "out", type=click.Path(path_type=Path, dir_okay=False), required=True)
@click.option(
    "--passphrase-file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help=f"The backup's passphrase (default: {ENV_BACKUP_PASSPHRASE}, else a prompt).",
)
@click.option(
    "--key-passphrase-file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help=f"The new key file's passphrase (default: {ENV_PASSPHRASE}, else a prompt).",
)
@click.option("--force", is_flag=True, help="Overwrite an existing key file.")
def keys_import(
    backup: Path, out: Path, passphrase_file: Path | None, key_passphrase_file: Path | None, force: bool
) -> None:
    """Restore a key file (mode 0600) from a backup made by `keys export`."""
    if out.exists() and not force:
        _fail(f"{out}: a key file already exists; refusing to overwrite it (use --force)")
    try:
        identity = load_identity(
            backup, _secret(passphrase_file, ENV_BACKUP_PASSPHRASE, "Backup passphrase", confirm=False)
        )
        key_passphrase = _secret(key_passphrase_file, ENV_PASSPHRASE, "Key passphrase", confirm=True)
        save_identity(out, identity, key_passphrase, overwrite=force)
    except KeyFileError as exc:
        _fail(exc.message)
    _print_public(out)


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
@click.option("--app", type=click.Choice(APPS), default="kv-fixture", show_default=True)
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
    try:
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
    scheme = "https" if tls else "http"
    click.echo(f"  api:        {scheme}://127.0.0.1:{api_port} (token: {result.home / API_TOKEN_FILE})")
    if tls:
        click.echo(f"  tls:        self-signed; clients pin {result.home / CERT_FILE} as their CA file")
    click.echo(f"  operations: http://127.0.0.1:{ops_port} (/livez /readyz /metrics /status)")
    click.echo(f"start it with: medledger start --home {result.home}")


@main.command()
@click.option("--home", type=click.Path(path_type=Path, file_okay=False, exists=True), required=True)
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
@click.option("--block-interval-ms", type=click.IntRange(1, 60_000), default=None)
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
        _fail(exc.message)
        raise AssertionError("unreachable") from None


def _home_token(home: Path | None) -> str | None:
    """The API token in `home`, if there is one (sent when `status --url` names the API)."""
    if home is None:
        return None
    with contextlib.suppress(OSError, MedledgerError):
        return load_config(home).api_token_file.read_text(encoding="utf-8").strip() or None
    return None


def fetch_json(url: str, timeout_s: float = 5.0, *, token: str | None = None) -> Any:
    headers = {"Accept": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - our node
    with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
        return json.loads(response.read())


@main.command()
@click.option("--home", type=click.Path(path_type=Path, file_okay=False), default=None)
@click.option(
    "--url",
    default=None,
    help="The node's operations URL (default: from --home); or its API URL, with --home for the token.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON status.")
def status(home: Path | None, url: str | None, as_json: bool) -> None:
    """Ask a running node for its status on its operations address (never opens its store)."""
    base = _ops_url(home, url)
    try:
        data = fetch_json(f"{base}/status", token=_home_token(home) if url else None)
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


# -- integrity and recovery ----------------------------------------------------------------------

#: `medledger verify` prints a progress line every this many blocks when not on a terminal.
VERIFY_PROGRESS_LINES = 10
#: Where `medledger rebuild` moves a data directory: `<data>.corrupt-<UTC timestamp>`.
CORRUPT_SUFFIX = ".corrupt-"


def _chain_app(config: NodeConfig, genesis: Genesis) -> App:
    """The application exactly as `medledger start` builds it, to replay the chain."""
    return build_chain_app(config, genesis)


def _is_locked(data_dir: Path) -> bool:
    """Whether a process holds the store's LevelDB lock (a running node), without opening the store."""
    lock = data_dir / "LOCK"
    if not lock.exists():
        return False
    with lock.open("rb+") as file:
        try:
            fcntl.lockf(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.lockf(file, fcntl.LOCK_UN)
    return False


def _print_report(report: IntegrityReport, home: Path) -> None:
    click.echo(f"store:       {report.path}")
    click.echo(f"height:      {report.height}")
    click.echo(
        f"blocks:      {report.blocks_checked} checked (hash links, tx roots, certificates, hash index)"
    )
    if report.state_checked:
        click.echo(f"replay:      {report.txs_checked} txs re-executed from genesis; tx index agrees")
        click.echo(f"state root:  {report.state_root.hex()} (equals the replayed chain's)")
    else:
        click.echo("replay:      stopped at a corrupted block; the state was not compared")
    if report.is_clean:
        click.echo("result:      clean")
        return
    for problem in report.problems:
        click.echo(f"problem:     {problem}")
    if report.problems_total > len(report.problems):
        click.echo(f"problem:     ... {report.problems_total - len(report.problems)} more")
    click.echo(f"result:      CORRUPTED ({report.problems_total} problem(s))")
    click.echo(
        f"recover it with: medledger rebuild --home {home}   (then start the node: it syncs from peers)"
    )


@main.command()
@click.option("--home", type=click.Path(path_type=Path, file_okay=False, exists=True), required=True)
def verify(home: Path) -> None:
    """Check the whole store: every block and certificate, then a replay from genesis.

    Exits 0 only when the store is clean. The node must be stopped (LevelDB allows one process).
    """
    try:
        config = load_config(home.resolve())
        genesis = load_genesis(config.genesis_file)
    except MedledgerError as exc:
        _fail(exc.message)
        return
    data_dir = config.data_dir
    if not (data_dir / "CURRENT").exists():
        _fail(f"{data_dir}: no store here (nothing to verify)")
    if _is_locked(data_dir):
        _fail(f"{data_dir} is in use: stop the node first (`medledger verify` needs the store to itself)")
    on_terminal = sys.stdout.isatty()
    step = 1

    def progress(done: int, total: int) -> None:
        if on_terminal:
            if done == total or done % 100 == 0:
                click.echo(f"\rchecking block {done}/{total}", nl=done == total)
        elif done == total or done % step == 0:
            click.echo(f"checked {done}/{total} blocks")

    try:
        store = BlockStore.open(data_dir, create=False)
    except StoreCorruptedError as exc:
        click.echo(f"store:       {data_dir}")
        click.echo(f"problem:     {exc.message}")
        click.echo("result:      CORRUPTED (LevelDB cannot open it)")
        click.echo(f"recover it with: medledger rebuild --home {config.home}")
        sys.exit(1)
    except StoreError as exc:
        _fail(exc.message)
        return
    try:
        step = max(1, store.height // VERIFY_PROGRESS_LINES)
        report = check_all(store, genesis, lambda: _chain_app(config, genesis), progress=progress)
    except StoreCorruptedError as exc:
        click.echo(f"problem:     {exc.message}")
        click.echo("result:      CORRUPTED")
        sys.exit(1)
    finally:
        store.close()
    _print_report(report, config.home)
    if not report.is_clean:
        sys.exit(1)


@main.command()
@click.option("--home", type=click.Path(path_type=Path, file_okay=False, exists=True), required=True)
@click.option("--force", is_flag=True, help="Also for a node without peers (it would start a chain anew).")
def rebuild(home: Path, force: bool) -> None:
    """Move the node's store aside (never deleted) so that the next start recovers it from peers."""
    try:
        config = load_config(home.resolve())
    except MedledgerError as exc:
        _fail(exc.message)
        return
    data_dir = config.data_dir
    if not data_dir.exists():
        _fail(f"{data_dir} does not exist: nothing to move aside; start the node to sync from peers")
    if _is_locked(data_dir):
        _fail(f"{data_dir} is in use: stop the node first")
    if not config.p2p.peers and not force:
        _fail(
            "this node has no peers in [p2p] peers, so nothing could give its chain back; "
            "restore the data directory from a backup instead (or pass --force to start anew)"
        )
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = data_dir.with_name(f"{data_dir.name}{CORRUPT_SUFFIX}{stamp}")
    for number in range(1, 1000):
        if not target.exists():
            break
        target = data_dir.with_name(f"{data_dir.name}{CORRUPT_SUFFIX}{stamp}-{number}")
    os.rename(data_dir, target)
    with contextlib.suppress(OSError):
        api_address_path(config.home).unlink(missing_ok=True)
    click.echo(f"moved {data_dir} to {target} (nothing was deleted)")
    carried = copy_signing_state(target, data_dir)
    if carried:
        click.echo(f"carried over this validator's {' and '.join(carried)} (so it never signs twice)")
    else:
        click.echo(
            "warning: no last-signed vote could be read from the old store; if this node is a "
            "validator, let it catch up before the height it was voting on is decided without it"
        )
    click.echo(
        f"next: medledger start --home {config.home} — the node starts from genesis and recovers the "
        "chain from its peers by block sync, verifying every block's certificate and re-executing it"
    )
    click.echo(f"once it has caught up, check it with: medledger verify --home {config.home} (node stopped)")


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
@click.option("--app", type=click.Choice(APPS), default="kv-fixture", show_default=True)
@click.option(
    "--roles",
    default="clinic,hospital,insurer,research",
    show_default=True,
    help="With --app health: institution roles, comma-separated, repeated over the validators.",
)
@click.option("--tls", is_flag=True, help="Give each node a self-signed certificate; APIs serve TLS.")
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
) -> None:
    """Create node homes for a local network sharing one genesis (loopback ports)."""
    cycle = [r.strip() for r in roles.split(",") if r.strip()] or ["clinic"]
    try:
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
        )
    except MedledgerError as exc:
        _fail(exc.message)
        return
    for node in nodes:
        role = "validator" if node.validator else "observer"
        click.echo(
            f"{node.name:<12} {role:<9} api :{node.api_port}  p2p :{node.p2p_port}  "
            f"ops :{node.ops_port}  {node.home}"
        )
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
            data = fetch_json(f"{entry.get('ops_url', '')}/status", timeout_s=3.0)
        except (urllib.error.URLError, OSError, ValueError):
            click.echo(f"{name:<12} {'down':>7}")
            continue
        ago = (now_ms - int(data["last_commit_time_ms"])) / 1000 if data["height"] else None
        last = f"{ago:.1f} s ago" if ago is not None else "never"
        height, round_, peers, lag = data["height"], data["round"], data["peers"], data["sync_lag_blocks"]
        click.echo(f"{name:<12} {height:>7} {round_:>5} {peers:>5} {lag:>4}  {last}")


# -- the demo -------------------------------------------------------------------------------------


@main.command()
@click.option(
    "--home",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path(".demo"),
    show_default=True,
    help="Where the demo network and the patient's key go (a previous demo's chain is replaced).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="The network description (default: configs/demo.toml of this checkout).",
)
@click.option("--once", is_flag=True, help="Exit when the scenario is done instead of running until Ctrl-C.")
@click.option(
    "--base-port",
    type=click.IntRange(0, 65000),
    default=None,
    help="Override the config's base_port (0: free ports).",
)
def demo(home: Path, config_path: Path | None, once: bool, base_port: int | None) -> None:
    """Start the four-institution demo network and run the consent story through the real APIs."""
    try:
        path = config_path or find_demo_config(Path.cwd())
        run_demo(home, path, once=once, base_port=base_port, echo=click.echo)
    except MedledgerError as exc:
        _fail(exc.message)


# -- the patient's client -----------------------------------------------------------------------

ENV_PATIENT_PASSPHRASE = "MEDLEDGER_PATIENT_PASSPHRASE"
ENV_NODE_URL = "MEDLEDGER_NODE_URL"


def _patient_passphrase(passphrase_file: Path | None, *, confirm: bool) -> bytes:
    """From --passphrase-file, else MEDLEDGER_PATIENT_PASSPHRASE, else a prompt on a terminal."""
    if passphrase_file is not None:
        return _passphrase(passphrase_file, confirm=confirm)
    if ENV_PATIENT_PASSPHRASE in os.environ:
        return os.environ[ENV_PATIENT_PASSPHRASE].encode()
    if not sys.stdin.isatty():
        _fail(f"no passphrase: pass --passphrase-file or set {ENV_PATIENT_PASSPHRASE}")
    value: str = click.prompt("Patient key passphrase", hide_input=True, confirmation_prompt=confirm)
    return value.encode()


@main.group()
@click.option(
    "--key",
    "key_file",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="The patient's key file (stays on this device).",
)
@click.option(
    "--url", default=None, help=f"Any node's API URL (default: ${ENV_NODE_URL}, else http://127.0.0.1:26657)."
)
@click.option("--passphrase-file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--for-patient", default=None, help="Act as a representative for this patient id (hex).")
@click.option(
    "--genesis",
    "genesis_hash",
    default=None,
    help="The network's genesis hash (hex) to pin; default: the one recorded beside the key file.",
)
@click.option(
    "--witness",
    "witnesses",
    multiple=True,
    help="Another node's URL, asked whether the chain goes on beyond what --url serves (repeatable).",
)
@click.option(
    "--ca-file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="Trust this CA (or the node's self-signed tls_cert.pem) for an https:// node.",
)
@click.option(
    "--insecure-http", is_flag=True, help="Allow plain http:// to a node that is not on this machine."
)
@click.pass_context
def patient(
    ctx: click.Context,
    key_file: Path,
    url: str | None,
    passphrase_file: Path | None,
    for_patient: str | None,
    genesis_hash: str | None,
    witnesses: tuple[str, ...],
    ca_file: Path | None,
    insecure_http: bool,
) -> None:
    """The patient's client: own keys, local decryption, locally signed decisions.

    It is a light client: it believes no node. It pins the network's genesis (recorded beside the
    key file by `--genesis HASH keys` or on the first `register`), verifies every block's certificate
    from there, and refuses (naming the node) any answer it cannot verify.
    """
    pinned: bytes | None = None
    if genesis_hash is not None:
        try:
            pinned = bytes.fromhex(genesis_hash)
        except ValueError:
            pinned = b""
        if len(pinned) != HASH_SIZE:
            _fail("--genesis must be a 64-hex-digit genesis hash")
    ctx.obj = {
        "key_file": key_file,
        "url": (url or os.environ.get(ENV_NODE_URL) or f"http://127.0.0.1:{DEFAULT_API_PORT}").rstrip("/"),
        "passphrase_file": passphrase_file,
        "for_patient": for_patient,
        "genesis": pinned,
        "witnesses": witnesses,
        "ca_file": ca_file,
        "insecure_http": insecure_http,
    }


def _genesis_pin(ctx: click.Context, *, first_use: bool) -> bytes | None:
    """The pinned genesis: --genesis, else the file beside the key; both must agree."""
    obj = ctx.obj
    recorded = load_genesis_pin(obj["key_file"])
    given: bytes | None = obj["genesis"]
    if given is not None and recorded is not None and given != recorded:
        _fail(
            f"--genesis differs from the genesis pinned in {get_genesis_pin_path(obj['key_file'])} "
            f"({recorded.hex()}): refusing to talk to another network"
        )
    pinned = given or recorded
    if pinned is None and not first_use:
        _fail(
            "no pinned genesis for this key: run `medledger patient register` (it records the network's "
            "genesis on first use) or pass --genesis HASH"
        )
    return pinned


def _record_pin(ctx: click.Context, client: PatientClient) -> None:
    if client.genesis_hash is not None and load_genesis_pin(ctx.obj["key_file"]) is None:
        path = save_genesis_pin(ctx.obj["key_file"], client.genesis_hash, client.chain_id)
        click.echo(f"pinned genesis {client.genesis_hash.hex()} in {path}")


def _client(ctx: click.Context, *, first_use: bool = False) -> PatientClient:
    obj = ctx.obj
    genesis_hash = _genesis_pin(ctx, first_use=first_use)
    try:
        identity = load_identity(obj["key_file"], _patient_passphrase(obj["passphrase_file"], confirm=False))
    except KeyFileError as exc:
        _fail(exc.message)
        raise AssertionError("unreachable") from None
    patient_id = None
    if obj["for_patient"] is not None:
        try:
            patient_id = bytes.fromhex(obj["for_patient"])
        except ValueError:
            _fail("--for-patient must be a hex patient id")
    try:
        return PatientClient(
            obj["url"],
            identity,
            patient_id=patient_id,
            genesis_hash=genesis_hash,
            witnesses=obj["witnesses"],
            ca_file=obj["ca_file"],
            insecure_http=obj["insecure_http"],
        )
    except MedledgerError as exc:
        _fail(exc.message)
        raise AssertionError("unreachable") from None


def _run(action: Callable[[], None]) -> None:
    try:
        action()
    except MedledgerError as exc:
        _fail(exc.message)


@patient.command("keys")
@click.option("--force", is_flag=True, help="Overwrite an existing key file.")
@click.pass_context
def patient_keys(ctx: click.Context, force: bool) -> None:
    """Create the patient's key file (passphrase-protected, mode 0600) and show the patient id."""
    obj = ctx.obj
    identity = Identity.generate()
    try:
        passphrase = _patient_passphrase(obj["passphrase_file"], confirm=True)
        save_identity(obj["key_file"], identity, passphrase, overwrite=force)
    except KeyFileError as exc:
        _fail(exc.message)
    click.echo(f"key file:    {obj['key_file']}")
    click.echo(f"patient id:  {compute_patient_id(identity.public.sign_key).hex()}")
    click.echo(f"sign key:    {identity.public.sign_key.hex()}")
    if obj["genesis"] is not None:
        try:
            path = save_genesis_pin(obj["key_file"], obj["genesis"])
        except MedledgerError as exc:
            _fail(exc.message)
            return
        click.echo(f"genesis:     {obj['genesis'].hex()} (pinned in {path})")


@patient.command("register")
@click.pass_context
def patient_register(ctx: click.Context) -> None:
    """Register the patient on the ledger (a self-signed transaction)."""

    def act() -> None:
        client = _client(ctx, first_use=True)
        client.load_genesis()  # the chain's blocks are for registered patients: genesis is public
        _record_pin(ctx, client)
        done = client.register()
        click.echo(f"registered patient {client.patient_id.hex()} at height {done.height}")

    _run(act)


@patient.command("records")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def patient_records(ctx: click.Context, as_json: bool) -> None:
    """List the patient's records (decrypted on this device)."""

    def act() -> None:
        records = _client(ctx).read_records()
        if as_json:
            click.echo(json.dumps([_local_record_json(r) for r in records], indent=2))
            return
        click.echo(f"{'record':<16} {'type':<20} {'author':<14} {'height':>6}  status")
        for item in records:
            r = item.record
            state = "decrypted" if item.decrypted is not None else f"unreadable: {item.error}"
            author = item.author_name or r.author.hex()[:12]
            click.echo(f"{r.record_id.hex()[:16]} {r.record_type:<20} {author:<14} {r.height:>6}  {state}")

    _run(act)


def _local_record_json(item: LocalRecord) -> dict[str, Any]:
    r = item.record
    return {
        "record_id": r.record_id.hex(),
        "record_type": r.record_type,
        "author": r.author.hex(),
        "author_name": item.author_name,
        "height": r.height,
        "time_ms": r.time_ms,
        "resource": item.decrypted.resource if item.decrypted is not None else None,
        "error": item.error,
    }


@patient.command("show")
@click.argument("record_id")
@click.pass_context
def patient_show(ctx: click.Context, record_id: str) -> None:
    """Show one record (id or unique id prefix), decrypted on this device."""

    def act() -> None:
        records = _client(ctx).read_records()
        matches = [r for r in records if r.record.record_id.hex().startswith(record_id.lower())]
        if not record_id or len(matches) != 1:
            _fail(f"{'no' if not matches else 'more than one'} record id starts with {record_id!r}")
        click.echo(json.dumps(_local_record_json(matches[0]), indent=2))

    _run(act)


@patient.command("inquiries")
@click.option("--all", "show_all", is_flag=True, help="Also decided inquiries.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def patient_inquiries(ctx: click.Context, show_all: bool, as_json: bool) -> None:
    """List inquiries; each open one with what granting it would share (the whole scope, in words)."""

    def act() -> None:
        client = _client(ctx)
        names = client.institution_names()
        inquiries = client.list_inquiries() if show_all else client.list_pending_inquiries()
        rows: list[dict[str, Any]] = []
        texts: list[list[str]] = []
        for i in inquiries:
            row: dict[str, Any] = {
                "inquiry_id": i.inquiry_id.hex(),
                "requester": names.get(i.requester, i.requester.hex()),
                "purpose": i.purpose,
                "reason": client.inquiry_reason(i),  # sealed on the ledger, opened on this device
                "status": i.status,
                "expires_ms": i.expires_ms,
                "height": i.height,
                "preview": None,
                "refused": None,
            }
            text: list[str] = []
            if i.status == "open":
                try:
                    preview = client.preview_grant(i.inquiry_id)
                except ScopeNotShowableError as exc:
                    row["refused"] = {"problem": exc.problem, "detail": exc.message}
                    text = [f"cannot be granted: {exc.message}"]
                else:
                    row["preview"] = preview.to_json()
                    text = preview.lines()
            rows.append(row)
            texts.append(text)
        if as_json:
            click.echo(json.dumps(rows, indent=2))
            return
        for row, text in zip(rows, texts, strict=True):
            click.echo(f"inquiry {row['inquiry_id']}  [{row['status']}]  from {row['requester']}")
            for line in text:
                click.echo(f"    {line}")

    _run(act)


@patient.command("grants")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def patient_grants(ctx: click.Context, as_json: bool) -> None:
    """List the grants the patient gave (live or revoked)."""

    def act() -> None:
        client = _client(ctx)
        names = client.institution_names()
        rows: list[dict[str, Any]] = [
            {
                "grant_id": g.grant_id.hex(),
                "grantee": names.get(g.grantee, g.grantee.hex()),
                "purpose": g.purpose,
                "records": len(g.record_keys),
                "revoked": g.is_revoked,
                "height": g.height,
            }
            for g in client.list_grants()
        ]
        if as_json:
            click.echo(json.dumps(rows, indent=2))
            return
        for row in rows:
            state = "revoked" if row["revoked"] else "live"
            click.echo(
                f"{row['grant_id'][:16]}  {state:<8} {row['grantee']:<14} {row['purpose']:<8} "
                f"{row['records']} record key(s)"
            )

    _run(act)


def _is_terminal() -> bool:
    """Whether a person can be asked (stdin is a terminal)."""
    return sys.stdin.isatty()


def _confirm_grant(preview: GrantPreview, yes: bool) -> None:
    """Show the preview; ask on a terminal unless --yes; with neither, refuse."""
    for line in preview.lines():
        click.echo(line)
    if yes:
        return
    if not _is_terminal():
        _fail("not granting: nobody confirmed (run on a terminal to be asked, or pass --yes)")
    if not click.confirm("Grant exactly this?", default=False):
        _fail("not granted")


def _decide(ctx: click.Context, inquiry_id: str, *, grant: bool, yes: bool = False) -> None:
    def act() -> None:
        client = _client(ctx)
        inquiry = client.find_inquiry(inquiry_id)
        if grant:
            preview = client.preview_grant(inquiry.inquiry_id)
            _confirm_grant(preview, yes)
            done = client.grant(inquiry.inquiry_id, preview=preview)
        else:
            done = client.deny(inquiry.inquiry_id)
        verb = "granted" if grant else "denied"
        click.echo(
            f"{verb} inquiry {inquiry.inquiry_id.hex()} at height {done.height} (tx {done.tx_id.hex()})"
        )

    _run(act)


@patient.command("grant")
@click.argument("inquiry_id")
@click.option(
    "--yes", is_flag=True, help="Do not ask for confirmation (scripts); the preview is still shown."
)
@click.pass_context
def patient_grant(ctx: click.Context, inquiry_id: str, yes: bool) -> None:
    """Grant an inquiry (id or unique prefix): shows exactly what is shared, asks, then signs that."""
    _decide(ctx, inquiry_id, grant=True, yes=yes)


@patient.command("deny")
@click.argument("inquiry_id")
@click.pass_context
def patient_deny(ctx: click.Context, inquiry_id: str) -> None:
    """Deny an inquiry (id or unique prefix)."""
    _decide(ctx, inquiry_id, grant=False)


@patient.command("revoke")
@click.argument("grant_id")
@click.pass_context
def patient_revoke(ctx: click.Context, grant_id: str) -> None:
    """Revoke a grant (id or unique prefix): no future sharing, no reads under it."""

    def act() -> None:
        client = _client(ctx)
        grant = client.find_grant(grant_id)
        done = client.revoke(grant.grant_id)
        click.echo(f"revoked grant {grant.grant_id.hex()} at height {done.height}")

    _run(act)


@patient.command("add-representative")
@click.argument("sign_key")
@click.pass_context
def patient_add_representative(ctx: click.Context, sign_key: str) -> None:
    """Name a representative (their signing key, hex) who may grant, deny and revoke."""

    def act() -> None:
        try:
            key = bytes.fromhex(sign_key)
        except ValueError:
            _fail("the representative's signing key must be hex")
            return
        done = _client(ctx).add_representative(key)
        click.echo(f"added representative {sign_key} at height {done.height}")

    _run(act)


@patient.command("audit")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def patient_audit(ctx: click.Context, as_json: bool) -> None:
    """The full audit trail: inquiries, decisions, every read (who, when, purpose, block height)."""

    def act() -> None:
        entries = describe_audit(_client(ctx))
        if as_json:
            click.echo(json.dumps(entries, indent=2))
            return
        for line in format_audit(entries):
            click.echo(line)

    _run(act)


@patient.command("verify")
@click.pass_context
def patient_verify(ctx: click.Context) -> None:
    """Verify the whole audit trail against the chain, from the pinned genesis; print what was checked."""

    def act() -> None:
        done = _client(ctx).verify()
        when = datetime.datetime.fromtimestamp(done.time_ms / 1000, tz=datetime.UTC)
        click.echo(f"node:            {done.node_url} (nothing it said was believed without proof)")
        click.echo(f"chain:           {done.chain_id}, genesis {done.genesis_hash.hex()} (pinned)")
        click.echo(
            f"blocks:          {done.blocks} verified (heights 1..{done.height}, latest "
            f"{when:%Y-%m-%d %H:%M:%S} UTC), {done.txs} txs checked against their tx roots"
        )
        click.echo(
            f"validators:      {done.validators} now, {done.validator_set_changes} set change(s) followed"
        )
        click.echo(f"your txs:        {done.patient_txs} re-executed by the ledger's rules")
        click.echo(
            f"your facts:      {done.records} record(s), {done.inquiries} inquiry(ies), "
            f"{done.grants} grant(s), {done.audit_events} audit event(s): each identical to the node's answer"
        )
        click.echo(f"inclusion proofs: {done.inclusion_proofs} audited tx(s) proven in their blocks")
        if done.witnesses:
            click.echo(f"witnesses:       {done.witnesses} other node(s) know no later block")
        else:
            click.echo("witnesses:       none (--witness URL: a node withholding new blocks would be caught)")
        click.echo("verified")

    _run(act)


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
@click.option(
    "--skew-proposer",
    type=click.Choice([s.value for s in TimeSkew]),
    default=None,
    help="The twins (or validator 0) also stamp their blocks with this Byzantine time skew.",
)
def simulate(
    nodes: int,
    seed: int,
    runs: int,
    twins: int,
    faults: tuple[str, ...],
    no_faults: bool,
    skew_proposer: str | None,
) -> None:
    """Run deterministic simulated networks and check every safety and liveness invariant."""
    if twins > nodes:
        _fail("--twins cannot exceed --nodes")
    kinds = tuple(FaultKind(k) for k in faults) if faults else tuple(FaultKind)
    skew = TimeSkew(skew_proposer) if skew_proposer is not None else None
    failures = 0
    commits = events = evidence = recorded = 0
    for run_seed in range(seed, seed + runs):
        summary = run_simulation_summary(
            build_config(
                nodes=nodes, seed=run_seed, twins=twins, kinds=kinds, faults=not no_faults, skew=skew
            )
        )
        config, result = summary.config, summary.result
        injected = ", ".join(f.kind.value for f in config.faults) or "none"
        if result is not None:
            commits += result.commits
            events += result.events
            evidence += result.evidence
            recorded += result.evidence_recorded
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
        f"{evidence} equivocations seen, {recorded} recorded on the ledger, "
        f"{failures} run(s) broke an invariant"
    )
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
