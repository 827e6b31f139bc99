"""Fixtures of the integration tests: local testnets of real node processes, and fault proxies.

Every node process a fixture starts, the fixture stops at teardown (SIGTERM to all, then SIGKILL
for any that lingers), whether the test passed or failed; the tail of every node's log is printed
then, so a failing run shows what each node was doing. Proxies are closed the same way.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from medledger.crypto import Identity

# pytest runs with --import-mode=importlib, which leaves sys.path alone; the integration tests
# share `cluster_harness` (a plain module beside this file, which mypy also maps to that bare
# name), so make this directory importable first.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from cluster_harness import (  # noqa: E402 - needs the sys.path entry above
    LocalCluster,
    MakeCluster,
    ProxyHub,
    create_local_testnet,
)


@pytest.fixture
def signer() -> Identity:
    """A client identity that signs the test transactions (not a node key)."""
    return Identity.generate()


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[MakeCluster]:
    """Create a testnet under `tmp_path` (optionally reconfigure it), start it, wait until meshed."""
    clusters: list[LocalCluster] = []

    def make(
        *, validators: int = 4, observers: int = 0, configure: Callable[[LocalCluster], None] | None = None
    ) -> LocalCluster:
        cluster = create_local_testnet(
            tmp_path / f"net{len(clusters)}", validators=validators, observers=observers
        )
        clusters.append(cluster)
        if configure is not None:
            configure(cluster)
        cluster.start()
        cluster.wait_meshed()
        return cluster

    try:
        yield make
    finally:
        for cluster in clusters:
            cluster.stop_all()
            print(cluster.describe_logs())  # shown by pytest only when the test failed


@pytest.fixture
def local_cluster(cluster_factory: MakeCluster) -> LocalCluster:
    """Four validators, each a real `medledger start` process, all connected to each other."""
    return cluster_factory()


@pytest.fixture
def fault_proxies() -> Iterator[ProxyHub]:
    """TCP proxies (on 127.0.0.1) that can cut and heal the links through them; closed at teardown."""
    hub = ProxyHub()
    try:
        yield hub
    finally:
        hub.close()
