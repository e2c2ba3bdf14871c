"""The Hub's evaluation-results files: the benchmark dataset's `eval.yaml`.

A model repo's `.eval_results/*.yaml` entries are huggingface_hub's own `EvalResultEntry`,
written by its `eval_result_entries_to_yaml` (report.eval_results), so they have no model
here. A benchmark's `eval.yaml` has no type in the library: it has `name`, `description`,
`evaluation_framework` and `tasks: [{id, config, split}]` (hub-docs `docs/hub/eval-results.md`,
"Eval.yaml specification"). The Hub validates it server-side; what else it checks is not
documented.
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from depthcard.schemas._base import Strict

_REPO = r"^[A-Za-z0-9][\w.-]*/[\w.-]+$"
_TASK = r"^[A-Za-z0-9][\w.-]*$"


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
