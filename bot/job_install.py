"""What an HF Job installs: the very build of depthcard the bot runs, never a name on an index.

Nothing publishes `depthcard` on PyPI, and a name would not say which code audited a model.
So, unless the config pins a build itself (`jobs.install`: a git URL at a full commit sha, or
a wheel), the bot builds a wheel from its own checkout, content-addressed by a hash of the
sources (`wheels/<source hash>/depthcard-<version>-py3-none-any.whl` in the results dataset,
uploaded once), and the job downloads that file with `hf download` and installs it. A wheel
rather than a git URL because it needs neither git in the job's image nor a pushed commit, and
the uncommitted tree the bot runs from is exactly what ships. Every install step holds the
dependencies to the versions the tests passed on (`depthcard/constraints.txt`, written into
the job as a file and given to pip with `-c`).
"""

from __future__ import annotations

import hashlib
import logging
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from depthcard.bot.job_constraints import shipped_constraints

log = logging.getLogger(__name__)
WHEEL_DIR = "wheels"
# huggingface_hub for `hf download` before depthcard (and its own pin of it) is installed.
HUB_REQUIREMENT = "huggingface_hub>=2.1.1,<3"
_LOCAL_WHEEL = "/tmp/depthcard-wheel"
CONSTRAINTS = "/tmp/depthcard-constraints.txt"


def checkout_root() -> Path | None:
    """The source checkout depthcard runs from (editable install), or None from a wheel."""
    import depthcard

    root = Path(depthcard.__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() and (root / "bot").is_dir() else None


def _source_files(root: Path) -> list[Path]:
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    folders = ["depthcard", *config["tool"]["setuptools"]["package-dir"].values()]
    files = [root / "pyproject.toml", root / "README.md"]
    for folder in folders:
        files += [p for p in (root / folder).rglob("*") if p.is_file()
                  and "__pycache__" not in p.parts and p.suffix != ".pyc"]  # fmt: skip
    return sorted(files)


def source_hash(root: Path) -> str:
    """16 hex digits of sha256 over the names and bytes of everything the wheel is built from."""
    digest = hashlib.sha256()
    for path in _source_files(root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def build_wheel(root: Path, out: Path) -> Path:
    """A wheel of the checkout at `root`, built offline (`--no-build-isolation`) from a copy of
    its sources, so the checkout gets no build/ or egg-info."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        for path in _source_files(root):
            dest = src / path.relative_to(root)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
        cmd = [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-index",
               "--no-build-isolation", "--quiet", "-w", str(out)]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ValueError(f"cannot build the job's wheel: {done.stderr.strip()[-800:]}")
    (wheel,) = out.glob("depthcard-*.whl")
    return wheel


def ship_wheel(hub, results_repo: str, root: Path) -> str:
    """Path in `results_repo` of the wheel of `root`, uploaded unless already there."""
    with tempfile.TemporaryDirectory() as tmp:
        wheel = build_wheel(root, Path(tmp))
        path = f"{WHEEL_DIR}/{source_hash(root)}/{wheel.name}"
        exists = hub.call(f"file_exists {results_repo}/{path}", hub.api.file_exists,
                          results_repo, path, repo_type="dataset")  # fmt: skip
        if not exists:
            log.info("uploading the job's wheel to %s/%s", results_repo, path)
            hub.call(f"upload {results_repo}/{path}", hub.api.upload_file,
                     path_or_fileobj=str(wheel), path_in_repo=path, repo_id=results_repo,
                     repo_type="dataset", commit_message=f"depthcard wheel {path}")  # fmt: skip
    return path


def constraints_step(pins: list[str]) -> str:
    """The job's shell step that writes its pip constraints file (`bot.job_constraints`)."""
    return shlex.join(["printf", "%s\\n", *pins]) + f" > {CONSTRAINTS}"


def install_steps(
    install: str | None,
    results_repo: str,
    wheel_path: str | None,
    pins: list[str] | None = None,
) -> list[str]:
    """Shell steps of the job that install depthcard: the pinned requirement, or the shipped
    wheel fetched from the results dataset (the job's HF_TOKEN secret reads it if private),
    every package held with `pip -c` to `pins` (default: the shipped constraints file)."""
    pins = shipped_constraints() if pins is None else pins
    pip = ["pip", "install", "--quiet", "-c", CONSTRAINTS]
    if install is not None:
        return [constraints_step(pins), shlex.join([*pip, install])]
    if wheel_path is None:
        raise ValueError("no jobs.install and no wheel shipped for the job")
    local = f"{_LOCAL_WHEEL}/{wheel_path}"
    return [
        constraints_step(pins),
        shlex.join([*pip, HUB_REQUIREMENT]),
        shlex.join(
            [
                "hf",
                "download",
                results_repo,
                wheel_path,
                "--repo-type",
                "dataset",
                "--local-dir",
                _LOCAL_WHEEL,
            ]
        ),  # fmt: skip
        shlex.join([*pip, local]),
    ]
