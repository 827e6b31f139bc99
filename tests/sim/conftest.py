"""Make the simulation tests' shared helpers (`sim_support`) importable by their plain module name.

As in tests/chain: the test folders are not packages, so this folder goes on `sys.path`, which
also lets the sweep's worker processes (spawned, they inherit `sys.path`) import the helpers.
"""

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
