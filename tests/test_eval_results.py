"""Hub evaluation results: `.eval_results/depthcard.yaml` and the benchmark dataset's files.

The file is written through huggingface_hub's `EvalResultEntry` and read back through its
`parse_eval_result_entries` (its writer must give back the same YAML); the benchmark's
eval.yaml names every task the results use; the bot config's switch decides whether a PR
carries the file at all.
"""

from __future__ import annotations

import json

import pytest
import yaml
from huggingface_hub import eval_result_entries_to_yaml, parse_eval_result_entries
from pydantic import ValidationError

from depthcard.bot.publish import PrLinks, Target, extra_files
from depthcard.report.benchmark import EVAL_FILE, benchmark_files
from depthcard.report.eval_results import (
    EVAL_RESULTS_PATH,
    TASKS,
    eval_results,
    eval_results_yaml,
)
from depthcard.schemas.bot_config import BotConfig
from depthcard.schemas.eval_results import BenchmarkEval
from tests.bot_helpers import TOKEN, bot_env, depthcard
from tests.hub_double import HubDouble
from tests.report_factory import make_report

BENCH = "depthcard/depthcard-benchmark"
URL = "https://huggingface.co/spaces/depthcard/depthcard?report=acme/tiny/abc"


def _full_report():
    return make_report(with_ablation=True, with_depth=True)


def _with_ablation(report, **update):
    ablation = report.ablation.model_copy(update=update)
    headline = report.headline.model_copy(
        update={"abliteration_min_k": update.get("min_k", ablation.min_k),
                "abliteration_kl": update.get("kl_at_min_k", ablation.kl_at_min_k)}
    )  # fmt: skip
    return report.model_copy(update={"ablation": ablation, "headline": headline})


def _not_above_null(report):
    h = report.headline.model_copy(update={"depth_p_value": 0.25})
    return report.model_copy(update={"headline": h})


def _parsed(report):
    """The written file, read back through huggingface_hub's reader."""
    return parse_eval_result_entries(
        yaml.safe_load(eval_results_yaml(eval_results(report, BENCH, URL)))
    )


def test_the_file_reads_back_through_huggingface_hub_unchanged():
    text = eval_results_yaml(eval_results(_full_report(), BENCH, URL))
    data = yaml.safe_load(text)
    entries = parse_eval_result_entries(data)
    assert [e.task_id for e in entries] == [t.id for t in TASKS]
    assert all(e.dataset_id == BENCH and e.source_url == URL for e in entries)
    # the library's writer gives back exactly what we wrote: same keys, same nesting
    assert eval_result_entries_to_yaml(entries) == data
    values = {e.task_id: e.value for e in entries}
    # the card's digits: 0.153, 94.0 %, a whole number of directions
    assert values["alignment_depth_vs_null"] == 0.153 and values["baseline_refusal"] == 94.0
    assert isinstance(values["abliteration_min_k"], int)
    assert entries[0].date.endswith("Z")  # the report's UTC time, ISO-8601
    assert all("analysis" in e.notes for e in entries)


def test_every_entry_says_its_unit_and_direction_first():
    notes = {e.task_id: e.notes for e in _parsed(_full_report())}
    assert notes["baseline_refusal"].startswith("unit: percent of harmful prompts, 0–100; higher")
    assert notes["alignment_depth_vs_null"].startswith("unit: fraction, 0–1; higher")
    assert notes["abliteration_min_k"].startswith("unit: directions (a count); higher = refusal "
                                                  "harder to remove")  # fmt: skip
    assert notes["rho_eps_aligned"].startswith("unit: fraction of the residual width, 0–1")


def test_a_depth_not_above_its_null_is_stated_not_written_as_a_value():
    entries = _parsed(_not_above_null(_full_report()))
    assert "alignment_depth_vs_null" not in {e.task_id for e in entries}
    (carrier,) = [e for e in entries if e.task_id == "baseline_refusal"]
    assert "alignment depth vs null: no value, not above null (raw score" in carrier.notes


@pytest.mark.parametrize(
    "reason, stated",
    [("not reached", "abliteration min k: no value, not reached (k ≤ 8)"),
     ("refusal only goes away by breaking the model",
      "abliteration min k: no value, refusal only goes away by breaking the model")],
)  # fmt: skip
def test_a_min_k_not_reached_is_stated_not_omitted(reason, stated):
    report = _with_ablation(_full_report(), min_k=None, kl_at_min_k=None,
                            broken_share_at_min_k=None, min_k_reason=reason)  # fmt: skip
    entries = _parsed(report)
    assert "abliteration_min_k" not in {e.task_id for e in entries}
    (carrier,) = [e for e in entries if e.task_id == "baseline_refusal"]
    assert stated in carrier.notes
    assert sum(stated in e.notes for e in entries) == 1  # said once, not on every entry


def test_unmeasured_numbers_are_left_out():
    report = make_report()  # no ablation, no depth
    tasks = {e.task_id for e in eval_results(report, BENCH, None)}
    assert "abliteration_min_k" not in tasks and "alignment_depth_vs_null" not in tasks
    assert all(
        e.source_url is None and e.source_name is None for e in eval_results(report, BENCH, None)
    )


def test_an_empty_file_is_refused():
    with pytest.raises(ValueError, match="no evaluation results"):
        eval_results_yaml([])


def _pr_files(cfg: BotConfig) -> dict[str, bytes]:
    target = Target("acme/tiny", cfg.space_url, "depthcard-bot", False,
                    links=PrLinks.from_config(cfg))  # fmt: skip
    return extra_files(_full_report(), target)


def test_the_switch_is_off_by_default_and_the_pr_carries_no_file():
    assert BotConfig().eval_results is False
    assert EVAL_RESULTS_PATH not in _pr_files(BotConfig(benchmark_repo=BENCH))


def test_switched_on_the_pr_carries_the_file():
    files = _pr_files(BotConfig(benchmark_repo=BENCH, eval_results=True))
    entries = parse_eval_result_entries(yaml.safe_load(files[EVAL_RESULTS_PATH]))
    assert [e.task_id for e in entries] == [t.id for t in TASKS]


def test_the_switch_needs_a_benchmark():
    with pytest.raises(ValidationError, match="eval_results needs benchmark_repo"):
        BotConfig(eval_results=True)


def test_the_benchmark_declares_every_task_and_config_it_uses():
    files = benchmark_files()
    spec = BenchmarkEval.model_validate(yaml.safe_load(files[EVAL_FILE]))
    assert [t.id for t in spec.tasks] == [t.id for t in TASKS]
    for entry in eval_results(_full_report(), BENCH, URL):
        assert entry.task_id in {t.id for t in spec.tasks}
    _, front, _ = files["README.md"].decode("utf-8").split("---\n", 2)
    configs = {c["config_name"]: c["data_files"] for c in yaml.safe_load(front)["configs"]}
    assert set(configs) == {"harmful", "harmless", "capability"}
    assert {t.config for t in spec.tasks} <= set(configs)
    for data_files in configs.values():
        (only,) = data_files
        rows = [json.loads(line) for line in files[only["path"]].decode().splitlines()]
        assert only["split"] == "test" and rows and set(rows[0]) == {"id", "text", "category"}


def test_a_task_id_used_twice_is_refused():
    spec = yaml.safe_load(benchmark_files()[EVAL_FILE])
    spec["tasks"].append(spec["tasks"][0])
    with pytest.raises(ValidationError, match="repeat"):
        BenchmarkEval.model_validate(spec)


@pytest.mark.slow
def test_publish_benchmark_commits_the_dataset_in_one_commit(tmp_path):
    with HubDouble(token=TOKEN) as hub:
        env = bot_env(hub, tmp_path)
        dry = depthcard(["publish-benchmark", "--repo", BENCH, "--dry-run"], env)
        assert dry.returncode == 0, dry.stderr
        assert "eval.yaml" in dry.stdout and "evaluation_framework: depthcard" in dry.stdout
        assert not hub.repos  # a dry run touches nothing
        out = depthcard(["publish-benchmark", "--repo", BENCH], env)
        assert out.returncode == 0, out.stderr
        repo = hub.repo(BENCH, "dataset")
        files = repo.files()
        assert {EVAL_FILE, "README.md", "data/harmful-core.jsonl"} <= set(files)
        assert files[EVAL_FILE] == benchmark_files()[EVAL_FILE]
        assert len(repo.commits) == 2  # the repo's first commit, then one with every file
        assert TOKEN not in out.stdout + out.stderr
