"""Prometheus metrics, one registry per node (so several nodes can live in one test process).

Labels never carry ids, keys or anything patient-related: only routes, statuses and outcomes.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

# `*_created` timestamp series add nothing a scraper needs and double the exposition size.
disable_created_metrics()  # type: ignore[no-untyped-call]


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.height = Gauge("medledger_height", "Latest committed block height.", registry=r)
        self.blocks_committed = Counter(
            "medledger_blocks_committed", "Blocks committed by this node.", registry=r
        )
        self.txs_committed = Counter(
            "medledger_txs_committed", "Transactions committed by this node.", registry=r
        )
        self.txs_submitted = Counter(
            "medledger_txs_submitted",
            "Transactions submitted to the API, by outcome.",
            ["outcome"],
            registry=r,
        )
        self.mempool_txs = Gauge("medledger_mempool_txs", "Transactions pending in the mempool.", registry=r)
        self.mempool_bytes = Gauge("medledger_mempool_bytes", "Bytes pending in the mempool.", registry=r)
        self.block_commit_seconds = Histogram(
            "medledger_block_commit_seconds",
            "Time from starting a height to its block durably written (blocks decided by consensus).",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.block_txs = Histogram(
            "medledger_block_txs",
            "Transactions per committed block.",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 20000),
            registry=r,
        )
        self.syncing = Gauge(
            "medledger_syncing", "1 while block sync catches up from far behind, else 0.", registry=r
        )
        self.sync_target_height = Gauge(
            "medledger_sync_target_height",
            "Height block sync aims for (f+1 validators claim it).",
            registry=r,
        )
        self.peers = Gauge("medledger_peers", "Connected peer links.", registry=r)
        self.peers_dropped = Gauge(
            "medledger_peers_dropped",
            "Peer links dropped for breaking the protocol (a bad frame, signature or synced block).",
            registry=r,
        )
        self.event_streams = Gauge(
            "medledger_event_streams", "Event streams (SSE) open on the API.", registry=r
        )
        self.event_streams_refused = Counter(
            "medledger_event_streams_refused",
            "Event streams refused for a full cap (per principal or per node).",
            registry=r,
        )
        self.api_requests = Counter(
            "medledger_api_requests", "API requests by route and status.", ["route", "status"], registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
