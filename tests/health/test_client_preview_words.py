"""The grant preview has words for every purpose and record type the ledger accepts.

A code without a description would make the preview refuse an honest inquiry
(`ScopeNotShowableError`), so the vocabularies must stay in step with `health.types`.
"""

from __future__ import annotations

from medledger.chain.limits import UINT_MAX
from medledger.health.preview import PURPOSE_WORDS, RECORD_TYPE_WORDS, format_time_ms
from medledger.health.types import PURPOSES, RECORD_TYPES


def test_every_purpose_and_record_type_has_words() -> None:
    assert set(PURPOSE_WORDS) == set(PURPOSES)
    assert set(RECORD_TYPE_WORDS) == set(RECORD_TYPES)
    assert all(
        words and words[0].islower() for words in (*PURPOSE_WORDS.values(), *RECORD_TYPE_WORDS.values())
    )


def test_times_read_as_dates_and_no_end() -> None:
    assert format_time_ms(0) == "1970-01-01 00:00 UTC"
    assert format_time_ms(1_700_000_000_000) == "2023-11-14 22:13 UTC"
    assert format_time_ms(UINT_MAX) == "no end date"
