"""`medledger verify` and `medledger rebuild`: check a stopped node's store, move a bad one aside.

`verify` checks every block and certificate, then replays the chain from genesis with the
application `medledger start` builds; `rebuild` moves the data directory aside (never deletes it),
keeping the validator's last-signed state, so that the next start recovers the chain from peers.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
from pathlib import Path

import click

from medledger.chain.app import App
from medledger.chain.errors import StoreCorruptedError, StoreError
from medledger.chain.integrity import IntegrityReport, check_all
from medledger.chain.store import BlockStore, copy_signing_state
from medledger.chain.types import Genesis
from medledger.errors import MedledgerError
from medledger.node.cli._common import fail, home_option
from medledger.node.config import NodeConfig, load_config
from medledger.node.genesis_file import load_genesis
from medledger.node.run import api_address_path, build_chain_app

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
        f"blocks:      {report.blocks_checked} checked (hash links, tx roots, certificates, hash index); "
        "each replayed through the rules a live node applies"
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


@click.command("verify")
@home_option
def verify(home: Path) -> None:
    """Check the whole store: every block and certificate, then a replay from genesis.

    Exits 0 only when the store is clean. The node must be stopped (LevelDB allows one process).
    """
    try:
        config = load_config(home.resolve())
        genesis = load_genesis(config.genesis_file)
    except MedledgerError as exc:
        fail(exc.message)
    data_dir = config.data_dir
    if not (data_dir / "CURRENT").exists():
        fail(f"{data_dir}: no store here (nothing to verify)")
    if _is_locked(data_dir):
        fail(f"{data_dir} is in use: stop the node first (`medledger verify` needs the store to itself)")
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
        click.echo("result:      CORRUPTED (the store cannot be opened)")
        click.echo(f"recover it with: medledger rebuild --home {config.home}")
        sys.exit(1)
    except StoreError as exc:
        fail(exc.message)
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


@click.command("rebuild")
@home_option
@click.option("--force", is_flag=True, help="Also for a node without peers (it would start a chain anew).")
def rebuild(home: Path, force: bool) -> None:
    """Move the node's store aside (never deleted) so that the next start recovers it from peers."""
    try:
        config = load_config(home.resolve())
    except MedledgerError as exc:
        fail(exc.message)
    data_dir = config.data_dir
    if not data_dir.exists():
        fail(f"{data_dir} does not exist: nothing to move aside; start the node to sync from peers")
    if _is_locked(data_dir):
        fail(f"{data_dir} is in use: stop the node first")
    if not config.p2p.peers and not force:
        fail(
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
