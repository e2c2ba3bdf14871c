"""Imports point one way: schemas <- prompts <- analysis <- report <- {bot, space} <- cli.

Every import in the package folders is read with `ast`, including those inside functions
and `if TYPE_CHECKING:` blocks (the package cycles of the first version hid there), with
relative imports resolved against the importing module. `bench/` is not installed but is
read too: a benchmark reaching into CLI privates breaks as surely as a library module does.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The rule, one row per layer: the layers it may import besides itself. `lab` sits beside
# analysis and above report only because it writes report folders; only the CLI uses it.
LOWER = ("schemas", "prompts", "analysis", "report")
ALLOWED: dict[str, frozenset[str]] = {
    "schemas": frozenset(),
    "prompts": frozenset({"schemas"}),
    "analysis": frozenset({"schemas", "prompts"}),
    "report": frozenset({"schemas", "prompts", "analysis"}),
    "lab": frozenset(LOWER),
    "bot": frozenset(LOWER),
    "space": frozenset(LOWER),
    "cli": frozenset({*LOWER, "lab", "bot", "space"}),
    "bench": frozenset({*LOWER, "lab"}),
}
# The one file allowed to import the CLI: `python -m depthcard`.
CLI_IMPORTERS = frozenset({"depthcard/__main__.py"})
# Folders that are scanned; all but bench install as `depthcard.<folder>`.
FOLDERS = tuple(ALLOWED)
# Names that were import names before the restructure and now exist only under `depthcard.`;
# a bare `import schemas` would pick up whatever distribution squats that name.
OLD_TOP_LEVEL = frozenset(
    {"analysis", "schemas", "prompts", "bot", "space", "report", "lab", "cli"}
)

# Known violations another change is removing, as (file, imported module); each must still
# be present, so the list cannot outlive the fix. Empty: keep it that way.
EXPECTED_TO_BE_FIXED: frozenset[tuple[str, str]] = frozenset()


@dataclass(frozen=True)
class Violation:
    path: str  # relative to the scanned root, with forward slashes
    line: int
    module: str  # the imported module, absolute
    why: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: imports {self.module} ({self.why})"


def module_name(rel: Path) -> str:
    """`analysis/audit.py` -> `depthcard.analysis.audit`; `depthcard/__init__.py` -> `depthcard`."""
    parts = list(rel.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    if parts[0] not in ("depthcard", "bench"):
        parts.insert(0, "depthcard")
    return ".".join(parts)


def imported_modules(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str]]:
    """Every module one file imports, absolute, with its line; `from pkg import sub` yields
    `pkg.sub` so that `from depthcard import cli` counts as importing the CLI."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module if is_package else module.rpartition(".")[0]
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            found += [(node.lineno, f"{source}.{alias.name}") for alias in node.names]
    return found


def layer_of(module: str) -> str | None:
    """The layer of a first-party module, `None` for third-party and standard library."""
    parts = module.split(".")
    if parts[0] == "depthcard":
        return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else "depthcard"
    if parts[0] in ("tests", "bench"):
        return parts[0]
    return None


def check_file(root: Path, path: Path) -> list[Violation]:
    """The violations of the rule in one file under `root`."""
    rel = path.relative_to(root)
    rel_s = rel.as_posix()
    module = module_name(rel)
    own = layer_of(module) if rel.parts[0] != "bench" else "bench"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out: list[Violation] = []
    for line, target in imported_modules(tree, module, path.name == "__init__.py"):
        head = target.split(".")[0]
        if head in OLD_TOP_LEVEL:
            out.append(Violation(rel_s, line, target, "old top-level name, use depthcard."))
            continue
        dest = layer_of(target)
        if dest is None or dest == own or dest == "depthcard":
            continue
        if dest == "tests":
            out.append(Violation(rel_s, line, target, "a package never imports tests"))
        elif dest == "cli" and rel_s not in CLI_IMPORTERS and own != "cli":
            out.append(Violation(rel_s, line, target, "nothing imports the CLI"))
        elif own == "depthcard":
            if not (dest == "cli" and rel_s in CLI_IMPORTERS):
                out.append(Violation(rel_s, line, target, "the root package imports nothing"))
        elif dest not in ALLOWED[own]:
            out.append(Violation(rel_s, line, target, f"{own} may not import {dest}"))
    return out


def check_tree(root: Path) -> list[Violation]:
    """The violations in every .py file of the package folders under `root`."""
    out: list[Violation] = []
    for folder in (*FOLDERS, "depthcard"):
        for path in sorted((root / folder).rglob("*.py")):
            out += check_file(root, path)
    return out


def test_the_repository_follows_the_rule():
    found = check_tree(ROOT)
    keys = {(v.path, v.module) for v in found}
    unexpected = [str(v) for v in found if (v.path, v.module) not in EXPECTED_TO_BE_FIXED]
    assert not unexpected, "\n".join(unexpected)
    stale = EXPECTED_TO_BE_FIXED - keys
    assert not stale, f"fixed, remove from EXPECTED_TO_BE_FIXED: {sorted(stale)}"


def test_every_scanned_folder_has_python_files():
    for folder in FOLDERS:
        assert list((ROOT / folder).rglob("*.py")), folder


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


@pytest.fixture
def fake_tree(tmp_path: Path) -> Path:
    """A minimal clean tree: one module per folder, the root package and its __main__."""
    for folder in FOLDERS:
        _write(tmp_path, f"{folder}/__init__.py", "")
    _write(tmp_path, "depthcard/__init__.py", "")
    _write(tmp_path, "depthcard/__main__.py", "from depthcard.cli.main import main\n")
    _write(tmp_path, "report/card.py", "from depthcard.analysis import audit\nimport torch\n")
    return tmp_path


def test_checker_passes_a_clean_tree(fake_tree):
    assert check_tree(fake_tree) == []


@pytest.mark.parametrize(
    ("rel", "text", "module", "why"),
    [
        ("schemas/x.py", "import depthcard.bot\n", "depthcard.bot", "schemas may not import bot"),
        (
            "analysis/x.py",
            "def f():\n    from depthcard.report import card\n",
            "depthcard.report.card",
            "analysis may not import report",
        ),
        (
            "prompts/x.py",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from depthcard.analysis.audit import run_audit\n",
            "depthcard.analysis.audit.run_audit",
            "prompts may not import analysis",
        ),
        (
            "bot/x.py",
            "from ..space import store\n",
            "depthcard.space.store",
            "bot may not import space",
        ),
        (
            "space/sub/x.py",
            "from ...bot import hub\n",
            "depthcard.bot.hub",
            "space may not import bot",
        ),
        (
            "space/x.py",
            "from depthcard.lab import organisms\n",
            "depthcard.lab.organisms",
            "space may not import lab",
        ),
        ("lab/x.py", "from depthcard import cli\n", "depthcard.cli", "nothing imports the CLI"),
        (
            "report/x.py",
            "from tests import report_factory\n",
            "tests.report_factory",
            "a package never imports tests",
        ),
        (
            "analysis/x.py",
            "from schemas.report import AuditReport\n",
            "schemas.report.AuditReport",
            "old top-level name, use depthcard.",
        ),
        (
            "depthcard/__init__.py",
            "from depthcard.cli import main\n",
            "depthcard.cli.main",
            "nothing imports the CLI",
        ),
    ],
)
def test_checker_reports_a_forbidden_import(fake_tree, rel, text, module, why):
    _write(fake_tree, rel, text)
    found = check_tree(fake_tree)
    assert [(v.path, v.module, v.why) for v in found] == [(rel, module, why)]
    assert found[0].line == text.count("\n")


def test_relative_imports_resolve_against_the_package():
    tree = ast.parse("from . import a\nfrom .b import c\nfrom .. import d\n")
    assert imported_modules(tree, "depthcard.analysis", is_package=True) == [
        (1, "depthcard.analysis.a"),
        (2, "depthcard.analysis.b.c"),
        (3, "depthcard.d"),
    ]
    assert imported_modules(tree, "depthcard.analysis.audit", is_package=False) == [
        (1, "depthcard.analysis.a"),
        (2, "depthcard.analysis.b.c"),
        (3, "depthcard.d"),
    ]
