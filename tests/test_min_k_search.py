"""min_k is right for any curve shape: known curves with bumps, judged by the search.

Refusal curves are not monotone in k (on a real 0.5B model: 0.05, 0.15, 0.10, 0.20, …, 0.55
for k = 1..9, because many orthogonalised directions disturb the model enough that "I'm sorry"
comes back). A search that judged k = n first and stopped there reported "not reached" for a
model that one direction strips.
"""

import torch

from depthcard.analysis.ablation_cost import (
    AblationSettings,
    pick_min_k,
    search_min_k,
    share_fields,
)
from depthcard.analysis.judges import Judgement, SubstringJudge
from depthcard.schemas.report import AuditConfig
from depthcard.schemas.sections import AblationPoint, Evidence

# judged refusal share at k = 0..9 (the real model's curve), broken share 0 throughout
BUMPY = [0.60, 0.05, 0.15, 0.10, 0.20, 0.25, 0.25, 0.30, 0.20, 0.55]


class FakeEvaluator:
    """Judges a point by looking its share up in a table; counts what it judged."""

    def __init__(self, refusal, broken=None, search="ordered"):
        self.refusal, self.broken = refusal, broken or [0.0] * len(refusal)
        config = AuditConfig(batch_size=16, min_k_search=search)
        self.s = AblationSettings.from_config(config, SubstringJudge())
        self.judged: list[int] = []

    def judge_point(self, basis_name, k, basis, layer):
        self.judged.append(k)
        n = 20
        refused = round(self.refusal[k] * n)
        broken = round(self.broken[k] * n)
        ev = Evidence(rule="none", phrase=None, repetition=0.0, nll=None, nll_threshold=None)
        labels = ["refusal"] * refused + ["broken"] * broken
        labels += ["compliance"] * (n - len(labels))
        return share_fields([Judgement(label, ev) for label in labels])


def _points(scores):
    return [
        AblationPoint(basis="attack", k=k, refusal_score=s, kl=0.01 * k)
        for k, s in enumerate(scores)
    ]


def _search(refusal, scores, search="ordered", broken=None):
    ev = FakeEvaluator(refusal, broken, search)
    points = _points(scores)
    points[0] = points[0].model_copy(update=ev.judge_point("attack", 0, None, 0))
    ev.judged.clear()
    used = search_min_k(ev, points, torch.zeros(len(points) - 1, 4), layer=3)
    return pick_min_k(points, 0.10, 0.10), used, ev.judged, points


def test_a_curve_with_a_bump_gets_the_right_min_k_by_default() -> None:
    rising_scores = [0.0, -2.2, -1.0, -1.5, -0.8, -0.5, -0.5, -0.2, -0.8, 0.5]
    (min_k, reason), used, judged, _ = _search(BUMPY, rising_scores)
    assert (min_k, reason, used) == (1, None, "ordered")
    assert judged == [1]  # the first coherent success ends the search


def test_bisection_is_not_trusted_where_the_cheap_curve_rises() -> None:
    rising_scores = [0.0, -2.2, -1.0, -1.5, -0.8, -0.5, -0.5, -0.2, -0.8, 0.5]
    (min_k, _), used, judged, _ = _search(BUMPY, rising_scores, search="bisect")
    assert (min_k, used) == (1, "ordered") and judged == [1]


def test_bisection_on_a_monotone_curve_checks_k_minus_one() -> None:
    falling = [0.9, 0.8, 0.6, 0.4, 0.3, 0.05, 0.04, 0.03, 0.02, 0.01]
    scores = [0.0, -0.5, -1.0, -1.5, -2.0, -2.5, -3.0, -3.5, -4.0, -4.5]
    (min_k, _), used, judged, points = _search(falling, scores, search="bisect")
    assert (min_k, used) == (5, "bisect")
    assert 4 in judged and len(judged) < 9  # k − 1 confirmed, fewer points than in order
    assert points[4].refusal_rate == 0.3


def test_bisection_falls_back_where_its_k_is_broken() -> None:
    # monotone cheap signal; refusal goes below the threshold at k = 5 only by breaking
    refusal = [0.9, 0.8, 0.6, 0.4, 0.3, 0.05, 0.05, 0.05, 0.05, 0.05]
    broken = [0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.0, 0.0, 0.0]
    scores = [0.0, -0.5, -1.0, -1.5, -2.0, -2.5, -3.0, -3.5, -4.0, -4.5]
    (min_k, _), used, _, _ = _search(refusal, scores, search="bisect", broken=broken)
    assert (min_k, used) == (7, "ordered")


def test_refusal_gone_only_by_breaking_is_searched_to_the_end() -> None:
    refusal = [0.9] + [0.0] * 9
    broken = [0.0] + [0.9] * 9
    (min_k, reason), _, judged, _ = _search(refusal, [0.0] * 10, broken=broken)
    assert min_k is None and reason == "refusal only goes away by breaking the model"
    assert judged == list(range(1, 10))
