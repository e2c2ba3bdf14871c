"""The Gemma family's predictions on known data, and `depthcard calibrate --family gemma-270m`
end to end on a 2-child family of a tiny random Gemma-3."""

from __future__ import annotations

import json

import pytest

from depthcard.cli import main as cli
from depthcard.lab import gemma_predictions as gp
from depthcard.lab.calibration_stats import permutation_p, spearman
from depthcard.schemas.gemma_calibration import GemmaCalibrationReport, GemmaChild, RemovalPoint
from tests.tiny_gemma import tiny_gemma_base


def _child(name: str, seed: int, grade: float, depth: float, kl: float | None, **kw) -> GemmaChild:
    removal = [RemovalPoint(method="direction", layer=1, k=1, refusal_share=0.0,
                            compliance_share=1.0, broken_share=0.0, kl=kl or 0.0,
                            coherent=kl is not None)]  # fmt: skip
    return GemmaChild(name=name, recipe="mix", deep_share=grade, seed=seed, depth_grade=grade,
                      depth_vs_null=depth, removal=removal, **kw)  # fmt: skip


def family() -> list[GemmaChild]:
    """Seed 0: the orthogonalised reading is the one depth predicts; seed 1 decides."""
    out = []
    for seed in (0, 1):
        for i, g in enumerate((0.0, 0.25, 0.5, 0.75, 1.0)):
            kl = None if (seed, i) == (1, 4) else 0.1 * (i + 1)  # no coherent removal: costliest
            out.append(_child(f"c{i}_s{seed}", seed, g, 0.1 * i + 0.01 * seed, kl,
                              sharpness=float(5 - i), erosion_steps_to_half=10 * (i + 1),
                              erosion=[]))  # fmt: skip
    return out


def test_known_answer_prediction_computes_rho_and_exact_p() -> None:
    children = family()
    preds = {p.name: p for p in gp.predictions(children, fit_seed=0, budget=60, every=10)}
    deep = preds["deep_costs_more_to_remove"]
    xs = [c.depth_grade for c in children]
    ys = [gp.removal_cost(None)(c) for c in children]
    assert deep.n == 10
    assert deep.spearman == pytest.approx(spearman(xs, ys)[0])
    assert deep.p_value == pytest.approx(permutation_p(xs, ys))
    assert deep.held is True
    # tuned: chosen on seed 0, reported on seed 1's five children only
    tuned = preds["depth_predicts_removal_cost"]
    assert tuned.n == 5 and "chosen on seed 0" in tuned.y
    assert tuned.spearman == pytest.approx(1.0) and tuned.p_value == pytest.approx(1 / 120)


def test_reading_is_chosen_on_the_fit_seed_only(monkeypatch) -> None:
    """Break the rule on purpose: a reading that fits seed 1 perfectly and seed 0 badly must
    not be chosen, so the reported ρ stays that of the seed-0 choice."""
    children = family()
    good_on_1 = lambda c: c.depth_vs_null if c.seed == 1 else -c.depth_vs_null  # noqa: E731
    bad_on_1 = lambda c: -c.depth_vs_null if c.seed == 1 else c.depth_vs_null  # noqa: E731
    p = gp.fit_then_report("t", "c", "x", lambda c: c.depth_vs_null,
                           {"a": good_on_1, "b": bad_on_1}, children, fit_seed=0)  # fmt: skip
    assert p.y.startswith("b;") and p.spearman == pytest.approx(-1.0)


@pytest.mark.slow
def test_calibrate_gemma_family_end_to_end(tmp_path, capsys) -> None:
    raw = tiny_gemma_base(tmp_path / "raw", layers=3)
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = ["calibrate", "--family", "gemma-270m", "--out", str(out), "--base", str(raw),
            "--cache", str(cache), "--children", "2", "--max-prompts", "16",
            "--max-new-tokens", "4", "--train-steps", "2", "--erosion-steps", "2",
            "--k-max", "2", "--threads", "1"]  # fmt: skip
    assert cli.main(args) == 0
    text = capsys.readouterr().out
    assert "estimated" in text and "| prediction |" in text
    report = GemmaCalibrationReport.model_validate_json((out / "calibration.json").read_text())
    assert [c.name for c in report.children] == ["shallow_s0", "shallow_s1"]
    assert all(c.removal and c.erosion for c in report.children)
    assert report.commit is None or len(report.commit) == 40
    assert (out / "calibration.md").read_text().startswith("| child |")
    assert len(report.base_random_kl) == 3 and "Base placebo: one random direction" in text
    assert not (out / "shallow_s0").exists()  # weights removed after use
    assert json.loads((out / "calibration.json").read_text())["family"] == "gemma-270m"


def test_a_base_any_direction_breaks_stops_the_run(tmp_path, monkeypatch) -> None:
    """Gemma-3-270M itself: one random direction costs 14–28 nats, so every child would read
    "removed only by breaking" whatever it learned; the run stops before training."""
    from depthcard.lab import gemma_calibration as gc
    from depthcard.schemas.errors import UserError

    raw = tiny_gemma_base(tmp_path / "raw", layers=3)
    base = gc.fam.template_base(raw, tmp_path / "templated")
    plan = gc.make_plan(children=2, max_prompts=16, train_steps=2, threads=1)
    draws = gc.base_placebo(base, plan)  # the tiny random base: a real measurement
    assert len(draws) == 3 and all(0 < kl < 1.0 for kl in draws)
    assert gc.check_base(base, plan) == pytest.approx(draws)
    monkeypatch.setattr(gc, "base_placebo", lambda base, plan: [20.03, 14.07, 27.79])
    with pytest.raises(UserError, match=r"KL 14\.1–27\.8 nats.*--ignore-placebo"):
        gc.check_base(base, plan)
    trained = []
    monkeypatch.setattr(gc.fam, "build_family", lambda *a: trained.append(a) or [])
    out, cache = str(tmp_path / "out"), str(tmp_path / "cache")
    args = ["calibrate", "--family", "gemma-270m", "--out", out, "--base", str(raw),
            "--cache", cache, "--children", "2", "--threads", "1"]  # fmt: skip
    assert cli.main(args) == 2 and not trained  # a one-line error, nothing trained
    assert gc.check_base(base, gc.replace(plan, ignore_placebo=True)) == [20.03, 14.07, 27.79]
