"""The wheel provides one import name, `depthcard`, and installs beside distributions that
own the generic names our folders have (`analysis`, `schemas`, `prompts`).

Everything is offline: the project's wheel and three tiny fake distributions are built with
`pip wheel --no-build-isolation` (the venv's setuptools) and installed with `--no-index`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SQUATTED = ("analysis", "schemas", "prompts")

pytestmark = pytest.mark.slow


def _pip_wheel(source: Path, out: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-index"]
    cmd += ["--no-build-isolation", "--quiet", "-w", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    (wheel,) = out.glob("*.whl")
    return wheel


def _fake_distribution(root: Path, name: str) -> Path:
    """A one-module distribution owning the top-level package `name`."""
    src = root / f"fake-{name}"
    (src / name).mkdir(parents=True)
    (src / name / "__init__.py").write_text(f"FAKE = {name!r}\n", encoding="utf-8")
    (src / "pyproject.toml").write_text(
        "[build-system]\n"
        'requires = ["setuptools"]\n'
        'build-backend = "setuptools.build_meta"\n'
        "[project]\n"
        f'name = "{name}"\n'
        'version = "0.0.1"\n'
        "[tool.setuptools]\n"
        f'packages = ["{name}"]\n',
        encoding="utf-8",
    )
    return _pip_wheel(src, root / f"wheel-{name}")


def _copy_sources(dest: Path) -> Path:
    """What the wheel is built from, copied: an in-place build would leave build/ and a
    fresh egg-info in the checkout, and a stale build/lib could leak into later wheels."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    folders = ["depthcard", *config["tool"]["setuptools"]["package-dir"].values()]
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in folders:
        shutil.copytree(ROOT / folder, dest / folder, ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    source = _copy_sources(tmp_path_factory.mktemp("source"))
    return _pip_wheel(source, tmp_path_factory.mktemp("wheel"))


def _top_level_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    return {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}


def test_the_wheel_has_one_top_level_name(wheel):
    assert _top_level_names(wheel) == {"depthcard"}
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        top_level = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        if top_level:  # newer setuptools no longer write it
            assert zf.read(top_level[0]).decode().split() == ["depthcard"]
    for part in ("analysis", "schemas", "prompts", "report", "lab", "bot", "space", "cli"):
        assert f"depthcard/{part}/__init__.py" in names, part
    assert "depthcard/schemas/audit_report.schema.json" in names
    assert "depthcard/prompts/harmful-core.yaml" in names


def test_installs_beside_squatting_distributions(wheel, tmp_path):
    fakes = [_fake_distribution(tmp_path, name) for name in SQUATTED]
    # A bare venv: no system site-packages, so nothing of this checkout (editable install,
    # tests on sys.path) can answer for the wheel. It has no torch or pydantic, hence the
    # depthcard side is checked by locating modules, not importing heavy ones.
    env = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env)
    python = env / "bin" / "python"
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet"]
    install += ["--no-deps", "--no-index", str(wheel), *map(str, fakes)]
    subprocess.run(install, check=True, capture_output=True, text=True)
    # find_spec of depthcard.schemas.report would import depthcard.schemas (pydantic), so the
    # module is located through the package root, which imports nothing.
    probe = (
        "import importlib.util, json, analysis, schemas, prompts\n"
        "root = importlib.util.find_spec('depthcard').submodule_search_locations[0]\n"
        "print(json.dumps({'fakes': [analysis.FAKE, schemas.FAKE, prompts.FAKE],\n"
        "                  'fake_files': [m.__file__ for m in (analysis, schemas, prompts)],\n"
        "                  'root': root}))\n"
    )
    run = subprocess.run([str(python), "-I", "-c", probe], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout)
    assert seen["fakes"] == list(SQUATTED)
    assert all("depthcard" not in Path(f).parts for f in seen["fake_files"])
    report = Path(seen["root"]) / "schemas" / "report.py"
    assert report.is_file() and report.parts[-3:] == ("depthcard", "schemas", "report.py")
    assert report.is_relative_to(env)


def test_the_wheel_requires_gradio_only_for_the_space_extra(wheel):
    """`pip install depthcard` (no extras) pulls no gradio: read from the wheel's METADATA."""
    from packaging.requirements import Requirement

    with zipfile.ZipFile(wheel) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        lines = zf.read(name).decode("utf-8").splitlines()
    requires = [
        Requirement(line.split(":", 1)[1]) for line in lines if line.startswith("Requires-Dist:")
    ]
    core = {r.name.lower() for r in requires if r.marker is None}
    assert {"torch", "huggingface_hub", "httpx2"} <= core
    assert not {"gradio", "pandas", "gguf"} & core
    space = {r.name for r in requires if r.marker and r.marker.evaluate({"extra": "space"})}
    assert {"gradio", "pandas"} <= space
