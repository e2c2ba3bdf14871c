"""The fragility forecast is printed only when its fit passes the stated checks.

Known answers: a clean power law gets a forecast; a flat, a noisy or a falling curve gets
"no reliable forecast" with the reasons. Steps where L_A fell are fitted, counted and lower
R²; they are never dropped.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from depthcard.analysis.fragility import fragility
from depthcard.analysis.fragility_law import ForecastChecks, fit_power_law, forecast_reasons
from depthcard.report.card import render_card_section
from depthcard.report.metrics import forecast_text
from depthcard.report.summary import summary_table
from depthcard.schemas.sections import FragilitySettings
from depthcard.space.handlers import card_markdown
from tests.report_factory import make_report
from tests.test_fragility import VOCAB, tiny_inputs
from tests.tiny_models import make_llama

DEFAULTS = FragilitySettings()
CHECKS = ForecastChecks(DEFAULTS.min_fit_r2, DEFAULTS.min_rising_steps, DEFAULTS.max_extrapolation)


def test_the_checks_are_the_documented_defaults():
    assert (CHECKS.min_r2, CHECKS.min_rising_steps, CHECKS.max_extrapolation) == (0.8, 5, 10.0)


def test_a_clean_power_law_gets_a_forecast():
    delta = [0.01 * t**1.5 for t in range(1, 11)]
    fit = fit_power_law(delta, margin=0.5)
    assert fit.exponent == pytest.approx(1.5, abs=1e-6)
    assert fit.r2 == pytest.approx(1.0) and fit.points == 10 and fit.negative == 0
    assert forecast_reasons(fit, True, CHECKS) == []
    assert fit.forecast_steps == pytest.approx(50 ** (1 / 1.5), rel=1e-5)


def test_a_flat_curve_reports_no_forecast():
    fit = fit_power_law([0.0] * 10, margin=0.5)
    reasons = forecast_reasons(fit, True, CHECKS)
    assert fit.forecast_steps is None and reasons
    assert any("does not rise" in r for r in reasons)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_a_noisy_curve_reports_no_forecast(seed):
    gen = torch.Generator().manual_seed(seed)
    delta = (1e-3 * torch.randn(10, generator=gen, dtype=torch.float64)).tolist()
    assert forecast_reasons(fit_power_law(delta, margin=0.5), True, CHECKS)


def test_the_demo_like_curve_of_a_ten_step_run_reports_no_forecast():
    """The shape the issue quoted: 4 of 10 steps fell, a forecast of ~1e9 steps."""
    delta = [5e-4, -2e-4, 1.7e-4, -5.8e-4, 3.4e-4, -8.3e-4, 1.1e-3, -1.3e-3, 2.2e-3, 2.5e-3]
    fit = fit_power_law(delta, margin=0.5)
    reasons = forecast_reasons(fit, True, CHECKS)
    assert fit.negative == 4 and fit.points == 6
    assert any(r.startswith("R² ") for r in reasons)


def test_falling_steps_are_fitted_and_lower_r2():
    rising = [0.01 * t for t in range(1, 11)]
    dipped = list(rising)
    dipped[2], dipped[5] = -0.02, -0.03
    clean, fit = fit_power_law(rising, margin=0.5), fit_power_law(dipped, margin=0.5)
    assert fit.negative == 2 and fit.points == 8 and fit.steps == 10
    assert fit.r2 < clean.r2 - 0.05


def test_each_check_alone_withholds_the_forecast():
    good = fit_power_law([0.01 * t**1.5 for t in range(1, 11)], margin=0.5)
    assert forecast_reasons(good, True, CHECKS) == []
    strict = ForecastChecks(1.0 + 1e-9, 5, 10.0)
    assert forecast_reasons(good, True, strict)[0].startswith("R² ")
    assert "at least 11 needed" in forecast_reasons(good, True, ForecastChecks(0.8, 11, 10.0))[0]
    assert "beyond 1 × the 10 steps" in forecast_reasons(good, True, ForecastChecks(0.8, 5, 1.0))[0]
    assert forecast_reasons(good, False, CHECKS) == [
        "sharpness not converged (power iteration stopped at its cap)"
    ]
    assert forecast_reasons(good, None, CHECKS)


def test_a_far_extrapolation_is_refused():
    fit = fit_power_law([1e-6 * t**0.5 for t in range(1, 11)], margin=0.5)
    reasons = forecast_reasons(fit, True, CHECKS)
    assert fit.forecast_steps > 100 and any("beyond 10 ×" in r for r in reasons)


def _views(report) -> list[str]:
    card = render_card_section(report, report_url=None, reproduce_command="depthcard audit")
    space = card_markdown(report)  # the Space's report view shows the card section
    summary = summary_table(report, Path("out")).replace("\n  ", " ")  # wrapped lines joined
    return [card, summary, space]


def test_every_view_prints_a_checked_forecast():
    report = make_report(with_fragility=True)
    assert forecast_text(report.fragility) == "+0.5 nats in 40 steps"
    for view in _views(report):
        assert "+0.5 nats in 40 steps" in view


def test_every_view_says_no_reliable_forecast_with_the_reason():
    reason = "R² 0.21 < 0.8 (all 10 steps fitted, 4 with ΔL_A < 0)"
    report = make_report(
        with_fragility=True,
        fragility={"forecast_steps": None, "fit_r2": 0.21, "no_forecast_reasons": [reason]},
    )
    for view in _views(report):
        assert "no reliable forecast" in view and "R² 0.21 &lt; 0.8" in view.replace("<", "&lt;")
        assert "nats in" not in view


def test_an_unchecked_forecast_from_an_older_report_is_not_printed():
    report = make_report(
        with_fragility=True, fragility={"forecast_steps": 9.02e8, "forecast_checked": False}
    )
    for view in _views(report):
        assert "9.02e+08" not in view and "no reliable forecast" in view


def test_the_stage_records_the_checks():
    model = make_llama(VOCAB)
    settings = FragilitySettings(power_iterations=2, tolerance=0.0, steps=4, learning_rate=0.5)
    section = fragility(model, tiny_inputs(model), settings)
    assert section.forecast_checked and section.forecast_steps is None
    assert "sharpness not converged (power iteration stopped at its cap)" in (
        section.no_forecast_reasons
    )
    assert section.fit_negative_points is not None
    assert all(math.isfinite(x) for x in section.delta_loss)


def test_an_exponent_whose_fit_fails_is_not_printed_as_a_number():
    """The exponent is the fit's own output: with R² 0.21 the table says so instead."""
    from depthcard.report.metrics import metric_rows

    report = make_report(
        with_fragility=True,
        fragility={"forecast_steps": None, "fit_r2": 0.21, "exponent": 4.296,
                   "no_forecast_reasons": ["R² 0.21 < 0.8"], "sharpness_converged": False},
    )  # fmt: skip
    rows = {r.label: r for r in metric_rows(report, source=None)}
    assert rows["fragility exponent"].number.startswith("no reliable fit (R² 0.21")
    assert "4.296" not in rows["fragility exponent"].number
    assert rows["fragility sharpness"].number.endswith("not converged")
    good = {r.label: r for r in metric_rows(make_report(with_fragility=True), source=None)}
    assert good["fragility exponent"].number[0].isdigit()
