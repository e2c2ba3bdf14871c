"""l*: the layer whose refusal direction the attack and the headline use, with its uncertainty.

The rule (docs/metrics.md, "Selected layer l*"), on the fit half of the prompts:

    score_l = drop_l · exp(−KL⁺_l / budget)

where drop_l is the mean fall of the first-token refusal log-odds on Ds when r̂_l is ablated
at every layer, and KL⁺_l the one-sided 95 % upper confidence bound of the mean first-token
KL on Dh. l* is the layer of largest score among those with a positive drop. There is no hard
edge: a layer's KL discounts its drop smoothly (at KL⁺ = budget by e⁻¹), and an uncertain KL
is discounted more. l* is then *bagged*: the candidate layer chosen by the most bootstrap
resamples (below), ties going to the full fit's order, so that one draw of prompts that puts
two layers' scores within noise of each other does not decide it. Where no layer's ablation
lowers the refusal score the norm-ratio rule (largest ‖r_l‖ / mean activation norm) chooses.

Stability refits everything the choice depends on: each bootstrap resample of the fit prompts
(harmful and harmless, with replacement) recomputes the refusal directions from the resampled
activations and re-measures drop and KL on the resampled prompts under those directions, for
the `CANDIDATES` best layers of the full fit (a layer outside them is taken never to win a
resample), then applies the same rule, the norm-ratio fallback included.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from depthcard.analysis.ablation import (
    ablated,
    first_token_logprobs,
    orthonormal_basis,
    refusal_log_odds,
)
from depthcard.analysis.capture import Activations
from depthcard.analysis.progress import task

CANDIDATES = 3
Z_UPPER = 1.645  # one-sided 95 %


@dataclass(frozen=True)
class LayerEffect:
    """Per-prompt effect of ablating one layer's r̂: (harmful,) drops and (harmless,) KLs."""

    layer: int
    drops: torch.Tensor  # float64
    kls: torch.Tensor  # float64

    def summary(self, weights_s=None, weights_h=None) -> tuple[float, float, float]:
        """(mean drop, mean KL, KL upper bound), optionally weighted by resample counts."""
        d = _wmean(self.drops, weights_s)
        k = _wmean(self.kls, weights_h)
        return d, k, k + Z_UPPER * _wse(self.kls, weights_h)


def _wmean(x: torch.Tensor, w) -> float:
    if w is None:
        return float(x.mean())
    return float((x * w).sum() / w.sum())


def _wse(x: torch.Tensor, w) -> float:
    """Standard error of the (weighted) mean; 0 for a single prompt."""
    n = float(len(x) if w is None else w.sum())
    if n < 2:
        return 0.0
    m = _wmean(x, w)
    w = torch.ones_like(x) if w is None else w
    var = float((w * (x - m) ** 2).sum()) / (n - 1)
    return math.sqrt(max(var, 0.0) / n)


def layer_score(drop: float, kl_upper: float, budget: float) -> float:
    """drop · exp(−KL⁺ / budget); −inf for a drop that is not positive."""
    if not drop > 0:
        return -math.inf
    return drop * math.exp(-kl_upper / max(budget, 1e-12))


def choose(summaries: dict[int, tuple[float, float, float]], budget: float) -> int | None:
    """The layer of largest score among positive drops (lowest layer on ties); None if none."""
    scored = [(layer_score(d, ku, budget), -layer) for layer, (d, _, ku) in summaries.items()]
    best = max(scored, default=(-math.inf, 0))
    return None if best[0] == -math.inf else -best[1]


def norm_ratio_choice(s: Activations, h: Activations, window: tuple[int, int]) -> int:
    """The norm-ratio rule on these activations: largest ‖r_l‖ / mean activation norm."""
    r = s.mean() - h.mean()  # (point, d)
    scale = (s.norm_sums + h.norm_sums) / max(s.count + h.count, 1)
    ratios = r.norm(dim=-1) / scale.clamp_min(1e-30)
    lo, hi = window
    return lo + int(torch.argmax(ratios[lo : hi + 1]))


def effect(ev, direction, hs, hh, base_s, base_h, layer: int) -> LayerEffect:
    """Per-prompt drop and KL of ablating `direction` (taken at `layer`) on the harmful
    rows `hs` and harmless rows `hh`, against their unablated scores `base_s` / `base_h`."""
    d, s = ev.data, ev.s
    with ablated(ev.layers, orthonormal_basis(direction[None])):
        a_s = first_token_logprobs(ev.model, hs, d.pad_id, s.batch_size, s.reuse_opening)
        a_h = first_token_logprobs(ev.model, hh, d.pad_id, s.batch_size, s.reuse_opening)
    drops = base_s - refusal_log_odds(a_s, d.refusal_ids).double()
    kls = (base_h.exp() * (base_h - a_h)).sum(-1).clamp_min(0.0).double()
    return LayerEffect(layer, drops, kls)


def _unablated(ev, hs, hh) -> tuple[torch.Tensor, torch.Tensor]:
    """(harmful,) refusal log-odds and (harmless, vocab) log-probs with nothing ablated."""
    d, s = ev.data, ev.s
    lp_s = first_token_logprobs(ev.model, hs, d.pad_id, s.batch_size, s.reuse_opening)
    base_h = first_token_logprobs(ev.model, hh, d.pad_id, s.batch_size, s.reuse_opening)
    return refusal_log_odds(lp_s, d.refusal_ids).double(), base_h


@dataclass(frozen=True)
class LayerChoice:
    """What the rule saw: l*, the rule, every tried layer's numbers, and the bootstrap."""

    chosen: int | None  # None: no positive drop; the norm-ratio rule decides
    tried: list[tuple[int, float, float, float]]  # (layer, drop, KL, KL upper bound)
    stability: float | None
    bootstraps: int
    shares: dict[int, float]  # candidate layer → share of resamples choosing it
    candidates: list[int]  # the best layers of the full fit, best first


def select_layer(
    ev,
    fit_s: Activations,
    fit_h: Activations,
    window: tuple[int, int],
    budget: float,
    bootstraps: int = 10,
    seed: int = 0,
) -> LayerChoice:
    """l* by the rule above on the evaluator's prompts (the fit half) and its stability.

    Args:
        ev: an `ablation_cost.Evaluator` holding the fit prompts.
        fit_s, fit_h: the child's activations on the same harmful / harmless prompts, in
            the same order (they refit the directions per resample).
        window: inclusive layer range searched.
        budget: the KL scale of the score (AuditConfig.kl_budget).
    """
    hs, hh = ev.data.harmful_ids, ev.data.harmless_ids
    base_s, base_h = _unablated(ev, hs, hh)
    r_all = fit_s.mean() - fit_h.mean()  # (point, d) float64
    effects: dict[int, LayerEffect] = {}
    layers = [la for la in range(window[0], window[1] + 1) if float(r_all[la].norm()) > 0]
    with task("layer search", total=len(layers), unit="layer") as bar:
        for layer in layers:
            effects[layer] = effect(ev, r_all[layer], hs, hh, base_s, base_h, layer)
            bar.advance()
    summaries = {la: e.summary() for la, e in effects.items()}
    tried = [(la, *summaries[la]) for la in layers]
    chosen = choose(summaries, budget)
    fallback = norm_ratio_choice(fit_s, fit_h, window)
    point = fallback if chosen is None else chosen
    ranked = sorted(
        layers, key=lambda la: (-layer_score(summaries[la][0], summaries[la][2], budget), la)
    )
    candidates = ranked[:CANDIDATES]
    counts = {la: 0 for la in {*candidates, fallback}}
    gen = torch.Generator().manual_seed(seed)
    n_s, n_h = fit_s.count, fit_h.count
    with task("layer bootstrap", total=bootstraps, unit="resample") as bar:
        for _ in range(bootstraps):
            i_s = torch.randint(n_s, (n_s,), generator=gen)
            i_h = torch.randint(n_h, (n_h,), generator=gen)
            pick = _resample_choice(
                ev, (fit_s, fit_h), (i_s, i_h), (base_s, base_h), candidates, window, budget
            )
            counts[pick] = counts.get(pick, 0) + 1
            bar.advance(1)
    shares = {la: c / bootstraps for la, c in counts.items()}
    if chosen is not None and bootstraps > 0:
        # bagged: the layer most resamples choose (ties: the full fit's order), so that one
        # draw of the prompts near the KL scale does not decide l*
        chosen = max(candidates, key=lambda la: (counts.get(la, 0), -candidates.index(la)))
        point = chosen
    return LayerChoice(
        chosen=chosen,
        tried=tried,
        stability=shares.get(point, 0.0) if layers else None,
        bootstraps=bootstraps,
        shares=shares,
        candidates=candidates,
    )


def _resample_choice(ev, fit, index, base, candidates, window, budget) -> int:
    """The rule applied to one resample: directions refitted from the resampled activations,
    drops and KLs re-measured on the resampled prompts (each distinct prompt once, weighted
    by its count; `base` holds every fit prompt's unablated scores)."""
    (fit_s, fit_h), (i_s, i_h) = fit, index
    rs, rh = fit_s.take(i_s.tolist()), fit_h.take(i_h.tolist())
    r = rs.mean() - rh.mean()
    u_s, w_s = torch.unique(i_s, return_counts=True)
    u_h, w_h = torch.unique(i_h, return_counts=True)
    hs = [ev.data.harmful_ids[i] for i in u_s.tolist()]
    hh = [ev.data.harmless_ids[i] for i in u_h.tolist()]
    base_s, base_h = base[0][u_s], base[1][u_h]
    summaries = {}
    for layer in candidates:
        if float(r[layer].norm()) > 0.0:
            e = effect(ev, r[layer], hs, hh, base_s, base_h, layer)
            summaries[layer] = e.summary(w_s.double(), w_h.double())
    pick = choose(summaries, budget)
    return norm_ratio_choice(rs, rh, window) if pick is None else pick
