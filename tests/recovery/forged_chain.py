"""Builders of forged chains: honest blocks of a governed 4-validator chain, then one block that
breaks exactly one block rule yet carries a valid commit certificate.

This is what a buggy or malicious writer leaves on disk: every certificate is signed by a quorum
of the validators (whose identities the test holds), so only the rule under test is wrong and a
verifier that skips that rule would call the chain clean. Blocks are written with
`BlockStore.save_block`, which checks only its own invariants, not the block rules. Its
assertions refuse three forgeries a writer can still leave behind (a block that names another
parent, one whose header names another height than where it is stored, and an encoding whose tx
count differs from its txs, which no `Block` can hold); those, and any block on top of them, are
written with plyvel directly on the closed store, record by record as `save_block` would.

The app is the one `medledger start` builds (`build_chain_app`: the key-value fixture app governed
on chain), so `medledger verify` on a home that holds the store replays it with the same rules.

Everything is deterministic but the keys: times are fixed offsets from a constant genesis time
(never the wall clock) and nonces count up.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import plyvel

from medledger.chain import layout
from medledger.chain.app import TX_OK, App, BlockExecution
from medledger.chain.codec import encode, encode_primitive, to_primitive
from medledger.chain.execution import ExecutedBlock, build_block, execute_block
from medledger.chain.governance import KIND_VALIDATOR_ADD, KIND_VALIDATOR_REMOVE, GovernedApp, encode_removal
from medledger.chain.store import BlockStore, encode_tx_location
from medledger.chain.txbuilder import sign_commit, sign_tx
from medledger.chain.types import (
    Block,
    Commit,
    CommitSig,
    Genesis,
    Header,
    TxId,
    Validator,
    ValidatorSet,
    compute_tx_id,
)
from medledger.chain.validation import CheckedTx, check_tx, compute_tx_root
from medledger.crypto import Identity
from medledger.node.config import CONFIG_FILE
from medledger.node.fixture_app import KIND_SET, KeyValueFixtureApp, encode_set_body
from medledger.node.genesis_file import save_genesis

CHAIN_ID: Final = "medledger-verify-rules"
GENESIS_TIME_MS: Final = 1_700_000_000_000
#: Block times step by this much (any positive step is valid; a fixed one keeps tests exact).
BLOCK_INTERVAL_MS: Final = 1_000
#: Validators at genesis: quorum 3, so "too few signers" (2) and "one faulty" both exist.
VALIDATORS: Final = 4
#: Honest blocks of kv txs under the forged one.
HONEST_BLOCKS: Final = 3
TXS_PER_BLOCK: Final = 2
#: A node home's layout as `medledger init` writes it (the defaults of `NodeSection`).
DATA_DIR: Final = "data"
GENESIS_FILE: Final = "genesis.json"


def make_validator(identity: Identity, name: str) -> Validator:
    return Validator(name, identity.public.sign_key, identity.public.enc_key)


def make_chain_app(genesis: Genesis) -> App:
    """The app `medledger start` builds for a kv-fixture chain (`node/run.build_chain_app`)."""
    return GovernedApp(KeyValueFixtureApp(), genesis.validators)


def encode_block_parts(header: Header, txs: Sequence[bytes]) -> bytes:
    """A block's canonical encoding built from its parts, so the header's tx count may disagree
    with the txs (a `Block` refuses to hold such a pair; the bytes can still be written)."""
    return encode_primitive({"header": to_primitive(header), "txs": list(txs)})


@dataclasses.dataclass(frozen=True, slots=True)
class ForgedBlock:
    """A block as a writer stores it: its header, txs, bytes, certificate and what it wrote."""

    header: Header
    txs: tuple[bytes, ...]
    raw: bytes
    commit: Commit
    execution: BlockExecution
    #: The height it is stored at, when not the one its header names.
    stored_at: int | None = None

    @property
    def height(self) -> int:
        """Where the block is stored (its header's height unless `stored_at` says otherwise)."""
        return self.header.height if self.stored_at is None else self.stored_at

    @property
    def tx_ids(self) -> list[TxId]:
        return [compute_tx_id(raw) for raw in self.txs]

    @property
    def block(self) -> Block:
        """The decoded block; only for forgeries whose tx count matches their txs."""
        return Block(self.header, self.txs)


class ChainWriter:
    """A governed chain of `VALIDATORS` validators in a real LevelDB store at `path`.

    `build` makes the honest next block (the round's proposer, the right sets and roots, executed
    by the app); `certify` signs any header with a quorum; `save` writes any block through the
    store; `close` then writes the raw forgeries the store itself refuses.
    """

    def __init__(self, path: Path, *, validators: int = VALIDATORS) -> None:
        self.path = path
        members = [Identity.generate() for _ in range(validators)]
        self.identities: dict[bytes, Identity] = {m.public.sign_key: m for m in members}
        validator_set = ValidatorSet.of([make_validator(m, f"validator-{i}") for i, m in enumerate(members)])
        self.genesis = Genesis(CHAIN_ID, GENESIS_TIME_MS, validator_set, b"")
        self.app = make_chain_app(self.genesis)
        self.client = Identity.generate()
        self._nonces = itertools.count(1)
        self._raw_writes: list[ForgedBlock] = []
        path.parent.mkdir(parents=True, exist_ok=True)
        self.store = BlockStore.open(path)
        try:
            self.store.init_genesis(self.genesis, self.app.init_state(self.genesis))
        except BaseException:
            self.store.close()
            raise

    # -- what the chain says ----------------------------------------------------------------------

    @property
    def next_height(self) -> int:
        return self.store.height + 1

    def validators_for(self, height: int) -> ValidatorSet:
        """The set that governs `height`, from the committed governance history."""
        assert isinstance(self.app, GovernedApp)
        return self.app.get_validators(self.store, height)

    def quorum_of(self, height: int) -> list[Identity]:
        """The first quorum of the set at `height` (sorted by key), as identities."""
        validators = self.validators_for(height)
        return [self.identities[v.sign_key] for v in validators.validators[: validators.quorum]]

    def outsider(self) -> Identity:
        """A key that is no validator at any height of this chain."""
        return Identity.generate()

    # -- transactions -----------------------------------------------------------------------------

    def kv_tx(self, key: bytes, value: bytes = b"v") -> CheckedTx:
        """A signed `kv.set` tx, admitted as a node would at its timestamp."""
        return self._tx(self.client, KIND_SET, encode_set_body(key, value))

    def approve_add(self, approver: Identity, validator: Validator) -> CheckedTx:
        """A validator's approval of adding `validator` to the set."""
        return self._tx(approver, KIND_VALIDATOR_ADD, encode(validator))

    def approve_remove(self, approver: Identity, sign_key: bytes) -> CheckedTx:
        """A validator's approval of removing the validator with `sign_key` from the set."""
        return self._tx(approver, KIND_VALIDATOR_REMOVE, encode_removal(sign_key))

    def _tx(self, sender: Identity, kind: str, body: bytes) -> CheckedTx:
        now_ms = self.store.last_block_time_ms + BLOCK_INTERVAL_MS
        _, raw, _ = sign_tx(
            sender, chain_id=CHAIN_ID, kind=kind, body=body, nonce=next(self._nonces), timestamp_ms=now_ms
        )
        return check_tx(raw, chain_id=CHAIN_ID, now_ms=now_ms)

    # -- blocks -----------------------------------------------------------------------------------

    def build(self, txs: Sequence[CheckedTx], *, round_: int = 0) -> ExecutedBlock:
        """The honest next block carrying `txs`, executed on the committed state."""
        height = self.next_height
        validators = self.validators_for(height)
        block = build_block(
            store=self.store,
            validators=validators,
            next_validators=self.validators_for(height + 1),
            proposer=validators.get_proposer(height, round_).sign_key,
            round_=round_,
            time_ms=self.store.last_block_time_ms + BLOCK_INTERVAL_MS,
            txs=list(txs),
        )
        return execute_block(self.app, self.store, block, tuple(c.tx for c in txs), [c.tx_id for c in txs])

    def certify(
        self,
        header: Header,
        *,
        signers: Sequence[Identity] | None = None,
        extra: Sequence[CommitSig] = (),
    ) -> Commit:
        """A certificate of `header` (default: a quorum of its height's set, all valid) plus `extra`."""
        chosen = self.quorum_of(header.height) if signers is None else signers
        signed = sign_commit(
            chosen, chain_id=CHAIN_ID, height=header.height, round_=header.round, block_hash=header.hash()
        )
        return dataclasses.replace(signed, signatures=signed.signatures + tuple(extra))

    def commit(self, txs: Sequence[CheckedTx]) -> ExecutedBlock:
        """Build, certify (with a quorum) and save the honest next block."""
        executed = self.build(txs)
        self.store.save_block(
            executed.block,
            executed.raw,
            self.certify(executed.block.header),
            executed.tx_ids,
            executed.execution,
        )
        return executed

    def commit_honest_blocks(self, blocks: int = HONEST_BLOCKS, txs: int = TXS_PER_BLOCK) -> None:
        for _ in range(blocks):
            height = self.next_height
            self.commit([self.kv_tx(f"key-{height}-{i}".encode()) for i in range(txs)])

    def forge(
        self,
        honest: ExecutedBlock,
        *,
        header: Header | None = None,
        txs: Sequence[bytes] | None = None,
        commit: Commit | None = None,
    ) -> ForgedBlock:
        """`honest`, stored at its own height, under `header` (default: its own) carrying `txs`
        (default: its own; given, the tx count and root are set to match them), certified by a
        quorum unless `commit` is given. Nothing is re-executed: the writes are the honest block's."""
        forged = honest.block.header if header is None else header
        carried = honest.block.txs if txs is None else tuple(txs)
        if txs is not None:
            forged = dataclasses.replace(forged, tx_count=len(carried), tx_root=compute_tx_root(carried))
        execution = honest.execution
        if len(execution.results) != len(carried):
            execution = BlockExecution(execution.writes, (TX_OK,) * len(carried), execution.state_root)
        return ForgedBlock(
            header=forged,
            txs=carried,
            raw=encode_block_parts(forged, carried),
            commit=self.certify(forged) if commit is None else commit,
            execution=execution,
            stored_at=honest.block.header.height,
        )

    def child_of(self, parent: ForgedBlock) -> ForgedBlock:
        """An empty block on top of `parent` (saved or not), right in every field it names, and
        certified by a quorum. Not executed: its writes are none and its root is `parent`'s (a
        verifier never replays past a refused parent)."""
        height = parent.height + 1
        validators = self.validators_for(height)
        # `parent` may name another height than its own: the child follows where it is stored.
        header = Header(
            chain_id=CHAIN_ID,
            height=height,
            round=0,
            parent_hash=parent.header.hash(),
            time_ms=parent.header.time_ms + BLOCK_INTERVAL_MS,
            proposer=validators.get_proposer(height, 0).sign_key,
            tx_count=0,
            tx_root=compute_tx_root(()),
            state_root=parent.execution.state_root,
            validators_hash=validators.hash(),
            next_validators_hash=self.validators_for(height + 1).hash(),
        )
        return ForgedBlock(
            header=header,
            txs=(),
            raw=encode(Block(header, ())),
            commit=self.certify(header),
            execution=BlockExecution({}, (), parent.execution.state_root),
        )

    def save(self, forged: ForgedBlock) -> None:
        """Write `forged` on top of the store, through `save_block` when the store allows it."""
        header = forged.header
        if self._raw_writes:  # on top of a raw write: raw too (the store does not know its parent)
            assert forged.height == self._raw_writes[-1].height + 1, "blocks are saved in height order"
            self._raw_writes.append(forged)
            return
        assert forged.height == self.next_height, "blocks are saved in height order"
        on_tip = header.height == self.next_height and header.parent_hash == self.store.last_block_hash
        if header.tx_count == len(forged.txs) and on_tip:
            self.store.save_block(forged.block, forged.raw, forged.commit, forged.tx_ids, forged.execution)
        else:
            self._raw_writes.append(forged)  # written by `close`, on the closed store

    def close(self) -> None:
        """Close the store, then write the forgeries `save_block` refuses, record by record."""
        self.store.close()
        if not self._raw_writes:
            return
        db = plyvel.DB(str(self.path))
        try:
            for forged in self._raw_writes:
                write_block_records(db, forged)
        finally:
            db.close()
        self._raw_writes.clear()

    def make_home(self, home: Path) -> Path:
        """A node home for `medledger verify`: config (defaults: kv-fixture, `data`), genesis, and
        this writer's store as its data directory. Call after `close`, with `path` = home/data."""
        home.mkdir(parents=True, exist_ok=True)
        assert self.path == home / DATA_DIR, "create the writer at home / DATA_DIR"
        (home / CONFIG_FILE).write_text('[node]\napp = "kv-fixture"\n', encoding="utf-8")
        save_genesis(home / GENESIS_FILE, self.genesis)
        return home


def write_block_records(db: plyvel.DB, forged: ForgedBlock) -> None:
    """What `BlockStore.save_block` writes for a block, without its assertions (a raw writer)."""
    height = forged.height
    height_key = layout.encode_u64(height)
    with db.write_batch(transaction=True, sync=True) as batch:
        batch.put(layout.block_key(height), forged.raw)
        batch.put(layout.commit_key(height), encode(forged.commit))
        batch.put(layout.hash_key(forged.commit.block_hash), height_key)
        for index, (tx_id, result) in enumerate(zip(forged.tx_ids, forged.execution.results, strict=True)):
            batch.put(layout.tx_key(tx_id), encode_tx_location(height, index, result.ok, result.code))
        for key, value in forged.execution.writes.items():
            if value is None:
                batch.delete(layout.app_key(key))
            else:
                batch.put(layout.app_key(key), value)
        batch.put(layout.META_HEIGHT, height_key)
        batch.put(layout.META_STATE_ROOT, forged.execution.state_root)
