"""Running a node process: load config, keys and genesis, serve the API, stop cleanly on signals.

Shutdown order on SIGINT/SIGTERM: stop accepting connections (in-flight requests get up to
`SHUTDOWN_GRACE_S`), let the block in flight finish its synced write, close LevelDB. A second
signal is not needed and not special: the first one already bounds the whole sequence.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path

from aiohttp import web

from medledger.chain.app import App
from medledger.chain.errors import StoreCorruptedError
from medledger.chain.governance import GovernedApp
from medledger.chain.types import Genesis
from medledger.crypto import Identity, KeyFileError, load_identity
from medledger.health.app import HealthApp
from medledger.node.api import build_app
from medledger.node.config import NodeConfig, read_passphrase
from medledger.node.errors import ConfigError, NodeError
from medledger.node.fixture_app import KeyValueFixtureApp
from medledger.node.genesis_file import load_genesis
from medledger.node.node import Node, refusal_message
from medledger.node.progress import SyncProgressView

log = logging.getLogger("medledger.node")

SHUTDOWN_GRACE_S = 2.0
GIL_SWITCH_INTERVAL_S = 0.0005
API_ADDRESS_FILE = "api.json"


def make_app(name: str) -> App:
    if name == "kv-fixture":
        return KeyValueFixtureApp()
    if name == "health":
        return HealthApp()
    raise ConfigError(f"unknown app {name!r}")


def build_chain_app(config: NodeConfig, genesis: Genesis) -> App:
    """The app the chain drives: the configured one, governed on chain when networked."""
    app = make_app(config.node.app)
    if len(genesis.validators) > 1 or config.p2p.peers:
        # A networked chain governs its validator set on chain (a solo chain has no one to ask).
        app = GovernedApp(app, genesis.validators)
    return app


def load_node_identity(config: NodeConfig) -> Identity:
    try:
        return load_identity(config.key_file, read_passphrase(config))
    except KeyFileError as exc:
        raise ConfigError(exc.message) from None


def api_address_path(home: Path) -> Path:
    return home / API_ADDRESS_FILE


async def serve(node: Node, stop: asyncio.Event) -> None:
    """Start `node` and its API, run until `stop` is set, then shut both down in order."""
    await node.start()
    runner = web.AppRunner(build_app(node), access_log=None, handle_signals=False)
    try:
        await runner.setup()
        site = web.TCPSite(
            runner, node.config.api.host, node.config.api.port, shutdown_timeout=SHUTDOWN_GRACE_S
        )
        await site.start()
        port = runner.addresses[0][1] if runner.addresses else node.config.api.port
        url = f"http://{node.config.api.host}:{port}"
        address_file = api_address_path(node.config.home)
        address = {"url": url, "pid": os.getpid(), "p2p_url": node.p2p_url}
        address_file.write_text(json.dumps(address) + "\n", encoding="utf-8")
        log.info(
            "node %s serving %s (chain %s, height %d)",
            node.config.node.name,
            url,
            node.genesis.chain_id,
            node.store.height,
        )
        stopped = asyncio.create_task(stop.wait())
        failed = asyncio.create_task(node.wait_producer_failed())
        await asyncio.wait({stopped, failed}, return_when=asyncio.FIRST_COMPLETED)
        address_file.unlink(missing_ok=True)
        if failed.done():
            stopped.cancel()
            error = failed.result()
            log.error("block production failed (%s); stopping the node", type(error).__name__)
            if isinstance(error, StoreCorruptedError):
                raise NodeError(refusal_message(error.message, node.config.home, doing="stopping"))
            raise NodeError(f"block production failed: {error}")
        failed.cancel()
        log.info("shutting down: no new requests, finishing the block in flight")
    finally:
        await runner.cleanup()
        await node.stop()


def run_node(config: NodeConfig, *, genesis: Genesis | None = None) -> None:
    """Blocking entry point of `medledger start`."""
    identity = load_node_identity(config)
    genesis = genesis or load_genesis(config.genesis_file)
    node = Node(config, identity=identity, genesis=genesis, app=build_chain_app(config, genesis))
    node.on_sync_progress = SyncProgressView(sys.stderr, interactive=sys.stderr.isatty())
    # Blocks execute in worker threads while the event loop reads peers and serves the API. With
    # the default 5 ms GIL switch interval a busy worker makes the loop wait up to 5 ms for each
    # socket read (a 16 MB sync response is hundreds of reads), which starves block sync's
    # downloads; a shorter interval keeps the loop responsive (scripts/bench_recovery.py).
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(node, stop)

    asyncio.run(main())
