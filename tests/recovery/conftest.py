"""Make `recovery_harness` importable by its plain module name (the tests folders are no packages)."""

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
