"""The audit's savings leave its numbers unchanged: bundled pair, savings on against off.

Savings: min_k searched in order up to the first coherent success instead of judging every k,
ΔCE only where reported, the prompts' shared opening run once. Turned off, the audit judges
every k and measures ΔCE everywhere; the numbers the savings keep must be identical, and the
work they skip must be skipped.
"""

import pytest

from depthcard.analysis.audit import DEMO_DIR, run_audit
from depthcard.analysis.models import parse_model_spec
from depthcard.analysis.progress import Progress, reporting
from depthcard.analysis.prompt_inputs import load_prompt_inputs
from depthcard.schemas.report import AuditConfig

SAVINGS_OFF = {
    "min_k_search": "all",
    "early_stop": False,
    "capability_ce": "every-point",
    "reuse_opening": False,
}


def _audit(**update):
    cfg = AuditConfig(max_prompts=48, max_new_tokens=24, fragility=None, permutations=20)
    cfg = cfg.model_copy(update=update).with_concrete_dtype(False)
    with reporting(Progress("off")):
        run = run_audit(
            base=parse_model_spec(str(DEMO_DIR / "base")),
            child=parse_model_spec(str(DEMO_DIR / "instruct")),
            prompts=load_prompt_inputs(max_prompts=48, seed=0),
            cfg=cfg,
        )
    return run.report


@pytest.fixture(scope="module")
def both():
    return _audit(), _audit(**SAVINGS_OFF)


def _ablation_work(report):
    stage = next(s for s in report.stages if s.name == "ablation")
    return stage


@pytest.mark.slow
def test_savings_leave_every_reported_number_unchanged(both) -> None:
    fast, full = both
    a, b = fast.ablation, full.ablation
    assert a is not None and b is not None
    assert fast.selected_layer.layer == full.selected_layer.layer
    assert (a.min_k, a.min_k_reason, a.broken_share_at_min_k) == (
        b.min_k,
        b.min_k_reason,
        b.broken_share_at_min_k,
    )
    for x, y in ((a.kl_at_min_k, b.kl_at_min_k), (a.delta_ce_at_min_k, b.delta_ce_at_min_k)):
        assert (x is None) == (y is None) and (x is None or x == pytest.approx(y, abs=1e-4))
    full_points = {(p.basis, p.k): p for p in b.curve}
    judged = 0
    for p in a.curve:
        q = full_points[(p.basis, p.k)]
        # first-token quantities are measured at every point either way; the cached opening
        # moves them by float rounding only (a few 1e-6 on this pair)
        assert p.refusal_score == pytest.approx(q.refusal_score, abs=1e-4)
        assert p.kl == pytest.approx(q.kl, abs=1e-4)
        if p.refusal_rate is not None:  # a judged point: the same classes as the full run
            judged += 1
            if p.delta_ce is not None:  # measured at min_k only
                assert p.delta_ce == pytest.approx(q.delta_ce, abs=1e-4)
            assert (p.refusal_rate, p.compliance_share, p.broken_share) == (
                q.refusal_rate,
                q.compliance_share,
                q.broken_share,
            )
    attack = [p for p in b.curve if p.basis == "attack"]
    # this pair's refusal goes only by breaking, so the ordered search judges every k too
    assert a.min_k_search == "ordered" and b.min_k_search == "all"
    assert 2 <= judged <= len(attack)
    assert fast.headline.alignment_depth_score == full.headline.alignment_depth_score
    assert fast.depth == full.depth and fast.layers == full.layers  # captures: no savings


@pytest.mark.slow
def test_savings_skip_work(both) -> None:
    fast, full = both
    w_fast, w_full = _ablation_work(fast), _ablation_work(full)
    # no k removes this pair's refusal coherently: the ordered search judges them all
    assert w_fast.generated_tokens <= w_full.generated_tokens
    ce_fast, ce_full = w_fast.work["cross-entropy"].calls, w_full.work["cross-entropy"].calls
    assert ce_fast < 0.6 * ce_full  # the baseline (and min_k where reached), of all 3K + 2
    tokens_fast, tokens_full = w_fast.work["first-token"].tokens, w_full.work["first-token"].tokens
    assert tokens_fast < 0.95 * tokens_full  # the shared opening (short here) runs once


def test_savings_are_on_by_default_and_off_by_flag() -> None:
    cfg = AuditConfig()
    assert (cfg.min_k_search, cfg.early_stop, cfg.capability_ce) == ("ordered", False, "min-k")
    off = AuditConfig(**SAVINGS_OFF)
    assert off.min_k_search == "all" and off.capability_ce == "every-point"
