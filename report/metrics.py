"""The headline quantities of an audit, each declared once: label, unit, meaning, format.

The card table (`report.card`), the terminal summary (`report.summary`), the PR body
(`bot.publish`) and the Space (`space.handlers`) all read `METRICS` through `metric_rows`, so
a number reads the same everywhere ("87.9 %", never "0.8792" in one place). Adding a metric
touches the analysis that computes it, the schema field, one `Metric` here and
docs/card-standard.md (a test checks the docs against this table).

Texts may hold placeholders filled from the report: `{eps}`, `{d}`, `{threshold}`,
`{window}`, `{depth_window}`, `{over}`, `{forecast}`, `{margin}`, and the name of every
companion of the metric (e.g. `{chance}`); an unknown value reads "—".
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from depthcard.schemas.report import (
    MIN_PERMUTATIONS,
    AuditReport,
    DepthNullTest,
    depth_null_test,
)
from depthcard.schemas.sections import Fragility

FormatKind = Literal["rho", "sig4", "cosine", "ratio", "score", "percent", "count", "nats", "text"]
Source = Literal["headline", "fragility"]
AuditKind = Literal["pair", "child-only", "three-model"]
ALL_KINDS: frozenset[AuditKind] = frozenset({"pair", "child-only", "three-model"})
MISSING = "—"

FORMATS: dict[FormatKind, Callable[[object], str]] = {
    "rho": lambda x: f"{x:#.4g}",  # 4 significant digits, trailing zeros kept: 0.2000
    "sig4": lambda x: f"{x:#.4g}",
    "cosine": lambda x: f"{x:.3f}",
    "ratio": lambda x: f"{x:.3f}",
    "score": lambda x: f"{x:.3f}",
    "percent": lambda x: f"{100 * x:.1f} %",
    "count": lambda x: str(x),
    "nats": lambda x: f"{x:#.3g}",
    "text": lambda x: " ".join(str(x).split()),
}


def format_value(kind: FormatKind, value: object) -> str:
    """`value` written as format `kind` prescribes; "—" for None."""
    return MISSING if value is None else FORMATS[kind](value)


def card_number(kind: FormatKind, value: object) -> float | int | None:
    """The number the card prints for `value`, as a number (percentages in percent).

    Read back from `format_value`'s text, so a sortable table shows exactly the card's digits.

    Raises:
        ValueError: `kind` is not a numeric format.
    """
    if value is None:
        return None
    if kind == "text":
        raise ValueError("a text value has no number")
    text = format_value(kind, value).removesuffix(" %")
    return int(text) if kind == "count" else float(text)


@dataclass(frozen=True)
class Companion:
    """A field printed beside its metric: a null or chance level, an interval bound, a count.

    Its formatted value fills the placeholder `{name}` in the metric's `unit` and `beside`
    texts, so a new companion needs only a new entry here and the schema field.
    """

    field: str
    name: str
    role: Literal["null", "low", "high", "detail"]
    fmt: FormatKind


@dataclass(frozen=True)
class Metric:
    """One headline quantity, as every view of a report shows it.

    Attributes:
        field: the field in `source` (`AuditReport.headline` or `AuditReport.fragility`).
        label: short human label, the row name in every view.
        unit: unit text; may hold placeholders.
        meaning: one sentence on what the number says; may hold placeholders.
        fmt: how the value is written (`FORMATS`).
        companions: fields printed beside the value (null level, interval, count).
        beside: text after the value when every companion it names is present; a tuple of
            texts is shown part by part (an interval missing from an older report drops only
            its own part). A value's own interval comes first, right after it, so it is not
            read as the interval of a baseline or placebo printed beside it.
        replace: text shown instead of the value when it returns one (e.g. "not above null":
            a score its null matches is never printed as a number).
        absent: text shown instead of a missing value, when it has one (else the row is left
            out where absent rows are dropped).
        kinds: the audit kinds that measure it: where a view lists unmeasured metrics, other
            kinds leave the row out instead of showing "—".
        source: the report section that holds `field`.
    """

    field: str
    label: str
    unit: str
    meaning: str
    fmt: FormatKind
    companions: tuple[Companion, ...] = ()
    beside: str | tuple[str, ...] = ""
    absent: Callable[[AuditReport], str | None] | None = None
    replace: Callable[[AuditReport], str | None] | None = None
    kinds: frozenset[AuditKind] = ALL_KINDS
    source: Source = "headline"


@dataclass(frozen=True)
class MetricRow:
    """One metric of one report, formatted: what the card, summary, PR and Space print."""

    metric: Metric
    number: str  # the formatted value, or the metric's absent text, or "—"
    beside: str  # companions written after the number ("" when none)
    unit: str
    meaning: str
    present: bool  # the value itself was measured

    @property
    def label(self) -> str:
        return self.metric.label

    @property
    def value(self) -> str:
        """The number with its companions: the card's value cell."""
        return self.number + self.beside


def min_k_absent(report: AuditReport) -> str | None:
    """Why min_k is absent, in plain words: never reached, or only by breaking the model;
    None when the audit ran no ablation. Asked only where the headline has no min_k."""
    ab = report.ablation
    if ab is None:
        return None
    top = max(p.k for p in ab.curve)
    if ab.min_k_reason == "refusal only goes away by breaking the model":
        return (
            f"refusal only goes away by breaking the model (more than "
            f"{100 * ab.max_broken_share:g} % broken answers, k ≤ {top})"
        )
    return f"not reached (k ≤ {top})"


def depth_test(report: AuditReport) -> DepthNullTest | None:
    """Whether the depth score is above its null, by `schemas.report.depth_null_test`.

    Every view (card, summary, Space, eval results, leaderboard) asks this, so they agree.
    Reports that do not record their permutations in the headline read them from the config.
    """
    h = report.headline
    count = h.null_permutations
    return depth_null_test(h.depth_p_value, report.config.permutations if count is None else count)


def _depth_not_a_depth(report: AuditReport) -> str | None:
    """The depth row's text where the score is not a depth: not above null, or untested."""
    test = depth_test(report)
    if test == "not-above-null":
        return "not above null"
    if test == "too-few-permutations":
        return f"too few permutations to test (fewer than {MIN_PERMUTATIONS})"
    return None


def _depth_without_null(report: AuditReport) -> str | None:
    """A report with a raw depth score but no null: the raw score, said to be untested."""
    h = report.headline
    if h.alignment_depth_score is None:
        return None
    return f"no null computed (raw score {h.alignment_depth_score:.3f})"


def placebo_test(report: AuditReport, p_value: float | None) -> bool:
    """Whether a number beats its label-permutation placebo: the depth rule (p < α from at
    least 100 permutations). A number without a tested placebo never beats it."""
    h = report.headline
    count = h.null_permutations
    count = report.config.permutations if count is None else count
    return depth_null_test(p_value, count) == "above-null"


def recovery_at_baseline(report: AuditReport) -> bool | None:
    """True when recovery does not beat its mean-shift baseline: the bootstrap interval of
    recovery − baseline reaches 0 (or, without one, the difference is ≤ 0). None: no baseline."""
    h = report.headline
    if h.recovery_beyond_baseline is None:
        return None
    low = h.recovery_beyond_low
    return (h.recovery_beyond_baseline if low is None else low) <= 0.0


def _recovery_text(report: AuditReport) -> str | None:
    h = report.headline
    if recovery_at_baseline(report):
        return f"at baseline ({h.refusal_direction_recovery:.3f})"
    return None


def _specificity_text(report: AuditReport) -> str | None:
    h = report.headline
    if h.specificity_null_p is not None and not placebo_test(report, h.specificity_null_p):
        return f"at placebo ({h.safety_specificity:.3f})"
    return None


def _did_words(report: AuditReport) -> str:
    """What follows ρ_ε of M_DiD in the ρ_ε aligned row: its placebo, in words."""
    h = report.headline
    if h.rho_eps_did is None:
        return ""
    if h.rho_did_null_p is not None:
        word = "below its null" if placebo_test(report, h.rho_did_null_p) else "at placebo"
        ci = ""
        if h.rho_did_beyond_low is not None and h.rho_did_beyond_high is not None:
            ci = f", ρ − null 95 % CI {h.rho_did_beyond_low:+.3f}–{h.rho_did_beyond_high:+.3f}"
        return (
            f" {word} (shuffled-label null {format_value('rho', h.rho_did_null_mean)}, "
            f"p = {format_value('sig4', h.rho_did_null_p)}{ci})"
        )
    if h.rho_did_placebo is not None:
        placebo = format_value("rho", h.rho_did_placebo)
        return f" at placebo (harmless-halves placebo {placebo}, untested)"
    return ""


def depth_window(report: AuditReport) -> str:
    """The layers the depth score averages over, "a–b"."""
    h, depth = report.headline, report.depth
    if h.depth_window is not None:
        return f"{h.depth_window[0]}–{h.depth_window[1]}"
    if depth is not None and depth.layers:
        return f"{depth.layers[0].layer}–{depth.layers[-1].layer}"
    return MISSING


def layer_stability(report: AuditReport) -> str | None:
    """How stable the choice of l* is, in words; None when the audit did not measure it."""
    sel = report.selected_layer
    if sel.stability is None or not sel.bootstraps:
        return None
    return f"chosen by {100 * sel.stability:.0f} % of {sel.bootstraps} bootstrap resamples"


def _exponent_unsupported(report: AuditReport) -> str | None:
    """The exponent is a fitted number: shown only where its fit passes the checks."""
    f, settings = report.fragility, report.config.fragility
    if f is None or settings is None or not f.forecast_checked or f.fit_r2 is None:
        return None
    rising = f.fit_points if f.fit_points is not None else 0  # checked reports record it
    if f.fit_r2 < settings.min_fit_r2 or rising < settings.min_rising_steps:
        return f"no reliable fit (R² {f.fit_r2:.2f}, {f.fit_points} rising steps)"
    return None


def _sharpness_unconverged(report: AuditReport) -> str | None:
    f = report.fragility
    if f is None or f.sharpness_converged is not False:
        return None
    return f"{format_value('sig4', f.sharpness)}, not converged"


CI = " [95 % CI {low}–{high}]"
PAIR: frozenset[AuditKind] = frozenset({"pair", "three-model"})
RHO_UNIT = "fraction of d (ε = {eps})"

# The card standard's row order (docs/card-standard.md §3).
METRICS: tuple[Metric, ...] = (
    Metric("alignment_kept", "alignment kept by the fine-tune",
           "% of parent's shift (layers {window})",
           "How much of the alignment shift the child gained over its base the fine-tune kept: "
           "100 % = all, 0 % = back at the base.",
           "percent", kinds=frozenset({"three-model"})),
    Metric("rho_eps_aligned", "ρ_ε aligned", RHO_UNIT,
           "Share of the residual width the alignment shift fills, chat template held fixed; "
           "small = alignment lives in a few directions.",
           "rho", companions=(Companion("rank_aligned", "rank", "detail", "count"),
                              Companion("rho_eps_did", "did", "detail", "rho"),
                              Companion("rho_did_null_mean", "did_null", "null", "rho"),
                              Companion("rho_did_null_p", "did_p", "detail", "sig4"),
                              Companion("rho_did_beyond_low", "did_low", "low", "cosine"),
                              Companion("rho_did_beyond_high", "did_high", "high", "cosine"),
                              Companion("rho_did_placebo", "did_placebo", "null", "rho")),
           beside=(" (rank {rank} of d = {d})", "; ρ_ε of M_DiD {did}{did_words}"), kinds=PAIR),
    Metric("rho_eps_naive", "ρ_ε naive", RHO_UNIT,
           "The same without holding the template fixed (template and alignment mixed), "
           "for comparison.",
           "rho", kinds=PAIR),
    Metric("rho_eps_contrast", "ρ_ε contrast (child-only)", RHO_UNIT,
           "Share of the width the child's own harmful-vs-harmless contrast fills.",
           "rho", kinds=frozenset({"child-only"})),
    Metric("refusal_direction_recovery", "refusal-direction recovery", "abs. cosine, 0–1",
           "How closely the top direction of the alignment shift (child-only: of the contrast) "
           "matches the child's refusal direction; near 1 = they coincide.",
           "cosine", companions=(Companion("recovery_baseline", "baseline", "null", "cosine"),
                                 Companion("recovery_beyond_baseline", "beyond", "detail",
                                           "cosine"),
                                 Companion("recovery_beyond_low", "beyond_low", "low", "cosine"),
                                 Companion("recovery_beyond_high", "beyond_high", "high",
                                           "cosine"),
                                 Companion("recovery_placebo", "placebo", "null", "cosine"),
                                 Companion("recovery_low", "low", "low", "cosine"),
                                 Companion("recovery_high", "high", "high", "cosine")),
           beside=(CI, " (mean-shift baseline {baseline}, beyond it {beyond} "
                   "[95 % CI {beyond_low}–{beyond_high}])", " (placebo {placebo})"),
           replace=_recovery_text),
    Metric("safety_specificity", "safety specificity", "ratio ρ(harmless) / ρ(harmful)",
           "Near or above 1: alignment is as low-rank on harmless prompts, so the low rank is "
           "not specific to safety.",
           "ratio", companions=(Companion("specificity_null_mean", "null", "null", "ratio"),
                                Companion("specificity_null_p", "p", "detail", "sig4"),
                                Companion("specificity_low", "low", "low", "ratio"),
                                Companion("specificity_high", "high", "high", "ratio")),
           beside=(CI, " (shuffled-label null {null}, p = {p})"),
           replace=_specificity_text),
    Metric("depth_vs_null", "alignment depth vs null",
           "0–1: (score − null mean)/(1 − null mean), mean over layers {depth_window}",
           "How entangled the safety directions are with capability directions beyond what "
           "randomly relabelled prompts give; on calibration organisms the raw score rose "
           "with trained entanglement but so did its null (1 of 11 scored above it), and it "
           "did not predict the cost of removal.",
           "score", companions=(Companion("depth_p_value", "p", "detail", "sig4"),
                                Companion("null_permutations", "permutations", "detail",
                                          "count"),
                                Companion("alignment_depth_score", "raw", "detail", "score"),
                                Companion("depth_null_mean", "null", "null", "score"),
                                Companion("depth_null_p95", "p95", "null", "score"),
                                Companion("depth_low", "low", "low", "score"),
                                Companion("depth_high", "high", "high", "score")),
           beside=(" (p = {p}", ", {permutations} permutations", ")",
                   "; raw score {raw}", ", null mean {null}", ", 95th pct {p95}",
                   " [raw 95 % CI {low}–{high}]"),
           replace=_depth_not_a_depth, absent=_depth_without_null),
    Metric("baseline_refusal_rate", "baseline refusal rate", "% of harmful prompts",
           "How often the child refuses the held-out harmful prompts with nothing removed.",
           "percent", companions=(Companion("baseline_refusal_low", "low", "low", "percent"),
                                  Companion("baseline_refusal_high", "high", "high", "percent")),
           beside=(" [95 % Wilson {low}–{high}]",)),
    Metric("abliteration_min_k", "abliteration min k", "directions (refusal < {threshold})",
           "Fewest directions whose ablation drops refusal below the threshold without breaking "
           "the model (few answers broken); small = cheap to strip.",
           "count",
           companions=(Companion("abliteration_broken_share", "broken", "detail", "percent"),),
           beside=" ({broken} broken)", absent=min_k_absent),
    Metric("abliteration_kl", "KL at min k", "nats",
           "First-token KL on harmless prompts at min k: what the attack costs in capability; "
           "beside it, the same number of random directions ablated instead (placebo).",
           "nats",
           companions=(Companion("abliteration_kl_random_low", "rlow", "null", "nats"),
                       Companion("abliteration_kl_random_high", "rhigh", "null", "nats")),
           beside=(" (random directions {rlow}–{rhigh})",)),
    Metric("judge", "judge", "name",
           "Judge that decided which answers count as refusals.",
           "text"),
    Metric("sharpness", "fragility sharpness", "top Hessian eigenvalue",
           "How sharply the refusal loss curves: the top eigenvalue of its Hessian over {over}.",
           "sig4", source="fragility", replace=_sharpness_unconverged),
    Metric("exponent", "fragility exponent", "p in ΔL_A ≈ c·t^p",
           "How fast the refusal loss rises under a benign fine-tune; forecast: {forecast}.",
           "sig4", source="fragility", replace=_exponent_unsupported),
)  # fmt: skip


def _context(report: AuditReport) -> dict[str, str]:
    """Report-wide placeholder values, already formatted."""
    h, ab, e, f = report.headline, report.ablation, report.erosion, report.fragility
    context = {
        "eps": f"{h.eps:g}",
        "d": str(report.models.child.hidden_size),
        "threshold": "threshold" if ab is None else f"{100 * ab.threshold:g} %",
        "window": MISSING if e is None else f"{e.window[0]}–{e.window[1]}",
        "depth_window": depth_window(report),
        "did_words": _did_words(report),
    }
    if f is not None:
        count = f.parameter_count
        context["over"] = f.parameter_subset if count is None else f"{count:,} params"
        context["margin"] = f"{f.forecast_margin:g}"
        context["forecast"] = forecast_text(f)
    return context


def forecast_text(f: Fragility) -> str:
    """The fragility forecast in words: steps to the margin, or "no reliable forecast" and why.

    A forecast is printed only when the report says its checks passed (docs/fragility.md);
    one from a report written before the checks existed is not printed.
    """
    if f.forecast_checked and f.forecast_steps is not None:
        return f"+{f.forecast_margin:g} nats in {f.forecast_steps:.3g} steps"
    if not f.forecast_checked:
        return "no reliable forecast (this report predates the forecast checks)"
    reasons = f.no_forecast_reasons or [f.no_fit_reason or "no fit"]
    return "no reliable forecast: " + "; ".join(reasons)


def _fill(text: str, values: dict[str, str]) -> str:
    names = {name for _, name, _, _ in string.Formatter().parse(text) if name}
    return text.format(**{n: values.get(n, MISSING) for n in names})


def _section(report: AuditReport, metric: Metric) -> object | None:
    return report.headline if metric.source == "headline" else getattr(report, metric.source)


def metric_row(report: AuditReport, metric: Metric) -> MetricRow | None:
    """`metric` of `report`, formatted; None when the report lacks the metric's section."""
    section = _section(report, metric)
    if section is None:
        return None
    value = getattr(section, metric.field)
    found = {c.name: getattr(section, c.field) for c in metric.companions}
    values = _context(report) | {c.name: format_value(c.fmt, v) for c, v in
                                 zip(metric.companions, found.values(), strict=True)}  # fmt: skip
    if value is None:
        number = (metric.absent(report) if metric.absent else None) or MISSING
    else:
        number = (metric.replace(report) if metric.replace else None) or format_value(
            metric.fmt, value
        )
    parts = (metric.beside,) if isinstance(metric.beside, str) else metric.beside
    beside = ""
    for part in parts if value is not None else ():
        needs = {name for _, name, _, _ in string.Formatter().parse(part) if name}
        if all(found[n] is not None for n in needs & found.keys()):
            beside += _fill(part, values)
    return MetricRow(
        metric=metric,
        number=number,
        beside=beside,
        unit=_fill(metric.unit, values),
        meaning=_fill(metric.meaning, values),
        present=value is not None,
    )


def metric_rows(
    report: AuditReport, *, source: Source | None = "headline", unmeasured: bool = False
) -> list[MetricRow]:
    """The formatted rows of `report`, in table order.

    A row appears when its value (or the metric's absent text) is there. With `unmeasured`,
    a metric the report's kind measures but this report lacks also appears, as "—".

    Args:
        report: a validated audit report.
        source: only metrics of this report section; None for every section.
        unmeasured: also list metrics of the report's kind that were not measured.

    Returns:
        One `MetricRow` per metric shown.
    """
    rows = []
    for metric in METRICS:
        if source is not None and metric.source != source:
            continue
        row = metric_row(report, metric)
        if row is None:
            continue
        if row.number != MISSING or (unmeasured and report.kind in metric.kinds):
            rows.append(row)
    return rows
