"""JSON text as a client wrote it: strict parsing, and the exact text of each member of an object.

A record is kept as the JSON its author submitted (issue 14, defect 4; ADR 0011): FHIR says the
precision of a decimal is significant (`6.30` is not `6.3`) and a long decimal is not a float, so a
re-serialisation from parsed values loses content. What the parser believes and what a reader later
sees must then be the same document, which a lenient parser does not guarantee: JSON text with a
repeated member name means one thing to Python (the last wins) and another to other parsers (the
first wins, or an error). So text here is

- UTF-8, strictly (no BOM, no other encoding guessed, no lone surrogates, escaped or not);
- free of repeated member names at any depth, of `NaN`/`Infinity` and of numbers that overflow to
  an infinite float;
- one value, with nothing but whitespace around it.

`split_members` parses an object and returns, for each member, its value *and its exact text*
(the bytes between the colon and the next comma, less whitespace), which is how the API keeps a
submitted record's bytes out of the request that carries it. Its values are as parsed (they may
hold an unpaired surrogate): each is judged by its reader.
"""

from __future__ import annotations

import dataclasses
import json
import json.decoder
import math
import re
from collections.abc import Callable
from typing import Any, Final

from medledger.health.errors import HealthError


class JsonTextError(HealthError):
    """Text that is not strict JSON (the message names the rule, never the text)."""

    code = "invalid_json"


_WHITESPACE: Final = re.compile(r"[ \t\n\r]*")
_REPEATED: Final = "a JSON object repeats a member name (parsers disagree on which one counts)"


def _object_without_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise JsonTextError(_REPEATED)
    return result


def _reject_constant(name: str) -> Any:
    raise JsonTextError(f"JSON text contains {name}, which is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise JsonTextError("a JSON number is too large for any reader (it overflows to infinity)")
    return value


def _finite_int(text: str) -> int:
    # An integer literal has no exponent, but may still be too large for a reader that holds
    # numbers as doubles (JavaScript, most JSON libraries): it would read it as infinity.
    value = int(text)
    try:
        float(value)
    except OverflowError:
        raise JsonTextError("a JSON number is too large for any reader (it overflows to infinity)") from None
    return value


_DECODER: Final = json.JSONDecoder(
    object_pairs_hook=_object_without_repeats,
    parse_constant=_reject_constant,
    parse_float=_finite_float,
    parse_int=_finite_int,
)
_scan_once: Final[Callable[[str, int], tuple[Any, int]]] = _DECODER.scan_once  # type: ignore[attr-defined]


def _has_lone_surrogate(value: Any) -> bool:
    """Whether a parsed value holds a lone surrogate (`"\\ud800"`, valid JSON syntax, not Unicode).

    Walked with an explicit stack, not by recursion: the parser accepts nesting up to the
    interpreter's recursion limit, and a recursive walk of a value nested nearly that deep would
    exceed it (a `RecursionError`, which no caller expects: a 500)."""
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def decode_text(data: bytes | str) -> str:
    """`data` as text: bytes must be UTF-8 without a byte-order mark (`JsonTextError`)."""
    if isinstance(data, str):
        return data
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise JsonTextError("JSON text must be UTF-8") from None
    if text.startswith("\ufeff"):
        raise JsonTextError("JSON text must not start with a byte-order mark")
    return text


def _scan(text: str, index: int) -> tuple[Any, int]:
    try:
        return _scan_once(text, index)
    except StopIteration:
        raise JsonTextError("not valid JSON text") from None
    except RecursionError:
        raise JsonTextError("JSON text nests too deeply") from None
    except JsonTextError:
        raise
    except ValueError:  # json.JSONDecodeError, and int() of an over-long number
        raise JsonTextError("not valid JSON text") from None


def _checked(value: Any) -> Any:
    if _has_lone_surrogate(value):
        raise JsonTextError("JSON text holds an unpaired UTF-16 escape, which is not Unicode text")
    return value


def parse_json(data: bytes | str) -> Any:
    """One strict JSON value (see the module docstring); `JsonTextError` otherwise."""
    text = decode_text(data)
    start = _WHITESPACE.match(text, 0)
    assert start is not None  # the pattern matches the empty string
    value, end = _scan(text, start.end())
    rest = _WHITESPACE.match(text, end)
    assert rest is not None
    if rest.end() != len(text):
        raise JsonTextError("JSON text continues after its value")
    return _checked(value)


def split_members(data: bytes | str) -> dict[str, tuple[Any, str]]:
    """A strict JSON object's members: name → (value, the value's exact text as written).

    `JsonTextError` if the text is not one strict JSON object.
    """
    text = decode_text(data)

    def skip(index: int) -> int:
        match = _WHITESPACE.match(text, index)
        assert match is not None
        return match.end()

    index = skip(0)
    if text[index : index + 1] != "{":
        raise JsonTextError("JSON text must be an object")
    index = skip(index + 1)
    members: dict[str, tuple[Any, str]] = {}
    if text[index : index + 1] == "}":
        index += 1
    else:
        while True:
            if text[index : index + 1] != '"':
                raise JsonTextError("not valid JSON text (a member name is expected)")
            try:
                name, index = json.decoder.scanstring(text, index + 1, True)  # type: ignore[attr-defined]
            except ValueError:
                raise JsonTextError("not valid JSON text (a member name is malformed)") from None
            index = skip(index)
            if text[index : index + 1] != ":":
                raise JsonTextError("not valid JSON text (a colon is expected)")
            start = skip(index + 1)
            value, index = _scan(text, start)
            if name in members:
                raise JsonTextError(_REPEATED)
            # A value is returned as parsed: whoever reads it judges it (a record's text is parsed
            # again, strictly, by `fhir.parse_record_json`, so an unpaired surrogate in it is an
            # invalid record there). A name is checked here: callers count and list names.
            members[_checked(name)] = (value, text[start:index])
            index = skip(index)
            separator = text[index : index + 1]
            if separator == ",":
                index = skip(index + 1)
                continue
            if separator == "}":
                index += 1
                break
            raise JsonTextError("not valid JSON text (a comma or closing brace is expected)")
    if skip(index) != len(text):
        raise JsonTextError("JSON text continues after its value")
    return members


@dataclasses.dataclass(frozen=True, slots=True)
class JsonText:
    """JSON text to be sent exactly as it is (a record, a Claim or a ClaimResponse as its author
    submitted it, ADR 0011): `compute_spliced_json` puts it in an answer unchanged. Only text that
    was parsed as strict JSON (`parse_json`, `fhir.validate_resource`) may be wrapped."""

    text: str


def compute_spliced_json(value: Any) -> str:
    """`json.dumps(value)` (its default separators), except that each `JsonText` inside is spliced
    as its text: an answer that carries submitted JSON loses none of its digits or spelling
    (`100.10` stays `100.10`, `1e2` stays `1e2`), where a re-serialisation of parsed values would not."""
    if isinstance(value, JsonText):
        return value.text
    if isinstance(value, dict):
        members = (f"{json.dumps(str(name))}: {compute_spliced_json(item)}" for name, item in value.items())
        return "{" + ", ".join(members) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(compute_spliced_json(item) for item in value) + "]"
    return json.dumps(value)
