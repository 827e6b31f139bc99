"""The canonical codec: every wire structure has exactly one byte encoding.

Wire structures are frozen dataclasses that declare a schema (`WIRE_FIELDS`). They encode as
msgpack maps whose keys are the field names in sorted order. Decoding is strict:

* the byte size is checked against the caller's limit *before* msgpack sees the bytes;
* msgpack's own limits bound every string, binary, array and map length *while* decoding, and
  a depth limit is enforced while the primitives are converted into typed values;
* unknown fields, missing fields, wrong types (a bool is not an int), out-of-range integers,
  bad lengths and extension types are rejected;
* map keys must come in the schema's sorted order, and the decoded primitives are re-packed and
  must equal the input, so non-minimal integers or lengths, unsorted keys or str/bin confusion
  cannot give one value two encodings (and two ids). Re-packing the primitives rather than the
  typed value is equivalent (every field spec is a bijection between the two) and half the work.

Error locations ("Block.txs[3]: expected binary data") are built only when decoding fails: a
spec reports its own part of the path and each enclosing level prefixes its own, so the happy
path formats no strings.

Any failure raises `CodecError`; no other exception escapes `decode`.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from collections.abc import Callable
from typing import Any, ClassVar, Final, NoReturn, Protocol, TypeVar, cast

import msgpack

from medledger.chain.errors import CodecError
from medledger.chain.limits import DEPTH_MAX, TEXT_ID_LENGTH_MAX, UINT_MAX


class FieldSpec(Protocol):
    """How one field is checked and converted between typed value and msgpack primitive."""

    def to_primitive(self, value: Any) -> Any: ...

    def from_primitive(self, raw: Any, where: str, depth: int) -> Any: ...


class WireType(Protocol):
    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]]


W = TypeVar("W", bound=WireType)


@dataclasses.dataclass(frozen=True, slots=True)
class UInt:
    """An unsigned integer in [minimum, maximum]."""

    maximum: int = UINT_MAX
    minimum: int = 0

    def to_primitive(self, value: Any) -> Any:
        return value

    def from_primitive(self, raw: Any, where: str, depth: int) -> Any:
        if type(raw) is not int:
            raise CodecError(f"{where}: expected an integer")
        if not self.minimum <= raw <= self.maximum:
            raise CodecError(f"{where}: {raw} is outside [{self.minimum}, {self.maximum}]")
        return raw


@dataclasses.dataclass(frozen=True, slots=True)
class Bytes:
    """A binary string whose length lies in [min_length, max_length]."""

    max_length: int
    min_length: int = 0

    def to_primitive(self, value: Any) -> Any:
        return value

    def from_primitive(self, raw: Any, where: str, depth: int) -> Any:
        if type(raw) is not bytes:
            raise CodecError(f"{where}: expected binary data")
        if not self.min_length <= len(raw) <= self.max_length:
            if self.min_length == self.max_length:
                raise CodecError(f"{where}: expected {self.max_length} bytes, got {len(raw)}")
            raise CodecError(f"{where}: length {len(raw)} is outside [{self.min_length}, {self.max_length}]")
        return raw


def FixedBytes(length: int) -> Bytes:
    return Bytes(max_length=length, min_length=length)


@dataclasses.dataclass(frozen=True, slots=True)
class Text:
    """A UTF-8 string of printable ASCII identifier characters (no control characters)."""

    max_length: int = TEXT_ID_LENGTH_MAX
    min_length: int = 1
    allowed: frozenset[str] | None = None

    def to_primitive(self, value: Any) -> Any:
        return value

    def from_primitive(self, raw: Any, where: str, depth: int) -> Any:
        if type(raw) is not str:
            raise CodecError(f"{where}: expected a string")
        if not self.min_length <= len(raw) <= self.max_length:
            raise CodecError(f"{where}: length {len(raw)} is outside [{self.min_length}, {self.max_length}]")
        if not raw.isascii() or not raw.isprintable():
            raise CodecError(f"{where}: only printable ASCII is allowed")
        if self.allowed is not None and raw not in self.allowed:
            raise CodecError(f"{where}: {raw!r} is not one of {sorted(self.allowed)}")
        return raw


def is_human_text(value: str, *, min_length: int, max_length: int, max_bytes: int) -> bool:
    """Whether `value` is text a person wrote, in its one wire form: Unicode in NFC (so that the
    same name has one encoding), printable (no control, format or line-break characters), of
    `min_length` to `max_length` characters and at most `max_bytes` bytes of UTF-8."""
    if not min_length <= len(value) <= max_length or not value.isprintable():
        return False
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:  # an unpaired surrogate
        return False
    return size <= max_bytes and unicodedata.is_normalized("NFC", value)


@dataclasses.dataclass(frozen=True, slots=True)
class HumanText:
    """A string a person reads (a name): printable Unicode in NFC, bounded in characters and bytes.

    `Text` is for identifiers and code lists (printable ASCII); names are not ASCII (issue 14,
    defect 5). Clients normalise to NFC before they sign; the codec refuses any other form.
    """

    max_length: int
    max_bytes: int
    min_length: int = 1

    def to_primitive(self, value: Any) -> Any:
        return value

    def from_primitive(self, raw: Any, where: str, depth: int) -> Any:
        if type(raw) is not str:
            raise CodecError(f"{where}: expected a string")
        if not is_human_text(
            raw, min_length=self.min_length, max_length=self.max_length, max_bytes=self.max_bytes
        ):
            raise CodecError(
                f"{where}: expected {self.min_length} to {self.max_length} printable characters "
                f"(at most {self.max_bytes} bytes of UTF-8) in Unicode NFC"
            )
        return raw


@dataclasses.dataclass(frozen=True, slots=True)
class Struct:
    """A nested wire structure."""

    cls: type[Any]

    def to_primitive(self, value: Any) -> Any:
        return to_primitive(value)

    def from_primitive(self, raw: Any, where: str, depth: int) -> Any:
        return from_primitive(self.cls, raw, where, depth + 1)


@dataclasses.dataclass(frozen=True, slots=True)
class Seq:
    """A sequence (decoded as a tuple) of at most `max_items` items of one spec."""

    item: FieldSpec
    max_items: int

    def to_primitive(self, value: Any) -> Any:
        to_item = self.item.to_primitive
        return [to_item(v) for v in value]

    def from_primitive(self, raw: Any, where: str, depth: int) -> Any:
        if type(raw) is not list:
            raise CodecError(f"{where}: expected an array")
        if len(raw) > self.max_items:
            raise CodecError(f"{where}: {len(raw)} items exceed the limit of {self.max_items}")
        if depth + 1 > DEPTH_MAX:
            raise CodecError(f"{where}: nesting deeper than {DEPTH_MAX}")
        from_item = self.item.from_primitive
        try:
            return tuple([from_item(v, "", depth + 1) for v in raw])
        except CodecError:
            pass
        for i, v in enumerate(raw):  # only on failure: find the item and say where it is
            try:
                from_item(v, "", depth + 1)
            except CodecError as exc:
                raise CodecError(f"{where}[{i}]{exc.message}") from None
        raise AssertionError("unreachable: an item failed once and passed the second time")


_SORTED_FIELDS: dict[type[Any], tuple[tuple[str, FieldSpec], ...]] = {}


def _sorted_fields(cls: type[Any]) -> tuple[tuple[str, FieldSpec], ...]:
    fields = _SORTED_FIELDS.get(cls)
    if fields is None:
        declared = {f.name for f in dataclasses.fields(cls)}
        schema: dict[str, FieldSpec] = cls.WIRE_FIELDS
        if set(schema) != declared:
            raise TypeError(f"{cls.__name__}: WIRE_FIELDS does not match the dataclass fields")
        fields = tuple(sorted(schema.items()))
        _SORTED_FIELDS[cls] = fields
    return fields


def to_primitive(value: Any) -> dict[str, Any]:
    """The msgpack-ready form of a wire structure: a dict with keys in sorted order."""
    return {name: spec.to_primitive(getattr(value, name)) for name, spec in _sorted_fields(type(value))}


@dataclasses.dataclass(frozen=True, slots=True)
class _Schema:
    """A wire type's fields as decoding walks them: sorted names, their specs, and for each
    constructor argument (declaration order) its position in the sorted order."""

    names: tuple[str, ...]
    specs: tuple[FieldSpec, ...]
    argument_order: tuple[int, ...]


_SCHEMAS: dict[type[Any], _Schema] = {}


def _schema(cls: type[Any]) -> _Schema:
    schema = _SCHEMAS.get(cls)
    if schema is None:
        fields = _sorted_fields(cls)
        names = tuple(name for name, _ in fields)
        order = tuple(names.index(f.name) for f in dataclasses.fields(cls))
        schema = _SCHEMAS[cls] = _Schema(names, tuple(spec for _, spec in fields), order)
    return schema


# -- the compiled fast path ------------------------------------------------------------------------
#
# Decoding is on every hot path (each tx is decoded on admission, in blocks, and by block sync),
# and walking the schema spec by spec costs a method call per field. So each wire type gets a
# decoder generated from its schema on first use, the way `dataclasses` generates `__init__`: the
# same checks written out inline. It only answers "valid, here is the value" or `_INVALID`; on
# `_INVALID` the schema walk below runs and says precisely what is wrong. Both must accept exactly
# the same inputs with the same values (tests/chain/test_codec.py checks it on arbitrary and
# mutated encodings of every wire type).


class _Invalid:
    __slots__ = ()


_INVALID: Final = _Invalid()
_FAST: dict[type[Any], Callable[[Any, int], Any]] = {}


def _fast_decoder(cls: type[Any]) -> Callable[[Any, int], Any]:
    decoder = _FAST.get(cls)
    if decoder is None:
        decoder = _FAST[cls] = _compile(cls)
    return decoder


def _check_lines(spec: FieldSpec, var: str, depth: str, env: dict[str, Any], indent: str) -> list[str]:
    """Lines that check (and may replace) `var` against `spec`, returning `_INVALID` on failure."""
    n = len(env)
    fail = f"{indent}    return _INVALID"
    if type(spec) is UInt:
        return [f"{indent}if type({var}) is not int or not {spec.minimum} <= {var} <= {spec.maximum}:", fail]
    if type(spec) is Bytes:
        bounds = f"{spec.min_length} <= len({var}) <= {spec.max_length}"
        return [f"{indent}if type({var}) is not bytes or not {bounds}:", fail]
    if type(spec) is Text:
        lines = [
            f"{indent}if (type({var}) is not str or not {spec.min_length} <= len({var}) <= {spec.max_length}"
            f" or not {var}.isascii() or not {var}.isprintable()):",
            fail,
        ]
        if spec.allowed is not None:
            env[f"allowed_{n}"] = spec.allowed
            lines += [f"{indent}if {var} not in allowed_{n}:", fail]
        return lines
    if type(spec) is Struct:
        env[f"cls_{n}"] = spec.cls
        return [
            f"{indent}{var} = _fast_decoder(cls_{n})({var}, {depth} + 1)",
            f"{indent}if {var} is _INVALID:",
            fail,
        ]
    if type(spec) is Seq:
        item = f"item_{n}"
        env[f"seq_{n}"] = None  # reserve the number
        lines = [
            f"{indent}if type({var}) is not list or len({var}) > {spec.max_items}"
            f" or {depth} + 1 > {DEPTH_MAX}:",
            fail,
            f"{indent}items_{n} = []",
            f"{indent}for {item} in {var}:",
        ]
        lines += _check_lines(spec.item, item, f"({depth} + 1)", env, indent + "    ")
        lines += [f"{indent}    items_{n}.append({item})", f"{indent}{var} = tuple(items_{n})"]
        return lines
    env[f"spec_{n}"] = spec  # any other spec: its own check, its failure a plain `_INVALID`
    return [
        f"{indent}try:",
        f"{indent}    {var} = spec_{n}.from_primitive({var}, '', {depth})",
        f"{indent}except CodecError:",
        fail,
    ]


def _compile(cls: type[Any]) -> Callable[[Any, int], Any]:
    schema = _SCHEMAS.get(cls) or _schema(cls)
    env: dict[str, Any] = {
        "_INVALID": _INVALID,
        "_fast_decoder": _fast_decoder,
        "CodecError": CodecError,
        "cls": cls,
        "names": schema.names,
    }
    variables = [f"v{i}" for i in range(len(schema.names))]
    lines = [
        "def decode(raw, depth):",
        f"    if depth > {DEPTH_MAX} or type(raw) is not dict or tuple(raw) != names:",
        "        return _INVALID",
    ]
    if variables:
        lines.append(f"    {', '.join(variables)}{',' if len(variables) == 1 else ''} = raw.values()")
    for var, spec in zip(variables, schema.specs, strict=True):
        lines += _check_lines(spec, var, "depth", env, "    ")
    arguments = ", ".join(variables[i] for i in schema.argument_order)
    lines += [
        "    try:",
        f"        return cls({arguments})",
        "    except (ValueError, TypeError):",
        "        return _INVALID",
    ]
    namespace: dict[str, Any] = {}
    exec("\n".join(lines), env, namespace)  # noqa: S102 (source built above from the schema only)
    decoder: Callable[[Any, int], Any] = namespace["decode"]
    return decoder


def from_primitive(cls: type[W], raw: Any, where: str | None = None, depth: int = 0) -> W:
    """Check decoded msgpack primitives against `cls`'s schema and build the typed value.

    `where` names the value in error messages (the class name at the top level; "" for an item
    of a sequence, whose index the sequence adds). Map keys must be in the schema's sorted order.
    """
    value = (_FAST.get(cls) or _fast_decoder(cls))(raw, depth)
    if value is not _INVALID:
        return cast(W, value)
    return _from_primitive_checked(cls, raw, where, depth)


def _from_primitive_checked(cls: type[W], raw: Any, where: str | None, depth: int) -> W:
    """The schema walk: slower than the compiled decoder, but it says what is wrong."""
    schema = _SCHEMAS.get(cls) or _schema(cls)
    names = schema.names
    if depth > DEPTH_MAX or type(raw) is not dict or tuple(raw) != names:
        _reject_shape(cls, raw, cls.__name__ if where is None else where, depth, names)
    try:
        values = [
            spec.from_primitive(value, name, depth)
            for spec, name, value in zip(schema.specs, names, raw.values(), strict=True)
        ]
    except CodecError as exc:
        raise CodecError(f"{cls.__name__ if where is None else where}.{exc.message}") from None
    try:
        return cls(*[values[i] for i in schema.argument_order])
    except (ValueError, TypeError) as exc:  # a __post_init__ cross-field check
        raise CodecError(f"{cls.__name__ if where is None else where}: {exc}") from None


def _reject_shape(cls: type[Any], raw: Any, where: str, depth: int, names: tuple[str, ...]) -> NoReturn:
    """Why `raw` is not a map with exactly `cls`'s fields in sorted order."""
    if depth > DEPTH_MAX:
        raise CodecError(f"{where}: nesting deeper than {DEPTH_MAX}")
    if type(raw) is not dict:
        raise CodecError(f"{where}: expected a map")
    unknown = sorted(str(k) for k in raw if k not in names)
    missing = [n for n in names if n not in raw]
    if len(raw) != len(names):
        raise CodecError(f"{where}: unknown fields {unknown}, missing fields {missing}")
    if missing:
        raise CodecError(f"{where}: missing field {missing[0]!r}; unknown fields {unknown}")
    raise CodecError(f"{where}: not the canonical encoding (fields out of order)")


_packer_options: dict[str, Any] = {"use_bin_type": True}


def encode_primitive(obj: Any) -> bytes:
    """Encode already-primitive data (maps must already be in canonical key order)."""
    packed: bytes = msgpack.packb(obj, **_packer_options)
    return packed


def encode(value: WireType) -> bytes:
    """The one canonical encoding of a wire structure."""
    return encode_primitive(to_primitive(value))


def _reject_ext(code: int, data: bytes) -> Any:
    raise CodecError(f"msgpack extension type {code} is not allowed")


def decode_primitive(data: bytes, *, max_bytes: int) -> Any:
    """Decode bytes into msgpack primitives, with every length bounded by `max_bytes`."""
    if type(data) is not bytes:
        raise CodecError("expected bytes")
    if len(data) > max_bytes:
        raise CodecError(f"{len(data)} bytes exceed the limit of {max_bytes}")
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_str_len=max_bytes,
            max_bin_len=max_bytes,
            max_array_len=max_bytes,
            max_map_len=max_bytes,
            max_ext_len=0,
            ext_hook=_reject_ext,
            timestamp=0,
        )
    except CodecError:
        raise
    except (ValueError, TypeError, UnicodeDecodeError, OverflowError, RecursionError) as exc:
        # FormatError, StackError, ExtraData and OutOfData are all ValueError subclasses.
        raise CodecError(f"not valid msgpack: {type(exc).__name__}") from None
    except msgpack.UnpackException as exc:
        raise CodecError(f"not valid msgpack: {type(exc).__name__}") from None


def decode(cls: type[W], data: bytes, *, max_bytes: int) -> W:
    """Decode the canonical encoding of a `cls` value; anything else raises `CodecError`."""
    primitive = decode_primitive(data, max_bytes=max_bytes)
    value = from_primitive(cls, primitive)
    # Re-packing is the check: equal sizes would not do, since msgpack has signed and unsigned
    # integer forms of the same width (a uint16 value also fits an int16).
    if encode_primitive(primitive) != data:
        raise CodecError(f"{cls.__name__}: not the canonical encoding")
    return value


def decode_seq(cls: type[W], data: bytes, *, max_bytes: int, max_items: int) -> tuple[W, ...]:
    """Decode a canonical msgpack array of `cls` values."""
    raw = decode_primitive(data, max_bytes=max_bytes)
    values = Seq(Struct(cls), max_items).from_primitive(raw, f"[{cls.__name__}]", 0)
    if encode_primitive(raw) != data:
        raise CodecError(f"[{cls.__name__}]: not the canonical encoding")
    return tuple(values)


def wire_fields(**fields: FieldSpec) -> dict[str, FieldSpec]:
    """Declare a schema (readability helper for `WIRE_FIELDS = wire_fields(...)`)."""
    return dict(fields)


__all__ = [
    "Bytes",
    "FieldSpec",
    "FixedBytes",
    "Seq",
    "Struct",
    "Text",
    "UInt",
    "decode",
    "decode_primitive",
    "decode_seq",
    "encode",
    "encode_primitive",
    "from_primitive",
    "to_primitive",
    "wire_fields",
]
