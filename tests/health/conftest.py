"""Make the health tests' shared builders (`health_testkit`) importable by their plain module name.

The tests folders are not packages (no `__init__.py`): pytest then imports test modules under
rootdir-derived names, and mypy maps each file to its bare module name. Putting this folder on
`sys.path` lets both resolve `import health_testkit` to the same file.
"""

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
