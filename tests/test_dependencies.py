"""Declared dependencies match the code, both ways, read from pyproject.toml and the installed
distributions' metadata (no network, nothing installed).

- every third-party import of the package is declared: outside `space/` by the core
  dependencies (an HF Job installs only those), inside `space/` by the core or the `space` extra;
- every declared runtime dependency is imported somewhere in the package (one exception, named
  with its reason);
- the core's requirement closure holds no gradio, so `pip install .` pulls none;
- the `test` extra covers the runtime extras, and every import of the tests is installed by it.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from functools import cache
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]
# Declared but imported by a dependency rather than by us, with the reason.
NOT_IMPORTED = {
    "gguf": "transformers imports it to read a .gguf file (analysis/gguf_import.py)",
}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _names(requirements: list[str]) -> set[str]:
    return {_norm(Requirement(r).name) for r in requirements}


def _package_folders() -> list[Path]:
    dirs = PYPROJECT["tool"]["setuptools"]["package-dir"].values()
    return [ROOT / "depthcard", *(ROOT / d for d in dirs)]


def imports_of(folders: list[Path]) -> dict[str, set[str]]:
    """{top-level import name: files} of every absolute import, those inside functions too."""
    found: dict[str, set[str]] = {}
    for folder in folders:
        for path in folder.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in ("depthcard", "tests"):
                        found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


@cache
def _distributions_of() -> dict[str, list[str]]:
    return {k: [_norm(d) for d in v] for k, v in metadata.packages_distributions().items()}


def distribution_of(import_name: str) -> set[str]:
    """The installed distributions that provide the top-level import `import_name`."""
    return set(_distributions_of().get(import_name, []))


def closure(requirements: list[str]) -> set[str]:
    """Distribution names these requirements pull in, transitively, through installed metadata
    (markers evaluated for this interpreter, no extras of the dependencies)."""
    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = _norm(req.name)
        if name in seen or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        try:
            todo += [Requirement(r) for r in metadata.requires(req.name) or []]
        except metadata.PackageNotFoundError:
            pass  # not installed here: counted, not followed
    return seen


def test_every_import_of_the_package_is_declared():
    core = _names(PROJECT["dependencies"])
    space = core | _names(PROJECT["optional-dependencies"]["space"])
    missing = []
    for name, files in sorted(imports_of(_package_folders()).items()):
        dists = distribution_of(name)
        for file in sorted(files):
            allowed = space if file.startswith("space/") else core
            if not dists & allowed:
                missing.append(f"{file}: import {name} ({', '.join(dists) or 'not installed'})")
    assert not missing, "undeclared imports:\n" + "\n".join(missing)


def test_every_declared_dependency_is_imported():
    extras = PROJECT["optional-dependencies"]
    declared = _names(PROJECT["dependencies"] + extras["space"] + extras["gguf"])
    imported = {d for name in imports_of(_package_folders()) for d in distribution_of(name)}
    unused = declared - imported - set(NOT_IMPORTED)
    assert not unused, f"declared but never imported: {sorted(unused)}"
    assert set(NOT_IMPORTED) <= declared


def test_the_core_install_pulls_no_gradio_or_pandas():
    pulled = closure(PROJECT["dependencies"])
    assert "torch" in pulled and "huggingface-hub" in pulled  # the walk did follow the metadata
    assert "httpx2" in closure(["huggingface_hub"]), "huggingface_hub no longer needs httpx2"
    assert not {"gradio", "pandas", "gguf"} & pulled, sorted(pulled)
    assert not _names(PROJECT["optional-dependencies"]["demo"]) & {"gradio", "pandas"}


def test_the_test_extra_installs_what_the_tests_import():
    extras = PROJECT["optional-dependencies"]
    assert _names(extras["space"] + extras["gguf"]) <= _names(extras["test"])
    installed = closure(PROJECT["dependencies"] + extras["test"])
    missing = {
        name: sorted(files)[0]
        for name, files in imports_of([ROOT / "tests"]).items()
        if not distribution_of(name) & installed
    }
    assert not missing, f"tests import what the test extra does not install: {missing}"


def test_the_installed_huggingface_hub_meets_the_floor():
    import inspect

    from huggingface_hub import HfApi
    from packaging.version import Version

    (spec,) = [r for r in PROJECT["dependencies"] if r.startswith("huggingface_hub")]
    assert Version(metadata.version("huggingface_hub")) in Requirement(spec).specifier
    # What the floor promises: the calls the bot makes with these arguments.
    assert "attempts" in inspect.signature(HfApi.run_job).parameters
    assert "tail" in inspect.signature(HfApi.fetch_job_logs).parameters
    assert {"gated", "num_parameters", "pipeline_tag"} <= set(
        inspect.signature(HfApi.list_models).parameters
    )


def test_the_space_without_its_extra_says_what_to_install(monkeypatch, capsys):
    """`depthcard space` on a core install: one line naming the extra, not a traceback."""
    from depthcard.cli.main import main

    for name in [m for m in sys.modules if m == "depthcard.space.app"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio → ModuleNotFoundError
    assert main(["space"]) == 2
    err = capsys.readouterr().err.strip()
    assert "install the space extra" in err and len(err.splitlines()) == 1


def test_import_gguf_without_its_extra_says_what_to_install(monkeypatch, tmp_path, capsys):
    import importlib.util

    from depthcard.cli.main import main

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "gguf" else find_spec(name, *a),
    )
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    assert main(["import-gguf", str(model)]) == 2
    err = capsys.readouterr().err.strip()
    assert "install the gguf extra" in err and len(err.splitlines()) == 1
