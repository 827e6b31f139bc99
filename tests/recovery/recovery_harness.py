"""Builders of the recovery tests: a single-validator chain on disk, and the ways a store gets corrupted.

Every corruption is made on a closed store, with plyvel directly or on the files LevelDB wrote,
the way a bad disk, a botched copy or an operator's mistake would make it.
"""

from __future__ import annotations

import base64
import enum
import json
import os
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import nacl.pwhash.argon2id
import plyvel

from medledger.chain import layout
from medledger.chain.codec import decode, encode
from medledger.chain.executor import BlockExecutor
from medledger.chain.governance import GovernedApp
from medledger.chain.store import BlockStore
from medledger.chain.txbuilder import sign_commit, sign_tx
from medledger.chain.types import Commit, CommitSig, Genesis, Validator, ValidatorSet
from medledger.chain.validation import check_tx
from medledger.crypto import Identity
from medledger.node.fixture_app import KIND_SET, KeyValueFixtureApp, encode_set_body
from medledger.node.process import NodeProcess
from medledger.node.testnet import create_testnet

CHAIN_ID: Final = "medledger-recovery"
GENESIS_TIME_MS: Final = 1_700_000_000_000


class Corruption(enum.Enum):
    """The kinds of damage the node must detect and refuse."""

    FLIPPED_BLOCK_BYTES = "flipped-block-bytes"
    MISSING_BLOCK = "missing-block"
    FORGED_CERTIFICATE = "forged-certificate"
    TRUNCATED_TABLE = "truncated-table"
    DELETED_TABLE = "deleted-table"
    FLIPPED_LOG_BYTES = "flipped-log-bytes"


def make_genesis(identity: Identity) -> Genesis:
    validators = ValidatorSet.of([Validator("solo", identity.public.sign_key, identity.public.enc_key)])
    return Genesis(CHAIN_ID, GENESIS_TIME_MS, validators, b"")


def make_app(genesis: Genesis) -> GovernedApp:
    """The app a node runs over this chain (`node/run.build_chain_app`)."""
    return GovernedApp(KeyValueFixtureApp(), genesis.validators)


def build_local_chain(path: Path, identity: Identity, genesis: Genesis, *, blocks: int, txs: int) -> bytes:
    """Commit `blocks` blocks of `txs` kv txs each into a store at `path`; its state root.

    The app is governed, as a node runs it (`node/run.build_chain_app`)."""
    app = make_app(genesis)
    signer = Identity.generate()
    store = BlockStore.open(path)
    try:
        store.init_genesis(genesis, app.init_state(genesis))
        executor = BlockExecutor(store=store, app=app, genesis=genesis)
        for height in range(1, blocks + 1):
            checked = []
            for i in range(txs):
                now_ms = GENESIS_TIME_MS + height * 1000
                body = encode_set_body(f"key-{height}-{i}".encode(), os.urandom(24))
                _, raw, _ = sign_tx(
                    signer,
                    chain_id=CHAIN_ID,
                    kind=KIND_SET,
                    body=body,
                    nonce=height * 1000 + i,
                    timestamp_ms=now_ms,
                )
                checked.append(check_tx(raw, chain_id=CHAIN_ID, now_ms=now_ms))
            executed = executor.build_proposal(
                proposer=identity.public.sign_key,
                round_=0,
                time_ms=GENESIS_TIME_MS + height * 1000,
                txs=checked,
            )
            block_hash = executed.block.hash()
            commit = sign_commit(
                [identity], chain_id=CHAIN_ID, height=height, round_=0, block_hash=block_hash
            )
            executor.commit(executed, commit)
        return store.state_root
    finally:
        store.close()


def read_height(db: plyvel.DB) -> int:
    raw: bytes = db.get(layout.META_HEIGHT)
    return layout.decode_u64(raw)


def compact(path: Path) -> None:
    """Move everything from LevelDB's log into table files (as a busy node's store would be)."""
    db = plyvel.DB(str(path))
    try:
        db.compact_range()
    finally:
        db.close()


def table_files(path: Path) -> list[Path]:
    return sorted(path.glob("*.ldb"))


def corrupt(path: Path, kind: Corruption, *, height: int | None = None) -> None:
    """Damage the closed store at `path`; `height` picks the block (default: the one under the tip)."""
    if kind in (Corruption.TRUNCATED_TABLE, Corruption.DELETED_TABLE):
        compact(path)
        tables = table_files(path)
        assert tables, f"no table files in {path}"
        for table in tables:
            if kind is Corruption.TRUNCATED_TABLE:
                os.truncate(table, table.stat().st_size // 2)
            else:
                table.unlink()
        return
    if kind is Corruption.FLIPPED_LOG_BYTES:
        logs = sorted(path.glob("*.log"), key=lambda p: p.stat().st_size)
        assert logs, f"no LevelDB log in {path}"
        assert logs[-1].stat().st_size > 1000, f"no LevelDB log with data in {path}"
        data = bytearray(logs[-1].read_bytes())
        data[len(data) // 2] ^= 0x5A
        logs[-1].write_bytes(bytes(data))
        return
    db = plyvel.DB(str(path))
    try:
        target = max(1, read_height(db) - 1) if height is None else height
        assert target >= 1
        if kind is Corruption.FLIPPED_BLOCK_BYTES:
            raw = bytearray(db.get(layout.block_key(target)))
            raw[len(raw) // 2] ^= 0x01
            db.put(layout.block_key(target), bytes(raw), sync=True)
        elif kind is Corruption.MISSING_BLOCK:
            db.delete(layout.block_key(target), sync=True)
        elif kind is Corruption.FORGED_CERTIFICATE:
            commit = decode(Commit, db.get(layout.commit_key(target)), max_bytes=1 << 20)
            forger = Identity.generate()
            forged = tuple(
                CommitSig(s.validator, forger.sign(b"not the precommit")) for s in commit.signatures
            )
            db.put(
                layout.commit_key(target),
                encode(Commit(commit.height, commit.round, commit.block_hash, forged)),
                sync=True,
            )
        else:
            raise AssertionError(kind)
    finally:
        db.close()


# -- real node processes -----------------------------------------------------------------------

PASSPHRASE: Final = "test-pass"
NODE_ENV: Final = {"MEDLEDGER_KEY_PASSPHRASE": PASSPHRASE}
NET_CHAIN_ID: Final = "medledger-recovery-net"
DEADLINE_S: Final = 60.0
POLL_S: Final = 0.05


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = DEADLINE_S) -> None:
    """Poll `condition` until it holds; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(POLL_S)


class Net:
    """A testnet of real `medledger start` processes; `stop_all` ends every one of them."""

    def __init__(self, out: Path, validators: int) -> None:
        self.specs = create_testnet(
            out,
            validators=validators,
            chain_id=NET_CHAIN_ID,
            block_interval_ms=20,
            passphrase=PASSPHRASE.encode(),
            key_opslimit=nacl.pwhash.argon2id.OPSLIMIT_MIN,
            key_memlimit=nacl.pwhash.argon2id.MEMLIMIT_MIN,
        )
        self.procs = [NodeProcess(s.home, env=dict(NODE_ENV), use_config_ports=True) for s in self.specs]

    def start(self, index: int) -> None:
        self.procs[index].start()

    def wait_serving(self, index: int) -> None:
        self.procs[index].wait_ready(DEADLINE_S, require_ready=False)

    def home(self, index: int) -> Path:
        return self.specs[index].home

    def data_dir(self, index: int) -> Path:
        return self.specs[index].home / "data"

    def get(self, index: int, path: str) -> Any:
        return self.procs[index].get_json(path, timeout_s=30.0)

    def status(self, index: int) -> dict[str, Any]:
        data: dict[str, Any] = self.get(index, "/status")
        return data

    def submit(self, index: int, raws: list[bytes]) -> list[str]:
        body = json.dumps({"txs": [base64.b64encode(r).decode() for r in raws]}).encode()
        request = urllib.request.Request(
            self.procs[index].url + "/v1/txs/batch?wait_ms=10000",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30.0) as response:
            results: list[dict[str, Any]] = json.loads(response.read())["results"]
        return [str(r["tx_id"]) for r in results]

    def tip(self, index: int) -> tuple[int, str, str, int]:
        s = self.status(index)
        return int(s["height"]), str(s["latest_block_hash"]), str(s["state_root"]), int(s["mempool"]["txs"])

    def wait_agreed(self) -> tuple[int, str, str]:
        """Wait until every node is idle at one height, block hash and state root."""
        seen: list[tuple[int, str, str, int]] = []

        def agreed() -> bool:
            seen[:] = [self.tip(i) for i in range(len(self.procs))]
            return len(set(seen)) == 1 and seen[0][3] == 0

        wait_until(agreed, f"the nodes to agree (last seen {seen})")
        return seen[0][:3]

    def block_hashes(self, index: int, last: int) -> list[str]:
        hashes: list[str] = []
        for start in range(1, last + 1, 100):
            data = self.get(index, f"/v1/blocks?from={start}&to={min(start + 99, last)}")
            hashes += [str(b["hash"]) for b in data["blocks"]]
        return hashes

    def stop_all(self) -> None:
        for proc in self.procs:
            proc.stop()


def sign_kv_txs(signer: Identity, label: str, count: int) -> list[bytes]:
    raws = []
    for i in range(count):
        body = encode_set_body(f"{label}-{i}".encode(), os.urandom(16))
        _, raw, _ = sign_tx(signer, chain_id=NET_CHAIN_ID, kind=KIND_SET, body=body)
        raws.append(raw)
    return raws
