"""Stage the Space's files in the layout a Hub Space needs, and upload them.

A Space repo's README is its card and `app_file` must sit at its root, so the staged folder
is: `README.md` (from space/README.md), a two-line root `app.py` that calls
`depthcard.space.app.main()`, `requirements.txt` (the project's dependencies minus gradio,
which the Space's `sdk_version` provides), and the package `depthcard/` with the subpackages
the Space needs: `space`, `report`, `analysis` (with the calibration pair the Run tab audits),
`schemas`, `prompts`, and `cli` (the Run tab starts `python -m depthcard audit` in a
subprocess), and `docs/card-standard.md`, which the bot's pull requests link to. The bot
and the calibration lab are not shipped. With `--results-repo` the card's `datasets:` names
that results dataset instead of the default. Used by
`.github/workflows/space-deploy.yml`:

    python space/deploy.py --repo org/depthcard       # stage, then upload_folder
    python space/deploy.py --stage-only build/space   # stage only (offline check)
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import tomllib
from pathlib import Path

from depthcard.schemas.errors import UserError

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
# Repository folder → subpackage of `depthcard` in the staged Space.
PACKAGES = ("space", "report", "analysis", "schemas", "prompts", "cli")
# A report folder bundled with the Space ships as its public copy: never its directions or its
# judged answers (report.public_files).
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", "*.log",
                                 "directions.safetensors", "samples.jsonl")  # fmt: skip
ROOT_APP = '"""Hub Space entry point: the app lives in depthcard/space/app.py."""\n\n' + (
    "from depthcard.space.app import main\n\nmain()\n"
)
# CPU wheels of torch: the default index would pull several GB of CUDA packages.
REQUIREMENTS_HEADER = "--extra-index-url https://download.pytorch.org/whl/cpu\n"


RESULTS_VARIABLE = "DEPTHCARD_RESULTS_REPO"  # what space/app.py reads for its results dataset
DEFAULT_RESULTS_REPO = "depthcard/results"  # what space/README.md lists under `datasets:`
CARD_STANDARD = Path("docs") / "card-standard.md"


def requirements(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """requirements.txt for the Space: the project's dependencies and its `space` extra (when
    pyproject has one), without gradio, which the Space's `sdk_version` provides."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    deps = project["dependencies"] + project.get("optional-dependencies", {}).get("space", [])
    kept = [d for d in deps if not d.replace("_", "-").lower().startswith("gradio")]
    return REQUIREMENTS_HEADER + "\n".join(dict.fromkeys(kept)) + "\n"


def space_card(readme: str, results_repo: str | None) -> str:
    """The Space's README with `results_repo` as its dataset (unchanged when None)."""
    if results_repo is None:
        return readme
    old = f"\n  - {DEFAULT_RESULTS_REPO}\n"
    if old not in readme:
        raise ValueError(f"space/README.md lists no `- {DEFAULT_RESULTS_REPO}` to replace")
    return readme.replace(old, f"\n  - {results_repo}\n", 1)


def stage(dest: Path, root: Path = ROOT, results_repo: str | None = None) -> Path:
    """Copy everything the Space needs into `dest` (created; must not exist or be empty)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise UserError(f"{dest} is not empty")
    shutil.copytree(root / "depthcard", dest / "depthcard", ignore=IGNORED)
    for package in PACKAGES:
        shutil.copytree(root / package, dest / "depthcard" / package, ignore=IGNORED)
    readme = (root / "space" / "README.md").read_text(encoding="utf-8")
    (dest / "README.md").write_text(space_card(readme, results_repo), encoding="utf-8")
    (dest / CARD_STANDARD).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(root / CARD_STANDARD, dest / CARD_STANDARD)
    (dest / "app.py").write_text(ROOT_APP, encoding="utf-8")
    (dest / "requirements.txt").write_text(requirements(root / "pyproject.toml"), "utf-8")
    return dest


def upload(
    folder: Path, repo_id: str, token: str | None, message: str, results_repo: str | None = None
) -> str:
    """Upload the staged folder to the Space, deleting files that are no longer staged, and set
    the Space variable the app reads for its results dataset (the card's `datasets:` entry
    only lists it; the app never reads the card)."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="space", space_sdk="gradio", exist_ok=True)
    if results_repo is not None:
        api.add_space_variable(repo_id, RESULTS_VARIABLE, results_repo,
                               description="results dataset the depthcard Space reads")  # fmt: skip
    info = api.upload_folder(
        repo_id=repo_id,
        repo_type="space",
        folder_path=str(folder),
        commit_message=message,
        delete_patterns=["*"],
    )
    return str(info)


def main(argv: list[str] | None = None) -> int:
    """Stage, and upload unless --stage-only."""
    parser = argparse.ArgumentParser(
        prog="depthcard.space.deploy", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--repo", help="Space repo id, e.g. org/depthcard")
    parser.add_argument("--stage-only", type=Path, help="only stage into this folder")
    parser.add_argument("--message", default="Deploy the depthcard Space", help="commit message")
    parser.add_argument(
        "--results-repo",
        default=os.environ.get(RESULTS_VARIABLE) or DEFAULT_RESULTS_REPO,
        help="results dataset the Space reads: listed in its card and set as its "
        f"{RESULTS_VARIABLE} variable (env {RESULTS_VARIABLE}; default {DEFAULT_RESULTS_REPO})",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.stage_only:
        print(stage(args.stage_only, results_repo=args.results_repo))
        return 0
    if not args.repo:
        parser.error("--repo is required unless --stage-only is given")
    with tempfile.TemporaryDirectory(prefix="depthcard-space-") as tmp:
        folder = stage(Path(tmp) / "space-repo", results_repo=args.results_repo)
        token = os.environ.get("HF_TOKEN")
        print(upload(folder, args.repo, token, args.message, args.results_repo))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
