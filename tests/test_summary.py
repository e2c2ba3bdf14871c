"""The table `depthcard audit` prints: every headline number, the verdict, what is absent,
in lines that fit a 100-column terminal."""

from pathlib import Path

import pytest

from depthcard.report.summary import WIDTH, summary_table
from tests.report_factory import make_report


def _row(text: str, label: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(label + " "))


def detail(text: str, label: str) -> str:
    """The paragraph below the table about `label`, its wrapped lines joined."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(label + ": "))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith("  ")), None)
    return " ".join(line.strip() for line in lines[start:end])


def _first_word(text: str, label: str) -> str:
    """The first word of the value column of `label`'s row (labels may hold spaces)."""
    return _row(text, label)[len(label) :].split()[0]


def test_summary_lists_every_headline_number_with_its_value() -> None:
    report = make_report(with_ablation=True, with_depth=True, with_fragility=True)
    text = summary_table(report, Path("out"))
    h = report.headline
    # The card's formats (docs/card-standard.md §3), not a terminal-only one.
    assert f" {h.depth_vs_null:.3f} " in _row(text, "alignment depth vs null")
    depth = detail(text, "alignment depth vs null")
    assert f": {h.depth_vs_null:.3f} " in depth
    assert f"raw score {h.alignment_depth_score:.3f}" in depth
    assert f" {100 * h.baseline_refusal_rate:.1f} % " in _row(text, "baseline refusal rate")
    assert _first_word(text, "abliteration min k") == str(h.abliteration_min_k)
    assert f" {report.fragility.sharpness:#.4g} " in _row(text, "fragility sharpness")
    assert f" {h.rho_eps_aligned:#.4g} " in _row(text, "ρ_ε aligned")
    assert f"rank {h.rank_aligned}" in detail(text, "ρ_ε aligned")
    assert f"verdict: {report.verdict.text}" in text
    for stage in report.stages:
        assert f"{stage.name} {stage.seconds:.1f}" in text


def test_child_only_summary_names_what_was_not_measured() -> None:
    report = make_report(kind="child-only")
    text = summary_table(report, Path("out"))
    assert "ρ_ε aligned" not in text and "ρ_ε contrast (child-only)" in text
    assert "fragility sharpness" not in text
    for absent in report.absent:
        assert f"not measured: {absent.section} ({absent.reason})" in text
    assert _first_word(text, "abliteration min k") == "—"


def test_summary_lists_plots_only_when_they_were_written() -> None:
    report = make_report()
    assert "card.md, plots/)" in summary_table(report, Path("out"))
    without = summary_table(report, Path("out"), plots=False)
    assert "plots" not in without and "card.md)" in without


def test_summary_and_card_say_how_stable_the_layer_choice_is():
    from depthcard.report.card import render_card_section

    report = make_report()
    sel = report.selected_layer.model_copy(update={"stability": 0.85, "bootstraps": 20})
    report = report.model_copy(update={"selected_layer": sel})
    text = summary_table(report, Path("out")).replace("\n  ", " ")  # wrapped lines joined
    assert "chosen by 85 % of 20 bootstrap resamples" in text
    card = render_card_section(report, report_url=None, reproduce_command="depthcard audit x")
    assert "l\\* was chosen by 85 % of 20 bootstrap resamples of the fit prompts." in card


@pytest.mark.parametrize("kind", ["pair", "child-only", "three-model"])
def test_every_line_fits_100_columns_and_the_details_are_still_there(kind) -> None:
    from depthcard.report.metrics import metric_rows

    report = make_report(kind=kind, with_ablation=True, with_depth=True, with_fragility=True)
    text = summary_table(report, Path("out"))
    assert all(len(line) <= WIDTH for line in text.splitlines()), max(text.splitlines(), key=len)
    table = text.split("what the numbers mean:")[0]
    for row in metric_rows(report, source=None, unmeasured=True):
        assert _row(table, row.label)  # one row in the table...
        paragraph = detail(text, row.label)  # ... and its meaning and companions below
        assert " ".join(row.meaning.split()) in paragraph
        assert " ".join(f"{row.number}{row.beside}".split()) in paragraph
    for warning in report.warnings:
        assert " ".join(warning.split()) in " ".join(text.split())


def test_a_long_absent_reason_moves_below_the_table() -> None:
    report = make_report(with_ablation=True)
    ab = report.ablation.model_copy(
        update={"min_k": None, "min_k_reason": "refusal only goes away by breaking the model"}
    )
    headline = report.headline.model_copy(update={"abliteration_min_k": None})
    report = report.model_copy(update={"ablation": ab, "headline": headline})
    text = summary_table(report, Path("out"))
    assert all(len(line) <= WIDTH for line in text.splitlines())
    assert "see below" in _row(text, "abliteration min k")
    assert "only goes away by breaking the model" in detail(text, "abliteration min k")
