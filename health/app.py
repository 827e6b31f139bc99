"""`HealthApp`: the health application as the chain's `App` (DESIGN.md §2, §4).

The chain decides the order of transactions and the block time; this module turns a block into
state writes by running each tx through `rules.process_tx` on a scratch overlay, keeping the writes
of the txs that pass and recording a `TxResult` naming the rule for those that fail. Nothing here
reads a clock, draws randomness or depends on which node runs it, so every node computes the same
writes and the same state root.

State root: a hash chain over each block's writes, sorted by key (like the fixture app), so it
commits to the whole history of state changes without needing a Merkle tree over the state:
    root_0 = H(GENESIS_DOMAIN || H(sorted genesis writes))
    root_h = H(BLOCK_DOMAIN || root_{h-1} || H(sorted writes of block h))
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from medledger.chain import governance
from medledger.chain.app import TX_OK, BlockExecution, OverlayState, StateReader, TxResult
from medledger.chain.codec import decode, encode, encode_primitive
from medledger.chain.errors import CodecError, TxRejectedError
from medledger.chain.types import Block, Genesis, Tx, TxId, ValidatorSet, compute_tx_id
from medledger.crypto import digest
from medledger.health import state as st
from medledger.health.errors import InvalidGenesisError
from medledger.health.membership_types import MEMBERSHIP_KINDS
from medledger.health.rules import TxContext, process_tx
from medledger.health.types import (
    RESEARCH_K_MAX,
    RESEARCH_K_MIN_DEFAULT,
    RESEARCH_K_MIN_LOWEST,
    STATE_LAYOUT_V1,
    HealthGenesis,
    HealthGenesisV1,
    HealthGenesisWithPolicy,
    PatientState,
    compute_patient_id,
)

GENESIS_ROOT_DOMAIN: Final = b"medledger/health/state-root/genesis/v1\x00"
BLOCK_ROOT_DOMAIN: Final = b"medledger/health/state-root/block/v1\x00"


def encode_genesis(genesis: HealthGenesis, *, research_k_min: int = RESEARCH_K_MIN_DEFAULT) -> bytes:
    """The `Genesis.app_state` bytes that register `genesis.institutions` under `genesis.layout`,
    with the network's research small-cell threshold `research_k_min`.

    A layout-1 genesis is encoded exactly as before layouts existed (`HealthGenesisV1`), so an old
    chain's genesis, its hash and its state roots stay what they were; the policy struct
    (`HealthGenesisWithPolicy`) is used only for a k other than the default, so a genesis that sets
    none keeps its bytes too.
    """
    if research_k_min != RESEARCH_K_MIN_DEFAULT:
        if not RESEARCH_K_MIN_LOWEST <= research_k_min <= RESEARCH_K_MAX:
            raise InvalidGenesisError(
                f"the research small-cell threshold must be from {RESEARCH_K_MIN_LOWEST} to {RESEARCH_K_MAX}"
            )
        if genesis.layout == STATE_LAYOUT_V1:
            raise InvalidGenesisError("a layout-1 genesis cannot set network policies")
        return encode(HealthGenesisWithPolicy(genesis.institutions, genesis.layout, research_k_min))
    if genesis.layout == STATE_LAYOUT_V1:
        return encode(HealthGenesisV1(genesis.institutions))
    return encode(genesis)


def decode_genesis(app_state: bytes) -> HealthGenesis:
    """Parse `Genesis.app_state`; empty bytes mean a layout-1 network with no institutions yet."""
    return decode_genesis_with_policy(app_state)[0]


def decode_genesis_with_policy(app_state: bytes) -> tuple[HealthGenesis, int]:
    """`decode_genesis`, and the network's research small-cell threshold the genesis sets."""
    if not app_state:
        return HealthGenesis((), STATE_LAYOUT_V1), RESEARCH_K_MIN_DEFAULT
    k_min = RESEARCH_K_MIN_DEFAULT
    try:
        genesis = decode(HealthGenesis, app_state, max_bytes=len(app_state))
    except CodecError as exc:
        try:
            with_policy = decode(HealthGenesisWithPolicy, app_state, max_bytes=len(app_state))
        except CodecError:
            try:
                old = decode(HealthGenesisV1, app_state, max_bytes=len(app_state))
            except CodecError:
                raise InvalidGenesisError(f"health genesis does not decode: {exc.message}") from None
            genesis = HealthGenesis(old.institutions, STATE_LAYOUT_V1)
        else:
            if with_policy.research_k_min == RESEARCH_K_MIN_DEFAULT:  # one genesis, one encoding
                raise InvalidGenesisError("health genesis sets the default policy explicitly") from None
            genesis = HealthGenesis(with_policy.institutions, with_policy.layout)
            k_min = with_policy.research_k_min
    keys = [i.sign_key for i in genesis.institutions]
    if len(set(keys)) != len(keys):
        raise InvalidGenesisError("health genesis registers one institution key twice")
    return genesis, k_min


def compute_writes_digest(writes: Mapping[bytes, bytes | None]) -> bytes:
    return digest(encode_primitive(sorted(([k, v] for k, v in writes.items()), key=lambda kv: kv[0])))


def compute_genesis_root(writes: Mapping[bytes, bytes | None]) -> bytes:
    return digest(GENESIS_ROOT_DOMAIN + compute_writes_digest(writes))


def compute_block_root(parent_root: bytes, writes: Mapping[bytes, bytes | None]) -> bytes:
    return digest(BLOCK_ROOT_DOMAIN + parent_root + compute_writes_digest(writes))


class _EmptyState:
    def get(self, key: bytes) -> bytes | None:
        return None


class HealthApp:
    """The medical application. Stateless itself: all state is in the `StateReader` it is given.

    `genesis_validators`: the chain's genesis validator set. With it, the app reads the set of each
    height from the chain's governance state (`chain.governance`, the same keyspace) and passes
    its keys to the rules in `TxContext.validators`, which institution membership votes need
    (ADR 0020); without it (tools that replay no governance) no membership approval is accepted.
    """

    def __init__(self, genesis_validators: ValidatorSet | None = None) -> None:
        self.genesis_validators = genesis_validators

    def get_validator_keys(self, state: StateReader, height: int | None) -> frozenset[bytes]:
        """The signing keys of the validators of `height` (None: the newest set, for admission)."""
        if self.genesis_validators is None:
            return frozenset()
        history = governance.get_history(state, self.genesis_validators)
        at = height if height is not None else max(e.since for e in history.epochs)
        return frozenset(v.sign_key for v in governance.get_validators_at(history, at).validators)

    def init_state(self, genesis: Genesis) -> BlockExecution:
        health_genesis, research_k_min = decode_genesis_with_policy(genesis.app_state)
        overlay = OverlayState(_EmptyState())
        for institution in health_genesis.institutions:
            st.save_institution(overlay, institution)
        if health_genesis.layout != STATE_LAYOUT_V1:
            st.save_layout(overlay, health_genesis.layout)
        if research_k_min != RESEARCH_K_MIN_DEFAULT:  # nothing written otherwise: old roots unchanged
            st.save_research_k_min(overlay, research_k_min)
        writes = dict(overlay.writes)
        return BlockExecution(writes=writes, results=(), state_root=compute_genesis_root(writes))

    def check_tx(self, tx: Tx, tx_id: TxId, state: StateReader) -> None:
        """Admission: every rule that does not depend on the block's time (writes are discarded)."""
        validators = self.get_validator_keys(state, None) if tx.kind in MEMBERSHIP_KINDS else frozenset()
        ctx = TxContext(tx_id=tx_id, sender=tx.sender, height=0, time_ms=None, validators=validators)
        process_tx(OverlayState(state), tx, ctx)

    def apply_block(
        self, block: Block, txs: tuple[Tx, ...], state: StateReader, state_root: bytes
    ) -> BlockExecution:
        if len(txs) != len(block.txs):
            raise ValueError(f"block carries {len(block.txs)} txs, {len(txs)} were decoded")
        header = block.header
        overlay = OverlayState(state)
        results: list[TxResult] = []
        validators: frozenset[bytes] | None = None  # read once, for a block with membership votes
        for raw, tx in zip(block.txs, txs, strict=True):
            if tx.kind in MEMBERSHIP_KINDS and validators is None:
                validators = self.get_validator_keys(state, header.height)
            ctx = TxContext(
                tx_id=compute_tx_id(raw),
                sender=tx.sender,
                height=header.height,
                time_ms=header.time_ms,
                validators=validators or frozenset(),
            )
            # Each tx runs on its own scratch overlay: a rejected tx leaves nothing behind.
            scratch = OverlayState(overlay)
            try:
                process_tx(scratch, tx, ctx)
            except TxRejectedError as exc:
                results.append(TxResult(False, exc.rule, exc.message))
                continue
            for key, value in scratch.writes.items():
                overlay.put(key, value)
            results.append(TX_OK)
        writes = dict(overlay.writes)
        return BlockExecution(
            writes=writes, results=tuple(results), state_root=compute_block_root(state_root, writes)
        )

    # Typed reads for callers holding only the app (API, CLI); the full set lives in `state`.
    @staticmethod
    def get_patient_by_key(state: StateReader, sign_key: bytes) -> PatientState | None:
        return st.get_patient(state, compute_patient_id(sign_key))
