"""The app benchmark runs end to end at a tiny size (issue 15): a real node, Debian's Chromium.

`scripts/bench_app.py --records 5` adds five records, opens the page and reads the page's own
measures; its JSON last line has the keys the issue names. No timing is asserted (the figures are
the script's to print; the lead runs the full size on a quiet machine).
"""

from __future__ import annotations

from test_bench_events import run_script


def test_bench_app_prints_its_measures_at_a_tiny_size() -> None:
    summary = run_script("bench_app.py", "--records", "5")
    assert summary["bench"] == "app"
    assert summary["records"] == 5
    for key in ("first_render_ms", "decrypt_verify_ms"):
        assert isinstance(summary[key], int | float), (key, summary)
    assert isinstance(summary["cpus"], int)
    assert isinstance(summary["platform"], str)
