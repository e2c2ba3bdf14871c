"""HF Jobs that can run: flavours huggingface_hub knows, a pinned build of depthcard in the job,
and the wheel the bot ships to the results dataset through the real client."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

import pytest
from huggingface_hub import JobHardware
from pydantic import ValidationError

from depthcard.bot.job_install import (
    checkout_root,
    install_steps,
    ship_wheel,
    source_hash,
)
from depthcard.cli.main import main
from depthcard.schemas.bot_config import JobsConfig, load_bot_config

ROOT = Path(__file__).resolve().parent.parent
SHA = "0123456789abcdef0123456789abcdef01234567"


def test_default_and_example_flavours_are_flavours_the_hub_knows():
    known = {h.value for h in JobHardware}
    assert {r.flavor for r in JobsConfig(namespace="x").flavours} <= known
    example = load_bot_config(ROOT / "bot" / "example-config.yaml")
    assert {r.flavor for r in example.jobs.flavours} <= known


def test_an_unknown_flavour_is_refused_at_config_load_in_one_line(tmp_path, capsys):
    with pytest.raises(ValidationError, match="unknown HF Jobs flavour 'h100x8'.*h200x8"):
        JobsConfig(namespace="x", flavours=[{"max_parameters": 1, "flavor": "h100x8"}])
    config = tmp_path / "bot.yaml"
    config.write_text(
        "backend: hf-jobs\nresults_repo: d/r\n"
        "jobs: {namespace: d, flavours: [{max_parameters: 10, flavor: h100x8}]}\n",
        encoding="utf-8",
    )
    assert main(["status", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "unknown HF Jobs flavour 'h100x8'" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("timeout", ["2h", "90m", "1.5d", "3600", "30s"])
def test_timeouts_run_job_reads_are_accepted(timeout):
    from huggingface_hub._jobs_api import _create_job_spec

    assert JobsConfig(namespace="x", timeout=timeout).timeout == timeout
    spec = _create_job_spec(image="i", command=["c"], env=None, secrets=None, flavor=None,
                            timeout=timeout, attempts=None, labels=None, volumes=None)  # fmt: skip
    assert spec["timeoutSeconds"] >= 1  # the library reads it as we checked it


@pytest.mark.parametrize("timeout", ["abc", "2 h", "h", "-5m", "0", "0.1s", "2w"])
def test_a_timeout_run_job_cannot_read_is_refused_at_config_load(timeout, tmp_path, capsys):
    with pytest.raises(ValidationError, match="timeout"):
        JobsConfig(namespace="x", timeout=timeout)
    config = tmp_path / "bot.yaml"
    config.write_text(f"backend: hf-jobs\nresults_repo: d/r\njobs: {{namespace: d, "
                      f"timeout: '{timeout}'}}\n", encoding="utf-8")  # fmt: skip
    assert main(["status", "--config", str(config)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "install",
    [
        f"depthcard @ git+https://github.com/o/depthcard@{SHA}",
        "https://x/depthcard-0.1-py3-none-any.whl",
    ],
)
def test_pinned_installs_are_accepted_and_installed_as_given(install):
    jobs = JobsConfig(namespace="x", install=install)
    steps = install_steps(jobs.install, "d/r", None, pins=["torch==2.13.0"])
    assert steps == [
        "printf '%s\\n' torch==2.13.0 > /tmp/depthcard-constraints.txt",
        f"pip install --quiet -c /tmp/depthcard-constraints.txt {shlex.quote(install)}",
    ]


@pytest.mark.parametrize("install", ["depthcard", "depthcard==0.1.0", "git+https://g/o/d@main"])
def test_unpinned_installs_are_refused(install):
    with pytest.raises(ValidationError, match="is not pinned"):
        JobsConfig(namespace="x", install=install)


def test_the_shipped_wheel_is_fetched_from_the_results_dataset_and_installed():
    steps = install_steps(None, "d/r", "wheels/ab/depthcard-0.1.0-py3-none-any.whl")
    assert steps[2] == ("hf download d/r wheels/ab/depthcard-0.1.0-py3-none-any.whl "
                        "--repo-type dataset --local-dir /tmp/depthcard-wheel")  # fmt: skip
    assert steps[3].endswith("/tmp/depthcard-wheel/wheels/ab/depthcard-0.1.0-py3-none-any.whl")
    with pytest.raises(ValueError):
        install_steps(None, "d/r", None)


def test_the_source_hash_follows_the_sources(tmp_path):
    assert checkout_root() == ROOT
    copy = tmp_path / "src"
    shutil.copytree(ROOT / "schemas", copy / "schemas")
    shutil.copytree(ROOT / "depthcard", copy / "depthcard")
    (copy / "README.md").write_text("r\n", encoding="utf-8")
    (copy / "pyproject.toml").write_text(
        '[tool.setuptools.package-dir]\n"depthcard.schemas" = "schemas"\n', encoding="utf-8"
    )
    before = source_hash(copy)
    assert source_hash(copy) == before and len(before) == 16
    (copy / "schemas" / "errors.py").write_text("# changed\n", encoding="utf-8")
    assert source_hash(copy) != before


@pytest.mark.slow
def test_the_wheel_is_uploaded_once_to_the_results_dataset(tmp_path):
    from depthcard.bot.hub import Hub
    from tests.hub_double import HubDouble

    had_build = (ROOT / "build").exists()
    with HubDouble() as double:
        double.add_repo("d/results", {"README.md": "r\n"}, repo_type="dataset")
        hub = Hub(None, endpoint=double.url, sleep=lambda s: None, cache_dir=tmp_path / "c")
        path = ship_wheel(hub, "d/results", ROOT)
        assert path.startswith(f"wheels/{source_hash(ROOT)}/depthcard-") and path.endswith(".whl")
        files = double.repo("d/results", "dataset").files()
        assert files[path][:2] == b"PK"  # a zip
        commits = len(double.repo("d/results", "dataset").commits)
        assert ship_wheel(hub, "d/results", ROOT) == path
        assert len(double.repo("d/results", "dataset").commits) == commits  # not uploaded twice
    assert (ROOT / "build").exists() == had_build  # built from a copy: the checkout is untouched


def test_every_install_step_holds_the_dependencies_to_the_shipped_constraints():
    from depthcard.bot.job_constraints import shipped_constraints

    pins = shipped_constraints()
    names = {line.split("==")[0] for line in pins}
    assert all(line.count("==") == 1 for line in pins)
    # the libraries whose behaviour the audit's numbers depend on are all pinned
    assert {"torch", "transformers", "huggingface-hub", "pydantic", "safetensors", "numpy",
            "tokenizers", "accelerate", "scipy", "pyyaml"} <= names  # fmt: skip
    for install in (None, f"depthcard @ git+https://g/o/d@{SHA}"):
        steps = install_steps(install, "d/r", None if install else "wheels/ab/d.whl")
        written = shlex.split(steps[0].removesuffix(" > /tmp/depthcard-constraints.txt"))
        assert written == ["printf", "%s\\n", *pins]
        for step in steps[1:]:
            if step.startswith("pip install"):
                assert " -c /tmp/depthcard-constraints.txt " in step, step


def test_the_constraints_cover_every_runtime_dependency():
    import tomllib

    from depthcard.bot.job_constraints import canonical, shipped_constraints

    pinned = dict(line.split("==") for line in shipped_constraints())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    for requirement in project["project"]["dependencies"]:
        name = canonical(requirement.split(">")[0].split("<")[0].split("=")[0].strip())
        assert name in pinned, requirement
    assert (ROOT / "depthcard" / "constraints.txt").is_file()
    assert '"depthcard" = ["constraints.txt"]' in (ROOT / "pyproject.toml").read_text()  # shipped
