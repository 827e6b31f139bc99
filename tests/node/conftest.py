"""Fixtures of the node tests: node homes, real node processes and in-process nodes.

Every process a fixture starts, the fixture stops (SIGTERM, then SIGKILL if it lingers), even when
the test fails; tests that kill or restart a node go through `start_node`, which tracks them all.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from medledger.crypto import Identity
from medledger.node.home import InitResult
from medledger.node.process import NodeProcess

# pytest runs with --import-mode=importlib, which leaves sys.path alone; the node tests share
# `node_harness` (a plain module beside this file, which mypy also maps to that bare name), so
# make this directory importable first.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from node_harness import (  # noqa: E402 - needs the sys.path entry above
    NODE_ENV,
    InProcessClient,
    NodeClient,
    StartNode,
    make_health_home,
    make_home,
    run_health_node,
    serve_in_process,
)


@pytest.fixture
def signer() -> Identity:
    """A client identity that signs the test transactions (not the validator's key)."""
    return Identity.generate()


@pytest.fixture
def node_home(tmp_path: Path) -> InitResult:
    return make_home(tmp_path / "n")


@pytest.fixture
def start_node() -> Iterator[StartNode]:
    """Start node processes on given homes; all of them are stopped when the test ends."""
    started: list[NodeProcess] = []

    def start(home: Path) -> tuple[NodeProcess, NodeClient]:
        process = NodeProcess(home, env=dict(NODE_ENV))
        started.append(process)
        process.start()
        url = process.wait_ready()
        chain_id = NodeClient(url, "", home, ops_url=process.ops_url).status()["chain_id"]
        return process, NodeClient(url, str(chain_id), home, ops_url=process.ops_url)

    try:
        yield start
    finally:
        for process in started:
            process.stop()


@pytest.fixture
def node_process(node_home: InitResult, start_node: StartNode) -> NodeClient:
    """A real `medledger start` process on a fresh home; stopped by `start_node` at teardown."""
    _, client = start_node(node_home.home)
    assert client.chain_id == node_home.genesis.chain_id
    return client


@pytest.fixture
async def api(node_home: InitResult) -> AsyncIterator[InProcessClient]:
    """A fresh chain served in the test's event loop (fast API tests)."""
    async with serve_in_process(node_home.home) as client:
        yield client


@pytest.fixture
def health_node(tmp_path: Path) -> Iterator[tuple[NodeProcess, NodeClient]]:
    """One health node (a clinic, a single validator) as a real process; stopped at teardown."""
    with run_health_node(make_health_home(tmp_path / "clinic")) as started:
        yield started
