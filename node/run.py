"""Running a node process: load config, keys and genesis, serve the API, stop cleanly on signals.

Two listeners: the API on `[api] host:port` (TLS when `[api] tls_cert`/`tls_key` are set) and the
operations endpoints on `[api] ops_host:ops_port` (plain HTTP, no credentials). Both bound
addresses go to `HOME/api.json` (`url`, `ops_url`), where tools on this machine find them.

Shutdown order on SIGINT/SIGTERM: refuse new txs (a tx admitted while stopping would be lost with
the mempool), stop accepting connections (in-flight requests get up to `SHUTDOWN_GRACE_S`), let
the block in flight finish its synced write, close LevelDB. A second
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
from medledger.node.api import build_app, build_ops_app
from medledger.node.config import NodeConfig, read_passphrase
from medledger.node.errors import ConfigError, NodeError
from medledger.node.fixture_app import KeyValueFixtureApp
from medledger.node.genesis_file import load_genesis
from medledger.node.node import Node, refusal_message
from medledger.node.progress import SyncProgressView
from medledger.node.sites import start_site
from medledger.node.tls import create_server_ssl_context

log = logging.getLogger("medledger.node")

SHUTDOWN_GRACE_S = 2.0
GIL_SWITCH_INTERVAL_S = 0.0005
API_ADDRESS_FILE = "api.json"


def make_app(name: str, genesis: Genesis | None = None) -> App:
    if name == "kv-fixture":
        return KeyValueFixtureApp()
    if name == "health":
        return HealthApp(None if genesis is None else genesis.validators)
    raise ConfigError(f"unknown app {name!r}")


def build_chain_app(config: NodeConfig, genesis: Genesis) -> App:
    """The app the chain drives: the configured one, its validator set governed on chain (a
    single validator is n = 1 of the same consensus, and can vote others in)."""
    return GovernedApp(make_app(config.node.app, genesis), genesis.validators)


def load_node_identity(config: NodeConfig) -> Identity:
    try:
        return load_identity(config.key_file, read_passphrase(config))
    except KeyFileError as exc:
        raise ConfigError(exc.message) from None


def api_address_path(home: Path) -> Path:
    return home / API_ADDRESS_FILE


def _url(scheme: str, host: str, runner: web.AppRunner, default_port: int) -> str:
    port = runner.addresses[0][1] if runner.addresses else default_port
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"


async def serve(node: Node, stop: asyncio.Event) -> None:
    """Start `node`, its API and its operations endpoints; run until `stop`; shut down in order."""
    config = node.config
    ssl_context = (
        create_server_ssl_context(config.tls_cert_file, config.tls_key_file) if config.uses_tls else None
    )
    app = build_app(node)  # reads the API token: a missing token fails before the node starts
    await node.start()
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    ops_runner = web.AppRunner(build_ops_app(node), access_log=None, handle_signals=False)
    try:
        await runner.setup()
        await ops_runner.setup()
        api = config.api
        site = web.TCPSite(
            runner, api.host, api.port, shutdown_timeout=SHUTDOWN_GRACE_S, ssl_context=ssl_context
        )
        await start_site(
            site, what="API", host=api.host, port=api.port, hint="pass --api-port (or [api] port)"
        )
        await start_site(
            web.TCPSite(ops_runner, api.ops_host, api.ops_port, shutdown_timeout=SHUTDOWN_GRACE_S),
            what="operations",
            host=api.ops_host,
            port=api.ops_port,
            hint="pass --ops-port (or [api] ops_port)",
        )
        url = _url("https" if ssl_context else "http", api.host, runner, api.port)
        ops_url = _url("http", api.ops_host, ops_runner, api.ops_port)
        address_file = api_address_path(node.config.home)
        address = {"url": url, "ops_url": ops_url, "pid": os.getpid(), "p2p_url": node.p2p_url}
        address_file.write_text(json.dumps(address) + "\n", encoding="utf-8")
        log.info(
            "node %s serving %s, operations on %s (chain %s, height %d)",
            node.config.node.name,
            url,
            ops_url,
            node.genesis.chain_id,
            node.store.height,
        )
        stopped = asyncio.create_task(stop.wait())
        failed = asyncio.create_task(node.wait_producer_failed())
        await asyncio.wait({stopped, failed}, return_when=asyncio.FIRST_COMPLETED)
        node.stop_admitting()  # before the API's grace period: nothing admitted now would commit
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
        await ops_runner.cleanup()
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
