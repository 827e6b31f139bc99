"""A tiny key-value application: a TEST FIXTURE, not the product.

Until the medical application (`medledger.health`) lands it drives the node, the tests and the
benchmarks, exercising every part of the `App` interface: txs of kind `kv.set` whose body is the
canonical msgpack map `{"key": bytes, "value": bytes}`. Select it with `app = "kv-fixture"`.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from medledger.chain.app import TX_OK, BlockExecution, OverlayState, StateReader, TxResult
from medledger.chain.codec import Bytes, FieldSpec, decode, encode_primitive, wire_fields
from medledger.chain.errors import CodecError, TxRejectedError
from medledger.chain.types import Block, Genesis, Tx, TxId
from medledger.crypto import digest

KIND_SET = "kv.set"
KEY_BYTES_MAX = 256
VALUE_BYTES_MAX = 128 * 1024
_DATA = b"d/"


@dataclasses.dataclass(frozen=True, slots=True)
class SetBody:
    key: bytes
    value: bytes

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        key=Bytes(KEY_BYTES_MAX, 1), value=Bytes(VALUE_BYTES_MAX)
    )


def encode_set_body(key: bytes, value: bytes) -> bytes:
    return encode_primitive({"key": key, "value": value})


def _decode_body(tx: Tx) -> SetBody:
    if tx.kind != KIND_SET:
        raise TxRejectedError(f"unknown transaction kind {tx.kind!r}", rule="kv.kind")
    try:
        return decode(SetBody, tx.body, max_bytes=len(tx.body))
    except CodecError as exc:
        raise TxRejectedError(f"malformed kv.set body: {exc.message}", rule="kv.body") from None


class KeyValueFixtureApp:
    """Last-writer-wins key-value store; the state root chains a hash over each block's writes."""

    def init_state(self, genesis: Genesis) -> BlockExecution:
        return BlockExecution(
            writes={}, results=(), state_root=digest(b"kv-fixture/genesis" + genesis.app_state)
        )

    def check_tx(self, tx: Tx, tx_id: TxId, state: StateReader) -> None:
        _decode_body(tx)

    def apply_block(
        self, block: Block, txs: tuple[Tx, ...], state: StateReader, state_root: bytes
    ) -> BlockExecution:
        overlay = OverlayState(state)
        results: list[TxResult] = []
        for tx in txs:
            try:
                body = _decode_body(tx)
            except TxRejectedError as exc:
                results.append(TxResult(False, exc.rule, exc.message))
                continue
            overlay.put(_DATA + body.key, body.value)
            results.append(TX_OK)
        writes = overlay.writes
        changes = encode_primitive(sorted(writes.items(), key=lambda kv: kv[0]))
        return BlockExecution(
            writes=writes, results=tuple(results), state_root=digest(state_root + digest(changes))
        )

    @staticmethod
    def get_value(state: StateReader, key: bytes) -> bytes | None:
        return state.get(_DATA + key)
