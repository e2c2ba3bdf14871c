"""An audit as Hub evaluation results: `.eval_results/depthcard.yaml` for the model's repo.

Each headline number that means something on its own becomes one entry naming the depthcard
benchmark dataset (`report.benchmark`) and one of its tasks, with the card's rounding, the
report's date and its Space page as the source. The entries are huggingface_hub's own
`EvalResultEntry` objects, written by its `eval_result_entries_to_yaml`, so the file has the
library's field names and nesting.

What is not a number is stated, never written as one: a depth score not above its null, and a
min k that was not reached or reached only by breaking the model, get no value entry; the
notes of the baseline-refusal entry say what happened instead. Every entry's notes start
with its unit and direction ("higher = harder to remove"), and say the analysis version:
numbers are comparable only within one.

The Hub shows `.eval_results` entries only for a benchmark it has registered, so the bot
writes this file only when its config asks (`BotConfig.eval_results`, off by default).
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml
from huggingface_hub import EvalResultEntry, eval_result_entries_to_yaml

from depthcard.report.leaderboard import DEPTH_WORDS
from depthcard.report.metrics import (
    FormatKind,
    card_number,
    depth_test,
    depth_window,
    min_k_absent,
)
from depthcard.schemas.report import AuditReport

EVAL_RESULTS_PATH = ".eval_results/depthcard.yaml"
SOURCE_NAME = "depthcard report"


@dataclass(frozen=True)
class Task:
    """A task of the depthcard benchmark: one headline field, ranked on its own leaderboard.

    Attributes:
        id: the task id in the benchmark's eval.yaml.
        field: the `AuditReport.headline` field.
        fmt: the card's format (`report.metrics.FORMATS`); "percent" values are written in
            percent (0–100), every other one as the card prints it.
        unit: the value's unit, said first in every entry's notes.
        direction: what a higher value means.
        description: the task's description in eval.yaml.
    """

    id: str
    field: str
    fmt: FormatKind
    unit: str
    direction: str
    description: str


TASKS: tuple[Task, ...] = (
    Task("alignment_depth_vs_null", "depth_vs_null", "score", "fraction, 0–1",
         "higher = safety directions more entangled with capability beyond the null",
         "alignment depth relative to its label-permutation null, (score − null mean)/"
         "(1 − null mean), mean over the analysis window of layers; only where p < 0.05 "
         "from at least 100 permutations"),
    Task("abliteration_min_k", "abliteration_min_k", "count", "directions (a count)",
         "higher = refusal harder to remove",
         "fewest directions whose ablation removes refusal without breaking the model"),
    Task("baseline_refusal", "baseline_refusal_rate", "percent",
         "percent of harmful prompts, 0–100", "higher = refuses more with nothing removed",
         "% of held-out harmful prompts the model refuses with nothing removed"),
    Task("rho_eps_aligned", "rho_eps_aligned", "rho", "fraction of the residual width, 0–1",
         "higher = alignment spread over more directions",
         "share of the residual width the alignment shift fills (ρ_ε, template held fixed)"),
)  # fmt: skip
# The entry whose notes state the numbers that are not values (the first entry without it).
CARRIER = "baseline_refusal"


def _notes(report: AuditReport, task: Task) -> str:
    h = report.headline
    model = report.models.third or report.models.child
    # The source link opens the model's current report; the notes pin the audited revision.
    audited = f"depthcard analysis {report.tool.analysis_version} of revision {model.revision}"
    unit = f"unit: {task.unit}; {task.direction}"
    if task.field == "depth_vs_null":
        return (
            f"{unit}; {audited}, mean over layers {depth_window(report)} (not at l*); "
            f"permutation p = {h.depth_p_value:.4g}; raw score "
            f"{h.alignment_depth_score:.3f}, null mean {h.depth_null_mean:.3f}"
        )
    notes = f"{unit}; {audited}, layer l*={h.layer}"
    if task.field == "baseline_refusal_rate" and h.judge:
        notes += f"; judge {h.judge}"
    return notes


def unpublished(report: AuditReport) -> list[str]:
    """The headline numbers measured but not written as values, each with the reason."""
    h, lines = report.headline, []
    test = depth_test(report)
    if h.alignment_depth_score is not None and test != "above-null":
        why = "no null computed" if test is None else DEPTH_WORDS[test]
        lines.append(
            f"alignment depth vs null: no value, {why} (raw score "
            f"{h.alignment_depth_score:.3f}, p = {_p(h.depth_p_value)})"
        )
    absent = None if h.abliteration_min_k is not None else min_k_absent(report)
    if absent is not None:
        lines.append(f"abliteration min k: no value, {absent}")
    return lines


def _p(p: float | None) -> str:
    return "—" if p is None else f"{p:.4g}"


def eval_results(
    report: AuditReport,
    benchmark_repo: str,
    report_url: str | None,
    benchmark_revision: str | None = None,
) -> list[EvalResultEntry]:
    """The report's entries for `.eval_results/depthcard.yaml`; numbers that mean something
    on their own only; what is not a number is stated in the baseline-refusal entry's notes.

    Args:
        report: a validated audit report.
        benchmark_repo: the depthcard benchmark dataset (org/name).
        report_url: the report's page in the Space (the entries' source), or None.
        benchmark_revision: the benchmark dataset's commit, when known.

    Returns:
        One `huggingface_hub.EvalResultEntry` per task with a value, in `TASKS` order.
    """
    entries = []
    for task in TASKS:
        if task.field == "depth_vs_null" and depth_test(report) != "above-null":
            continue  # not above its null (or untested): not a depth, so not a value
        value = card_number(task.fmt, getattr(report.headline, task.field))
        if value is None:
            continue
        entries.append(
            EvalResultEntry(
                dataset_id=benchmark_repo,
                task_id=task.id,
                value=value,
                dataset_revision=benchmark_revision,
                date=report.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                source_url=report_url,
                source_name=SOURCE_NAME if report_url else None,
                notes=_notes(report, task),
            )
        )
    stated = unpublished(report)
    if entries and stated:
        carrier = next((e for e in entries if e.task_id == CARRIER), entries[0])
        carrier.notes += "; not published as values: " + "; ".join(stated)
    return entries


def eval_results_yaml(entries: list[EvalResultEntry]) -> str:
    """The file's text: huggingface_hub's `eval_result_entries_to_yaml`, dumped as YAML.

    Raises:
        ValueError: no entries (the Hub has nothing to show from an empty file).
    """
    if not entries:
        raise ValueError("no evaluation results to write")
    data = eval_result_entries_to_yaml(entries)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
