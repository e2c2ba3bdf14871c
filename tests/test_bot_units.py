"""Unit tests of the bot's parts: pair rules, state compare-and-set, hf-jobs dispatch with a
recording fake, publishing text, caps and dry runs."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from depthcard.bot.dispatch import AuditJob, JobsBackend, key_label, pick_flavour
from depthcard.bot.pairs import RepoFacts, candidate_bases, mismatch, opted_out_in_card, repo_reason
from depthcard.bot.pr_text import PR_TITLE
from depthcard.bot.publish import (
    Target,
    publish_report,
    render_body,
    render_title,
    report_url,
)
from depthcard.bot.state import StateStore
from depthcard.schemas.bot_config import BotConfig
from tests.report_factory import make_report

SHA_B, SHA_C = "b" * 40, "c" * 40


def facts(repo="acme/x-Instruct", **kw) -> RepoFacts:
    return RepoFacts(repo_id=repo, sha=SHA_C, files=("model.safetensors", "config.json"),
                     config={"architectures": ["LlamaForCausalLM"]}, **kw)  # fmt: skip


@pytest.mark.parametrize(
    "repo, card, tags, expected",
    [
        ("acme/x-Instruct", {"base_model": "acme/x"}, (), ["acme/x"]),
        ("acme/x-Instruct", {"base_model": ["acme/a", "acme/b"]}, (), ["acme/a", "acme/b"]),
        ("acme/y", {}, ("base_model:finetune:org/base",), ["org/base"]),
        ("acme/Llama-3-8B-Instruct", {}, (), ["acme/Llama-3-8B-Base", "acme/Llama-3-8B"]),
        ("acme/gemma-2-9b-it", {}, (), ["acme/gemma-2-9b-Base", "acme/gemma-2-9b"]),
        ("acme/Mistral-Chat", {}, (), ["acme/Mistral-Base", "acme/Mistral"]),
        ("acme/plain", {}, (), []),
    ],
)
def test_candidate_bases(repo, card, tags, expected):
    assert candidate_bases(facts(repo, card=card, tags=tags)) == (expected, None)


def test_relations_and_configs():
    assert (
        "adapter"
        in candidate_bases(facts(card={"base_model": "a/b", "base_model_relation": "adapter"}))[1]
    )
    a = {"architectures": ["L"], "hidden_size": 8, "num_hidden_layers": 2, "vocab_size": 9}
    assert mismatch(a, dict(a)) is None
    assert "num_hidden_layers" in mismatch(a, {**a, "num_hidden_layers": 3})
    assert "architectures" in mismatch(a, {**a, "architectures": ["G"]})
    heads = {**a, "num_attention_heads": 4}
    assert mismatch(heads, {**heads, "num_attention_heads": 2}) == (
        "num_attention_heads differs (4 vs 2)"
    )
    assert mismatch(heads, a) is None  # a head count only one config states is not compared
    assert opted_out_in_card({"depthcard": "opt-out"}) and opted_out_in_card({"depthcard": False})
    assert not opted_out_in_card({"depthcard": "yes please"})
    assert "private" in repo_reason(facts(private=True))
    assert "allow-list" in repo_reason(facts(card={"license": "other"}), licences=["mit"])


def test_two_processes_never_dispatch_the_same_key(tmp_path):
    path = tmp_path / "s.sqlite"
    StateStore(path).add(base_repo="a/b", base_sha=SHA_B, child_repo="a/b-it", child_sha=SHA_C,
                         analysis_version="a1", state="queued")  # fmt: skip
    key = f"{SHA_B}/{SHA_C}/a1"
    wins: list[bool] = []
    barrier = threading.Barrier(8)

    def worker(i: int) -> None:
        store = StateStore(path, owner=f"worker-{i}")
        barrier.wait()
        wins.append(store.transition(key, ("queued",), "running", lease=60))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wins.count(True) == 1
    other = StateStore(path, owner="someone-else")
    assert not other.claim(key, "running", 60)  # held by a live lease


@dataclass
class RecordingJobsApi:
    """A recording fake of the HfApi jobs calls."""

    calls: list = field(default_factory=list)
    jobs: dict = field(default_factory=dict)

    def list_jobs(self, **kw):
        self.calls.append(("list_jobs", kw))
        return [j for j in self.jobs.values() if j.labels == kw["labels"]]

    def run_job(self, **kw):
        self.calls.append(("run_job", kw))
        job = SimpleNamespace(id=f"job{len(self.jobs) + 1}", labels=kw["labels"],
                              status=SimpleNamespace(stage="RUNNING", message=None))  # fmt: skip
        self.jobs[job.id] = job
        return job

    def inspect_job(self, **kw):
        self.calls.append(("inspect_job", kw))
        return self.jobs[kw["job_id"]]

    def fetch_job_logs(self, **kw):
        self.calls.append(("fetch_job_logs", kw))
        return iter(["loading models", "CUDA out of memory"][-kw["tail"] :])


def test_hf_jobs_backend_labels_flavours_secrets_and_never_starts_twice(tmp_path):
    cfg = BotConfig(backend="hf-jobs", results_repo="depthcard/results", work_dir=tmp_path,
                    jobs={"namespace": "depthcard"})  # fmt: skip
    api = RecordingJobsApi()
    report = make_report()
    m = report.models
    job = AuditJob(report.audit_key, m.base.repo_id, m.base.revision, m.child.repo_id,
                   m.child.revision, 5_000_000_000)  # fmt: skip

    def download(repo, path, local):
        local.mkdir(parents=True, exist_ok=True)
        (local / "report.json").write_text(report.model_dump_json())

    wheel = "wheels/0123456789abcdef/depthcard-0.1.0-py3-none-any.whl"
    backend = JobsBackend(cfg, api, "hf_secret", download, ship=lambda: wheel)
    handle = backend.start(job)
    assert backend.start(job) == handle  # the label finds the running job
    runs = [kw for name, kw in api.calls if name == "run_job"]
    assert len(runs) == 1
    assert runs[0]["flavor"] == "a100-large" and runs[0]["secrets"] == {"HF_TOKEN": "hf_secret"}
    assert runs[0]["labels"] == {"depthcard-key": key_label(job.key)}
    assert "hf_secret" not in " ".join(runs[0]["command"])  # a secret, never in the command
    assert f"hf download depthcard/results {wheel}" in runs[0]["command"][2]  # the pinned build
    assert runs[0]["attempts"] == 2
    assert backend.poll(job, handle) is None
    api.jobs[handle].status.stage = "COMPLETED"
    assert backend.poll(job, handle).report_dir is not None
    api.jobs[handle].status.stage = "ERROR"
    error = backend.poll(job, handle).error
    assert "ended ERROR" in error and error.endswith("loading models\nCUDA out of memory")
    assert pick_flavour(cfg.jobs, 1_000) == "a10g-large"
    with pytest.raises(ValueError):
        pick_flavour(cfg.jobs, 10**12)


class FakeHub:
    """Just enough of bot.hub.Hub for publish_report, recording writes."""

    def __init__(self, readme: str, prs=()):
        self.readme, self.prs, self.opened = readme, list(prs), []
        self.head_sha = make_report().models.child.revision  # the card did not move

    def read_text(self, repo, filename, revision, repo_type="model"):
        return self.readme

    def head(self, repo, branch="main"):
        return self.head_sha

    def bot_prs(self, repo, author):
        return self.prs

    def open_pr(self, repo, **kw):
        self.opened.append(kw)
        return SimpleNamespace(pr_num=7, pr_url="u")


def test_publish_text_dry_run_cap_and_opt_out():
    report = make_report()
    child = report.models.child
    url = report_url("https://hf.co/spaces/d/d", child.repo_id, child.revision)
    assert url == f"https://hf.co/spaces/d/d?report={child.repo_id}/{child.revision}"
    assert render_title(report) == PR_TITLE.format(child=child.repo_id, rev=child.revision[:7])
    body = render_body(report, url)
    assert url in body and child.revision in body and "opt-out" in body
    log: list = []
    target = Target(child.repo_id, "https://hf.co/spaces/d/d", "bot", dry_run=True)
    hub = FakeHub("# card\n")

    def rec(*a):
        log.append(a)

    assert publish_report(hub, report, target, record=rec).action == "dry-run"
    assert hub.opened == [] and log[0][1] == "dry-run"
    live = Target(child.repo_id, "https://hf.co/spaces/d/d", "bot", dry_run=False)
    capped = publish_report(hub, report, live, record=rec, reserve_open=lambda title: False)
    assert capped.action == "capped" and hub.opened == []
    assert publish_report(hub, report, live, record=rec).action == "opened"
    assert hub.opened[0]["parent_commit"] == child.revision
    opted = FakeHub("---\ndepthcard: opt-out\n---\n# card\n")
    assert publish_report(opted, report, live, record=rec).action == "blocked"
    closed = FakeHub("# c\n", [SimpleNamespace(author="bot", status="closed", num=3, title="t")])
    assert publish_report(closed, report, live, record=rec).detail == "PR #3 closed unmerged"
    with pytest.raises(ValueError, match="not other/repo"):
        publish_report(hub, report, Target("other/repo", "https://x", None, True), record=rec)


def test_state_in_results_repo_refuses_a_concurrent_writer(tmp_path):
    from depthcard.bot import state_sync
    from depthcard.bot.hub import Hub
    from tests.hub_double import HubDouble

    with HubDouble() as double:
        double.add_repo("depthcard/results", {"README.md": "results\n"}, repo_type="dataset")
        hub = Hub(None, endpoint=double.url, sleep=lambda s: None, cache_dir=tmp_path / "c")
        local = tmp_path / "state.sqlite"
        parent = state_sync.pull(hub, "depthcard/results", local)
        assert not local.exists()
        StateStore(local).close()
        state_sync.push(hub, "depthcard/results", local, parent)
        first = tmp_path / "first.sqlite"
        parent = state_sync.pull(hub, "depthcard/results", first)
        assert first.read_bytes() == local.read_bytes()
        state_sync.push(hub, "depthcard/results", local, parent)  # one watcher writes
        with pytest.raises(state_sync.StateConflict, match="another watcher"):
            state_sync.push(hub, "depthcard/results", first, parent)  # the other is refused


def test_publish_refuses_a_report_whose_key_does_not_match_its_models(tmp_path):
    from depthcard.bot.publish import load_report

    report = make_report()
    (tmp_path / "report.json").write_text(report.model_dump_json(), encoding="utf-8")
    assert load_report(tmp_path).audit_key == report.audit_key
    tampered = report.model_copy(update={"audit_key": "0" * 40 + "/" + "1" * 40 + "/a1"})
    (tmp_path / "report.json").write_text(tampered.model_dump_json(), encoding="utf-8")
    with pytest.raises(ValueError, match="does not match its models"):
        load_report(tmp_path)
