"""Fixtures of the health API tests: real health networks (node processes), always stopped."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# As in tests/node: pytest runs with --import-mode=importlib, so make `health_harness` importable.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from health_harness import HealthNet, start_health_net  # noqa: E402 - needs the sys.path entry above


@pytest.fixture
def clinic_and_hospital(tmp_path: Path) -> Iterator[HealthNet]:
    """Two validators: a clinic and a hospital, each its own node process."""
    with start_health_net(tmp_path / "net", {"clinic": "clinic", "hospital": "hospital"}) as net:
        yield net


@pytest.fixture(scope="module")
def shared_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HealthNet]:
    """One clinic + one insurer network shared by a module's tests (they never rely on a fresh chain)."""
    with start_health_net(
        tmp_path_factory.mktemp("shared") / "net", {"clinic": "clinic", "insurer": "insurer"}
    ) as net:
        yield net
