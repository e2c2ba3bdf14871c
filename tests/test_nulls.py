"""Known answers for the held-out split, the depth score's permutation null and the placebos.

Synthetic activations only (no model): each test runs well under a second.
"""

from __future__ import annotations

import hashlib
import math

import pytest
import torch

from depthcard.analysis.ablation_stage import ablation_inputs
from depthcard.analysis.capture import Activations
from depthcard.analysis.crossdomain import cross_domain
from depthcard.analysis.intervals import percentile_interval, permutation_p_value
from depthcard.analysis.judges import wilson_interval
from depthcard.analysis.layer_metrics import Captures, analyse_layers
from depthcard.analysis.nulls import (
    depth_inputs,
    depth_null,
    depth_value,
    point_nulls,
    spectral_nulls,
    typical_domain_rows,
)
from depthcard.analysis.prompt_inputs import (
    MIN_EVAL,
    PromptInputs,
    TokenizedInputs,
    held_out_split,
    split_indices,
)
from depthcard.prompts import LoadedPromptSet
from depthcard.report.metrics import metric_rows
from depthcard.schemas.errors import UserError
from depthcard.schemas.prompt_set import PromptItem, PromptSet
from depthcard.schemas.report import depth_null_test
from tests.report_factory import make_report

D = 16


def acts(rows: torch.Tensor) -> Activations:
    """Activations with one residual point from (prompt, d) rows."""
    r = rows[:, None, :].float()
    wide = r.double()
    return Activations(rows=r, sums=wide.sum(0), norm_sums=wide.norm(dim=-1).sum(0))


def anisotropic(n: int, gen: torch.Generator) -> torch.Tensor:
    """(n, D) rows with a few loud directions, as real residual streams have."""
    scales = torch.tensor([8.0, 6.0, 4.0] + [1.0] * (D - 3))
    return torch.randn(n, D, generator=gen, dtype=torch.float64) * scales + 3.0


def child_only(harmful: torch.Tensor, harmless: torch.Tensor, capability: torch.Tensor):
    return Captures(child_s=acts(harmful), child_h=acts(harmless), child_c=acts(capability))


def test_wilson_known_answer():
    low, high = wilson_interval(8, 10)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)
    assert wilson_interval(0, 10)[0] == 0.0 and 0.27 < wilson_interval(0, 10)[1] < 0.28


def test_percentile_interval_and_p_value():
    assert percentile_interval(list(range(101))) == pytest.approx((2.5, 97.5))
    assert permutation_p_value(1.0, [0.0] * 99) == 0.01
    assert permutation_p_value(0.0, [0.0] * 99) == 1.0


def _p_value(seed: int, shift: float, roll: int = 0, permutations: int = 100):
    gen = torch.Generator().manual_seed(seed)
    cap = anisotropic(24, gen)
    # roll > 0: prompts loud in other directions than capability text. The shift lies
    # along the loudest capability direction (entangled); the null relabels the same rows.
    harmful = anisotropic(16, gen).roll(roll, dims=1)
    harmless = anisotropic(16, gen).roll(roll, dims=1)
    harmful[:, 0] += shift
    c = child_only(harmful, harmless, cap)
    inp = depth_inputs(c, (0, 0), 2)
    score = depth_value(inp.xs, inp.xh, inp)
    null = depth_null(inp, score, permutations, seed)
    return null.p_value, null.above


def test_permutation_p_value_is_roughly_uniform_without_a_contrast():
    p = [_p_value(seed, 0.0)[0] for seed in range(30)]
    below = sum(x <= 0.1 for x in p) / len(p)
    assert below <= 0.25  # nominal 0.1; 30 draws
    assert 0.3 <= sum(p) / len(p) <= 0.7  # mean of a uniform is 0.5
    # a KS-style bound: the empirical CDF stays near the identity
    ks = max(abs(sum(x <= t for x in p) / len(p) - t) for t in (0.2, 0.4, 0.6, 0.8))
    assert ks < 0.3


def test_an_entangled_contrast_scores_above_its_null_and_a_placebo_at_it():
    planted = [_p_value(seed, 8.0, roll=8) for seed in range(5)]
    assert all(p <= 0.05 and above for p, above in planted)
    placebo = [_p_value(seed, 0.0)[1] for seed in range(20)]
    assert sum(placebo) <= 4  # about 5 % are above the 95th percentile by chance


def test_placebos_match_a_contrast_that_is_not_there():
    gen = torch.Generator().manual_seed(3)
    harmful, harmless, cap = anisotropic(20, gen), anisotropic(20, gen), anisotropic(20, gen)
    c = child_only(harmful, harmless, cap)
    out = point_nulls(
        c, c, 0, eps=0.05, scale=10.0, tolerance=1e-6, k_domain=2, bootstraps=30, seed=0
    )
    assert out.recovery_placebo is not None and 0.0 <= out.recovery_placebo <= 1.0
    assert out.cross_domain_placebo is not None
    # Child-only the contrast's mean row is r itself: a baseline of 1 by construction, which
    # would call every recovery "at baseline"; it is not applicable and not computed.
    assert out.recovery_baseline is None and out.recovery_beyond_interval is None
    low, high = out.recovery_interval
    assert 0.0 <= low <= high <= 1.0


def prompt_set(name: str, kind: str, n: int, cats: list[str]) -> LoadedPromptSet:
    texts = [f"{name} prompt {i}" for i in range(n)]
    items = [PromptItem(text=t, category=cats[i % len(cats)]) for i, t in enumerate(texts)]
    spec = PromptSet(
        name=name,
        version=1,
        kind=kind,
        domain=name if kind == "domain" else None,
        description="test",
        prompts=items,
    )
    return LoadedPromptSet(spec=spec, path=f"<{name}>", sha256=hashlib.sha256(b"x").hexdigest())


def test_split_is_seeded_stratified_and_disjoint():
    cats = ["a", "a", "a", "b", "b", "b", "b", "c"] * 4
    fit, held = split_indices(cats, 0.5, seed=0, name="s")
    assert sorted(fit + held) == list(range(len(cats))) and not set(fit) & set(held)
    for cat in "abc":
        n = cats.count(cat)
        assert sum(cats[i] == cat for i in held) == round(n * 0.5)
    assert split_indices(cats, 0.5, seed=0, name="s") == (fit, held)
    assert split_indices(cats, 0.5, seed=1, name="s") != (fit, held)


def test_bad_splits_are_one_line_user_errors():
    with pytest.raises(UserError, match="category 'lonely'"):
        split_indices(["x"] * 40 + ["lonely"], 0.5, 0, "s")
    with pytest.raises(UserError, match=f"fewer than {MIN_EVAL}"):
        split_indices(["x"] * 10, 0.5, 0, "s")


def test_no_eval_prompt_reaches_a_fitted_quantity():
    inputs = PromptInputs(
        harmful=prompt_set("h", "harmful", 32, ["w", "c"]),
        harmless=prompt_set("ok", "harmless", 32, ["m"]),
    )
    split = held_out_split(inputs, 0.5, seed=0)
    gen = torch.Generator().manual_seed(5)
    harmful, harmless = anisotropic(32, gen) + 2.0, anisotropic(32, gen)

    def fitted(hs: torch.Tensor, hh: torch.Tensor):
        c = child_only(hs, hh, anisotropic(8, torch.Generator().manual_seed(1)))
        return analyse_layers(c, (0.05,), 0.05, 3, 1e-6, fit=c.take(split.fit)).tensors

    before = fitted(harmful, harmless)
    hs, hh = harmful.clone(), harmless.clone()
    hs[split.eval["harmful"]] = 1e3 * torch.randn(len(split.eval["harmful"]), D).double()
    hh[split.eval["harmless"]] = -7.0
    after = fitted(hs, hh)
    for key in ("refusal_direction.0", "did_singular_vectors.0"):
        assert torch.equal(before[key], after[key]), key
    # the ablation rule (l*, stability) reads only the fit half's token ids and texts
    tok = TokenizedInputs(
        ids={
            "harmful_chat": [[i] for i in range(32)],
            "harmless_chat": [[100 + i] for i in range(32)],
        },
        pad_id=0,
        n_suffix=1,
    )
    fit = ablation_inputs(tok, inputs, split.fit, [7])
    held = {i for i in split.eval["harmful"]} | {100 + i for i in split.eval["harmless"]}
    assert not {ids[0] for ids in fit.harmful_ids + fit.harmless_ids} & held
    assert not set(fit.harmful_texts) & {inputs.harmful.texts[i] for i in split.eval["harmful"]}


def test_domain_sets_enter_the_cross_domain_section_beside_the_placebo():
    gen = torch.Generator().manual_seed(9)
    harmful = prompt_set("h", "harmful", 12, ["w", "c"])
    domains = (prompt_set("cyber-set", "domain", 6, ["x"]), prompt_set("bio", "domain", 6, ["y"]))
    c = Captures(
        child_s=acts(anisotropic(12, gen)),
        child_h=acts(anisotropic(12, gen)),
        child_domains=(acts(anisotropic(6, gen)), acts(anisotropic(6, gen))),
    )
    out = cross_domain(c, harmful, 0, 2, domains, placebo=0.42)
    assert out.section is not None
    assert out.section.domains == ["c", "w", "cyber-set", "bio"]
    assert out.section.placebo_cosine == 0.42
    assert all(0.0 <= p.smallest_angle_cosine <= 1.0 + 1e-6 for p in out.section.pairs)
    assert not math.isnan(out.section.shared_cosine[2][3])


def test_above_null_needs_p_below_alpha_and_100_permutations():
    p, above = _p_value(0, 8.0, roll=8, permutations=99)
    assert p <= 0.05 and above is None  # too few permutations to test: never a depth
    assert depth_null_test(0.01, 100) == "above-null"
    assert depth_null_test(0.05, 100) == "not-above-null"
    assert depth_null_test(0.01, 99) == "too-few-permutations"


def _pair(spread: bool, seed: int = 0):
    """Captures of a pair whose base reads harmful and harmless prompts alike (r_B = 0).

    The child adds a shift along axis 0 on harmful prompts. With `spread`, the base also has
    its own harmful contrast along axis 1 (r_B ≠ 0) and the child spreads harmful prompts
    widely along it, so the top direction of M_DiD (axis 1) is not its mean row (axis 0).
    """
    gen = torch.Generator().manual_seed(seed)
    base_h = anisotropic(24, gen)
    base_s = base_h.clone()
    child_s, child_h = base_s.clone(), base_h + torch.randn(24, D, generator=gen)
    child_s += 0.1 * torch.randn(24, D, generator=gen, dtype=torch.float64)
    if spread:
        base_s[:, 1] += 20.0
        sign = torch.tensor([1.0, -1.0] * 12, dtype=torch.float64)
        child_s[:, 1] += 20.0 + 8.0 * sign
        child_s[:, 0] += 4.0
    else:
        child_s[:, 0] += 6.0
    return Captures(
        child_s=acts(child_s), child_h=acts(child_h), base_s=acts(base_s), base_h=acts(base_h),
        base_raw_s=acts(base_s),
    )  # fmt: skip


def _recovery_nulls(c):
    return point_nulls(
        c, c, 0, eps=0.05, scale=10.0, tolerance=1e-6, k_domain=2, bootstraps=100, seed=0
    )


def test_a_pair_whose_base_contrast_is_zero_scores_recovery_at_its_baseline():
    c = _pair(False)
    layer = analyse_layers(c, (0.05,), 0.05, 4, 1e-6)
    rec = layer.layers[0].recovery_cosine
    out = _recovery_nulls(c)
    assert rec > 0.9 and out.recovery_baseline >= rec - 1e-9  # recovery is its mean shift
    low, high = out.recovery_beyond_interval
    assert low <= 0.0  # does not beat the baseline: "at baseline"
    report = make_report(
        headline={"refusal_direction_recovery": rec, "recovery_baseline": out.recovery_baseline,
                  "recovery_beyond_baseline": rec - out.recovery_baseline,
                  "recovery_beyond_low": low, "recovery_beyond_high": high}
    )  # fmt: skip
    row = next(r for r in metric_rows(report) if r.metric.field == "refusal_direction_recovery")
    assert row.number.startswith("at baseline")


def test_recovery_beats_a_baseline_the_base_contrast_pulls_away():
    """r_I − r_B (axis 0) is far from r_I, while M_DiD's top direction (axis 1) is close."""
    c = _pair(True)
    rec = analyse_layers(c, (0.05,), 0.05, 4, 1e-6).layers[0].recovery_cosine
    out = _recovery_nulls(c)
    assert out.recovery_baseline < rec - 0.05
    assert out.recovery_beyond_interval[0] > 0.0


def test_rho_of_did_and_specificity_get_a_null_that_can_fail():
    c = _pair(False)
    did, spec = spectral_nulls(
        c, 0, eps=0.05, scale=10.0, tolerance=1e-6, permutations=100, bootstraps=50, seed=0
    )
    assert did.p_value <= 0.05  # one loud harmful-only direction: far lower rank than the null
    assert did.interval[1] < 0.0
    assert spec.interval[0] <= spec.interval[1]
    gen = torch.Generator().manual_seed(5)
    same = [anisotropic(24, gen) for _ in range(4)]
    plain = Captures(
        child_s=acts(same[0]), child_h=acts(same[1]), base_s=acts(same[2]), base_h=acts(same[3]),
        base_raw_s=acts(same[2]),
    )  # fmt: skip
    did0, spec0 = spectral_nulls(
        plain, 0, eps=0.05, scale=10.0, tolerance=1e-6, permutations=100, bootstraps=20, seed=0
    )
    assert did0.p_value > 0.05 and spec0.p_value > 0.05  # no contrast: at placebo


def test_a_number_that_does_not_beat_its_placebo_reads_at_placebo():
    report = make_report(
        headline={"rho_eps_did": 0.5, "rho_did_placebo": None, "rho_did_null_mean": 0.536,
                  "rho_did_null_p": 0.3, "null_permutations": 100,
                  "specificity_null_mean": 1.0, "specificity_null_p": 0.4}
    )  # fmt: skip
    rows = {r.metric.field: r for r in metric_rows(report)}
    assert "ρ_ε of M_DiD 0.5000 at placebo" in rows["rho_eps_aligned"].value
    assert rows["safety_specificity"].number.startswith("at placebo")
    old = make_report(headline={"rho_eps_did": 0.5, "rho_did_placebo": 0.536})
    old_row = next(r for r in metric_rows(old) if r.metric.field == "rho_eps_aligned")
    assert "0.5000 at placebo" in old_row.value  # an untested placebo is never beaten
    beat = make_report(
        headline={"rho_eps_did": 0.1, "rho_did_null_mean": 0.536, "rho_did_null_p": 0.0099,
                  "null_permutations": 100}
    )  # fmt: skip
    beat_row = next(r for r in metric_rows(beat) if r.metric.field == "rho_eps_aligned")
    assert "below its null" in beat_row.value and "at placebo" not in beat_row.value


def test_the_cross_domain_placebo_is_size_matched():
    gen = torch.Generator().manual_seed(3)
    harmful, harmless, cap = anisotropic(40, gen), anisotropic(120, gen), anisotropic(20, gen)
    c = child_only(harmful, harmless, cap)
    out = point_nulls(
        c, c, 0, eps=0.05, scale=10.0, tolerance=1e-6, k_domain=2, bootstraps=2, seed=0,
        domain_rows=10,
    )  # fmt: skip
    assert out.cross_domain_rows == 10
    assert typical_domain_rows(["a"] * 10 + ["b"] * 10 + ["c"] * 30, c) == 10
