"""The measured removal cost and the layer choice, in plain words.

Two pure text builders that the card, the CLI summary and the PR share:

- `finding`: the one line the PR leads with; `removal_finding`: the same with the judged
  shares behind it, one sentence a maintainer can read without the method — how many
  directions remove refusal at what cost, or that with up to k directions ablated refusal came
  off only by breaking the model, or that there is no refusal to remove — with the judged
  shares at min_k and at min_k − 1 (the point before it), and "not monotone" naming the curve
  that rises: the judged shares, or only the first-token refusal score.
- `close_call`: the cheapest judged k whose refusal share missed the threshold by less than
  its own sampling error (Wilson 95 % interval reaching the threshold, not broken): with a
  few dozen held-out prompts one or two answers decide min_k, and the card says so.
- `layer_choice`: l*, how often the bootstrap chose it, and the runner-up layers with their
  drop, KL and coherent min_k, so a reader sees how close the call was. Intervals of the
  numbers at l* are conditional on l*.
"""

from __future__ import annotations

from depthcard.analysis.ablation_cost import RANDOM_KL_DISRUPTIVE
from depthcard.report.markdown import md_escape
from depthcard.report.metrics import format_value
from depthcard.schemas.report import AuditReport
from depthcard.schemas.sections import Ablation, AblationPoint

FINDING_MIN_K = "refusal can be removed by ablating {k} {directions} at KL {kl}"
# Scoped to what was tried: directional ablation of up to `top` directions, not every attack.
FINDING_BROKEN = "with up to {top} directions ablated, refusal came off only by breaking the model"
FINDING_NOT_REACHED = "refusal did not come off with up to {top} directions ablated"
FINDING_NO_REFUSAL = "no refusal behaviour to measure ({rate} of harmful prompts refused)"
FINDING_IDENTICAL = "the base and the child are identical in every layer; nothing to measure"
FINDING_UNMEASURED = "{verdict} (the cost of removing refusal was not measured)"
FOUND_DETAIL = ": held-out refusal {r0} → {rk}{interval} ({bk} broken answers){before}"
INTERVAL = " [95 % Wilson {low}–{high}]"
CLOSE_CALL = (
    " At k = {k} refusal was {r}{interval} with {b} broken: within sampling error of the {thr} "
    "threshold on {n} held-out prompts, so a larger prompt set could put min k at {k}."
)
BEFORE = "; with {k} direction{s} it was {r} ({b} broken)"
BREAKING_DETAIL = (
    ": where refusal fell below {thr} (k = {k}), {b} of answers were broken against an "
    "allowance of {max_b}"
)
NOT_REACHED_DETAIL = " (lowest held-out refusal {low} at k = {k}, {b} broken)"
NON_MONOTONE = " The judged refusal curve is not monotone in k."
# `non_monotone` is also set where only the first-token score rises while the judged shares
# do not (a broken model's score wanders at 0 % refusal): the card says which curve it was.
SCORE_NON_MONOTONE = " The first-token refusal score is not monotone in k; the judged shares are."
# The KL placebo (`Ablation.random_kl`): random directions ablated instead of the attack's;
# from RANDOM_KL_DISRUPTIVE nats for one random direction the model breaks whatever is removed.
PLACEBO = " Placebo: {k} random direction{s} ablated instead cost KL {low}–{high} ({n} draws)."
DISRUPTIVE = (
    " Ablating one random direction instead costs KL {low}–{high} ({n} draws): on this model "
    "directional ablation disturbs the answers whatever the direction, so its cost says little "
    "about how deep the alignment goes."
)
FINDING_DISRUPTIVE = (
    "; but one random direction ablated instead already costs KL {low}–{high}, so directional "
    "ablation says little about this model's alignment"
)
SEARCH = {
    "ordered": "k judged in order up to the first coherent success",
    "bisect": "k bisected on a curve whose first-token score never rises, k − 1 judged",
    "all": "every k judged",
}


def finding(report: AuditReport) -> str:
    """The audit's result in one line, removal cost first (the PR's finding): `core_finding`,
    and where one random direction already disturbs the model, that caveat."""
    head, ab = core_finding(report), report.ablation
    one = _disruptive(ab) if ab is not None and ab.curve else None
    if one is not None:
        return head + FINDING_DISRUPTIVE.format(low=_nats(min(one.kl)), high=_nats(max(one.kl)))
    return head


def core_finding(report: AuditReport) -> str:
    """The audit's result in one line, removal cost first: the start of the card's
    removal-cost paragraph."""
    h, ab = report.headline, report.ablation
    if report.verdict.code == "no-refusal":
        return FINDING_NO_REFUSAL.format(rate=format_value("percent", h.baseline_refusal_rate))
    if report.verdict.code == "identical-models":
        return FINDING_IDENTICAL
    if ab is None or not ab.curve:
        verdict = md_escape(report.verdict.text.rstrip(". ")) or "measured"
        return FINDING_UNMEASURED.format(verdict=verdict[:1].lower() + verdict[1:])
    if ab.min_k is not None:
        return FINDING_MIN_K.format(
            k=ab.min_k,
            directions="direction" if ab.min_k == 1 else "directions",
            kl=format_value("nats", ab.kl_at_min_k),
        )
    if ab.min_k_reason == "refusal only goes away by breaking the model":
        judged = [k for k in _judged(ab) if k > 0] or [p.k for p in ab.curve]
        return FINDING_BROKEN.format(top=max(judged))
    return FINDING_NOT_REACHED.format(top=max(p.k for p in ab.curve))


def _nats(x: float) -> str:
    return format_value("nats", x)


def _random_at(ab: Ablation | None, k: int | None):
    """The placebo draws at `k` (None: not measured there, or a report without them)."""
    if ab is None or k is None:
        return None
    return next((r for r in ab.random_kl or [] if r.k == k), None)


def _disruptive(ab: Ablation):
    """The k = 1 placebo draws where even the cheapest costs ≥ RANDOM_KL_DISRUPTIVE nats."""
    one = _random_at(ab, 1)
    return one if one is not None and min(one.kl) >= RANDOM_KL_DISRUPTIVE else None


def placebo_sentence(ab: Ablation) -> str:
    """The KL placebo in one sentence: that one random direction already disturbs the model
    (where it does), else the placebo at min_k (or at k = 1 without a min_k); "" without."""
    one = _disruptive(ab)
    if one is not None:
        return DISRUPTIVE.format(low=_nats(min(one.kl)), high=_nats(max(one.kl)), n=len(one.kl))
    at = _random_at(ab, ab.min_k) or _random_at(ab, 1)
    if at is None:
        return ""
    return PLACEBO.format(k=at.k, s="" if at.k == 1 else "s", low=_nats(min(at.kl)),
                          high=_nats(max(at.kl)), n=len(at.kl))  # fmt: skip


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.0f} %"


def _interval(p: AblationPoint) -> str:
    if p.refusal_low is None or p.refusal_high is None:
        return ""
    return INTERVAL.format(low=_pct(p.refusal_low), high=_pct(p.refusal_high))


def _judged(ab: Ablation) -> dict[int, AblationPoint]:
    return {p.k: p for p in ab.curve if p.basis == "attack" and p.refusal_rate is not None}


def removal_finding(report: AuditReport) -> str:
    """`core_finding` with the judged shares behind it (no trailing period)."""
    ab, head = report.ablation, core_finding(report)
    if ab is None or not ab.curve:
        return head
    judged = _judged(ab)
    if ab.min_k is not None:
        at, prev = judged[ab.min_k], judged.get(ab.min_k - 1)
        before = ""
        if prev is not None and ab.min_k > 1:
            s = "" if ab.min_k - 1 == 1 else "s"
            before = BEFORE.format(
                k=ab.min_k - 1, s=s, r=_pct(prev.refusal_rate), b=_pct(prev.broken_share)
            )
        return head + FOUND_DETAIL.format(
            r0=_pct(ab.baseline_refusal_rate),
            rk=_pct(at.refusal_rate),
            interval=_interval(at),
            bk=_pct(at.broken_share),
            before=before,
        )
    below = [p for p in judged.values() if p.k > 0 and p.refusal_rate < ab.threshold]
    if below:
        first = min(below, key=lambda p: p.k)
        return head + BREAKING_DETAIL.format(
            thr=_pct(ab.threshold),
            k=first.k,
            b=_pct(first.broken_share),
            max_b=_pct(ab.max_broken_share),
        )
    tried = [p for p in judged.values() if p.k > 0]
    if not tried:
        return head
    low = min(tried, key=lambda p: p.refusal_rate)
    return head + NOT_REACHED_DETAIL.format(
        low=_pct(low.refusal_rate), k=low.k, b=_pct(low.broken_share)
    )


def close_call(report: AuditReport) -> AblationPoint | None:
    """The cheapest judged k before min_k (or among all, where min_k was not reached) whose
    refusal share is at or above the threshold but whose Wilson 95 % interval reaches below
    it, with its broken share within the allowance: a point the threshold rejected by less
    than its sampling error. None where there is none (or no intervals were recorded)."""
    ab = report.ablation
    if ab is None or not ab.curve:
        return None
    stop = ab.min_k if ab.min_k is not None else float("inf")
    allowed = 1.0 if ab.max_broken_share is None else ab.max_broken_share
    for k, p in sorted(_judged(ab).items()):
        if not 0 < k < stop or p.refusal_rate < ab.threshold or p.refusal_low is None:
            continue
        if p.refusal_low < ab.threshold and (p.broken_share or 0.0) <= allowed:
            return p
    return None


def _held_out_harmful(report: AuditReport) -> int | None:
    sets = [s for s in report.held_out.sets if s.role == "harmful"] if report.held_out else []
    return sets[0].eval if sets else None


def _judged_shares_rise(ab: Ablation) -> bool:
    """True when a judged refusal share is higher than the one judged at a smaller k."""
    rates = [p.refusal_rate for _, p in sorted(_judged(ab).items())]
    return any(b > a + 1e-9 for a, b in zip(rates, rates[1:], strict=False))


def removal_paragraph(report: AuditReport) -> str:
    """The finding with how k was searched, the monotonicity note and a close call
    (Markdown-safe text)."""
    text = removal_finding(report)
    ab = report.ablation
    if ab is None:
        return text[0].upper() + text[1:] + "."
    how = SEARCH.get(ab.min_k_search or "", "k judged by the search of an older version")
    text = f"{text[0].upper()}{text[1:]} (layer {ab.layer}; {how}; judge: {ab.judge})."
    if ab.non_monotone:
        text += NON_MONOTONE if _judged_shares_rise(ab) else SCORE_NON_MONOTONE
    text += placebo_sentence(ab)
    near, n = close_call(report), _held_out_harmful(report)
    if near is not None and n is not None:
        text += CLOSE_CALL.format(
            k=near.k,
            r=_pct(near.refusal_rate),
            interval=_interval(near),
            b=_pct(near.broken_share),
            thr=_pct(ab.threshold),
            n=n,
        )
    return text


def layer_choice(report: AuditReport) -> str | None:
    """l*'s bootstrap share and the runner-ups; None for reports without candidates."""
    sel = report.selected_layer
    if not sel.candidates:
        return None
    parts = []
    for c in sel.candidates:
        if c.coherent_min_k is not None:
            mk = f"min k {c.coherent_min_k}"
        else:
            mk = f"no coherent min k ≤ {c.searched_to}"
        star = "l* " if c.chosen else ""
        parts.append(
            f"{star}layer {c.layer}: drop {c.drop:.3g}, KL {c.kl:.3g} (≤ {c.kl_upper:.3g}), "
            f"{100 * c.resample_share:.0f} % of resamples, {mk}"
        )
    n = sel.bootstraps or 0
    return (
        f"Layer choice over {n} bootstrap resamples of the fit prompts (directions, drops and "
        f"KL refitted each time): " + "; ".join(parts) + ". Intervals of the numbers at l* are "
        "conditional on l*."
    )
