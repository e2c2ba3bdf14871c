"""An audit as Hub evaluation results: `.eval_results/depthcard.yaml` for the model's repo.

Each headline number that a leaderboard can rank becomes one entry naming the depthcard
benchmark dataset (`report.benchmark`) and one of its tasks, with the card's rounding, the
report's date and its Space page as the source. The card section stays the full account; the
entries only put the numbers where the model page and the benchmark's leaderboards show them.
Numbers are comparable only within one analysis version, so each entry's notes say which.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from depthcard.report.metrics import FormatKind, card_number, depth_test, depth_window
from depthcard.schemas.eval_results import EvalDataset, EvalResult, EvalResultsFile, EvalSource
from depthcard.schemas.report import AuditReport

EVAL_RESULTS_PATH = ".eval_results/depthcard.yaml"
SOURCE_NAME = "depthcard report"


@dataclass(frozen=True)
class Task:
    """A task of the depthcard benchmark: one headline field, ranked on its own leaderboard."""

    id: str
    field: str
    fmt: FormatKind
    description: str


TASKS: tuple[Task, ...] = (
    Task("alignment_depth_vs_null", "depth_vs_null", "score",
         "alignment depth relative to its label-permutation null, (score − null mean)/"
         "(1 − null mean), mean over the analysis window of layers; only where p < 0.05 "
         "from at least 100 permutations"),
    Task("abliteration_min_k", "abliteration_min_k", "count",
         "fewest directions whose ablation removes refusal without breaking the model"),
    Task("baseline_refusal", "baseline_refusal_rate", "percent",
         "% of held-out harmful prompts the model refuses with nothing removed"),
    Task("rho_eps_aligned", "rho_eps_aligned", "rho",
         "share of the residual width the alignment shift fills (ρ_ε, template held fixed)"),
)  # fmt: skip


def _notes(report: AuditReport, task: Task) -> str:
    h = report.headline
    model = report.models.third or report.models.child
    # The source link opens the model's current report; the notes pin the audited revision.
    audited = f"depthcard analysis {report.tool.analysis_version} of revision {model.revision}"
    if task.field == "depth_vs_null":
        return (
            f"{audited}, mean over layers "
            f"{depth_window(report)} (not at l*); permutation p = {h.depth_p_value:.4g}; raw "
            f"score {h.alignment_depth_score:.3f}, null mean {h.depth_null_mean:.3f}"
        )
    notes = f"{audited}, layer l*={h.layer}"
    if task.field == "baseline_refusal_rate" and h.judge:
        notes += f"; judge {h.judge}"
    return notes


def eval_results(
    report: AuditReport,
    benchmark_repo: str,
    report_url: str | None,
    benchmark_revision: str | None = None,
) -> list[EvalResult]:
    """The report's entries for `.eval_results/depthcard.yaml`; measured numbers only.

    Args:
        report: a validated audit report.
        benchmark_repo: the depthcard benchmark dataset (org/name).
        report_url: the report's page in the Space (the entries' source), or None.
        benchmark_revision: the benchmark dataset's commit, when known.
    """
    source = EvalSource(url=report_url, name=SOURCE_NAME) if report_url else None
    entries = []
    for task in TASKS:
        if task.field == "depth_vs_null" and depth_test(report) != "above-null":
            continue  # not above its null (or untested): not a depth, so not a ranked number
        value = card_number(task.fmt, getattr(report.headline, task.field))
        if value is None:
            continue
        dataset = EvalDataset(id=benchmark_repo, task_id=task.id, revision=benchmark_revision)
        entries.append(
            EvalResult(
                dataset=dataset,
                value=value,
                date=report.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                source=source,
                notes=_notes(report, task),
            )
        )
    return entries


def eval_results_yaml(entries: list[EvalResult]) -> str:
    """The file's text, validated as a whole (`schemas.eval_results.EvalResultsFile`).

    Raises:
        pydantic.ValidationError: no entries, or an entry the schema refuses.
    """
    data = EvalResultsFile(entries).model_dump(mode="json", by_alias=True, exclude_none=True)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
