"""The metric table: one declaration per headline number, read alike by every view.

Checks that docs/card-standard.md agrees with `report.metrics.METRICS`, that the card, the
terminal summary, the PR body and the Space write every number the same way, and that a new
metric shows up in all of them with no change outside the table and the schema.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import Field

from depthcard.bot.publish import render_body
from depthcard.report import metrics
from depthcard.report.card import render_card_section
from depthcard.report.leaderboard import NUMBER_COLUMNS, board_numbers
from depthcard.report.metrics import METRICS, Companion, Metric, format_value, metric_rows
from depthcard.report.summary import summary_table
from depthcard.schemas.report import AuditReport, Headline
from depthcard.space.handlers import headline_table
from tests.report_factory import make_report

DOCS = Path(__file__).resolve().parents[1] / "docs" / "card-standard.md"
HEADLINE = [m for m in METRICS if m.source == "headline"]
REPORTS = {
    "pair": make_report(with_ablation=True, with_depth=True, with_fragility=True),
    "child-only": make_report(kind="child-only"),
    "three-model": make_report(kind="three-model", with_erosion=True, with_ablation=True),
    "identical": make_report(identical=True),
    "not reached": make_report(with_ablation=True, headline={"abliteration_min_k": None}),
}


def _docs_section(title: str) -> str:
    text = DOCS.read_text(encoding="utf-8")
    start = text.index(title)
    return text[start : text.index("\n## ", start)]


def _docs_headline_fields() -> list[str]:
    rows = re.findall(r"^\| `(\w+)` \|", _docs_section("### Headline fields"), flags=re.M)
    assert rows, "no headline field table in docs/card-standard.md"
    return rows


def test_docs_table_lists_every_headline_field_once():
    fields = _docs_headline_fields()
    assert len(fields) == len(set(fields))
    assert set(fields) == set(Headline.model_fields)
    companions = {c.field for m in HEADLINE for c in m.companions}
    assert {m.field for m in HEADLINE} | companions <= set(fields)


def test_docs_layout_names_every_card_row_in_table_order():
    layout = _docs_section("## 3. Human-readable layout")
    item = layout[layout.index("6. a table") : layout.index("7. ")]
    spans = re.findall(r"`([^`]+)`", item)  # the table header and `rank r of d` are not rows
    named = [x for x in spans if "|" not in x and not x.startswith("rank ")]
    assert named == [m.label for m in HEADLINE]


def test_docs_number_formats_are_the_table_formats():
    formats = _docs_section("## 3. Human-readable layout")
    assert "ρ with 4 significant digits (`0.007812`)" in formats
    assert format_value("rho", 7 / 896) == "0.007812"
    assert "(`94.0 %`)" in formats and format_value("percent", 0.94) == "94.0 %"
    assert format_value("cosine", 0.8962) == "0.896" and format_value("nats", 0.020833) == "0.0208"
    by_field = {m.field: m.fmt for m in HEADLINE}
    assert by_field["refusal_direction_recovery"] == "cosine"
    assert {by_field["safety_specificity"], by_field["depth_vs_null"]} <= {"ratio", "score"}
    assert by_field["baseline_refusal_rate"] == "percent"
    assert by_field["abliteration_kl"] == "nats"


def test_the_depth_score_is_printed_against_its_permutation_null():
    depth = next(m for m in METRICS if m.label.startswith("alignment depth"))
    assert depth.field == "depth_vs_null"  # the headline is the score relative to its null
    nulls = [c.field for c in depth.companions if c.role == "null"]
    assert nulls == ["depth_null_mean", "depth_null_p95"]
    assert {c.field for c in depth.companions} >= {"depth_p_value", "alignment_depth_score"}
    assert {c.role for c in depth.companions} >= {"low", "high"}


def test_a_depth_not_above_its_null_is_not_printed_as_a_depth():
    report = make_report(with_depth=True, headline={"depth_p_value": 0.25})
    row = next(r for r in metric_rows(report) if r.metric.field == "depth_vs_null")
    assert row.number.startswith("not above null")


def _card_cells(report: AuditReport) -> dict[str, str]:
    section = render_card_section(report, report_url=None, reproduce_command="depthcard audit")
    start = section.index("| quantity | value | unit | meaning |")
    cells = {}
    for line in section[start:].splitlines()[2:]:
        if not line.startswith("| "):
            break
        label, value = (c.strip() for c in line.strip("|").split(" | ")[:2])
        cells[label] = value
    return cells


def _summary_numbers(report: AuditReport) -> dict[str, tuple[str, str]]:
    """Per label: the number in the summary's table, and its table row with the paragraph
    below the table that gives its companions (wrapped lines joined)."""
    text = summary_table(report, Path("out"))
    table, below = text.split("what the numbers mean:\n")
    below = below.replace("\n  ", " ").splitlines()
    out = {}
    for m in metrics.METRICS:
        row = next((x for x in table.splitlines() if x.startswith(m.label + " ")), None)
        if row is None:
            continue
        detail = next(x for x in below if x.startswith(m.label + ": "))
        number = row[len(m.label) :].strip().split("  ")[0]
        if number == "see below":  # too long for the column: the paragraph has it
            number = ""
        out[m.label] = (number, f"{row} {detail}")
    return out


def _pr_values(report: AuditReport) -> dict[str, str]:
    lines = render_body(report, "https://example.org/r").splitlines()
    out = {}
    for m in metrics.METRICS:
        prefix = f"- {m.label}: "
        line = next((x for x in lines if x.startswith(prefix)), None)
        if line is not None:
            out[m.label] = line.removeprefix(prefix).rsplit(" — ", 1)[0]
    return out


def _assert_same_everywhere(report: AuditReport) -> dict[str, str]:
    card = _card_cells(report)
    space = dict(zip(*headline_table(report)[["quantity", "value"]].T.values, strict=True))
    assert space == card
    assert _pr_values(report) == card
    summary = _summary_numbers(report)
    for label, value in card.items():
        number, line = summary[label]
        assert value.startswith(number), (label, value, line)
        assert value[len(number) :] in line
    return card


@pytest.mark.parametrize("name", list(REPORTS))
def test_every_view_writes_every_number_like_the_card(name):
    report = REPORTS[name]
    card = _assert_same_everywhere(report)
    assert list(card) == [r.label for r in metric_rows(report)]
    # The leaderboard's numbers are the card's digits, kept numbers so they sort by value.
    numbers = board_numbers(report)
    for column in NUMBER_COLUMNS:
        row = next((r for r in metric_rows(report) if r.metric.field == column.field), None)
        if row is not None and row.present and row.metric.replace is None:
            assert numbers[column.header] == float(row.number.removesuffix(" %")), column


def test_the_views_agree_on_the_reference_formats():
    card = _card_cells(REPORTS["pair"])
    # the terminal once printed 0.94
    assert card["baseline refusal rate"] == "94.0 % [95 % Wilson 89.0 %–97.0 %]"
    assert card["ρ_ε aligned"] == (
        "0.007812 (rank 7 of d = 896); ρ_ε of M_DiD 0.004464 at placebo (harmless-halves "
        "placebo 0.03125, untested)"
    )
    assert card["alignment depth vs null"] == (
        "0.153 (p = 0.009901); raw score 0.265, null mean 0.132, 95th pct 0.159 "
        "[raw 95 % CI 0.238–0.291]"
    )
    assert card["refusal-direction recovery"] == "0.896 [95 % CI 0.807–0.941] (placebo 0.310)"
    assert card["KL at min k"] == "0.0208"
    assert _card_cells(REPORTS["not reached"])["abliteration min k"].startswith("not reached")
    assert _summary_numbers(REPORTS["pair"])["fragility sharpness"][0] == "12.50"


def test_a_values_own_interval_comes_right_after_it():
    # The Gemma-3-270M child's card once read "at baseline (0.869) (mean-shift baseline 0.888,
    # …) (placebo 0.624) [95 % CI 0.170–0.974]": the interval looked like the placebo's.
    for metric in METRICS:
        parts = (metric.beside,) if isinstance(metric.beside, str) else metric.beside
        assert metrics.CI not in parts or parts.index(metrics.CI) == 0, metric.label


class _DummyHeadline(Headline):
    dummy_share: float | None = Field(None, description="A metric only this test knows.")
    dummy_low: float | None = Field(None, description="Lower end of its interval.")
    dummy_high: float | None = Field(None, description="Upper end of its interval.")


class _DummyReport(AuditReport):
    headline: _DummyHeadline


DUMMY = Metric(
    "dummy_share",
    "dummy share",
    "% of d = {d}",
    "A metric that exists only in this test.",
    "percent",
    companions=(
        Companion("dummy_low", "low", "low", "percent"),
        Companion("dummy_high", "high", "high", "percent"),
    ),
    beside=" (95 % interval {low}–{high})",
)


def test_a_new_metric_needs_only_the_schema_and_the_table(monkeypatch):
    """The card, summary, PR body and Space show it; no renderer knows its name."""
    monkeypatch.setattr(metrics, "METRICS", (*METRICS, DUMMY))
    data = REPORTS["pair"].model_dump()
    data["headline"] |= {"dummy_share": 0.4321, "dummy_low": 0.4, "dummy_high": 0.46}
    report = _DummyReport.model_validate(data)
    card = _assert_same_everywhere(report)
    assert card["dummy share"] == "43.2 % (95 % interval 40.0 %–46.0 %)"
    section = render_card_section(report, report_url=None, reproduce_command="x")
    assert "| dummy share | 43.2 % (95 % interval 40.0 %–46.0 %) | % of d = 896 |" in section
    assert "- dummy share: 43.2 % (95 % interval 40.0 %–46.0 %) — % of d = 896" in render_body(
        report, "https://example.org/r"
    )
    without = _DummyReport.model_validate(
        data | {"headline": {**data["headline"], "dummy_low": None}}
    )
    assert _card_cells(without)["dummy share"] == "43.2 %"  # an incomplete interval is left out


def test_the_kl_at_min_k_is_printed_beside_its_random_direction_placebo():
    report = make_report(with_ablation=True)
    h = report.headline.model_copy(
        update={"abliteration_kl_random_low": 0.004, "abliteration_kl_random_high": 0.018}
    )
    rows = {r.metric.field: r for r in metric_rows(report.model_copy(update={"headline": h}))}
    kl = rows["abliteration_kl"]
    assert kl.value == f"{kl.number} (random directions 0.00400–0.0180)"
    old = {r.metric.field: r for r in metric_rows(report)}["abliteration_kl"]
    assert old.value == old.number  # a report without the placebo prints the KL alone
