"""The Space's packaging: README header, staged layout, requirements, CLI entry."""

from __future__ import annotations

import subprocess
import sys

import gradio
import pytest
import yaml

from depthcard.space import deploy
from tests.space_support import ROOT


def _header() -> dict:
    text = (ROOT / "space" / "README.md").read_text(encoding="utf-8")
    _, front, _ = text.split("---\n", 2)
    return yaml.safe_load(front)


def test_readme_header_declares_a_gradio_space_matching_the_installed_gradio():
    header = _header()
    assert header["sdk"] == "gradio" and header["app_file"] == "app.py"
    assert header["sdk_version"] == gradio.__version__
    # the code needs 3.11; the Hub's default Python is older
    assert header["python_version"] == "3.11"
    assert header["datasets"] == [deploy.DEFAULT_RESULTS_REPO]


def test_stage_names_the_results_dataset_and_ships_the_card_standard(tmp_path):
    out = deploy.stage(tmp_path / "repo", results_repo="acme/depthcard-results")
    _, front, _ = (out / "README.md").read_text(encoding="utf-8").split("---\n", 2)
    assert yaml.safe_load(front)["datasets"] == ["acme/depthcard-results"]
    standard = out / "docs" / "card-standard.md"
    assert standard.read_bytes() == (ROOT / "docs" / "card-standard.md").read_bytes()


def test_stage_lays_out_a_space_repo(tmp_path):
    out = deploy.stage(tmp_path / "repo")
    assert (out / "README.md").read_bytes() == (ROOT / "space" / "README.md").read_bytes()
    assert "from depthcard.space.app import main" in (out / "app.py").read_text()
    for package in deploy.PACKAGES:
        assert (out / "depthcard" / package / "__init__.py").is_file(), package
    assert not (out / "depthcard" / "bot").exists() and not (out / "depthcard" / "lab").exists()
    assert (out / "depthcard" / "analysis" / "calibration" / "instruct" / "config.json").is_file()
    assert not list(out.rglob("__pycache__"))
    reqs = (out / "requirements.txt").read_text().splitlines()
    assert reqs[0].startswith("--extra-index-url") and any(r.startswith("torch") for r in reqs)
    assert not any(r.startswith("gradio") for r in reqs)


@pytest.mark.slow
def test_root_app_imports_the_space_app(tmp_path):
    out = deploy.stage(tmp_path / "repo")
    # Import only (main() would serve forever): the staged tree is self-contained.
    code = (
        "import depthcard.space.app as app, depthcard.cli.main as cli; "
        "cli.build_parser().parse_args(['audit', '--demo', '--out', 'x']); print(app.__file__)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=out, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert done.stdout.decode().strip().startswith(str(out))


def test_depthcard_space_is_a_cli_command():
    from depthcard.cli.main import build_parser

    args = build_parser().parse_args(["space", "--reports", "r", "--port", "7999"])
    assert args.port == 7999 and str(args.reports) == "r"
    assert args.handler.__module__ == "depthcard.cli.space_command"


def test_the_deploy_sets_the_space_variable_the_app_reads(tmp_path):
    """The card's `datasets:` entry is only a listing; the app reads DEPTHCARD_RESULTS_REPO."""
    import os

    from tests.hub_double import HubDouble

    app_source = (ROOT / "space" / "app.py").read_text(encoding="utf-8")
    assert "os.environ.get(RESULTS_VARIABLE)" in app_source
    with HubDouble(token="hf_deploy") as double:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
        env |= {"HF_ENDPOINT": double.url, "HF_TOKEN": "hf_deploy", "HF_HOME": str(tmp_path),
                "PYTHONPATH": str(ROOT), "HF_HUB_DISABLE_TELEMETRY": "1"}  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-m", "depthcard.space.deploy", "--repo", "acme/depthcard",
             "--results-repo", "acme/depthcard-results"],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        space = double.repo("acme/depthcard", "space")
        assert space.variables[deploy.RESULTS_VARIABLE]["value"] == "acme/depthcard-results"
        assert "app.py" in space.files()
