"""The layer rule (DESIGN.md §1), checked over the source with `ast`.

    common (`medledger`) ← crypto ← chain ← network / health ← node

A layer may import itself and the layers below it; network and health never import each other.
Every import counts: `import`, `from ... import`, relative imports (resolved against the
importing module's package), imports under `if TYPE_CHECKING:`, literal `importlib.import_module`
/ `__import__` calls, and bare imports of a layer folder (`import chain`), which would bypass the
`medledger` namespace altogether.
"""

from __future__ import annotations

import ast
import dataclasses
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: Folder → installed package (pyproject's `package-dir`).
PACKAGE_OF_FOLDER: dict[str, str] = {
    "common": "medledger",
    "crypto": "medledger.crypto",
    "chain": "medledger.chain",
    "network": "medledger.network",
    "health": "medledger.health",
    "node": "medledger.node",
}
LAYER_OF_FOLDER: dict[str, str] = {folder: folder for folder in PACKAGE_OF_FOLDER}
SUBPACKAGE_LAYERS = frozenset(LAYER_OF_FOLDER) - {"common"}

#: What each layer may import besides itself.
ALLOWED: dict[str, frozenset[str]] = {
    "common": frozenset(),
    "crypto": frozenset({"common"}),
    "chain": frozenset({"crypto", "common"}),
    "network": frozenset({"chain", "crypto", "common"}),
    "health": frozenset({"chain", "crypto", "common"}),
    "node": frozenset({"network", "health", "chain", "crypto", "common"}),
}

ROOT_PACKAGE = "medledger"


@dataclasses.dataclass(frozen=True, slots=True)
class Violation:
    where: str
    line: int
    importer: str
    imported: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}:{self.line}: {self.importer} imports {self.imported}: {self.reason}"


def get_layer(module: str) -> str | None:
    """The layer a dotted module belongs to, or None when it is not ours."""
    parts = module.split(".")
    if parts[0] != ROOT_PACKAGE:
        return None
    if len(parts) > 1 and parts[1] in SUBPACKAGE_LAYERS:
        return parts[1]
    return "common"


def compute_module_name(path: Path) -> tuple[str, bool]:
    """(dotted module name, is a package `__init__`) of a source file under the repository root."""
    relative = path.relative_to(REPO)
    folder, *rest = relative.parts
    parts = [*PACKAGE_OF_FOLDER[folder].split("."), *rest]
    parts[-1] = parts[-1].removesuffix(".py")
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join(parts), is_package


def resolve_relative(module: str, is_package: bool, level: int, target: str | None) -> str | None:
    """`from <level dots><target> import ...` inside `module`; None when it climbs above the root."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    if level - 1 >= len(package):
        return None
    base = package[: len(package) - (level - 1)]
    return ".".join([*base, *(target.split(".") if target else [])])


def _imported_modules(node: ast.AST, module: str, is_package: bool) -> list[tuple[str, str | None]]:
    """(what the source says, resolved dotted module or None if unresolvable) for one AST node."""
    if isinstance(node, ast.Import):
        return [(alias.name, alias.name) for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        spelled = "." * node.level + (node.module or "")
        base = resolve_relative(module, is_package, node.level, node.module) if node.level else node.module
        if base is None:
            return [(spelled, None)]
        # `from medledger import chain` imports the chain layer: the name decides, not the module.
        return [
            (f"{spelled} import {alias.name}", base if alias.name == "*" else f"{base}.{alias.name}")
            for alias in node.names
        ]
    if isinstance(node, ast.Call) and node.args:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        first = node.args[0]
        if (
            name in {"import_module", "__import__"}
            and isinstance(first, ast.Constant)
            and isinstance(first.value, str)
            and not first.value.startswith(".")
        ):
            return [(f"{name}({first.value!r})", first.value)]
    return []


def find_violations(
    source: str, *, module: str, is_package: bool = False, where: str = ""
) -> list[Violation]:
    """Every import in `source` (the text of `module`) that breaks the layer rule."""
    importer = get_layer(module)
    assert importer is not None, module
    where = where or module
    violations: list[Violation] = []
    for node in ast.walk(ast.parse(source)):
        for spelled, resolved in _imported_modules(node, module, is_package):
            line = getattr(node, "lineno", 0)
            if resolved is None:
                violations.append(Violation(where, line, importer, spelled, "relative import above the root"))
                continue
            top = resolved.split(".")[0]
            if top in LAYER_OF_FOLDER:
                violations.append(
                    Violation(where, line, importer, spelled, "a layer folder imported outside `medledger`")
                )
                continue
            imported = get_layer(resolved)
            if imported is None or imported == importer:
                continue
            if imported not in ALLOWED[importer]:
                violations.append(
                    Violation(where, line, importer, spelled, f"{importer} may not import {imported}")
                )
    return violations


def iter_sources() -> list[Path]:
    return sorted(
        path
        for folder in PACKAGE_OF_FOLDER
        for path in (REPO / folder).rglob("*.py")
        if "__pycache__" not in path.parts
    )


def test_layer_map_matches_the_packaging() -> None:
    with (REPO / "pyproject.toml").open("rb") as f:
        pyproject = tomllib.load(f)
    package_dir: dict[str, str] = pyproject["tool"]["setuptools"]["package-dir"]
    assert {folder: package for package, folder in package_dir.items()} == PACKAGE_OF_FOLDER
    assert set(ALLOWED) == set(LAYER_OF_FOLDER)


def test_every_layer_folder_has_sources() -> None:
    found = {path.relative_to(REPO).parts[0] for path in iter_sources()}
    assert found == set(PACKAGE_OF_FOLDER)
    # Not vacuous: the layers with code are really parsed.
    assert sum(1 for p in iter_sources() if p.relative_to(REPO).parts[0] == "chain") >= 10


def test_no_import_points_up_or_sideways() -> None:
    violations: list[Violation] = []
    for path in iter_sources():
        module, is_package = compute_module_name(path)
        violations += find_violations(
            path.read_text(encoding="utf-8"),
            module=module,
            is_package=is_package,
            where=str(path.relative_to(REPO)),
        )
    assert not violations, "layer violations:\n" + "\n".join(map(str, violations))


@pytest.mark.parametrize(
    ("module", "is_package", "source"),
    [
        ("medledger.chain.store", False, "import medledger.node.api"),
        ("medledger.chain.store", False, "from medledger.node import api"),
        ("medledger.chain.store", False, "from medledger import node"),
        ("medledger.chain.store", False, "from medledger import errors, network"),
        ("medledger.chain.store", False, "from ..node.api import App"),
        ("medledger.chain.store", False, "from .. import health"),
        ("medledger.chain", True, "from ..network import x"),
        ("medledger.chain.store", False, "from ... import x"),
        ("medledger.crypto.signing", False, "from medledger.chain.types import Tx"),
        ("medledger.crypto.signing", False, "from ..chain import types"),
        ("medledger.network", True, "from medledger.health import records"),
        ("medledger.health.records", False, "import medledger.network.peer as peer"),
        ("medledger.health.records", False, "from ..network.peer import Peer"),
        ("medledger.errors", False, "from medledger.crypto import digest"),
        ("medledger", True, "from . import crypto"),
        ("medledger.errors", False, "from .chain import codec"),
        ("medledger.chain.store", False, "import chain.codec"),
        ("medledger.chain.store", False, "from crypto import digest"),
        (
            "medledger.chain.store",
            False,
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from medledger.node.node import Node",
        ),
        ("medledger.chain.store", False, "def f():\n    from medledger.node import api"),
        ("medledger.chain.store", False, "import importlib\nimportlib.import_module('medledger.node.api')"),
        ("medledger.chain.store", False, "__import__('medledger.network')"),
    ],
)
def test_checker_catches_a_violation(module: str, is_package: bool, source: str) -> None:
    violations = find_violations(source, module=module, is_package=is_package)
    assert len(violations) >= 1, source


@pytest.mark.parametrize(
    ("module", "is_package", "source"),
    [
        ("medledger.chain.store", False, "import msgpack\nfrom pathlib import Path"),
        ("medledger.chain.store", False, "from medledger.chain import layout"),
        ("medledger.chain.store", False, "from . import layout\nfrom .codec import encode"),
        ("medledger.chain.store", False, "from ..crypto import digest\nfrom .. import errors"),
        ("medledger.chain.store", False, "from medledger import errors, crypto\nimport medledger"),
        ("medledger.chain", True, "from .types import Tx\nfrom ..crypto import digest"),
        ("medledger.crypto.signing", False, "from medledger.errors import MedledgerError"),
        ("medledger.network.peer", False, "from medledger.chain.types import Tx"),
        ("medledger.health.records", False, "from ..chain.types import Tx\nfrom ..crypto import digest"),
        ("medledger.node.node", False, "from medledger.network import x\nfrom medledger.health import y"),
        ("medledger.node.node", False, "from ..network import x\nfrom .. import health, chain"),
        ("medledger.errors", False, "from . import errors"),
        ("medledger", True, "from .errors import MedledgerError"),
    ],
)
def test_checker_allows_imports_down_the_stack(module: str, is_package: bool, source: str) -> None:
    assert find_violations(source, module=module, is_package=is_package) == []


def test_relative_imports_resolve_against_the_package() -> None:
    assert resolve_relative("medledger.chain.store", False, 1, "codec") == "medledger.chain.codec"
    assert resolve_relative("medledger.chain", True, 1, "codec") == "medledger.chain.codec"
    assert resolve_relative("medledger.chain.store", False, 2, "crypto") == "medledger.crypto"
    assert resolve_relative("medledger.chain.store", False, 2, None) == "medledger"
    assert resolve_relative("medledger.chain.store", False, 3, None) is None
    assert resolve_relative("medledger.errors", False, 2, None) is None


def test_module_names_follow_the_package_dir() -> None:
    assert compute_module_name(REPO / "common" / "errors.py") == ("medledger.errors", False)
    assert compute_module_name(REPO / "common" / "__init__.py") == ("medledger", True)
    assert compute_module_name(REPO / "chain" / "__init__.py") == ("medledger.chain", True)
    assert compute_module_name(REPO / "chain" / "codec.py") == ("medledger.chain.codec", False)
