"""The calibration suite: the entanglement term, its statistics, schema and CLI.

The knobs (target τ, rank r) are tested on a tiny model in tests/test_organism_family.py.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from datetime import UTC, datetime

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from scipy.stats import rankdata

from depthcard.cli import main as cli
from depthcard.lab import calibration_predictions as preds
from depthcard.lab import calibration_suite as suite
from depthcard.lab import organism_family as fam
from depthcard.lab.calibration_stats import permutation_p, spearman
from depthcard.schemas.calibration import CalibrationReport, FamilySettings, OrganismResult

# --- the regulariser ---------------------------------------------------------------------


def test_entanglement_term_known_answers() -> None:
    cap = torch.eye(4)[:2]  # C = span(e0, e1) in R^4
    inside, outside = torch.tensor([3.0, 4.0, 0, 0]), torch.tensor([0, 0, 0, 2.0])
    diagonal = torch.tensor([1.0, 0, 1.0, 0])
    assert float(fam.entanglement_term(inside, cap)) == pytest.approx(1.0)
    assert float(fam.entanglement_term(outside, cap)) == pytest.approx(0.0)
    assert float(fam.entanglement_term(diagonal, cap)) == pytest.approx(0.5)
    # scale-free: the penalty steers the refusal's direction, not its size
    assert float(fam.entanglement_term(100 * diagonal, cap)) == pytest.approx(0.5)
    assert float(fam.entanglement_term(torch.zeros(4), cap)) == 0.0


def test_contrast_is_the_mean_did_row() -> None:
    base_s, base_h = torch.zeros(3, 2), torch.ones(5, 2)
    child_s = base_s + torch.tensor([2.0, 0.0])  # alignment moved harmful rows along e0
    child_h = base_h + torch.tensor([0.0, 1.0])  # and every row along e1
    r = fam.contrast(child_s, base_s, child_h, base_h)
    assert torch.allclose(r, torch.tensor([2.0, -1.0]))


# --- statistics --------------------------------------------------------------------------


def test_spearman_known_values_and_ties() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == (pytest.approx(1.0), None)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1])[0] == pytest.approx(-1.0)
    rho, reason = spearman([1, 2, 2, 3], [1, 2, 3, 3])  # ties: average ranks, no NaN
    assert reason is None and math.isfinite(rho) and 0 < rho < 1


@pytest.mark.parametrize(
    ("x", "y", "why"),
    [
        ([1.0, 2.0], [1.0, 2.0], "needs 3"),
        ([], [], "needs 3"),
        ([1.0, 1.0, 1.0], [1.0, 2.0, 3.0], "x is constant"),
        ([1.0, 2.0, 3.0], [5.0, 5.0, 5.0], "y is constant"),
        ([1.0, 2.0, float("nan")], [1.0, 2.0, 3.0], "not finite"),
    ],
)
def test_spearman_degenerate_inputs_give_none_with_a_reason(x, y, why) -> None:
    rho, reason = spearman(x, y)
    assert rho is None and why in reason
    assert permutation_p(x, y) is None


def test_spearman_rejects_unpaired_input() -> None:
    with pytest.raises(ValueError, match="paired"):
        spearman([1, 2, 3], [1, 2])


def test_exact_permutation_p() -> None:
    assert permutation_p([1, 2, 3, 4], [1, 2, 3, 4]) == pytest.approx(1 / 24)
    assert permutation_p([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(1.0)
    # beyond 8! the count is still exact (dynamic programme, not Monte Carlo)
    assert permutation_p(list(range(11)), list(range(11))) == pytest.approx(1 / math.factorial(11))


def _brute_p(x: list[float], y: list[float]) -> float:
    rx, ry = rankdata(x), rankdata(y)
    rhos = [np.corrcoef(rx, p)[0, 1] for p in itertools.permutations(ry)]  # 6! pairings
    return sum(r >= np.corrcoef(rx, ry)[0, 1] - 1e-12 for r in rhos) / len(rhos)


@pytest.mark.parametrize("seed", range(6))
def test_exact_p_matches_enumeration_with_ties(seed: int) -> None:
    rng = random.Random(seed)
    x = [rng.randint(0, 3) for _ in range(4)] + [0, 3]
    y = [rng.randint(0, 4) for _ in range(4)] + [4, 0]
    assert permutation_p(x, y) == pytest.approx(_brute_p(x, y), abs=1e-12)


def test_prediction_verdicts() -> None:
    five = [(i, i) for i in range(1, 6)]
    held = preds.test_prediction("p", "c", "x", "y", [*five, (None, 9)])
    assert held.held is True and held.n == 5 and held.verdict.startswith("held")
    # right direction but three points cannot beat chance: exact one-sided p = 1/6
    weak = preds.test_prediction("p", "c", "x", "y", [(1, 1), (2, 2), (3, 3)])
    assert weak.held is False and weak.verdict.startswith("right direction, not significant")
    missed = preds.test_prediction("p", "c", "x", "y", [(1, 3), (2, 2), (3, 1)])
    assert missed.held is False and missed.verdict.startswith("did not hold")
    flat = preds.test_prediction("p", "c", "x", "y", [(1, 0.5), (2, 0.5), (3, 0.5)])
    assert flat.held is None and flat.spearman is None and "constant" in flat.verdict


# --- schema and rendering ----------------------------------------------------------------


def _sib(name: str, target: float, rank: int = 1, **numbers) -> OrganismResult:
    return OrganismResult(name=name, kind="instruct", target=target, rank=rank, seed=0, **numbers)


def _report(organisms: list[OrganismResult] | None = None) -> CalibrationReport:
    plan = suite.make_plan(quick=True)
    organisms = organisms or [
        _sib("tau0.10_r1_s0", 0.1, depth_score=0.1, sharpness=2.0),
        _sib("tau0.90_r1_s0", 0.9, depth_score=0.9, kl_at_min_k=4.0),
        OrganismResult(
            name="tau0.90_r1_s0_eroded_40", kind="eroded", target=0.9, rank=1,
            parent="tau0.90_r1_s0", erosion_steps=40, refusal_rate=0.2, refusal_drop=0.5,
            erosion=0.6,
        ),
    ]  # fmt: skip
    return CalibrationReport(
        schema_version=2,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        tool_version="0",
        settings=suite.settings(plan),
        organisms=organisms,
        predictions=preds.predictions(organisms),
        held_threshold=preds.HELD_AT,
        seconds={"total": 1.0},
    )


def test_a_schema_1_report_still_validates() -> None:
    """calibration.json of the λ family (schema 1) loads under schema 2."""
    raw = json.loads(_report().model_dump_json())
    raw["schema_version"] = 1
    settings = raw["settings"]
    for key in ("siblings", "entangle_weight", "rank_weight"):
        settings.pop(key)
    settings["lambdas"] = [-1.0, 3.0]
    raw["organisms"] = [
        {"name": "lam_-1.0", "kind": "instruct", "lam": -1.0, "depth_score": 0.1, "min_k": 9}
    ]
    old = CalibrationReport.model_validate(raw)
    assert old.organisms[0].lam == -1.0 and old.organisms[0].target is None


def test_depth_reading_prefers_the_null_rescaled_score_for_the_whole_family() -> None:
    with_null = [_sib(f"s{i}", 0.1 * i, depth_score=0.5, depth_vs_null=0.1 * i) for i in range(3)]
    label, value = preds.depth_reading(with_null)
    assert "vs null" in label and [value(o) for o in with_null] == [0.0, 0.1, 0.2]
    silent = _sib("no-refusal", 0.1)  # no depth at all: does not force the raw reading
    assert "vs null" in preds.depth_reading([*with_null, silent])[0]
    mixed = [*with_null, _sib("old", 0.5, depth_score=0.7)]
    label, value = preds.depth_reading(mixed)
    assert label.startswith("depth score (raw") and value(mixed[-1]) == 0.7


def test_none_min_k_ranks_last_and_the_rule_is_named() -> None:
    rule = {"attack_k": 8, "min_k_rule": "coherent"}
    sibs = [
        _sib("a", 0.1, depth_score=0.3, depth_vs_null=0.1, min_k=1, **rule),
        _sib("b", 0.5, depth_score=0.5, depth_vs_null=0.5, min_k=3, **rule),
        _sib("c", 0.9, depth_score=0.4, depth_vs_null=0.9, min_k=None, **rule),
    ]
    assert [preds.ranked_min_k(o) for o in sibs] == [1.0, 3.0, 9.0]
    by_name = {p.name: p for p in preds.predictions(sibs)}
    p = by_name["depth_predicts_min_k"]
    assert p.n == 3 and p.spearman == pytest.approx(1.0) and p.y.startswith("coherent min_k")
    assert "vs null" in p.x


def test_rank_predictions_hold_tau_fixed() -> None:
    sibs = [
        _sib("t1", 0.1, rho_eps_aligned=0.9),  # another τ: left out of the rank series
        *[_sib(f"r{r}", 0.5, rank=r, rho_eps_aligned=0.1 * r) for r in (1, 2, 4)],
    ]
    assert [o.name for o in preds.rank_series(sibs)] == ["r1", "r2", "r4"]
    rho = {p.name: p for p in preds.predictions(sibs)}["rank_moves_rho"]
    assert rho.n == 3 and rho.spearman == pytest.approx(1.0)


def test_calibration_report_round_trip_and_strictness() -> None:
    report = _report()
    again = CalibrationReport.model_validate_json(report.model_dump_json())
    assert again == report
    raw = json.loads(report.model_dump_json())
    raw["surprise"] = 1
    with pytest.raises(ValidationError):
        CalibrationReport.model_validate(raw)
    with pytest.raises(ValidationError):
        OrganismResult(name="x", kind="instruct", lam=float("nan"))
    with pytest.raises(ValidationError):
        FamilySettings.model_validate({**raw["settings"], "erosion_lr": 0.0})


def test_markdown_lists_siblings_and_every_prediction() -> None:
    text = preds.markdown(_report())
    assert "| tau0.90_r1_s0 | 0.9 | 1 | 0 |" in text and "eroded_40" not in text
    assert "| 0.6 |" in text  # its mean erosion over its eroded child
    for name in ("depth_predicts_ablation_kl", "depth_predicts_min_k", "rank_moves_min_k"):
        assert name in text
    assert "not testable" in text  # two siblings: no rank correlation


# --- the command -------------------------------------------------------------------------


@pytest.mark.slow
def test_quick_calibrate_through_the_cli(tmp_path, capsys) -> None:
    assert cli.main(["calibrate", "--quick", "--out", str(tmp_path / "cal")]) == 0
    out = capsys.readouterr().out
    report = CalibrationReport.model_validate_json(
        (tmp_path / "cal" / "calibration.json").read_text()
    )
    assert report.settings.quick and len(report.predictions) == 6
    assert report.schema_version == 2 and len(report.settings.siblings) == 3
    assert {o.kind for o in report.organisms} == {"instruct", "eroded"}
    sibs = [o for o in report.organisms if o.kind == "instruct"]
    assert all(o.min_k_rule is not None and o.attack_k for o in sibs)
    assert (tmp_path / "cal" / "tau0.90_r2_s0" / "audit" / "report.json").is_file()
    assert "| prediction | x → y |" in out and "calibration.json" in out
    # a second run into the same folder refuses without --overwrite
    assert cli.main(["calibrate", "--quick", "--out", str(tmp_path / "cal")]) == 2
