"""depthcard's prompt sets as a Hub benchmark dataset: data files, dataset card and eval.yaml.

The files are built here, as bytes by path, and published by `depthcard publish-benchmark`;
nothing here touches the network. Each prompt set is one config of the dataset (one JSONL
file, split `test`), declared in the card's `configs:` so the dataset viewer shows it; the
`eval.yaml` declares one task per ranked headline number (`report.eval_results.TASKS`), so
the `.eval_results/depthcard.yaml` the bot's pull requests add lands on those leaderboards.

Registering the dataset as a benchmark is the Hub's call: its `evaluation_framework` must be
on the Hub's list (huggingface.js `packages/tasks/src/eval.ts`, which has no `depthcard`
today) and the dataset on its allow-list (docs/hub/eval-results.md, "Registering a
Benchmark"). Until then the files are valid, the results show on the model page, and no
leaderboard aggregates them.
"""

from __future__ import annotations

import json

import yaml

from depthcard.prompts import LoadedPromptSet, load_builtin
from depthcard.report.eval_results import TASKS
from depthcard.schemas.errors import UserError
from depthcard.schemas.eval_results import BenchmarkEval, BenchmarkTask

EVAL_FILE = "eval.yaml"
FRAMEWORK = "depthcard"
SPLIT = "test"
BUILTIN_SETS = ("harmful-core", "harmless-core", "capability-core")
NAME = "depthcard: safety-alignment depth"
DESCRIPTION = (
    "How deep the safety alignment of an open-weight instruction-tuned model goes, measured by "
    "depthcard from the residual streams of the model and its base model on these prompt "
    "sets: the alignment depth score (entanglement of safety with capability directions, "
    "against a label-permutation null), the fewest directions whose ablation removes refusal "
    "without breaking the model, the baseline refusal rate and the share of the residual "
    "width the alignment shift fills. The prompt sets are requests only; they contain no "
    "harmful content."
)
CARD_BODY = """
# {name}

{description}

## Configs

| config | prompt set | version | prompts | sha256 |
|---|---|---|---|---|
{rows}

Each row of `data/<set>.jsonl` is one prompt: `id`, `text`, `category`. A report of
`depthcard audit` records each set's name, version and sha256, so a result can be traced to
the exact prompts.

## Tasks (`eval.yaml`)

{tasks}

Results are added to model repos as `.eval_results/depthcard.yaml` by depthcard's pull
requests. A number is comparable only with numbers of the same depthcard analysis version
(each result's `notes` names it).
"""


def config_name(prompt_set: LoadedPromptSet) -> str:
    """The dataset config of a set: its kind (harmful, harmless, capability)."""
    return prompt_set.kind


def benchmark_eval(primary_config: str = "harmful") -> BenchmarkEval:
    """The eval.yaml: one task per ranked number, each read on the harmful set's test split."""
    tasks = [BenchmarkTask(id=t.id, config=primary_config, split=SPLIT) for t in TASKS]
    return BenchmarkEval(
        name=NAME, description=DESCRIPTION, evaluation_framework=FRAMEWORK, tasks=tasks
    )


def _jsonl(prompt_set: LoadedPromptSet) -> bytes:
    rows = [
        {"id": i, "text": p.text, "category": p.category}
        for i, p in enumerate(prompt_set.spec.prompts)
    ]
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def _card(sets: list[LoadedPromptSet], spec: BenchmarkEval) -> str:
    configs = [
        {
            "config_name": config_name(s),
            "data_files": [{"split": SPLIT, "path": f"data/{s.name}.jsonl"}],
        }
        for s in sets
    ]
    front = {
        "license": "apache-2.0",
        "pretty_name": NAME,
        "language": ["en"],
        "tags": ["safety", "alignment", "interpretability", "depthcard"],
        "configs": configs,
    }
    rows = "\n".join(
        f"| {config_name(s)} | {s.name} | {s.version} | {s.count} | `{s.sha256}` |" for s in sets
    )
    tasks = "\n".join(f"- `{t.id}`: {t.description}" for t in TASKS)
    body = CARD_BODY.format(name=spec.name, description=spec.description, rows=rows, tasks=tasks)
    header = yaml.safe_dump(front, sort_keys=False, allow_unicode=True)
    return f"---\n{header}---\n{body}"


def benchmark_files(sets: list[LoadedPromptSet] | None = None) -> dict[str, bytes]:
    """{path in the dataset repo: bytes}: eval.yaml, README.md and one JSONL per prompt set.

    Args:
        sets: the prompt sets; default the built-in harmful, harmless and capability sets.

    Raises:
        UserError: two sets of the same kind (each kind is one config).
    """
    sets = [load_builtin(n) for n in BUILTIN_SETS] if sets is None else sets
    kinds = [config_name(s) for s in sets]
    if len(set(kinds)) != len(kinds):
        raise UserError(f"one prompt set per kind, got {kinds}")
    spec = benchmark_eval()
    eval_yaml = yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True), sort_keys=False)
    files = {EVAL_FILE: eval_yaml.encode("utf-8"), "README.md": _card(sets, spec).encode("utf-8")}
    files.update({f"data/{s.name}.jsonl": _jsonl(s) for s in sets})
    return files
