"""Human text (inquiry reasons, institution names): Unicode, one normal form, printable, bounded.

A person writes "Nachsorge nach der Operation im März" or "Hôpital Saint-Louis" (issue 14,
defect 5). Such text is accepted in any Unicode normal form and kept in NFC, the composed form
(`é` as one code point), so that the same words have one byte form: what is sealed, signed,
compared or shown. It must be printable (no control, format, line or paragraph separator
characters: they reorder or hide what a reader sees) and is bounded both in characters (what a
screen shows) and in UTF-8 bytes (what a wire field or a padded ciphertext holds). A refusal
names the rule and the field, never the text (it may be PHI).
"""

from __future__ import annotations

import unicodedata

from medledger.chain.codec import is_human_text
from medledger.health.errors import HealthError


class InvalidTextError(HealthError):
    """Human text that is not acceptable (the message names the field and the rule, never the text)."""

    code = "invalid_text"


def normalize_human_text(
    value: object,
    *,
    what: str,
    max_length: int,
    max_bytes: int,
    min_length: int = 1,
    line_breaks: bool = False,
) -> str:
    """`value` as NFC text within the bounds (`InvalidTextError` otherwise). With `line_breaks`
    (a paragraph a person writes, such as what is wrong in a record) `\n` is allowed, and text
    of white space only is refused."""
    if not isinstance(value, str):
        raise InvalidTextError(f"{what} must be a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidTextError(f"{what} must be Unicode text (it holds an unpaired UTF-16 escape)") from None
    text = unicodedata.normalize("NFC", value)
    # `\n` stands in for a printable character of one byte while the bounds are checked.
    checked = text.replace("\n", " ") if line_breaks else text
    if not is_human_text(checked, min_length=min_length, max_length=max_length, max_bytes=max_bytes):
        if not checked.isprintable():
            breaks = "line breaks allowed" if line_breaks else "no line breaks"
            raise InvalidTextError(
                f"{what} must be printable text (no control or formatting characters, {breaks})"
            )
        raise InvalidTextError(
            f"{what} must be {min_length} to {max_length} characters and at most {max_bytes} bytes of UTF-8"
        )
    if line_breaks and not text.strip():
        raise InvalidTextError(f"{what} must not be white space only")
    return text
