"""Running HF Jobs are polled every `jobs.poll_seconds` between rounds, and collected as soon as
they finish; the local backend just sleeps the interval."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from depthcard.bot.dispatch import Outcome
from depthcard.bot.state import StateStore
from depthcard.bot.watch import Round, wait_for_next_round
from depthcard.schemas.bot_config import BotConfig

SHA_B, SHA_C = "b" * 40, "c" * 40


class ScriptedBackend:
    """Answers polls from a script: None (still running) until the last answer."""

    def __init__(self, answers):
        self.answers, self.polls = list(answers), []

    def start(self, job):
        raise AssertionError("a running job is never started again")

    def poll(self, job, handle):
        self.polls.append(handle)
        return self.answers.pop(0)


def running_round(tmp_path: Path, backend, **cfg) -> Round:
    cfg = BotConfig(backend="hf-jobs", results_repo="d/r", interval_seconds=100,
                    jobs={"namespace": "d", "poll_seconds": 30}, **cfg)  # fmt: skip
    store = StateStore(tmp_path / "s.sqlite")
    store.add(base_repo="a/b", base_sha=SHA_B, child_repo="a/b-it", child_sha=SHA_C,
              analysis_version="a1", state="running")  # fmt: skip
    (row,) = store.rows("running")
    store.set_fields(row.key, job_id="job1")
    return Round(None, store, cfg, backend, "a1")


def test_a_running_job_is_polled_between_rounds_and_collected_when_done(tmp_path):
    report = tmp_path / "report"
    backend = ScriptedBackend([None, Outcome(report)])
    r = running_round(tmp_path, backend)
    slept: list[float] = []
    wait_for_next_round(r, slept.append)
    assert backend.polls == ["job1", "job1"]
    assert slept == [30, 30, 40]  # polled twice; nothing left to poll, the rest in one sleep
    (row,) = r.store.rows()
    assert row.state == "succeeded" and row.report_dir == str(report)


def test_a_failed_job_is_recorded_with_its_error_between_rounds(tmp_path):
    backend = ScriptedBackend([Outcome(None, "job job1 ended ERROR: oom\nlast log line")])
    r = running_round(tmp_path, backend)
    slept: list[float] = []
    wait_for_next_round(r, slept.append)
    (row,) = r.store.rows()
    assert row.state == "failed" and row.error.endswith("last log line")
    assert slept == [30, 70]


def test_nothing_running_or_local_backend_sleeps_the_interval(tmp_path):
    backend = ScriptedBackend([])
    r = running_round(tmp_path, backend)
    r.cfg = BotConfig(interval_seconds=100)  # local backend: no jobs to poll
    slept: list[float] = []
    wait_for_next_round(r, slept.append)
    assert slept == [100] and backend.polls == []


def test_a_transient_hub_error_while_inspecting_a_job_is_retried_not_a_failure(tmp_path):
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    from depthcard.bot.dispatch import AuditJob, JobsBackend
    from depthcard.bot.hub import Hub

    class FlakyApi:
        def __init__(self):
            self.inspections = 0

        def inspect_job(self, **kw):
            self.inspections += 1
            if self.inspections == 1:
                request = httpx2.Request("GET", "http://hub/api/jobs/d/job1")
                raise HfHubHTTPError("busy", response=httpx2.Response(503, request=request))
            return SimpleNamespace(status=SimpleNamespace(stage="RUNNING", message=None))

    cfg = BotConfig(backend="hf-jobs", results_repo="d/r", work_dir=tmp_path,
                    jobs={"namespace": "d"})  # fmt: skip
    hub, slept = Hub(None, sleep=lambda s: slept.append(s)), []
    api = FlakyApi()
    backend = JobsBackend(cfg, api, None, None, call=hub.call)
    job = AuditJob("k", "a/b", SHA_B, "a/b-it", SHA_C, None)
    assert backend.poll(job, "job1") is None  # still running, after one retry
    assert api.inspections == 2 and slept == [1.0]
