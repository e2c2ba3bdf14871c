"""The leaderboard: which numbers lead, as the card rounds them, and the flat file of all audits.

Two views of the same reports. The Space's table leads with the numbers people compare (the
depth score relative to its permutation null, with p and the raw score, the coherent min k
and the KL it costs, the baseline refusal rate, ρ_ε), each rounded as the card prints it
(`report.metrics`), but kept a number so a column sorts by value. The flat file
(`leaderboard.jsonl` at the root of the results dataset) has one JSON object per audit with
every headline field at full precision (and `depth_test`, the null test's outcome), so the
Hub's dataset viewer shows and filters it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from depthcard.report.metrics import METRICS, FormatKind, card_number, depth_test
from depthcard.schemas.report import AuditReport

LEADERBOARD_FILE = "leaderboard.jsonl"
# The dataset viewer reads the file through this config of the results dataset's card.
DATASET_CONFIG = "leaderboard"


@dataclass(frozen=True)
class Column:
    """A numeric leaderboard column: a headline field, its header and the card's format."""

    field: str
    header: str
    fmt: FormatKind


def _column(field: str, header: str) -> Column:
    """The column of `field`, formatted as the metric table formats it (metric or companion)."""
    for metric in METRICS:
        if metric.source != "headline":
            continue
        if metric.field == field:
            return Column(field, header, metric.fmt)
        for companion in metric.companions:
            if companion.field == field:
                return Column(field, header, companion.fmt)
    raise KeyError(f"{field} is not a headline metric or companion in report.metrics")


# What leads the board, in order. Percentages are in percent, as the card prints them.
NUMBER_COLUMNS: tuple[Column, ...] = (
    _column("depth_vs_null", "depth vs null"),
    _column("depth_p_value", "depth p"),
    _column("alignment_depth_score", "depth score (raw)"),
    _column("abliteration_min_k", "min k (coherent)"),
    _column("abliteration_kl", "KL at min k (nats)"),
    _column("baseline_refusal_rate", "baseline refusal (%)"),
    _column("rho_eps_aligned", "ρ_ε aligned"),
)


# The depth cell's words where the score is no depth (the card's words).
DEPTH_WORDS = {
    "above-null": "above null",
    "not-above-null": "not above null",
    "too-few-permutations": "too few permutations to test",
}


def blank_reason(report: AuditReport, column: Column) -> str:
    """Why `column` has no number for `report`, in a few words (a cell is never left blank)."""
    h, ab = report.headline, report.ablation
    field = column.field
    if field in ("depth_vs_null", "depth_p_value") and h.alignment_depth_score is not None:
        test = depth_test(report)
        if field == "depth_vs_null" and test is not None:
            return DEPTH_WORDS[test]
        return "no null computed"
    if field in ("abliteration_min_k", "abliteration_kl") and ab is not None:
        if ab.min_k_reason == "refusal only goes away by breaking the model":
            why = f"only by breaking (> {100 * ab.max_broken_share:g} % broken)"
        else:
            why = f"not reached (k ≤ {max(p.k for p in ab.curve)})"
        return why if field == "abliteration_min_k" else f"no min k: {why}"
    if field in ("abliteration_min_k", "abliteration_kl", "baseline_refusal_rate"):
        return "no ablation run"
    if field == "rho_eps_aligned" and report.kind == "child-only":
        return "child-only: no base"
    return "not measured"


def board_cells(report: AuditReport) -> dict[str, float | int | str]:
    """{header: the card's number, or the reason there is none} for `report`.

    "depth vs null" says "not above null" unless the score is above its null
    (`metrics.depth_test`): such a score is no depth, so it is never shown as a number.
    """
    numbers = board_numbers(report)
    return {
        c.header: blank_reason(report, c) if numbers[c.header] is None else numbers[c.header]
        for c in NUMBER_COLUMNS
    }


def board_numbers(report: AuditReport) -> dict[str, float | int | None]:
    """{header: number as the card rounds it, or None when not measured} for `report`.

    "depth vs null" is None unless the score is above its null (`metrics.depth_test`): the
    card prints no depth then, and neither does the board.
    """
    h = report.headline
    numbers = {c.header: card_number(c.fmt, getattr(h, c.field)) for c in NUMBER_COLUMNS}
    if depth_test(report) != "above-null":
        numbers[NUMBER_COLUMNS[0].header] = None
    return numbers


def params_text(num_parameters: int) -> str:
    """A parameter count the way model pages write it: 345K, 1.2B, 7B."""
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if num_parameters >= size:
            value = num_parameters / size
            return f"{value:.3g}{unit}" if value < 100 else f"{value:.0f}{unit}"
    return str(num_parameters)


def flat_record(report: AuditReport, report_id: str, report_url: str | None = None) -> dict:
    """One row of the flat leaderboard file: who, which revision, verdict, every headline field."""
    m = report.models
    record = {
        "report": report_id,
        "model": m.child.repo_id if m.child.source == "hub" else None,
        "revision": m.child.revision,
        "base_model": m.base.repo_id if m.base is not None and m.base.source == "hub" else None,
        "base_revision": m.base.revision if m.base is not None else None,
        "fine_tune": m.third.repo_id if m.third is not None else None,
        "kind": report.kind,
        "verdict": report.verdict.code,
        "num_parameters": m.child.num_parameters,
        "analysis_version": report.tool.analysis_version,
        "audit_key": report.audit_key,
        "date": report.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "report_url": report_url,
    }
    record.update(report.headline.model_dump(mode="json"))
    record["depth_test"] = depth_test(report)
    return record


def leaderboard_jsonl(records: list[dict]) -> str:
    """The flat file's text: one compact JSON object per line, the order given."""
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=False) + "\n" for r in records)
