"""Builders shared by the chain-layer tests: identities, genesis, signed txs, commits, a local chain.

Everything is deterministic but the keys: times are fixed constants passed in (never the wall
clock) and nonces are explicit, so a failing example replays exactly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import plyvel

from medledger.chain.app import TxResult
from medledger.chain.execution import ExecutedBlock
from medledger.chain.executor import BlockExecutor
from medledger.chain.store import BlockStore
from medledger.chain.txbuilder import sign_commit as sign_precommits
from medledger.chain.txbuilder import sign_tx
from medledger.chain.types import (
    Commit,
    CommitSig,
    Genesis,
    Validator,
    ValidatorSet,
    VoteKind,
    compute_vote_signing_bytes,
)
from medledger.chain.validation import CheckedTx, check_tx
from medledger.crypto import Identity
from medledger.node.fixture_app import KIND_SET, KeyValueFixtureApp, encode_set_body

CHAIN_ID = "medledger-test"
GENESIS_TIME_MS = 1_700_000_000_000
#: A fixed "now" for admission checks, a minute after genesis.
NOW_MS = GENESIS_TIME_MS + 60_000


def make_validator(identity: Identity, name: str = "validator") -> Validator:
    return Validator(name, identity.public.sign_key, identity.public.enc_key)


def make_validator_set(identities: Sequence[Identity]) -> ValidatorSet:
    return ValidatorSet.of([make_validator(ident, f"validator-{i}") for i, ident in enumerate(identities)])


def make_genesis(
    identities: Sequence[Identity], *, chain_id: str = CHAIN_ID, app_state: bytes = b""
) -> Genesis:
    return Genesis(chain_id, GENESIS_TIME_MS, make_validator_set(identities), app_state)


def make_tx(
    identity: Identity,
    *,
    kind: str,
    body: bytes,
    nonce: int,
    chain_id: str = CHAIN_ID,
    timestamp_ms: int = NOW_MS,
) -> CheckedTx:
    """A signed tx, admitted by `check_tx` as a node would at `timestamp_ms`."""
    _, raw, _ = sign_tx(
        identity, chain_id=chain_id, kind=kind, body=body, nonce=nonce, timestamp_ms=timestamp_ms
    )
    return check_tx(raw, chain_id=chain_id, now_ms=timestamp_ms)


def make_kv_tx(identity: Identity, key: bytes, value: bytes, *, nonce: int) -> CheckedTx:
    """A signed, admitted `kv.set` tx of the key-value fixture app."""
    return make_tx(identity, kind=KIND_SET, body=encode_set_body(key, value), nonce=nonce)


def sign_commit(
    signers: Sequence[Identity],
    *,
    height: int,
    round_: int,
    block_hash: bytes,
    chain_id: str = CHAIN_ID,
    kind: VoteKind = VoteKind.PRECOMMIT,
) -> Commit:
    """A certificate with one vote of `kind` per signer, in the given order."""
    sigs = tuple(
        CommitSig(
            s.public.sign_key,
            s.sign(compute_vote_signing_bytes(chain_id, kind, height, round_, block_hash, s.public.sign_key)),
        )
        for s in signers
    )
    return Commit(height, round_, block_hash, sigs)


@dataclasses.dataclass(frozen=True, slots=True)
class StoreSnapshot:
    """A store's in-memory view (public API) and every raw key/value of the LevelDB underneath."""

    is_initialized: bool
    height: int
    last_block_hash: bytes
    last_block_time_ms: int
    state_root: bytes
    raw: dict[bytes, bytes]


def snapshot_store(store: BlockStore) -> StoreSnapshot:
    """Reads nothing through the codec, so it also works on a store holding corrupted records.

    `BlockStore` has no public raw iterator; the snapshot reads its LevelDB handle directly, which
    is the point: "nothing changed" means not one byte on disk changed.
    """
    initialized = store.is_initialized
    return StoreSnapshot(
        is_initialized=initialized,
        height=store.height,
        last_block_hash=store.last_block_hash if initialized else b"",
        last_block_time_ms=store.last_block_time_ms,
        state_root=store.state_root,
        raw=dict(store._db.iterator()),
    )


def dump_db(path: Path) -> dict[bytes, bytes]:
    """Every raw key/value of a closed LevelDB store, read with plyvel directly."""
    db = plyvel.DB(str(path))
    try:
        return dict(db.iterator())
    finally:
        db.close()


@dataclasses.dataclass(frozen=True, slots=True)
class Produced:
    """One block a `LocalChain` committed, with what the test needs to check it later."""

    executed: ExecutedBlock
    commit: Commit
    txs: tuple[CheckedTx, ...]
    results: tuple[TxResult, ...]
    state_root: bytes


class LocalChain:
    """A single-validator chain built through the block pipeline (`BlockExecutor`) with
    `KeyValueFixtureApp` over a `BlockStore` at `path`, each block certified by the validator."""

    def __init__(self, path: Path, identity: Identity, genesis: Genesis) -> None:
        self.path = path
        self.identity = identity
        self.genesis = genesis
        self.app = KeyValueFixtureApp()
        self.store, self.executor = self._open()

    def _open(self) -> tuple[BlockStore, BlockExecutor]:
        store = BlockStore.open(self.path)
        try:
            if not store.is_initialized:
                store.init_genesis(self.genesis, self.app.init_state(self.genesis))
        except BaseException:
            store.close()
            raise
        return store, BlockExecutor(store=store, app=self.app, genesis=self.genesis)

    @classmethod
    def create(cls, path: Path, identity: Identity | None = None) -> LocalChain:
        identity = Identity.generate() if identity is None else identity
        return cls(path, identity, make_genesis([identity]))

    def reopen(self) -> None:
        """Close the store (as a crash or restart would) and open it again."""
        self.close()
        self.store, self.executor = self._open()

    def close(self) -> None:
        self.store.close()

    def propose(self, txs: Sequence[CheckedTx], *, time_ms: int, round_: int = 0) -> ExecutedBlock:
        return self.executor.build_proposal(
            proposer=self.identity.public.sign_key, round_=round_, time_ms=time_ms, txs=list(txs)
        )

    def certify(self, executed: ExecutedBlock) -> Commit:
        header = executed.block.header
        return sign_precommits(
            [self.identity],
            chain_id=header.chain_id,
            height=header.height,
            round_=header.round,
            block_hash=executed.block.hash(),
        )

    def produce(self, txs: Sequence[CheckedTx], *, time_ms: int) -> Produced:
        """Propose, certify and commit one block carrying `txs`."""
        executed = self.propose(txs, time_ms=time_ms)
        commit = self.certify(executed)
        self.executor.commit(executed, commit)
        return Produced(
            executed, commit, tuple(txs), executed.execution.results, executed.execution.state_root
        )
