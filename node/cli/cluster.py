"""`medledger cluster`: run a local network made by `medledger testnet` as background processes.

`up` starts every node and waits for its API, `down` stops them, `status` asks each node's
operations address for its height, round, peers and last commit.
"""

from __future__ import annotations

import time
import urllib.error
from pathlib import Path

import click

from medledger.node.cli._common import fetch_json, reports_errors
from medledger.node.testnet import cluster_down, cluster_up, read_cluster

#: How long `cluster status` waits for each node's answer, in seconds.
CLUSTER_STATUS_TIMEOUT_S = 3.0

#: `--dir`: the directory `medledger testnet --out` created.
dir_option = click.option(
    "--dir", "directory", type=click.Path(path_type=Path, file_okay=False, exists=True), required=True
)


@click.group("cluster")
def cluster() -> None:
    """Run a local network created by `medledger testnet` as background processes."""


@cluster.command("up")
@dir_option
@reports_errors
def cluster_up_command(directory: Path) -> None:
    """Start every node of the testnet and wait until each serves its API."""
    record = cluster_up(directory.resolve())
    for name, entry in record.items():
        click.echo(f"{name:<12} pid {entry['pid']:<8} {entry['url']}")
    click.echo(f"logs: {directory}/<node>/node.log; stop with: medledger cluster down --dir {directory}")


@cluster.command("down")
@dir_option
def cluster_down_command(directory: Path) -> None:
    """Stop every node of the testnet (SIGTERM, then SIGKILL after a grace period)."""
    stopped = cluster_down(directory.resolve())
    click.echo(f"stopped {len(stopped)} node(s)" + (f": {', '.join(stopped)}" if stopped else ""))


@cluster.command("status")
@dir_option
@reports_errors
def cluster_status_command(directory: Path) -> None:
    """Each node's height, round, peers and last commit time."""
    record = read_cluster(directory.resolve())
    now_ms = time.time_ns() // 1_000_000
    click.echo(f"{'node':<12} {'height':>7} {'round':>5} {'peers':>5} {'lag':>4}  last commit")
    for name, entry in record.items():
        try:
            data = fetch_json(f"{entry.get('ops_url', '')}/status", timeout_s=CLUSTER_STATUS_TIMEOUT_S)
        except (urllib.error.URLError, OSError, ValueError):
            click.echo(f"{name:<12} {'down':>7}")
            continue
        ago = (now_ms - int(data["last_commit_time_ms"])) / 1000 if data["height"] else None
        last = f"{ago:.1f} s ago" if ago is not None else "never"
        height, round_, peers, lag = data["height"], data["round"], data["peers"], data["sync_lag_blocks"]
        click.echo(f"{name:<12} {height:>7} {round_:>5} {peers:>5} {lag:>4}  {last}")
