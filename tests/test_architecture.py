"""The package's shape (docs/architecture.md, "Layers"): no import cycle among its
modules, click and rich only under ``cli/``, no module over 600 lines and no class
over 300.

The imports are read with ``ast``, nothing is executed: ``import x``, ``from x import
y`` and relative imports, at module level and inside functions, methods and class
bodies alike (an import inside a function is still a dependency). Importing a package
means its ``__init__`` module; ``from pkg import sub`` means the submodule when there
is one. The packages above an imported module, which Python also runs, are not
counted: every module would otherwise depend on ``botpoly_admin/__init__``, which
re-exports the guide's API. Imports under ``if TYPE_CHECKING:`` never run, so the
cycle check leaves them out; the click/rich rule counts them (a type-only dependency
on the renderer is still one). Dynamic imports (``importlib``) are not seen.

The first tests run the checker on small packages written into tmp_path, so each rule
is shown to fail; the last ones run it on botpoly_admin itself.
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "botpoly_admin"
MAX_MODULE_LINES = 600
MAX_CLASS_LINES = 300
RENDERERS = ("click", "rich")


@dataclass(frozen=True)
class Module:
    """One source file of the package."""

    name: str  # dotted; a package's __init__ has the package's name
    path: Path
    is_package: bool
    tree: ast.Module
    lines: int


@dataclass(frozen=True)
class Import:
    """One import statement's dependency of *source* on *target*."""

    source: str
    target: str  # a module of the package, or a dotted name outside it
    path: Path
    line: int
    scope: str  # "" at module level, else the enclosing "Class.method"
    type_only: bool  # under `if TYPE_CHECKING:`

    def where(self, root: Path) -> str:
        inside = f", in {self.scope}" if self.scope else ""
        return f"{self.path.relative_to(root.parent)}:{self.line}{inside}"


def package_modules(root: Path) -> dict[str, Module]:
    """Every module of the package in directory *root*, by dotted name."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        text = path.read_text(encoding="utf-8")
        name = ".".join(parts)
        modules[name] = Module(name, path, is_package, ast.parse(text, str(path)),
                               len(text.splitlines()))
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _ImportFinder(ast.NodeVisitor):
    """Collects a module's imports with their scope and whether they are type-only."""

    def __init__(self, module: Module, modules: dict[str, Module]) -> None:
        self.module, self.modules = module, modules
        self.scope: list[str] = []
        self.type_only = False
        self.found: list[Import] = []

    def _add(self, node: ast.stmt, target: str) -> None:
        self.found.append(Import(self.module.name, target, self.module.path, node.lineno,
                                 ".".join(self.scope), self.type_only))

    def _resolve(self, dotted: str) -> str:
        """The package module *dotted* names (its longest known prefix), or *dotted*."""
        parts = dotted.split(".")
        for end in range(len(parts), 0, -1):
            candidate = ".".join(parts[:end])
            if candidate in self.modules:
                return candidate
        return dotted

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(node, self._resolve(alias.name))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            package = self.module.name.split(".")
            if not self.module.is_package:
                package.pop()
            package = package[:len(package) - (node.level - 1)]
            base = ".".join(package + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            self._add(node, submodule if submodule in self.modules else self._resolve(base))

    def _scoped(self, node: ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    visit_ClassDef = visit_FunctionDef = visit_AsyncFunctionDef = _scoped

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            self.generic_visit(node)
            return
        self.visit(node.test)
        outer, self.type_only = self.type_only, True
        for statement in node.body:
            self.visit(statement)
        self.type_only = outer
        for statement in node.orelse:
            self.visit(statement)


def imports(modules: dict[str, Module]) -> list[Import]:
    """Every import in every module, in file and line order."""
    found = []
    for module in modules.values():
        finder = _ImportFinder(module, modules)
        finder.visit(module.tree)
        found.extend(finder.found)
    return found


def import_cycles(root: Path) -> list[str]:
    """One readable entry per group of modules that import each other in a cycle: the
    modules, one cycle through them, and every import among them (the links to cut),
    each with where it is."""
    modules = package_modules(root)
    edges: dict[str, dict[str, Import]] = {name: {} for name in modules}
    for found in imports(modules):
        if found.target in modules and found.target != found.source and not found.type_only:
            edges[found.source].setdefault(found.target, found)
    report = []
    for group in _strongly_connected(edges):
        path = _cycle_through(sorted(group)[0], group, edges)
        steps = [f"    {a} -> {b}  ({edges[a][b].where(root)})"
                 for a, b in zip(path, path[1:], strict=False)]
        links = [f"    {a} -> {b}  ({edges[a][b].where(root)})"
                 for a in sorted(group) for b in sorted(edges[a]) if b in group]
        report.append(f"cycle among {len(group)} modules: {', '.join(sorted(group))}\n"
                      + "\n".join(steps) + "\n  every import among them:\n"
                      + "\n".join(links))
    return report


def _strongly_connected(edges: dict[str, dict[str, Import]]) -> list[set[str]]:
    """The groups of more than one module that all reach each other (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(groups, key=lambda g: sorted(g))


def _cycle_through(start: str, group: set[str], edges: dict[str, dict[str, Import]]
                   ) -> list[str]:
    """A shortest import path from *start* back to itself inside *group*."""
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(edges[node]):
                if nxt not in group or nxt in came_from:
                    continue
                came_from[nxt] = node
                if nxt == start:
                    path = [start]
                    while path[-1] != start or len(path) == 1:
                        path.append(came_from[path[-1]])
                    return path[::-1]
                following.append(nxt)
        frontier = following
    raise AssertionError(f"{start} is in a cycle but none was found")  # cannot happen


def renderer_imports(root: Path) -> list[str]:
    """Each import of click or rich outside the package's cli/ directory."""
    cli = root / "cli"
    return [f"{found.source} imports {found.target}  ({found.where(root)})"
            for found in imports(package_modules(root))
            if found.target.split(".")[0] in RENDERERS and not found.path.is_relative_to(cli)]


def oversized(root: Path, max_module: int = MAX_MODULE_LINES,
              max_class: int = MAX_CLASS_LINES) -> list[str]:
    """Each module over *max_module* lines and each class over *max_class* lines."""
    report = []
    for module in package_modules(root).values():
        where = module.path.relative_to(root.parent)
        if module.lines > max_module:
            report.append(f"module {where}: {module.lines} lines (limit {max_module})")
        for node in ast.walk(module.tree):
            if isinstance(node, ast.ClassDef):
                length = node.end_lineno - node.lineno + 1
                if length > max_class:
                    report.append(f"class {node.name} in {where}:{node.lineno}: {length} lines "
                                  f"(limit {max_class})")
    return report


def listing(title: str, offenders: list[str]) -> str:
    return f"{title} ({len(offenders)}):\n" + "\n".join(offenders)


# --- the checker on synthetic packages -------------------------------------------------------


def write_package(root: Path, files: dict[str, str]) -> Path:
    """A package ``pkg`` in *root* with *files* (relative path -> source); every
    directory gets an ``__init__.py`` unless given one."""
    package = root / "pkg"
    for relative, source in files.items():
        path = package / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source), encoding="utf-8")
    for directory in [package, *(p for p in package.rglob("*") if p.is_dir())]:
        (directory / "__init__.py").touch()
    return package


def test_a_clean_package_passes(tmp_path: Path) -> None:
    package = write_package(tmp_path, {
        "models.py": "import json\n",
        "store.py": "from . import models\nfrom pkg.models import x\n",
        "ledger/__init__.py": "from .record import record\n",
        "ledger/record.py": "from ..store import Store\n\ndef record():\n"
                            "    from pkg import models\n",
        "cli/app.py": "import click\nfrom rich.table import Table\nfrom pkg import ledger\n",
    })
    assert import_cycles(package) == []
    assert renderer_imports(package) == []
    assert oversized(package) == []


def test_a_cycle_is_found_with_its_path_and_where_each_import_is(tmp_path: Path) -> None:
    package = write_package(tmp_path, {
        "tenants.py": "from pkg import ledger\n",
        "ledger.py": "import pkg.billing\n",
        "billing.py": "from .tenants import TenantManager\n",
        "clock.py": "",
    })
    [cycle] = import_cycles(package)
    assert cycle.splitlines() == [
        "cycle among 3 modules: pkg.billing, pkg.ledger, pkg.tenants",
        "    pkg.billing -> pkg.tenants  (pkg/billing.py:1)",
        "    pkg.tenants -> pkg.ledger  (pkg/tenants.py:1)",
        "    pkg.ledger -> pkg.billing  (pkg/ledger.py:1)",
        "  every import among them:",
        "    pkg.billing -> pkg.tenants  (pkg/billing.py:1)",
        "    pkg.ledger -> pkg.billing  (pkg/ledger.py:1)",
        "    pkg.tenants -> pkg.ledger  (pkg/tenants.py:1)",
    ]


def test_an_import_inside_a_function_or_method_counts(tmp_path: Path) -> None:
    package = write_package(tmp_path, {
        "tenants.py": """\
            from pkg.ledger import record

            class TenantManager:
                def record_trade(self):
                    from pkg import bots
                    return bots
            """,
        "bots.py": "def wall_now():\n    import pkg.tenants\n",
        "ledger.py": "",
    })
    [cycle] = import_cycles(package)
    assert "    pkg.tenants -> pkg.bots  (pkg/tenants.py:5, in TenantManager.record_trade)" in cycle
    assert "    pkg.bots -> pkg.tenants  (pkg/bots.py:2, in wall_now)" in cycle


def test_a_package_init_is_the_module_its_importers_depend_on(tmp_path: Path) -> None:
    """``from pkg import ledger`` and ``from pkg.ledger import x`` both mean
    ``ledger/__init__``; its own imports carry the dependency on."""
    package = write_package(tmp_path, {
        "ledger/__init__.py": "from pkg.ledger.quotas import close_periods\n",
        "ledger/quotas.py": "from .. import tenants\n",
        "tenants.py": "from pkg import ledger\n",
    })
    [cycle] = import_cycles(package)
    assert cycle.splitlines()[0] == (
        "cycle among 3 modules: pkg.ledger, pkg.ledger.quotas, pkg.tenants")


def test_relative_imports_resolve_from_the_importing_module(tmp_path: Path) -> None:
    package = write_package(tmp_path, {
        "trading/feeds/__init__.py": "from .simulated import SimulatedFeed\n",
        "trading/feeds/simulated.py": "from . import base\nfrom ..market import Market\n",
        "trading/feeds/base.py": "",
        "trading/market.py": "from .feeds import simulated\n",
    })
    [cycle] = import_cycles(package)
    assert cycle.splitlines()[0] == (
        "cycle among 2 modules: pkg.trading.feeds.simulated, pkg.trading.market")


def test_type_checking_imports_are_left_out_of_the_cycle_check(tmp_path: Path) -> None:
    package = write_package(tmp_path, {
        "store.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                    "    from pkg.tenants import TenantManager\nelse:\n    import json\n",
        "tenants.py": "from pkg import store\n",
    })
    assert import_cycles(package) == []
    (package / "store.py").write_text("import typing\nif typing.TYPE_CHECKING:\n    pass\n"
                                      "else:\n    from pkg import tenants\n")
    assert len(import_cycles(package)) == 1


def test_click_or_rich_outside_cli_is_listed(tmp_path: Path) -> None:
    package = write_package(tmp_path, {
        "dashboard.py": "from rich.table import Table\n",
        "ledger.py": "def report():\n    import click.testing\n",
        "store.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import rich\n",
        "cli/app.py": "import click\n",
        "clickhouse.py": "import clickhouse_driver\n",
    })
    assert renderer_imports(package) == [
        "pkg.dashboard imports rich.table  (pkg/dashboard.py:1)",
        "pkg.ledger imports click.testing  (pkg/ledger.py:2, in report)",
        "pkg.store imports rich  (pkg/store.py:3)",
    ]


def test_modules_and_classes_over_the_limits_are_listed(tmp_path: Path) -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(299))
    package = write_package(tmp_path, {
        "fits.py": f"class Fits:\n{body}" + "\n" * 300,  # a 300-line class, 600 lines
        "big.py": f"class Big:\n{body}    y = 0\n" + "\n" * 300,  # 301 lines, 601 lines
    })
    assert oversized(package) == [
        "module pkg/big.py: 601 lines (limit 600)",
        "class Big in pkg/big.py:1: 301 lines (limit 300)",
    ]


# --- the package itself ----------------------------------------------------------------------


def test_botpoly_admin_has_no_import_cycle() -> None:
    cycles = import_cycles(PACKAGE)
    if cycles:
        pytest.fail(listing("import cycles in botpoly_admin", cycles), pytrace=False)


def test_only_the_cli_imports_click_or_rich() -> None:
    offenders = renderer_imports(PACKAGE)
    if offenders:
        pytest.fail(listing("click or rich imported outside botpoly_admin/cli/", offenders),
                    pytrace=False)


def test_no_module_or_class_is_over_the_size_limits() -> None:
    offenders = oversized(PACKAGE)
    if offenders:
        pytest.fail(listing("modules and classes over the size limits", offenders),
                    pytrace=False)
