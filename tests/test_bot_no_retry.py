"""An audit that refuses its input (exit 2) fails once, with its reason, and is not retried:
not by the bot's attempts, not by the Hub's. A job gets the narrow job token, not the bot's."""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
from pathlib import Path

import pytest

from depthcard.bot.dispatch import (
    USER_ERROR_FILE,
    AuditJob,
    JobsBackend,
    LocalBackend,
    Outcome,
    make_backend,
    report_path,
)
from depthcard.bot.state import StateStore
from depthcard.bot.watch import Round, _dispatch, _requeue_failed
from depthcard.schemas.bot_config import BotConfig
from depthcard.schemas.errors import UserError
from tests.bot_helpers import FAKE_AUDIT
from tests.test_bot_units import RecordingJobsApi

SHA_B, SHA_C = "b" * 40, "c" * 40
JOB = AuditJob(f"{SHA_B}/{SHA_C}/a1", "acme/tiny", SHA_B, "acme/tiny-it", SHA_C, 1000)
REFUSAL = "depthcard: error: --num-directions 99 exceeds the 16 harmful prompts"


@pytest.mark.parametrize(("fail", "retry"), [("2", False), ("1", True)])
def test_a_local_audit_that_exits_2_is_not_retried(tmp_path, fail, retry):
    cfg = BotConfig(work_dir=tmp_path, audit_command=FAKE_AUDIT)
    backend = LocalBackend(cfg)
    backend.env = {**os.environ, "FAKE_AUDIT_FAIL": fail}
    outcome = backend.poll(JOB, backend.start(JOB))
    assert outcome.report_dir is None and outcome.retry is retry
    if not retry:
        assert outcome.error == f"audit refused its input: {REFUSAL}"


class OneAnswer:
    """A backend whose every audit ends with `outcome`."""

    def __init__(self, outcome: Outcome):
        self.outcome = outcome

    def start(self, job):
        return "h"

    def poll(self, job, handle):
        return self.outcome


@pytest.mark.parametrize("retry", [False, True])
def test_the_watcher_requeues_only_what_another_run_could_change(tmp_path, retry):
    cfg = BotConfig(work_dir=tmp_path, max_attempts=3, retry_base_seconds=0)
    store = StateStore(tmp_path / "s.sqlite")
    store.add(base_repo="acme/tiny", base_sha=SHA_B, child_repo="acme/tiny-it", child_sha=SHA_C,
              analysis_version="a1", state="queued")  # fmt: skip
    r = Round(None, store, cfg, OneAnswer(Outcome(None, REFUSAL, retry=retry)), "a1")
    _dispatch(r)
    (row,) = store.rows()
    assert row.state == "failed" and row.error == REFUSAL
    assert row.attempts == (3 if not retry else 1)
    _requeue_failed(r)
    assert store.rows()[0].state == ("failed" if not retry else "queued")


def test_a_config_the_dispatch_cannot_run_is_not_retried(tmp_path):
    jobs = {"namespace": "d", "install": f"depthcard @ git+https://g/o/d@{SHA_B}",
            "flavours": [{"max_parameters": 10, "flavor": "a10g-large"}]}  # fmt: skip
    cfg = BotConfig(backend="hf-jobs", results_repo="d/r", work_dir=tmp_path, max_attempts=3,
                    jobs=jobs)  # fmt: skip
    store = StateStore(tmp_path / "s.sqlite")
    store.add(base_repo="acme/tiny", base_sha=SHA_B, child_repo="acme/tiny-it", child_sha=SHA_C,
              analysis_version="a1", state="queued", parameters=1000)  # fmt: skip
    backend = JobsBackend(cfg, RecordingJobsApi(), None, None)
    _dispatch(Round(None, store, cfg, backend, "a1"))
    (row,) = store.rows()
    assert row.state == "failed" and row.attempts == 3 and "jobs.flavours" in row.error


def _jobs_backend(tmp_path, api, results: dict[str, str], **jobs) -> JobsBackend:
    cfg = BotConfig(backend="hf-jobs", results_repo="d/r", work_dir=tmp_path,
                    jobs={"namespace": "d", "attempts": 3,
                          "install": f"depthcard @ git+https://g/o/d@{SHA_B}", **jobs})  # fmt: skip

    def download(repo, path, local):
        raise FileNotFoundError(f"{repo}: {path} is missing")  # the job uploaded no report

    return JobsBackend(cfg, api, "hf_WRITE_token", download,
                       read_result=lambda repo, path: results.get(path))  # fmt: skip


def test_a_job_whose_audit_exited_2_is_collected_as_not_retried(tmp_path):
    api = RecordingJobsApi()
    folder = report_path(*JOB.target)
    backend = _jobs_backend(tmp_path, api, {f"{folder}/{USER_ERROR_FILE}": REFUSAL + "\n"})
    handle = backend.start(JOB)
    api.jobs[handle].status.stage = "COMPLETED"  # the script ended it successfully: no Hub rerun
    outcome = backend.poll(JOB, handle)
    assert outcome.retry is False and outcome.error.endswith(REFUSAL)
    nothing = _jobs_backend(tmp_path, api, {})
    with pytest.raises(FileNotFoundError):  # neither a report nor a refusal: retried
        nothing.poll(JOB, handle)


def _fake_tools(bin_dir: Path, audit_exit: int) -> Path:
    """`pip`, `hf` and `depthcard` stand-ins; `hf` records each call and what it uploads."""
    record = bin_dir / "calls.txt"
    tools = {
        "pip": "exit 0",
        "hf": f'echo "$*" >> {record}; [ -f "$3" ] && cat "$3" >> {record}; exit 0',
        "depthcard": (
            f'if [ "$1" = audit ]; then echo progress >&2; '
            f"echo {shlex.quote(REFUSAL)} >&2; exit {audit_exit}; fi; exit 0"
        ),
    }
    bin_dir.mkdir()
    for name, body in tools.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/bash\n{body}\n", encoding="utf-8")
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return record


@pytest.mark.parametrize(("audit_exit", "job_exit"), [(2, 0), (1, 1)])
def test_the_job_script_uploads_the_refusal_and_ends_successfully(tmp_path, audit_exit, job_exit):
    record = _fake_tools(tmp_path / "bin", audit_exit)
    backend = _jobs_backend(tmp_path, RecordingJobsApi(), {})
    script = backend.command(JOB)
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"}
    done = subprocess.run(script, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == job_exit, done.stderr
    calls = record.read_text(encoding="utf-8") if record.exists() else ""
    if audit_exit == 2:
        target = f"{report_path(*JOB.target)}/{USER_ERROR_FILE}"
        assert f"upload d/r /tmp/audit-error.txt {target} --repo-type dataset" in calls
        assert calls.rstrip().endswith(REFUSAL)  # the one error line, not the progress
    else:
        assert "upload" not in calls  # a crash is the Hub's to rerun (jobs.attempts)
    assert REFUSAL in done.stderr  # the job's log still shows it


def test_the_job_gets_the_job_token_and_never_the_write_token(tmp_path, monkeypatch):
    cfg = BotConfig(backend="hf-jobs", results_repo="d/r", work_dir=tmp_path,
                    jobs={"namespace": "d", "token_env": "DEPTHCARD_JOB_TOKEN",
                          "install": f"depthcard @ git+https://g/o/d@{SHA_B}"})  # fmt: skip
    hub = type("H", (), {"api": RecordingJobsApi(), "call": None,
                         "read_text": lambda self, *a, **kw: None})()  # fmt: skip
    monkeypatch.setenv("DEPTHCARD_JOB_TOKEN", "hf_JOB_read_token")
    backend = make_backend(cfg, hub, "hf_WRITE_token")
    backend.call = lambda what, fn, *a, **kw: fn(*a, **kw)
    backend.start(JOB)
    ((name, run),) = [c for c in hub.api.calls if c[0] == "run_job"]
    assert run["secrets"] == {"HF_TOKEN": "hf_JOB_read_token"}
    assert "hf_WRITE_token" not in repr(run)
    monkeypatch.delenv("DEPTHCARD_JOB_TOKEN")
    with pytest.raises(UserError, match="DEPTHCARD_JOB_TOKEN, which is not set"):
        make_backend(cfg, hub, "hf_WRITE_token")
    without = cfg.model_copy(update={"jobs": cfg.jobs.model_copy(update={"token_env": None})})
    assert make_backend(without, hub, "hf_WRITE_token").job_token == "hf_WRITE_token"
