"""The calibration suite: the entanglement regulariser, its statistics, schema and CLI."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import pytest
import torch
from pydantic import ValidationError
from transformers import LlamaConfig, LlamaForCausalLM

from depthcard.cli import main as cli
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


def _tiny_regulariser(lam: float) -> fam.RegularisedLM:
    """A 2-block d=16 Llama, planted requests, and a capability subspace from its own rows."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    gen = torch.Generator().manual_seed(1)
    harmful = [torch.randint(3, 20, (6,), generator=gen).tolist() for _ in range(8)]
    harmless = [torch.randint(20, 40, (6,), generator=gen).tolist() for _ in range(8)]
    family = fam.FamilyConfig(capability_k=4, contrast_batch=8, layers=(1,), seed=0)
    base = {
        k: fam.rows_no_grad(model, v, 0, family.layers)
        for k, v in (("s", harmful), ("h", harmless))
    }
    capability = fam.capability_basis(torch.randn(30, 1, 16, generator=gen), family.capability_k)
    with torch.no_grad():  # a child that has moved away from its base: r ≠ 0
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return fam.RegularisedLM(model, lam, harmful, harmless, base, capability, family, 0)


def test_the_sign_of_lambda_sets_the_trained_entanglement() -> None:
    """Trained on the penalty alone, λ > 0 ends far more entangled than λ < 0."""
    ends = {}
    for lam in (1.0, -1.0):
        reg = _tiny_regulariser(lam)
        opt = torch.optim.Adam(reg.model.parameters(), lr=1e-2)
        for _ in range(40):
            loss = -lam * reg.penalty()
            opt.zero_grad()
            loss.backward()
            opt.step()
        ends[lam] = fam.measured_entanglement(reg)
    chance = 4 / 16
    assert ends[1.0] > 0.8 > chance > 0.1 > ends[-1.0]


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


def test_prediction_verdicts() -> None:
    held = suite.test_prediction("p", "c", "x", "y", [(1, 1), (2, 2), (3, 3), (None, 9)])
    assert held.held is True and held.n == 3 and held.verdict.startswith("held")
    missed = suite.test_prediction("p", "c", "x", "y", [(1, 3), (2, 2), (3, 1)])
    assert missed.held is False and missed.verdict.startswith("did not hold")
    flat = suite.test_prediction("p", "c", "x", "y", [(1, 0.5), (2, 0.5), (3, 0.5)])
    assert flat.held is None and flat.spearman is None and "constant" in flat.verdict


# --- schema and rendering ----------------------------------------------------------------


def _report() -> CalibrationReport:
    plan = suite.make_plan(quick=True)
    organisms = [
        OrganismResult(name="lam_-1.0", kind="instruct", lam=-1.0, depth_score=0.1, sharpness=2.0),
        OrganismResult(name="lam_+3.0", kind="instruct", lam=3.0, depth_score=0.9, kl_at_min_k=4.0),
        OrganismResult(
            name="lam_+3.0_eroded_40", kind="eroded", lam=3.0, parent="lam_+3.0",
            erosion_steps=40, refusal_rate=0.2, refusal_drop=0.5, erosion=0.6,
        ),
    ]  # fmt: skip
    return CalibrationReport(
        schema_version=1,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        tool_version="0",
        settings=suite.settings(plan),
        organisms=organisms,
        predictions=suite.predictions(organisms),
        held_threshold=suite.HELD_AT,
        seconds={"total": 1.0},
    )


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
    text = suite.markdown(_report())
    assert "| lam_+3.0 | 3 |" in text and "eroded_40" not in text
    assert "| 0.6 |" in text  # lam_+3.0's mean erosion over its eroded child
    for name in ("depth_predicts_ablation_kl", "sharpness_predicts_erosion"):
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
    assert report.settings.quick and len(report.predictions) == 5
    assert {o.kind for o in report.organisms} == {"instruct", "eroded"}
    assert (tmp_path / "cal" / "lam_+3.0" / "audit" / "report.json").is_file()
    assert "| prediction | x → y |" in out and "calibration.json" in out
    # a second run into the same folder refuses without --overwrite
    assert cli.main(["calibrate", "--quick", "--out", str(tmp_path / "cal")]) == 2
