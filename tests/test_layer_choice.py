"""l*'s rule has no hard edge, its KL bound widens with noise, and the bootstrap is bagged."""

import math

import pytest
import torch

from depthcard.analysis import layer_choice as lc
from depthcard.analysis.capture import Activations


def test_the_score_has_no_hard_edge_at_the_budget() -> None:
    """A KL just under and just over the budget give nearly the same score: the rule cannot
    flip between two layers because one's KL crossed 0.1 by rounding."""
    below, above = lc.layer_score(2.0, 0.0999, 0.1), lc.layer_score(2.0, 0.1001, 0.1)
    assert below == pytest.approx(above, rel=1e-2)
    assert below == pytest.approx(2.0 * math.exp(-0.999), rel=1e-6)
    assert lc.layer_score(0.0, 0.0, 0.1) == -math.inf  # a drop must be positive
    assert lc.layer_score(-1.0, 0.0, 0.1) == -math.inf


def test_choice_trades_drop_against_kl() -> None:
    # layer 2 drops most but at three times the KL; layer 1's discounted drop wins
    summaries = {1: (1.7, 0.14, 0.19), 2: (3.5, 0.29, 0.37), 3: (1.6, 0.9, 1.0)}
    assert lc.choose(summaries, 0.1) == 1
    # with a larger KL scale the bigger drop wins
    assert lc.choose(summaries, 1.0) == 2
    assert lc.choose({1: (-0.5, 0.0, 0.0)}, 0.1) is None
    # ties go to the lower layer
    assert lc.choose({4: (1.0, 0.1, 0.1), 2: (1.0, 0.1, 0.1)}, 0.1) == 2


def test_the_kl_bound_grows_with_scatter() -> None:
    """Two layers with the same mean KL: the scattered one is discounted more."""
    drops = torch.ones(8, dtype=torch.float64)
    even = lc.LayerEffect(1, drops, torch.full((8,), 0.1, dtype=torch.float64))
    scattered = lc.LayerEffect(2, drops, torch.tensor([0.0, 0.2] * 4, dtype=torch.float64))
    (_, k1, u1), (_, k2, u2) = even.summary(), scattered.summary()
    assert k1 == pytest.approx(k2) and u1 == pytest.approx(0.1) and u2 > u1
    assert lc.choose({1: even.summary(), 2: scattered.summary()}, 0.1) == 1
    # weights (bootstrap counts) count a prompt as often as it was drawn
    w = torch.tensor([3.0, 0, 1, 0, 1, 0, 1, 0], dtype=torch.float64)
    assert scattered.summary(weights_h=w)[1] == pytest.approx(0.0)


def _acts(rows: torch.Tensor) -> Activations:
    wide = rows.double()
    return Activations(rows=rows, sums=wide.sum(0), norm_sums=wide.norm(dim=-1).sum(0))


def test_the_norm_ratio_fallback_reads_the_resampled_activations() -> None:
    gen = torch.Generator().manual_seed(0)
    s = torch.randn(10, 5, 4, generator=gen)
    h = torch.randn(10, 5, 4, generator=gen)
    s[:, 3] += 5.0  # the contrast is largest at layer 3
    assert lc.norm_ratio_choice(_acts(s), _acts(h), (1, 4)) == 3
    assert lc.norm_ratio_choice(_acts(s), _acts(h), (1, 2)) in (1, 2)


class _Data:
    def __init__(self, n: int):
        self.harmful_ids = [[1, 2]] * n
        self.harmless_ids = [[3, 4]] * n


class _Ev:
    def __init__(self, n: int):
        self.data = _Data(n)


def test_l_star_is_the_layer_most_resamples_choose(monkeypatch) -> None:
    """The full fit prefers layer 1; if the refitted resamples choose layer 2 more often,
    l* is layer 2 and its stability is that share (bagging)."""
    n = 6
    gen = torch.Generator().manual_seed(0)
    s, h = torch.randn(n, 4, 3, generator=gen), torch.randn(n, 4, 3, generator=gen)
    table = {1: (2.0, 0.0), 2: (1.9, 0.0), 3: (0.5, 0.0)}

    def effect(ev, direction, hs, hh, base_s, base_h, layer):
        drop, kl = table[layer]
        return lc.LayerEffect(layer, torch.full((len(hs),), drop, dtype=torch.float64),
                              torch.full((len(hh),), kl, dtype=torch.float64))  # fmt: skip

    zeros = (torch.zeros(n, dtype=torch.float64), torch.zeros(n, 5))
    monkeypatch.setattr(lc, "effect", effect)
    monkeypatch.setattr(lc, "_unablated", lambda ev, hs, hh: zeros)
    picks = iter([2, 2, 1, 2, 2, 1, 2, 2, 2, 1])
    monkeypatch.setattr(lc, "_resample_choice", lambda *a, **k: next(picks))
    choice = lc.select_layer(_Ev(n), _acts(s), _acts(h), (1, 3), 0.1, bootstraps=10)
    assert choice.candidates == [1, 2, 3]
    assert choice.chosen == 2 and choice.stability == pytest.approx(0.7)
    assert choice.shares == {1: 0.3, 2: 0.7, 3: 0.0}
