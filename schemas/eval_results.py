"""The Hub's evaluation-results files: `.eval_results/*.yaml` in a model repo, `eval.yaml` in a
benchmark dataset.

The model page shows the entries of every `.eval_results/*.yaml` and the benchmark dataset
they name aggregates them into its leaderboard (https://huggingface.co/docs/hub/eval-results;
the spec's example file is hub-docs `eval_results.yaml`). The field names follow
huggingface_hub's own writer (`eval_result_entries_to_yaml` in `_eval_results.py`, 2.x):
`dataset: {id, task_id, revision}`, `value`, `verifyToken`, `date`, `source: {url, name, user,
org}`, `notes`. A benchmark's `eval.yaml` has `name`, `description`, `evaluation_framework`
and `tasks: [{id, config, split}]` (hub-docs `docs/hub/eval-results.md`, "Eval.yaml
specification"). The Hub validates both server-side; what else it checks is not documented.
"""

from __future__ import annotations

import re
from datetime import datetime

from pydantic import ConfigDict, Field, RootModel, field_validator

from depthcard.schemas._base import Strict

_REPO = r"^[A-Za-z0-9][\w.-]*/[\w.-]+$"
_TASK = r"^[A-Za-z0-9][\w.-]*$"


class EvalDataset(Strict):
    """The benchmark a result belongs to: where its leaderboard lives."""

    id: str = Field(pattern=_REPO, description="Benchmark dataset repo on the Hub (org/name).")
    task_id: str = Field(pattern=_TASK, description="A task `id` of the dataset's eval.yaml.")
    revision: str | None = Field(
        None, pattern=r"^[0-9a-f]{40}$", description="Commit of the benchmark dataset used."
    )


class EvalSource(Strict):
    """Where the result comes from (shown as the result's source link)."""

    url: str = Field(pattern=r"^https?://\S+$", description="Link to the evidence.")
    name: str | None = Field(None, min_length=1, description="Display name of the link.")
    user: str | None = Field(None, description="Hub user credited.")
    org: str | None = Field(None, description="Hub organisation credited.")


class EvalResult(Strict):
    """One entry of a `.eval_results/*.yaml` file."""

    model_config = ConfigDict(populate_by_name=True)

    dataset: EvalDataset = Field(description="The benchmark and task.")
    value: int | float = Field(description="The metric value (finite).")
    verify_token: str | None = Field(
        None, alias="verifyToken", description="Signature of a verified run (HF Jobs only)."
    )
    date: str | None = Field(None, description="ISO-8601 date or datetime of the evaluation.")
    source: EvalSource | None = Field(None, description="Link to the evaluation's evidence.")
    notes: str | None = Field(None, description="Details of the evaluation set-up.")

    @field_validator("date")
    @classmethod
    def _iso(cls, value: str | None) -> str | None:
        if value is not None:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        return value


class EvalResultsFile(RootModel[list[EvalResult]]):
    """A whole `.eval_results/*.yaml` file: a non-empty list of entries."""

    root: list[EvalResult] = Field(min_length=1)


class BenchmarkTask(Strict):
    """One task (one leaderboard) of a benchmark dataset."""

    id: str = Field(pattern=_TASK, description="Task id; results name it as dataset.task_id.")
    config: str | None = Field(None, description="Dataset config evaluated ('default' if one).")
    split: str | None = Field(None, description="Dataset split evaluated (Hub default: test).")


class BenchmarkEval(Strict):
    """A benchmark dataset's `eval.yaml`."""

    name: str = Field(min_length=1, description="Display name of the benchmark.")
    description: str = Field(min_length=1, description="What the benchmark measures.")
    evaluation_framework: str = Field(
        min_length=1,
        description="Framework id; the Hub keeps the list (huggingface.js tasks/src/eval.ts).",
    )
    tasks: list[BenchmarkTask] = Field(min_length=1, description="Its tasks (leaderboards).")

    @field_validator("tasks")
    @classmethod
    def _unique(cls, tasks: list[BenchmarkTask]) -> list[BenchmarkTask]:
        ids = [t.id for t in tasks]
        if len(set(ids)) != len(ids):
            raise ValueError(f"task ids repeat: {ids}")
        return tasks


def is_repo_id(text: str) -> bool:
    """True for an `org/name` Hub repo id."""
    return re.match(_REPO, text) is not None
