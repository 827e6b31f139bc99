"""The canonical codec: one encoding per value, and `CodecError` (nothing else) for anything else.

Strategies are derived from each wire type's `WIRE_FIELDS`, so a field added to a schema is
covered without touching this file; the few cross-field rules (`Block.tx_count`, a `Vote`'s nil
hash, a sorted `ValidatorSet`, a `Proposal`'s earlier `pol_round`) are the only hand-written
overrides.
"""

from __future__ import annotations

import dataclasses
import tracemalloc
from collections.abc import Callable
from typing import Any, ClassVar

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medledger.chain import codec
from medledger.chain import store as chain_store
from medledger.chain import types as chain_types
from medledger.chain.codec import (
    Bytes,
    FieldSpec,
    Seq,
    Struct,
    Text,
    UInt,
    decode,
    decode_primitive,
    decode_seq,
    encode,
    encode_primitive,
    from_primitive,
    to_primitive,
    wire_fields,
)
from medledger.chain.errors import ChainError, CodecError
from medledger.chain.limits import (
    BLOCK_BYTES_MAX,
    BLOCK_TXS_MAX,
    DEPTH_MAX,
    TEXT_ID_LENGTH_MAX,
    UINT_MAX,
    VALIDATORS_MAX,
)
from medledger.chain.store import LastSigned, TxLocation
from medledger.chain.types import (
    LEGACY_CONSENSUS_PARAMS,
    NO_ROUND,
    WIRE_TYPES,
    Block,
    Commit,
    CommitSig,
    ConsensusParams,
    Genesis,
    GenesisV1,
    GenesisV2,
    Header,
    OptionalRound,
    Proposal,
    Tx,
    Validator,
    ValidatorSet,
    Vote,
    decode_genesis,
    encode_genesis,
)
from medledger.crypto import HASH_SIZE, PUBLIC_KEY_SIZE, SIGNATURE_SIZE, digest
from medledger.errors import MedledgerError

#: The chain's own records that are stored rather than sent (`TxLocation`, `LastSigned`, ...):
#: found by looking, so a record added to the store module is covered too.
STORED_TYPES: tuple[type[Any], ...] = tuple(
    obj
    for obj in vars(chain_store).values()
    if isinstance(obj, type) and obj.__module__ == chain_store.__name__ and hasattr(obj, "WIRE_FIELDS")
)
ALL_TYPES: tuple[type[Any], ...] = (*WIRE_TYPES, *STORED_TYPES)
#: Every test decodes with a generous, fixed bound unless it is testing the bound itself.
MAX_BYTES = BLOCK_BYTES_MAX

#: Generated sizes are capped (the schema bounds are enforced by the targeted tests below);
#: the cap keeps thousands of examples fast without changing which code paths run.
BYTES_CAP = 40
ITEMS_CAP = 3


def type_id(cls: type[Any]) -> str:
    return cls.__name__


# -- strategies derived from the schemas --------------------------------------------------------

IDENTIFIER_CHARS = st.characters(min_codepoint=0x20, max_codepoint=0x7E)


def spec_strategy(spec: FieldSpec) -> st.SearchStrategy[Any]:
    """Values that satisfy one field spec."""
    if isinstance(spec, UInt):
        return st.integers(min_value=int(spec.minimum), max_value=int(spec.maximum))
    if isinstance(spec, Bytes):
        return st.binary(
            min_size=spec.min_length, max_size=min(spec.max_length, max(spec.min_length, BYTES_CAP))
        )
    if isinstance(spec, Text):
        if spec.allowed is not None:
            return st.sampled_from(sorted(spec.allowed))
        return st.text(IDENTIFIER_CHARS, min_size=spec.min_length, max_size=spec.max_length)
    if isinstance(spec, OptionalRound):
        return st.integers(min_value=NO_ROUND, max_value=spec.maximum)
    if isinstance(spec, Struct):
        return wire_strategy(spec.cls)
    if isinstance(spec, Seq):
        return st.lists(spec_strategy(spec.item), max_size=min(spec.max_items, ITEMS_CAP)).map(tuple)
    raise TypeError(f"no strategy for field spec {spec!r}")


def field_strategies(cls: type[Any]) -> dict[str, st.SearchStrategy[Any]]:
    schema: dict[str, FieldSpec] = cls.WIRE_FIELDS
    return {name: spec_strategy(spec) for name, spec in schema.items()}


@st.composite
def blocks(draw: st.DrawFn) -> Block:
    fields = field_strategies(Header)
    fields["tx_count"] = st.just(0)
    header: Header = draw(st.builds(Header, **fields))
    txs: tuple[bytes, ...] = draw(spec_strategy(Block.WIRE_FIELDS["txs"]))
    return Block(dataclasses.replace(header, tx_count=len(txs)), txs)


def votes() -> st.SearchStrategy[Vote]:
    fields = field_strategies(Vote)
    fields["block_hash"] = st.just(b"") | st.binary(min_size=HASH_SIZE, max_size=HASH_SIZE)
    return st.builds(Vote, **fields)


def validator_sets() -> st.SearchStrategy[ValidatorSet]:
    return st.lists(
        wire_strategy(Validator), min_size=1, max_size=ITEMS_CAP + 1, unique_by=lambda v: v.sign_key
    ).map(ValidatorSet.of)


@st.composite
def proposals(draw: st.DrawFn) -> Proposal:
    fields = field_strategies(Proposal)
    round_ = draw(fields.pop("round"))
    del fields["pol_round"]
    pol_round = draw(st.integers(min_value=NO_ROUND, max_value=round_ - 1))
    return draw(st.builds(Proposal, round=st.just(round_), pol_round=st.just(pol_round), **fields))


#: The cross-field rules a schema cannot express.
OVERRIDES: dict[type[Any], Callable[[], st.SearchStrategy[Any]]] = {
    Block: blocks,
    Vote: votes,
    ValidatorSet: validator_sets,
    Proposal: proposals,
}


def wire_strategy(cls: type[Any]) -> st.SearchStrategy[Any]:
    """Valid values of a wire type."""
    override = OVERRIDES.get(cls)
    if override is not None:
        return override()
    return st.builds(cls, **field_strategies(cls))


@st.composite
def wire_values(draw: st.DrawFn) -> tuple[type[Any], Any]:
    cls = draw(st.sampled_from(ALL_TYPES))
    return cls, draw(wire_strategy(cls))


#: Anything msgpack can pack: the shapes a hostile peer can send.
FIELD_NAMES = sorted({name for cls in ALL_TYPES for name in cls.WIRE_FIELDS})
msgpack_objects: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=UINT_MAX)
    | st.floats()
    | st.text(max_size=16)
    | st.binary(max_size=BYTES_CAP),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(FIELD_NAMES)
            | st.text(max_size=8)
            | st.binary(max_size=8)
            | st.integers(-(2**63), UINT_MAX),
            children,
            max_size=8,
        )
    ),
    max_leaves=16,
)


def assert_canonical_or_codec_error(cls: type[Any], data: bytes) -> None:
    """The decode oracle: a value whose encoding is exactly `data`, or `CodecError`; never else."""
    try:
        value = decode(cls, data, max_bytes=MAX_BYTES)
    except CodecError:
        return
    assert type(value) is cls
    assert encode(value) == data


def assert_invalid(cls: type[Any], data: bytes, match: str, *, max_bytes: int = MAX_BYTES) -> None:
    """Every `test_invalid_*` goes through here: `CodecError` naming the reason, nothing else."""
    with pytest.raises(CodecError, match=match):
        decode(cls, data, max_bytes=max_bytes)


# -- round trips ----------------------------------------------------------------------------------


def test_strategies_cover_every_wire_type() -> None:
    """A new wire type must get a strategy (generic or override) and so the properties below."""
    assert {TxLocation, LastSigned} <= set(STORED_TYPES)
    for cls in ALL_TYPES:
        schema = cls.WIRE_FIELDS
        assert dataclasses.is_dataclass(cls)
        assert {f.name for f in dataclasses.fields(cls)} == set(schema)
        wire_strategy(cls)  # raises TypeError for a field spec that has no strategy


def test_wire_types_lists_every_wire_structure_of_the_types_module() -> None:
    declared = {
        obj
        for obj in vars(chain_types).values()
        if isinstance(obj, type) and obj.__module__ == chain_types.__name__ and hasattr(obj, "WIRE_FIELDS")
    }
    assert declared == set(WIRE_TYPES)


@pytest.mark.parametrize("cls", ALL_TYPES, ids=type_id)
@settings(max_examples=100)
@given(data=st.data())
def test_decode_inverts_encode(cls: type[Any], data: st.DataObject) -> None:
    value = data.draw(wire_strategy(cls))
    raw = encode(value)
    decoded = decode(cls, raw, max_bytes=len(raw))
    assert decoded == value
    assert type(decoded) is cls
    assert encode(decoded) == raw
    # The encoding is a msgpack map whose keys are the field names in sorted order.
    plain = msgpack.unpackb(raw, raw=False)
    assert isinstance(plain, dict)
    assert list(plain) == sorted(cls.WIRE_FIELDS)


@settings(max_examples=300)
@given(data=st.data())
def test_equal_encodings_mean_equal_values(data: st.DataObject) -> None:
    """Ids are hashes of encodings: two different values of a type never share an encoding."""
    cls = data.draw(st.sampled_from(ALL_TYPES))
    a, b = data.draw(wire_strategy(cls)), data.draw(wire_strategy(cls))
    assert (encode(a) == encode(b)) == (a == b)


@settings(max_examples=100)
@given(items=st.lists(wire_strategy(CommitSig), max_size=5))
def test_decode_seq_inverts_encoding_an_array(items: list[CommitSig]) -> None:
    raw = encode_primitive([to_primitive(item) for item in items])
    assert decode_seq(CommitSig, raw, max_bytes=len(raw), max_items=5) == tuple(items)


def test_integer_bounds_round_trip() -> None:
    for nonce in (0, 1, 127, 128, 255, 256, 2**16 - 1, 2**16, 2**32 - 1, 2**32, UINT_MAX):
        tx = Tx("c", "k", bytes(PUBLIC_KEY_SIZE), nonce, UINT_MAX - nonce, b"", bytes(SIGNATURE_SIZE))
        raw = encode(tx)
        assert decode(Tx, raw, max_bytes=len(raw)) == tx


def test_text_bounds_round_trip() -> None:
    for chain_id in ("a", " ~", "x" * TEXT_ID_LENGTH_MAX):
        value = Validator(chain_id, bytes(PUBLIC_KEY_SIZE), bytes(PUBLIC_KEY_SIZE))
        raw = encode(value)
        assert decode(Validator, raw, max_bytes=len(raw)) == value


# -- nothing but CodecError, whatever the bytes --------------------------------------------------


@pytest.mark.parametrize("cls", ALL_TYPES, ids=type_id)
@settings(max_examples=300)
@given(data=st.binary(max_size=300))
def test_decode_of_arbitrary_bytes_is_canonical_or_codec_error(cls: type[Any], data: bytes) -> None:
    assert_canonical_or_codec_error(cls, data)


@st.composite
def mutated_encodings(draw: st.DrawFn) -> tuple[type[Any], bytes]:
    """A valid encoding with bytes flipped, cut, appended, inserted or overwritten."""
    cls, value = draw(wire_values())
    raw = bytearray(encode(value))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        kind = draw(st.sampled_from(["flip", "truncate", "append", "insert", "overwrite"]))
        if kind == "flip" and raw:
            index = draw(st.integers(min_value=0, max_value=len(raw) - 1))
            raw[index] ^= draw(st.integers(min_value=1, max_value=255))
        elif kind == "truncate":
            del raw[draw(st.integers(min_value=0, max_value=len(raw))) :]
        elif kind == "append":
            raw += draw(st.binary(min_size=1, max_size=16))
        elif kind == "insert":
            index = draw(st.integers(min_value=0, max_value=len(raw)))
            raw[index:index] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "overwrite" and raw:
            index = draw(st.integers(min_value=0, max_value=len(raw) - 1))
            patch = draw(st.binary(min_size=1, max_size=8))
            raw[index : index + len(patch)] = patch
    return cls, bytes(raw)


@settings(max_examples=500)
@given(case=mutated_encodings())
def test_decode_of_mutated_encoding_is_canonical_or_codec_error(case: tuple[type[Any], bytes]) -> None:
    cls, data = case
    assert_canonical_or_codec_error(cls, data)


@pytest.mark.parametrize("cls", ALL_TYPES, ids=type_id)
@settings(max_examples=60)
@given(obj=msgpack_objects, use_bin_type=st.booleans())
def test_decode_of_any_msgpack_object_is_canonical_or_codec_error(
    cls: type[Any], obj: Any, use_bin_type: bool
) -> None:
    assert_canonical_or_codec_error(cls, msgpack.packb(obj, use_bin_type=use_bin_type))


def _mutate_primitive(draw: st.DrawFn, prim: Any) -> Any:
    """Replace, drop or add one entry somewhere in a decoded structure."""
    if isinstance(prim, dict) and prim:
        key = draw(st.sampled_from(sorted(prim)))
        action = draw(st.sampled_from(["replace", "recurse", "drop", "add"]))
        mutated = dict(prim)
        if action == "replace":
            mutated[key] = draw(msgpack_objects)
        elif action == "recurse":
            mutated[key] = _mutate_primitive(draw, prim[key])
        elif action == "drop":
            del mutated[key]
        else:
            mutated[draw(st.sampled_from(FIELD_NAMES) | st.text(max_size=8))] = draw(msgpack_objects)
        if draw(st.booleans()):  # mostly keep canonical key order so the field checks are reached
            mutated = dict(sorted(mutated.items()))
        return mutated
    if isinstance(prim, list) and prim:
        index = draw(st.integers(min_value=0, max_value=len(prim) - 1))
        return [*prim[:index], _mutate_primitive(draw, prim[index]), *prim[index + 1 :]]
    return draw(msgpack_objects)


@st.composite
def mutated_primitives(draw: st.DrawFn) -> tuple[type[Any], bytes]:
    cls, value = draw(wire_values())
    data: bytes = msgpack.packb(_mutate_primitive(draw, to_primitive(value)), use_bin_type=True)
    return cls, data


@settings(max_examples=300)
@given(case=mutated_primitives())
def test_decode_of_structurally_mutated_value_is_canonical_or_codec_error(
    case: tuple[type[Any], bytes],
) -> None:
    cls, data = case
    assert_canonical_or_codec_error(cls, data)


def assert_fast_path_agrees(cls: type[Any], primitive: Any, depth: int = 0) -> None:
    """The compiled decoder and the schema walk accept exactly the same primitives, with equal values."""
    fast = codec._fast_decoder(cls)(primitive, depth)
    try:
        slow = codec._from_primitive_checked(cls, primitive, None, depth)
    except CodecError:
        assert fast is codec._INVALID, f"the fast path accepted what the schema walk rejects: {fast!r}"
        return
    assert fast is not codec._INVALID, f"the fast path rejected a valid {cls.__name__}"
    assert fast == slow
    assert type(fast) is type(slow)


@settings(max_examples=400)
@given(data=st.data(), depth=st.integers(min_value=0, max_value=DEPTH_MAX + 1))
def test_fast_path_agrees_on_valid_values_at_every_depth(data: st.DataObject, depth: int) -> None:
    cls, value = data.draw(wire_values())
    assert_fast_path_agrees(cls, to_primitive(value), depth)


@st.composite
def mutated_primitive_values(draw: st.DrawFn) -> tuple[type[Any], Any]:
    cls, value = draw(wire_values())
    return cls, _mutate_primitive(draw, to_primitive(value))


@settings(max_examples=600)
@given(case=mutated_primitive_values())
def test_fast_path_agrees_on_structurally_mutated_values(case: tuple[type[Any], Any]) -> None:
    assert_fast_path_agrees(*case)


@pytest.mark.parametrize("cls", ALL_TYPES, ids=type_id)
@settings(max_examples=60)
@given(obj=msgpack_objects)
def test_fast_path_agrees_on_any_msgpack_object(cls: type[Any], obj: Any) -> None:
    assert_fast_path_agrees(cls, msgpack.unpackb(msgpack.packb(obj, use_bin_type=True), strict_map_key=False))


def boundary_values(spec: FieldSpec, valid_item: Any = None) -> list[Any]:
    """Values just inside and just outside `spec`'s bounds, and of the wrong kinds."""
    wrong_kinds: list[Any] = [None, True, 1.5, "x", b"x", [], {}]
    if isinstance(spec, UInt):
        return [*wrong_kinds, spec.minimum, spec.minimum - 1, spec.maximum, spec.maximum + 1, -1]
    if isinstance(spec, Bytes):
        lengths = {0, spec.min_length, spec.max_length, spec.min_length - 1, spec.max_length + 1}
        return [*wrong_kinds, *(bytes(n) for n in sorted(lengths) if n >= 0), bytearray(spec.min_length)]
    if isinstance(spec, Text):
        lengths = {spec.min_length, spec.max_length, spec.min_length - 1, spec.max_length + 1}
        texts = ["a" * n for n in sorted(lengths) if n >= 0]
        edge = "a" * max(spec.min_length - 1, 0)
        texts += [edge + "é", edge + "\n", edge + "\x7f", edge + " "]
        texts += sorted(spec.allowed or ())
        return [*wrong_kinds, *texts]
    if isinstance(spec, Seq):
        items = boundary_values(spec.item)[:12]
        full = [] if valid_item is None else [[valid_item] * n for n in (spec.max_items, spec.max_items + 1)]
        return [*wrong_kinds, (), [None], [[]], *full, *([v] for v in items)]
    return wrong_kinds


def valid_item_of(spec: FieldSpec, data: st.DataObject) -> Any:
    """One valid primitive item of a sequence spec's items."""
    if not isinstance(spec, Seq):
        return None
    item = spec.item
    if isinstance(item, Struct):
        return to_primitive(data.draw(wire_strategy(item.cls)))
    if isinstance(item, Bytes):
        return bytes(item.min_length)
    if isinstance(item, UInt):
        return item.minimum
    if isinstance(item, Text):
        return sorted(item.allowed)[0] if item.allowed else "a" * item.min_length
    return None


@dataclasses.dataclass(frozen=True, slots=True)
class Choice:
    """A test-only wire type with the specs the chain's own types do not use (a closed text set)."""

    kind: str
    kinds: tuple[str, ...]

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        kind=Text(allowed=frozenset({"alpha", "beta"})),
        kinds=Seq(Text(allowed=frozenset({"alpha", "beta"})), 2),
    )


CHOICES = st.sampled_from(["alpha", "beta"])
CHOICE_VALUES: st.SearchStrategy[Any] = st.builds(Choice, CHOICES, st.lists(CHOICES, max_size=2).map(tuple))


@pytest.mark.parametrize("cls", [*ALL_TYPES, Choice], ids=type_id)
@settings(max_examples=3, deadline=None)
@given(data=st.data())
def test_fast_path_agrees_at_every_fields_bounds(cls: type[Any], data: st.DataObject) -> None:
    """Every field of every type set to each value at (and just past) its bounds: both decoders agree."""
    primitive = to_primitive(data.draw(CHOICE_VALUES if cls is Choice else wire_strategy(cls)))
    for name, spec in codec._sorted_fields(cls):
        for candidate in boundary_values(spec, valid_item_of(spec, data)):
            assert_fast_path_agrees(cls, {**primitive, name: candidate})


def test_fast_path_is_the_one_taken_for_valid_input() -> None:
    """Decoding a valid value must not need the schema walk (else the fast path is dead code)."""
    original = codec._from_primitive_checked
    calls: list[type[Any]] = []

    def spy(cls: type[Any], raw: Any, where: str | None, depth: int) -> Any:
        calls.append(cls)
        return original(cls, raw, where, depth)

    codec._from_primitive_checked = spy
    try:
        assert decode(Tx, encode(TX), max_bytes=MAX_BYTES) == TX
        with pytest.raises(CodecError):
            decode(Tx, encode(dataclasses.replace(TX, kind="")), max_bytes=MAX_BYTES)
    finally:
        codec._from_primitive_checked = original
    assert calls == [Tx]  # only the invalid one went the slow way, to say what is wrong


def test_invalid_large_non_canonical_encoding_is_refused() -> None:
    """However large the data, a wider header or a signed form of an unsigned integer is refused
    (a 64 KB+ tx re-encoded so would get a new id under the same signature: a replay)."""
    block = Block(dataclasses.replace(HEADER, tx_count=100), tuple(bytes(1000) for _ in range(100)))
    data = encode(block)
    assert len(data) > 64 * 1024
    assert decode(Block, data, max_bytes=MAX_BYTES) == block
    bin16 = msgpack.packb(bytes(1000), use_bin_type=True)[:3]  # the header of a 1000-byte tx
    wider = data.replace(bin16, b"\xc6" + (1000).to_bytes(4, "big"), 1)  # one tx with a bin32 header
    with pytest.raises(CodecError, match="canonical"):
        decode(Block, wider, max_bytes=MAX_BYTES)
    big_tx = dataclasses.replace(TX, body=bytes(70_000))
    raw = encode(big_tx)
    timestamp = b"\xcf" + big_tx.timestamp_ms.to_bytes(8, "big")  # uint64, as msgpack packs it
    assert raw.count(timestamp) == 1
    signed = raw.replace(timestamp, b"\xd3" + big_tx.timestamp_ms.to_bytes(8, "big"))  # int64: same size
    assert len(signed) == len(raw)
    with pytest.raises(CodecError, match="canonical"):
        decode(Tx, signed, max_bytes=MAX_BYTES)


def test_codec_error_is_a_chain_error() -> None:
    assert issubclass(CodecError, ChainError)
    assert issubclass(CodecError, MedledgerError)


# -- targeted rejections ---------------------------------------------------------------------------

SIG = CommitSig(bytes(range(PUBLIC_KEY_SIZE)), bytes(range(SIGNATURE_SIZE)))
TX = Tx("chain-a", "kv.set", bytes(range(32)), 1, 1_700_000_000_000, b"body", bytes(SIGNATURE_SIZE))
HEADER = Header("chain-a", 1, 0, bytes(32), 0, bytes(32), 0, bytes(32), bytes(32), bytes(32), bytes(32))


def packed_fields(value: Any) -> list[tuple[str, bytes]]:
    """A value's canonical map as (key, encoded value) pairs, ready to be tampered with."""
    return [(k, msgpack.packb(v, use_bin_type=True)) for k, v in to_primitive(value).items()]


def pack_map(items: list[tuple[str, bytes]]) -> bytes:
    """A msgpack map from already-encoded values, in the given order (fixmap header)."""
    assert len(items) < 16
    return bytes([0x80 | len(items)]) + b"".join(msgpack.packb(k) + v for k, v in items)


def with_field(value: Any, name: str, encoded: bytes) -> bytes:
    return pack_map([(k, encoded if k == name else v) for k, v in packed_fields(value)])


def with_primitive(value: Any, **changes: Any) -> bytes:
    prim = to_primitive(value)
    prim.update(changes)
    data: bytes = msgpack.packb(dict(sorted(prim.items())), use_bin_type=True)
    return data


def test_the_tamper_helpers_reproduce_the_canonical_encoding() -> None:
    for value in (SIG, TX, HEADER):
        assert pack_map(packed_fields(value)) == encode(value)
        assert with_primitive(value) == encode(value)


def test_invalid_unknown_field() -> None:
    prim = dict(sorted({**to_primitive(SIG), "extra": 1}.items()))
    assert_invalid(CommitSig, msgpack.packb(prim, use_bin_type=True), r"unknown fields \['extra'\]")


def test_invalid_missing_field() -> None:
    prim = to_primitive(SIG)
    del prim["signature"]
    assert_invalid(CommitSig, msgpack.packb(prim, use_bin_type=True), r"missing fields \['signature'\]")


def test_invalid_renamed_field() -> None:
    """Same number of keys, one of them unknown: reported as missing, not silently ignored."""
    prim = to_primitive(SIG)
    prim["signatur"] = prim.pop("signature")
    assert_invalid(CommitSig, msgpack.packb(prim, use_bin_type=True), "missing field 'signature'")


def test_invalid_field_name_as_binary() -> None:
    prim = {k.encode(): v for k, v in to_primitive(SIG).items()}
    assert_invalid(CommitSig, msgpack.packb(prim, use_bin_type=True), "missing field")


def test_invalid_integer_map_key() -> None:
    assert_invalid(CommitSig, msgpack.packb({1: b"x", 2: b"y"}), "not valid msgpack")


def test_invalid_duplicate_key() -> None:
    items = packed_fields(SIG)
    assert_invalid(CommitSig, pack_map([items[0], *items]), "not the canonical encoding")


@pytest.mark.parametrize("flag", [True, False])
def test_invalid_bool_where_int_expected(flag: bool) -> None:
    assert_invalid(Tx, with_primitive(TX, nonce=flag), r"Tx\.nonce: expected an integer")


def test_invalid_float_where_int_expected() -> None:
    assert_invalid(Tx, with_primitive(TX, nonce=1.0), r"Tx\.nonce: expected an integer")


def test_invalid_nil_where_int_expected() -> None:
    assert_invalid(Tx, with_primitive(TX, nonce=None), r"Tx\.nonce: expected an integer")


@pytest.mark.parametrize("nonce", [-1, -(2**63)])
def test_invalid_negative_int(nonce: int) -> None:
    assert_invalid(Tx, with_primitive(TX, nonce=nonce), r"Tx\.nonce: .* is outside \[0, ")


@pytest.mark.parametrize(
    ("cls", "value", "field", "number"),
    [
        (Vote, Vote("c", 1, 1, 0, b"", bytes(32), bytes(64)), "kind", 3),
        (Vote, Vote("c", 1, 1, 0, b"", bytes(32), bytes(64)), "kind", 0),
        (Header, HEADER, "tx_count", BLOCK_TXS_MAX + 1),
        (Header, HEADER, "height", 0),
        (TxLocation, TxLocation(1, 0, 1, "ok"), "ok", 2),
    ],
)
def test_invalid_int_out_of_range(cls: type[Any], value: Any, field: str, number: int) -> None:
    assert_invalid(cls, with_primitive(value, **{field: number}), rf"\.{field}: {number} is outside")


def test_an_int_above_the_wire_maximum_cannot_even_be_encoded() -> None:
    """2**64 has no msgpack encoding, so UINT_MAX is the codec's ceiling by construction."""
    with pytest.raises(OverflowError):
        msgpack.packb(UINT_MAX + 1)


@pytest.mark.parametrize("length", [0, 31, 33])
def test_invalid_wrong_fixed_bytes_length(length: int) -> None:
    data = with_primitive(TX, sender=bytes(length))
    assert_invalid(Tx, data, rf"Tx\.sender: expected 32 bytes, got {length}")


@pytest.mark.parametrize("length", [1, 31, 33, 64])
def test_invalid_vote_block_hash_neither_nil_nor_a_hash(length: int) -> None:
    vote = Vote("c", 2, 1, 0, bytes(32), bytes(32), bytes(64))
    assert_invalid(Vote, with_primitive(vote, block_hash=bytes(length)), "block_hash|outside")


def test_invalid_block_whose_tx_count_disagrees_with_its_txs() -> None:
    block = Block(dataclasses.replace(HEADER, tx_count=1), (b"tx",))
    assert_invalid(Block, with_primitive(block, txs=[]), "header says 1 txs, block has 0")


def test_invalid_block_with_an_empty_tx() -> None:
    block = Block(dataclasses.replace(HEADER, tx_count=1), (b"tx",))
    assert_invalid(Block, with_primitive(block, txs=[b""]), r"Block\.txs\[0\]: length 0")


def _validator(key: int) -> Validator:
    return Validator(f"v{key}", bytes([key]) * 32, bytes(32))


@pytest.mark.parametrize(
    "keys", [[], [2, 1], [1, 1], [1, 3, 2]], ids=["empty", "unsorted", "duplicate", "partly-sorted"]
)
def test_invalid_validator_set(keys: list[int]) -> None:
    prim = {"validators": [to_primitive(_validator(k)) for k in keys]}
    assert_invalid(ValidatorSet, msgpack.packb(prim, use_bin_type=True), "cannot be empty|sorted")


def test_invalid_too_many_items() -> None:
    commit = Commit(1, 0, bytes(32), ())
    data = with_primitive(commit, signatures=[to_primitive(SIG)] * (VALIDATORS_MAX + 1))
    assert_invalid(Commit, data, rf"{VALIDATORS_MAX + 1} items exceed the limit of {VALIDATORS_MAX}")


@pytest.mark.parametrize(
    ("chain_id", "reason"),
    [
        ("", "length 0"),
        ("x" * (TEXT_ID_LENGTH_MAX + 1), f"length {TEXT_ID_LENGTH_MAX + 1}"),
        ("tab\there", "printable ASCII"),
        ("nul\x00", "printable ASCII"),
        ("ünïcode", "printable ASCII"),
        ("new\nline", "printable ASCII"),
    ],
)
def test_invalid_text(chain_id: str, reason: str) -> None:
    assert_invalid(Tx, with_primitive(TX, chain_id=chain_id), rf"Tx\.chain_id: .*{reason}")


@pytest.mark.parametrize(
    ("field", "raw_value", "reason"),
    [
        ("nonce", b"\xcc\x01", "canonical"),  # uint8 for a fixint
        ("nonce", b"\xcd\x00\x01", "canonical"),  # uint16
        ("nonce", b"\xce\x00\x00\x00\x01", "canonical"),  # uint32
        ("nonce", b"\xcf" + (1).to_bytes(8, "big"), "canonical"),  # uint64
        ("nonce", b"\xd0\x01", "canonical"),  # int8, a signed format for an unsigned value
        ("nonce", b"\xd3" + (1).to_bytes(8, "big"), "canonical"),  # int64
        ("body", b"\xc5\x00\x04body", "canonical"),  # bin16 for a 4-byte binary
        ("body", b"\xc6\x00\x00\x00\x04body", "canonical"),  # bin32
        ("kind", b"\xd9\x06kv.set", "canonical"),  # str8 for a fixstr
        ("kind", b"\xda\x00\x06kv.set", "canonical"),  # str16
        ("body", b"\xa4body", r"Tx\.body: expected binary data"),  # str where bin expected
        ("sender", b"\xd9\x20" + b"a" * 32, r"Tx\.sender: expected binary data"),
        ("sender", b"\xd9\x20" + b"\xff" * 32, "not valid msgpack: UnicodeDecodeError"),
        ("chain_id", b"\xc4\x07chain-a", r"Tx\.chain_id: expected a string"),  # bin where str expected
        ("nonce", b"\xcb" + bytes(8), r"Tx\.nonce: expected an integer"),  # float64 0.0
        ("nonce", b"\xca" + bytes(4), r"Tx\.nonce: expected an integer"),  # float32 0.0
    ],
)
def test_invalid_non_canonical_or_mistyped_field(field: str, raw_value: bytes, reason: str) -> None:
    assert_invalid(Tx, with_field(TX, field, raw_value), reason)


def test_invalid_unsorted_keys() -> None:
    assert_invalid(Tx, pack_map(packed_fields(TX)[::-1]), "not the canonical encoding")


def test_invalid_map16_header_for_a_small_map() -> None:
    fields = packed_fields(SIG)
    data = b"\xde\x00\x02" + b"".join(msgpack.packb(k) + v for k, v in fields)
    assert_invalid(CommitSig, data, "not the canonical encoding")


def test_invalid_array16_header_for_a_small_array() -> None:
    commit = Commit(1, 0, bytes(32), (SIG,))
    fields = packed_fields(commit)
    array = b"\xdc\x00\x01" + encode(SIG)
    assert_invalid(Commit, pack_map([(k, array if k == "signatures" else v) for k, v in fields]), "canonical")


@pytest.mark.parametrize(
    "ext",
    [
        b"\xd4\x05\x00",  # fixext1, type 5
        b"\xd4\x80\x00",  # fixext1, type -128
        b"\xc7\x00\x05",  # ext8 of length 0
        b"\xd6\xff\x00\x00\x00\x01",  # the timestamp extension (type -1, 32-bit)
        b"\xd7\xff" + bytes(8),  # timestamp 64
        b"\xc7\x0c\xff" + bytes(12),  # timestamp 96
    ],
)
def test_invalid_extension_type(ext: bytes) -> None:
    assert_invalid(Tx, with_field(TX, "nonce", ext), "extension|not valid msgpack")
    assert_invalid(Tx, ext, "extension|not valid msgpack")


def test_invalid_oversize_input_is_rejected_before_msgpack_sees_it(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = encode(TX)

    def unpackb_must_not_run(*args: object, **kwargs: object) -> object:
        raise AssertionError("msgpack was asked to decode input larger than the limit")

    monkeypatch.setattr(msgpack, "unpackb", unpackb_must_not_run)
    assert_invalid(Tx, raw, rf"{len(raw)} bytes exceed the limit of {len(raw) - 1}", max_bytes=len(raw) - 1)
    assert_invalid(Tx, b"\x00" * 1000, "1000 bytes exceed the limit of 999", max_bytes=999)


def test_input_of_exactly_the_limit_is_accepted() -> None:
    raw = encode(TX)
    assert decode(Tx, raw, max_bytes=len(raw)) == TX


@pytest.mark.parametrize(
    "data",
    [
        b"\xdd\xff\xff\xff\xff",  # array32 announcing 4G items
        b"\xdd" + (BLOCK_BYTES_MAX - 1).to_bytes(4, "big"),  # just under the byte limit
        b"\xdf" + (BLOCK_BYTES_MAX - 1).to_bytes(4, "big"),  # map32
        b"\xc6" + (BLOCK_BYTES_MAX - 1).to_bytes(4, "big"),  # bin32
        b"\xdb" + (BLOCK_BYTES_MAX - 1).to_bytes(4, "big"),  # str32
    ],
)
def test_invalid_declared_length_beyond_the_input_allocates_nothing_large(data: bytes) -> None:
    """A 5-byte header announcing millions of items must not make the decoder allocate for them."""
    tracemalloc.start()
    try:
        with pytest.raises(CodecError, match="not valid msgpack"):
            decode(Block, data, max_bytes=BLOCK_BYTES_MAX)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024


@pytest.mark.parametrize(
    ("opener", "closer"),
    [(b"\x91", b"\xc0"), (b"\x81\xa1a", b"\xc0")],
    ids=["arrays", "maps"],
)
def test_invalid_deep_nesting(opener: bytes, closer: bytes) -> None:
    data = opener * 10_000 + closer
    assert_invalid(Block, data, "not valid msgpack")
    assert_invalid(Tx, data, "not valid msgpack")
    with pytest.raises(CodecError):
        decode_primitive(data, max_bytes=MAX_BYTES)


def test_invalid_deep_nesting_inside_a_field() -> None:
    block = Block(dataclasses.replace(HEADER, tx_count=1), (b"tx",))
    nested = b"\x91" * 10_000 + b"\xc4\x02tx"
    data = pack_map([(k, b"\x91" + nested if k == "txs" else v) for k, v in packed_fields(block)])
    assert_invalid(Block, data, "not valid msgpack")


def test_invalid_moderate_nesting_within_msgpack_limits_is_a_type_error_not_a_crash() -> None:
    block = Block(dataclasses.replace(HEADER, tx_count=1), (b"tx",))
    nested = b"\x91" * 500 + b"\xc4\x02tx"
    data = pack_map([(k, b"\x91" + nested if k == "txs" else v) for k, v in packed_fields(block)])
    assert_invalid(Block, data, r"Block\.txs\[0\]: expected binary data")


@dataclasses.dataclass(frozen=True, slots=True)
class Tree:
    """A recursive wire type (none of the chain's is) to reach the codec's own depth limit."""

    children: tuple[Tree, ...]

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = {}


Tree.WIRE_FIELDS["children"] = Seq(Struct(Tree), 2)


def _tree(depth: int) -> Tree:
    return Tree(()) if depth == 0 else Tree((_tree(depth - 1),))


def test_nesting_within_the_depth_limit_round_trips() -> None:
    tree = _tree(DEPTH_MAX // 2 - 1)
    raw = encode(tree)
    assert decode(Tree, raw, max_bytes=len(raw)) == tree


def _tree_bytes(depth: int) -> bytes:
    """The encoding of `_tree(depth)`, built by hand (encoding it would recurse per level)."""
    return b"\x81\xa8children\x91" * depth + b"\x81\xa8children\x90"


def test_invalid_nesting_deeper_than_the_depth_limit() -> None:
    assert _tree_bytes(3) == encode(_tree(3))
    for depth in (DEPTH_MAX // 2, DEPTH_MAX, 500):
        assert_invalid(Tree, _tree_bytes(depth), f"nesting deeper than {DEPTH_MAX}")


def test_invalid_trailing_bytes() -> None:
    raw = encode(TX)
    for trailer in (b"\x00", b"\xc0", encode(TX)):
        assert_invalid(Tx, raw + trailer, "not valid msgpack: ExtraData")


@pytest.mark.parametrize(
    "data", [b"", b"\xc1", b"\x82", b"\xc4\x05ab"], ids=["empty", "never-used", "cut-map", "short-bin"]
)
def test_invalid_truncated_or_reserved(data: bytes) -> None:
    assert_invalid(Tx, data, "not valid msgpack")


@pytest.mark.parametrize("top", [[], 0, None, "Tx", b"Tx", True, 1.5])
def test_invalid_top_level_not_a_map(top: Any) -> None:
    assert_invalid(Tx, msgpack.packb(top, use_bin_type=True), r"Tx: expected a map")


def test_invalid_nested_struct_not_a_map() -> None:
    block = Block(HEADER, ())
    assert_invalid(Block, with_primitive(block, header=[]), r"Block\.header: expected a map")


def test_invalid_not_bytes() -> None:
    raw = encode(TX)
    for data in (bytearray(raw), memoryview(raw)):
        with pytest.raises(CodecError, match="expected bytes"):
            decode(Tx, data, max_bytes=MAX_BYTES)  # type: ignore[arg-type]


def test_invalid_decode_seq_non_canonical_or_too_long() -> None:
    items = [to_primitive(SIG)] * 3
    raw = encode_primitive(items)
    with pytest.raises(CodecError, match="3 items exceed the limit of 2"):
        decode_seq(CommitSig, raw, max_bytes=MAX_BYTES, max_items=2)
    with pytest.raises(CodecError, match="canonical"):
        decode_seq(CommitSig, b"\xdc\x00\x03" + raw[1:], max_bytes=MAX_BYTES, max_items=3)
    with pytest.raises(CodecError, match="expected an array"):
        decode_seq(CommitSig, encode(SIG), max_bytes=MAX_BYTES, max_items=3)


def test_from_primitive_rejects_what_decode_rejects() -> None:
    with pytest.raises(CodecError, match="expected a map"):
        from_primitive(Tx, [])
    assert from_primitive(Tx, to_primitive(TX)) == TX


def test_genesis_with_nested_validator_set_round_trips() -> None:
    genesis = Genesis("c", 0, ValidatorSet.of([_validator(2), _validator(1)]), b"state")
    raw = encode_genesis(genesis)
    assert decode_genesis(raw, max_bytes=len(raw)) == genesis
    wire = GenesisV1("c", 0, genesis.validators, b"state")
    bad = with_primitive(wire, validators={"validators": [to_primitive(_validator(k)) for k in (2, 1)]})
    assert_invalid(GenesisV1, bad, "sorted")
    with pytest.raises(CodecError, match="sorted"):
        decode_genesis(bad, max_bytes=MAX_BYTES)


def test_genesis_without_params_keeps_the_four_field_bytes_and_hash() -> None:
    validators = ValidatorSet.of([_validator(1)])
    genesis = Genesis("c", 7, validators, b"state")
    # What every chain's genesis was before params existed: a four-key map, nothing else.
    before = encode_primitive(
        {"app_state": b"state", "chain_id": "c", "genesis_time_ms": 7, "validators": to_primitive(validators)}
    )
    assert encode_genesis(genesis) == before
    assert genesis.hash() == digest(before)
    assert genesis.consensus_params == LEGACY_CONSENSUS_PARAMS


def test_genesis_v2_round_trips_and_differs_from_v1() -> None:
    validators = ValidatorSet.of([_validator(1)])
    params = ConsensusParams(block_txs_max=100, block_bytes_max=1 << 20, leader_window=12)
    genesis = Genesis("c", 7, validators, b"state", params)
    raw = encode_genesis(genesis)
    assert decode_genesis(raw, max_bytes=len(raw)) == genesis
    assert raw == encode(GenesisV2("c", 7, validators, b"state", params))
    assert genesis.hash() != Genesis("c", 7, validators, b"state").hash()
    with pytest.raises(CodecError):
        decode(GenesisV1, raw, max_bytes=len(raw))
    for field, value in (("block_txs_max", 0), ("block_bytes_max", 1024), ("leader_window", 10**6)):
        primitive = to_primitive(GenesisV2("c", 7, validators, b"state", params))
        primitive["params"] = to_primitive(params) | {field: value}
        with pytest.raises(CodecError, match=field):
            decode_genesis(encode_primitive(primitive), max_bytes=MAX_BYTES)


def test_proposal_pol_round_is_shifted_by_one_on_the_wire() -> None:
    fresh = Proposal("c", 1, 2, NO_ROUND, Block(HEADER, ()), bytes(32), bytes(64))
    assert to_primitive(fresh)["pol_round"] == 0
    assert decode(Proposal, encode(fresh), max_bytes=MAX_BYTES) == fresh
    relocked = dataclasses.replace(fresh, pol_round=1)
    assert to_primitive(relocked)["pol_round"] == 2
    assert decode(Proposal, encode(relocked), max_bytes=MAX_BYTES) == relocked


@pytest.mark.parametrize("wire_pol_round", [3, 4, UINT_MAX])
def test_invalid_proposal_pol_round_not_before_its_round(wire_pol_round: int) -> None:
    fresh = Proposal("c", 1, 2, NO_ROUND, Block(HEADER, ()), bytes(32), bytes(64))
    assert_invalid(Proposal, with_primitive(fresh, pol_round=wire_pol_round), "pol_round")
