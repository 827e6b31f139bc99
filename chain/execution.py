"""Building and executing blocks: shared by the block producer, consensus and block sync."""

from __future__ import annotations

import dataclasses

from medledger.chain.app import App, BlockExecution
from medledger.chain.codec import encode
from medledger.chain.store import BlockStore
from medledger.chain.types import Block, Header, Tx, TxId, ValidatorSet
from medledger.chain.validation import CheckedTx, compute_tx_root


@dataclasses.dataclass(frozen=True, slots=True)
class ExecutedBlock:
    """A block with everything needed to commit it: its bytes, tx ids and execution result."""

    block: Block
    raw: bytes
    tx_ids: list[TxId]
    execution: BlockExecution


def build_block(
    *,
    store: BlockStore,
    validators: ValidatorSet,
    next_validators: ValidatorSet | None = None,
    proposer: bytes,
    round_: int,
    time_ms: int,
    txs: list[CheckedTx],
) -> Block:
    """The next block on top of `store`, carrying `txs` in order."""
    height = store.height + 1
    raw_txs = tuple(c.raw for c in txs)
    header = Header(
        chain_id=store.genesis.chain_id,
        height=height,
        round=round_,
        parent_hash=store.get_parent_hash(height),
        # Block time always moves on (strictly: `validate_block_time`), whatever our clock says.
        time_ms=max(time_ms, store.last_block_time_ms + 1),
        proposer=proposer,
        tx_count=len(raw_txs),
        tx_root=compute_tx_root(raw_txs),
        state_root=store.state_root,
        validators_hash=validators.hash(),
        next_validators_hash=(next_validators or validators).hash(),
    )
    return Block(header, raw_txs)


def execute_block(
    app: App,
    store: BlockStore,
    block: Block,
    txs: tuple[Tx, ...],
    tx_ids: list[TxId],
    *,
    raw: bytes | None = None,
) -> ExecutedBlock:
    """Run `block` through the application against the store's committed state.

    `raw`: the block's canonical encoding, when the caller holds it (a decoded block from a peer).
    """
    execution = app.apply_block(block, txs, store, store.state_root)
    if len(execution.results) != len(txs):
        raise RuntimeError("the application returned a result count that differs from the tx count")
    return ExecutedBlock(block, raw if raw is not None else encode(block), tx_ids, execution)
