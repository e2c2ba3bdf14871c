"""Hub evaluation results: `.eval_results/depthcard.yaml` and the benchmark dataset's files.

The shape is checked three ways: our schema, huggingface_hub's own reader and writer
(`parse_eval_result_entries` / `eval_result_entries_to_yaml`, which must give back the same
YAML), and the benchmark's eval.yaml naming every task the results use.
"""

from __future__ import annotations

import json

import pytest
import yaml
from huggingface_hub import eval_result_entries_to_yaml, parse_eval_result_entries
from pydantic import ValidationError

from depthcard.report.benchmark import EVAL_FILE, benchmark_files
from depthcard.report.eval_results import TASKS, eval_results, eval_results_yaml
from depthcard.schemas.eval_results import BenchmarkEval, EvalResultsFile
from tests.bot_helpers import TOKEN, bot_env, depthcard
from tests.hub_double import HubDouble
from tests.report_factory import make_report

BENCH = "depthcard/depthcard-benchmark"
URL = "https://huggingface.co/spaces/depthcard/depthcard?report=acme/tiny/abc"


def _full_report():
    return make_report(with_ablation=True, with_depth=True)


def test_the_file_reads_back_through_huggingface_hub_unchanged():
    text = eval_results_yaml(eval_results(_full_report(), BENCH, URL))
    data = yaml.safe_load(text)
    entries = parse_eval_result_entries(data)
    assert [e.task_id for e in entries] == [t.id for t in TASKS]
    assert all(e.dataset_id == BENCH and e.source_url == URL for e in entries)
    # the library's writer gives back exactly what we wrote: same keys, same nesting
    assert eval_result_entries_to_yaml(entries) == data
    values = {e.task_id: e.value for e in entries}
    # the card's digits: 0.265, 94.0 %, a whole number of directions
    assert values["alignment_depth_vs_null"] == 0.153 and values["baseline_refusal"] == 94.0
    assert isinstance(values["abliteration_min_k"], int)
    assert entries[0].date.endswith("Z")  # the report's UTC time, ISO-8601
    assert "analysis" in entries[0].notes


def test_unmeasured_numbers_are_left_out_and_not_above_null_is_noted():
    report = make_report()  # no ablation, no depth
    tasks = {e.dataset.task_id for e in eval_results(report, BENCH, None)}
    assert "abliteration_min_k" not in tasks and "alignment_depth_vs_null" not in tasks
    report = _full_report()
    h = report.headline.model_copy(update={"depth_p_value": 0.25})
    tasks = {
        e.dataset.task_id
        for e in eval_results(report.model_copy(update={"headline": h}), BENCH, None)
    }
    assert "alignment_depth_vs_null" not in tasks  # not above its null: not a depth to rank


@pytest.mark.parametrize(
    "entry, problem",
    [
        ({"dataset": {"id": BENCH}, "value": 1.0}, "task_id"),
        ({"dataset": {"id": "no-slash", "task_id": "t"}, "value": 1.0}, "id"),
        ({"dataset": {"id": BENCH, "task_id": "t"}, "value": float("nan")}, "value"),
        ({"dataset": {"id": BENCH, "task_id": "t"}, "value": 1, "extra": 1}, "extra"),
        ({"dataset": {"id": BENCH, "task_id": "t"}, "value": 1, "date": "yesterday"}, "date"),
        ({"dataset": {"id": BENCH, "task_id": "t"}, "value": 1, "source": {"name": "x"}}, "url"),
    ],
)
def test_the_schema_refuses_malformed_entries(entry, problem):
    with pytest.raises(ValidationError, match=problem):
        EvalResultsFile.model_validate([entry])


def test_an_empty_file_is_refused():
    with pytest.raises(ValidationError):
        EvalResultsFile.model_validate([])


def test_the_benchmark_declares_every_task_and_config_it_uses():
    files = benchmark_files()
    spec = BenchmarkEval.model_validate(yaml.safe_load(files[EVAL_FILE]))
    assert [t.id for t in spec.tasks] == [t.id for t in TASKS]
    for entry in eval_results(_full_report(), BENCH, URL):
        assert entry.dataset.task_id in {t.id for t in spec.tasks}
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
