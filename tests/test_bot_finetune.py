"""The bot's fine-tune rule: an instruct → fine-tune pair becomes a three-model audit."""

from __future__ import annotations

import shlex

import pytest

from depthcard.bot.dispatch import AuditJob, JobsBackend, LocalBackend
from depthcard.bot.pairs import RepoFacts, is_instruct_finetune, looks_instruct
from depthcard.schemas.bot_config import BotConfig

SHA_B, SHA_I, SHA_F = "b" * 40, "c" * 40, "f" * 40


def facts(repo: str, sha: str = SHA_F, **kw) -> RepoFacts:
    return RepoFacts(repo_id=repo, sha=sha, files=("model.safetensors", "config.json"), **kw)


@pytest.mark.parametrize(
    "card, tags, parent, expected",
    [
        ({"base_model": "acme/x-Instruct", "base_model_relation": "finetune"}, (),
         facts("acme/x-Instruct", SHA_I), True),
        ({}, ("base_model:finetune:acme/x-Instruct",), facts("acme/x-Instruct", SHA_I), True),
        ({"base_model": "acme/tuned", "base_model_relation": "finetune"}, (),
         facts("acme/tuned", SHA_I, tags=("conversational",)), True),
        ({"base_model": "acme/x", "base_model_relation": "finetune"}, (),
         facts("acme/x", SHA_I), False),  # parent is a base model: an ordinary pair
        ({"base_model": "acme/x-Instruct", "base_model_relation": "merge"}, (),
         facts("acme/x-Instruct", SHA_I), False),
        ({"base_model": "acme/other-Instruct", "base_model_relation": "finetune"}, (),
         facts("acme/x-Instruct", SHA_I), False),  # not this parent
    ],
)  # fmt: skip
def test_instruct_finetune_rule(card, tags, parent, expected):
    child = facts("kim/x-Instruct-medical", card=card, tags=tags)
    assert is_instruct_finetune(child, parent) is expected


def test_looks_instruct_by_tag_or_name():
    assert looks_instruct(facts("acme/gemma-2-9b-it"))
    assert looks_instruct(facts("acme/plain", tags=("conversational",)))
    assert not looks_instruct(facts("acme/plain")) and not looks_instruct(facts("acme/-it"))


def test_a_three_model_job_passes_third_and_files_under_the_finetune(tmp_path):
    job = AuditJob("k", "acme/x", SHA_B, "acme/x-Instruct", SHA_I, 10**9,
                   third_repo="kim/x-ft", third_sha=SHA_F)  # fmt: skip
    assert job.models() == [f"acme/x@{SHA_B}", f"acme/x-Instruct@{SHA_I}", "--third",
                            f"kim/x-ft@{SHA_F}"]  # fmt: skip
    assert job.target == ("kim/x-ft", SHA_F)
    cfg = BotConfig(backend="hf-jobs", results_repo="depthcard/results", work_dir=tmp_path,
                    jobs={"namespace": "depthcard",
                          "install": f"depthcard @ git+https://g/d@{SHA_B}"})  # fmt: skip
    script = JobsBackend(cfg, api=None, token=None, download=None).command(job)[-1]
    audit = next(part for part in script.split("; ") if "depthcard audit" in part)
    audit = audit[audit.index("depthcard audit") :].split(" 2>&1")[0]  # its stderr is copied
    assert shlex.split(audit)[2:6] == job.models()
    assert f"reports/kim/x-ft/{SHA_F}" in script
    local = LocalBackend(BotConfig(work_dir=tmp_path))
    assert local.folder(job) == tmp_path / "reports" / "kim/x-ft" / SHA_F


def test_a_pair_job_is_unchanged():
    job = AuditJob("k", "acme/x", SHA_B, "acme/x-Instruct", SHA_I, None)
    assert job.models() == [f"acme/x@{SHA_B}", f"acme/x-Instruct@{SHA_I}"]
    assert job.target == ("acme/x-Instruct", SHA_I)
