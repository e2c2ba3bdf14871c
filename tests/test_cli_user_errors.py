"""Representative user mistakes, end to end through `python -m depthcard` as a real process:
one line on stderr, exit 2, no traceback. (tests/test_cli_errors.py covers the audit's own
model and prompt checks in-process.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.report_factory import make_report


def depthcard(*args: str, cwd: Path, env: dict[str, str] | None = None):
    """Run `python -m depthcard ARGS`; (exit code, stderr's non-empty lines)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "DEPTHCARD_"))}
    done = subprocess.run(
        [sys.executable, "-m", "depthcard", *args],
        cwd=cwd,
        env={**base, "HF_HUB_OFFLINE": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done.returncode, [line for line in done.stderr.splitlines() if line.strip()]


def assert_one_line(result, *words: str) -> None:
    code, lines = result
    assert code == 2, lines
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0] and "internal error" not in lines[0]
    for word in words:
        assert word in lines[0], lines[0]


def test_a_flag_value_the_parser_refuses(tmp_path):
    assert_one_line(
        depthcard("audit", "--demo", "--out", "x", "--dtype", "fp8", cwd=tmp_path),
        "depthcard audit: error:",
        "--dtype",
        "'auto'",
        "--help",
    )


def test_a_flag_value_the_config_refuses(tmp_path):
    assert_one_line(
        depthcard("audit", "--demo", "--out", "x", "--batch-size", "0", cwd=tmp_path),
        "depthcard: error: --batch-size:",
    )
    assert not (tmp_path / "x").exists()


def test_a_gguf_file_transformers_cannot_read(tmp_path):
    pytest.importorskip("gguf")
    junk = tmp_path / "model.gguf"
    junk.write_bytes(b"not a gguf file at all")
    assert_one_line(
        depthcard("import-gguf", str(junk), "--out", "conv", cwd=tmp_path),
        "depthcard: error:",
        "transformers cannot read it",
    )


def test_publishing_an_audit_of_a_local_folder(tmp_path):
    folder = tmp_path / "audit"
    folder.mkdir()
    report = make_report(local=True)
    (folder / "report.json").write_text(report.model_dump_json(), encoding="utf-8")
    assert_one_line(
        depthcard(
            "publish", str(folder), "--repo", "acme/tiny-Instruct", "--dry-run", cwd=tmp_path
        ),  # fmt: skip
        "depthcard: error:",
        "local folder",
    )


def test_a_job_token_variable_that_is_not_set(tmp_path):
    config = tmp_path / "bot.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "backend": "hf-jobs",
                "results_repo": "acme/results",
                "hub_user": "depthcard-bot",
                "state_path": str(tmp_path / "state.sqlite"),
                "work_dir": str(tmp_path / "work"),
                "jobs": {
                    "namespace": "acme",
                    "token_env": "DEPTHCARD_JOB_TOKEN",
                    "install": "depthcard @ git+https://g/o/d@" + "a" * 40,
                },
            }
        ),
        encoding="utf-8",
    )
    assert_one_line(
        depthcard("watch", "--once", "--config", str(config), cwd=tmp_path),
        "depthcard: error:",
        "DEPTHCARD_JOB_TOKEN, which is not set",
    )
