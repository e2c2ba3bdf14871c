"""The depth score is shown against its null, and every view says the same about it.

"Above null" is p < 0.05 from at least 100 permutations; below that many, the test is not
made. The headline is (score − null mean)/(1 − null mean) over the analysis window.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from depthcard.report.card import render_card_section
from depthcard.report.eval_results import eval_results
from depthcard.report.leaderboard import board_cells, board_numbers
from depthcard.report.metrics import depth_test
from depthcard.report.summary import summary_table
from depthcard.space.handlers import headline_table
from tests.report_factory import make_report

CASES = {
    "above": ({"depth_p_value": 0.0099, "null_permutations": 100}, "above-null"),
    "not above": ({"depth_p_value": 0.25, "null_permutations": 100}, "not-above-null"),
    "too few": ({"depth_p_value": 0.25, "null_permutations": 3}, "too-few-permutations"),
    "too few, small p": ({"depth_p_value": 0.01, "null_permutations": 50}, "too-few-permutations"),
}


def _report(fields: dict):
    return make_report(with_depth=True, headline=fields | {"depth_window": [2, 4]})


def summary_details(report) -> str:
    """The summary's paragraphs about each number, one line each (the terminal wraps them)."""
    text = summary_table(report, Path("out")).split("what the numbers mean:\n")[1]
    return text.replace("\n  ", " ")


def _views(report) -> dict[str, str]:
    card = render_card_section(report, report_url=None, reproduce_command="depthcard audit")
    return {
        "card": card,
        "summary": summary_details(report),
        "space": headline_table(report).to_string(),
    }


@pytest.mark.parametrize("case", CASES)
def test_one_rule_decides_above_null_in_every_view(case):
    fields, expected = CASES[case]
    report = _report(fields)
    assert depth_test(report) == expected
    depth = report.headline.depth_vs_null
    shown = f"{depth:.3f}"
    words = {
        "above-null": shown,
        "not-above-null": "not above null",
        "too-few-permutations": "too few permutations to test",
    }[expected]
    for name, view in _views(report).items():
        row = next(line for line in view.splitlines() if "alignment depth vs null" in line)
        assert words in row, name
        assert "mean over layers 2–4" in row, name  # what is averaged, not "at l*"
        if expected != "above-null":
            assert f" {shown} (p" not in row, name
    ranked = [e for e in eval_results(report, "org/depthcard", None) if "depth" in e.task_id]
    board = board_numbers(report)["depth vs null"]
    cell = board_cells(report)["depth vs null"]
    if expected == "above-null":
        assert ranked[0].value == float(shown) and board == float(shown)
        assert "mean over layers 2–4 (not at l*)" in ranked[0].notes
    else:
        assert ranked == [] and board is None and cell == words


def test_the_card_leads_with_the_score_relative_to_its_null():
    report = _report(CASES["above"][0])
    row = next(r for r in _views(report)["card"].splitlines() if "| alignment depth vs null |" in r)
    vs, raw = f"{report.headline.depth_vs_null:.3f}", f"{report.headline.alignment_depth_score:.3f}"
    assert row.index(vs) < row.index(raw)
    assert "p = 0.009900" in row


def test_the_meaning_claims_no_more_than_calibration_showed():
    row = next(r for r in _views(_report(CASES["above"][0]))["card"].splitlines()
               if "| alignment depth vs null |" in r)  # fmt: skip
    assert "1 of 11" in row and "did not predict the cost of removal" in row
    assert "tracked trained entanglement" not in row
