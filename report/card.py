"""The depthcard section of a model card: render it, read it back, splice it into a README.

The section is a documented standard (docs/card-standard.md): it sits between a start marker
that carries the card standard's version and the audit key, and an end marker. Right after
the start marker an HTML comment carries the headline as compact JSON, so tools read the
numbers without scraping the table. Everything here is pure text; nothing reads the clock.
"""

from __future__ import annotations

import re
from datetime import UTC

from depthcard.report.card_format import (  # noqa: F401  (re-exported: the card's public names)
    CARD_SCHEMA_VERSION,
    END_MARKER,
    HEADING,
    HEADLINE_COMMENT,
    PAIR_CARD_VERSION,
    START_MARKER,
    CardModel,
    CardParseError,
    ParsedCard,
    start_marker,
)
from depthcard.report.card_parse import parse_card_section, splice_section  # noqa: F401
from depthcard.report.markdown import md_code, md_escape, md_fence
from depthcard.report.metrics import forecast_text, format_value, layer_stability, metric_rows
from depthcard.report.removal import layer_choice, removal_paragraph
from depthcard.schemas.errors import UserError
from depthcard.schemas.report import AuditReport, ModelRef

CHILD_ONLY_NOTE = (
    "> **Child-only audit.** No public base model was available, so the alignment shift "
    "could not be isolated; the numbers describe the child's own harmful-vs-harmless "
    "contrast and are not comparable with pair audits. Absent sections: {absent}."
)
LIMITS = (
    "**Limits of this measurement.** These numbers describe the internal activations of the "
    "exact revisions above on {n_harmful} harmful and {n_harmless} harmless prompts from the "
    "listed prompt sets, read at the {position} prompt token; other prompts, templates or "
    "precisions give other numbers. They are not a safety evaluation: a small ρ says the "
    "alignment shift is concentrated in few directions, the property that directional ablation "
    '("abliteration") exploits, but not that any particular attack works, and a large ρ does '
    "not show that the model is safe. ρ cannot exceed min(N, d)/d = {cap} here (N = {rows} "
    "prompts, d = {d}). Refusal rates, where given, come from an automatic judge "
    "that can misclassify answers. Layer l* was chosen by a rule, not by hand; the full "
    "report gives every layer."
)


def card_version(report: AuditReport) -> str:
    """The card standard a report's section is written in: the oldest that holds it.

    1.1 added the third model and `alignment_kept` (three-model audits); every other section
    is written as 1.0, so 1.0 parsers keep reading pair cards unchanged.
    """
    return CARD_SCHEMA_VERSION if report.kind == "three-model" else PAIR_CARD_VERSION


def card_payload(report: AuditReport) -> ParsedCard:
    """The machine-readable part of a report's card section."""

    def ident(ref: ModelRef | None) -> CardModel | None:
        if ref is None:
            return None
        fields = ("source", "repo_id", "revision", "content_sha256")
        return CardModel(**{f: getattr(ref, f) for f in fields})

    return ParsedCard(
        schema_version=card_version(report),
        audit_key=report.audit_key,
        kind=report.kind,
        analysis_version=report.tool.analysis_version,
        report_schema_version=report.schema_version,
        child=ident(report.models.child),
        base=ident(report.models.base),
        third=ident(report.models.third),
        verdict=report.verdict.code,
        headline=report.headline,
    )


def render_card_section(
    report: AuditReport, *, report_url: str | None, reproduce_command: str
) -> str:
    """The Markdown section, markers included, ending with a newline (LF line endings).

    Args:
        report: a validated audit report.
        report_url: page of the full report (http or https), or None when unpublished.
        reproduce_command: the shell command that re-runs the audit.

    Returns:
        The section; a pure function of its arguments.

    Raises:
        ValueError: when the audit key or the URL cannot be written safely.
    """
    if "<!--" in reproduce_command or "-->" in reproduce_command:
        raise UserError("the reproduce command cannot contain HTML comment delimiters")
    payload = card_payload(report).model_dump_json(exclude_none=True)
    lines = [
        start_marker(report.audit_key, card_version(report)),
        HEADLINE_COMMENT.format(payload=_comment_safe(payload)),
        HEADING,
        "",
        _intro(report),
        "",
        "**Removal cost.** " + _text(removal_paragraph(report)),
        "",
        *_child_only_note(report),
        *_table(report),
        "",
        *_layer_choice(report),
        *_erosion(report),
        *_fragility(report),
        f"**Verdict** (`{report.verdict.code}`): {_text(report.verdict.text)}",
        "",
        *_provenance(report),
        *_reproduce(reproduce_command),
        *_report_link(report_url),
        _limits(report),
        "",
        *_absent_and_warnings(report),
        END_MARKER,
    ]
    return "\n".join(lines) + "\n"


def _text(value: str) -> str:
    """Free text of the report as one inert Markdown line (also safe in a table cell)."""
    return md_escape(value)


def _cell(value: str) -> str:
    return md_escape(value)


def _code(value: str) -> str:
    return md_code(value)


def _comment_safe(payload: str) -> str:
    """JSON that cannot close or nest an HTML comment: <, > and -- only occur in strings."""
    payload = payload.replace("<", "\\u003c").replace(">", "\\u003e")
    while "--" in payload:
        payload = payload.replace("--", "-\\u002d")
    return payload


def _name(ref: ModelRef) -> str:
    return ref.repo_id if ref.source == "hub" else ref.path


def _intro(report: AuditReport) -> str:
    m, h = report.models, report.headline
    last = len(report.layers) - 1
    where = (
        f"Numbers are at layer l* = {h.layer} of 0..{last} "
        f"(rule: {report.selected_layer.rule}; {_text(report.selected_layer.reason)})."
    )
    if (stable := layer_stability(report)) is not None:
        where += f" l\\* was {stable} of the fit prompts."
    if m.base is None:
        return f"depthcard audited {_code(_name(m.child))} on its own (child-only). {where}"
    third = f", and the third model {_code(_name(m.third))}," if m.third else ""
    return (
        f"depthcard compared the residual stream of {_code(_name(m.child))} with its base "
        f"{_code(_name(m.base))}{third} on the same prompts and chat template. {where}"
    )


def _child_only_note(report: AuditReport) -> list[str]:
    if report.kind != "child-only":
        return []
    absent = ", ".join(_text(a.section) for a in report.absent) or "none"
    return [CHILD_ONLY_NOTE.format(absent=absent), ""]


def _table(report: AuditReport) -> list[str]:
    """The headline table: one row per measured metric of `report.metrics.METRICS`."""
    out = ["| quantity | value | unit | meaning |", "|---|---|---|---|"]
    for row in metric_rows(report):
        out.append(f"| {row.label} | {_cell(row.value)} | {row.unit} | {row.meaning} |")
    return out


def _window(report: AuditReport) -> str:
    e = report.erosion
    return "—" if e is None else f"{e.window[0]}–{e.window[1]}"


def _erosion(report: AuditReport) -> list[str]:
    """The fine-tune paragraph of a three-model audit: what it kept, and seed 002's checks."""
    e, m = report.erosion, report.models
    if e is None or m.third is None:
        return []
    if e.kept_fraction is None:
        kept = (
            "The child's alignment shift is too small at every layer of the window to say how "
            "much of it the fine-tune kept."
        )
    else:
        kept = (
            f"The fine-tune {_code(_name(m.third))} kept "
            f"**{format_value('percent', e.kept_fraction)}** of "
            f"the alignment its parent {_code(_name(m.child))} gained over the base (mean "
            f"normalised erosion e_l over layers {_window(report)}; 100 % = all kept, "
            "0 % = back at the base)."
        )
    cosine = format_value("cosine", e.gradient_cosine)
    rates = ""
    if e.refusal_rate_child is not None and e.refusal_rate_third is not None:
        rates = (
            f" Refusal rate on the harmful prompts ({_text(e.judge or 'judge')}): child "
            f"{format_value('percent', e.refusal_rate_child)}, fine-tune "
            f"{format_value('percent', e.refusal_rate_third)}."
        )
    return [
        f"**Fine-tune erosion.** {kept}{rates} Mean joint log-probability of "
        f"{len(e.completions)} compliance openings after each harmful prompt: base "
        f"{e.logprob_base:.2f}, child {e.logprob_child:.2f}, fine-tune {e.logprob_third:.2f} "
        "nats (higher = readier to comply). Gradient cosine of the fine-tune between chat and "
        f"raw framing: {cosine}. The kept share is measured in the activations along one "
        "direction per layer; the refusal rates are the behaviour, and the two can disagree.",
        "",
    ]


FRAGILITY = (
    "A short benign fine-tune ({steps} plain SGD steps over {over}) moved the "
    "loss of the child's own refusals as ΔL_A ≈ c·t^p with p = {p} (R² {r2} over every step; "
    "{rising} of {steps} steps rose, {falling} fell); sharpness (top Hessian eigenvalue) "
    "{sharpness}{converged}. Forecast: {forecast}."
)


def _layer_choice(report: AuditReport) -> list[str]:
    text = layer_choice(report)
    return [] if text is None else ["**Layer choice.** " + _text(text), ""]


def _fragility(report: AuditReport) -> list[str]:
    """The fragility paragraph: the fitted law and a forecast only where the fit is reliable."""
    f = report.fragility
    if f is None:
        return []
    count = f.parameter_count
    text = FRAGILITY.format(
        steps=f.steps,
        over=f.parameter_subset if count is None else f"{count:,} parameters",
        p=format_value("sig4", f.exponent),
        r2=format_value("ratio", f.fit_r2),
        rising=format_value("count", f.fit_points),
        falling=format_value("count", f.fit_negative_points),
        sharpness=format_value("sig4", f.sharpness),
        converged="" if f.sharpness_converged else " (power iteration not converged)",
        forecast=forecast_text(f),
    )
    return ["**Fragility.** " + _text(text), ""]


def _identity(ref: ModelRef) -> str:
    if ref.source == "hub":
        return f"{_code(ref.repo_id)} at revision {_code(ref.revision)}"
    return f"local {_code(ref.path)}, content sha256 {_code(ref.content_sha256)}"


def _provenance(report: AuditReport) -> list[str]:
    m, t, cfg = report.models, report.tool, report.config
    refs = [r for r in (m.base, m.child, m.third) if r is not None]
    rows = [
        f"| {r.role} | {_identity(r)} | {_cell(r.architecture)}, {r.num_layers} layers, "
        f"d = {r.hidden_size}, {_cell(r.dtype)} |"
        for r in refs
    ]
    git = f" (git {_code(t.git_revision[:12])})" if t.git_revision else ""
    sets = "; ".join(
        f"{_text(p.role)}: {_code(p.name)} v{p.version} (sha256 {p.sha256[:12]}…, "
        f"{p.used} of {p.count} prompts)"
        for p in report.prompt_sets
    )
    when = report.created_at
    when = when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
    return [
        "| model | exact revision | shape |",
        "|---|---|---|",
        *rows,
        "",
        f"Method: depthcard {_text(t.version)}{git}, analysis version {_code(t.analysis_version)}, "
        f"report schema {report.schema_version}, card standard {card_version(report)}. "
        f"Settings: position {cfg.position}, ε ∈ {{{', '.join(f'{e:g}' for e in cfg.eps)}}}, "
        f"dtype {_text(cfg.dtype)}, seed {cfg.seed}. Prompt sets: {sets}. Report written "
        f"{when:%Y-%m-%d %H:%M} UTC on {_text(report.environment.device)}.",
        "",
    ]


def _reproduce(command: str) -> list[str]:
    return ["Reproduce:", "", *md_fence(command, "sh"), ""]


def _report_link(url: str | None) -> list[str]:
    if url is None:
        return []
    if not re.fullmatch(r"https?://[^\s<>()\[\]]+", url):
        raise UserError(f"report URL {url!r} is not a plain http(s) URL")
    return [f"Full report, with every layer and the plots: [report]({url})", ""]


def _limits(report: AuditReport) -> str:
    used = {p.role: p.used for p in report.prompt_sets}
    h = report.layer(report.headline.layer)
    stats = next(iter(h.ranks.values()), None)
    d = report.models.child.hidden_size
    rows = stats.rows if stats is not None else used.get("harmful", 0)
    return LIMITS.format(
        n_harmful=used.get("harmful", "?"),
        n_harmless=used.get("harmless", "?"),
        position="last" if report.config.position == "last" else "post-instruction (suffix)",
        cap=format_value("rho", min(rows, d) / d),
        rows=rows,
        d=d,
    )


UNSTABLE_LAYER = (
    "**The layer choice is unstable:** only {share:.0f} % of {n} bootstrap resamples of the fit "
    "prompts pick layer {layer}; the numbers at l\\* may change with other prompts."
)


def _stability(report: AuditReport) -> list[str]:
    """A plain warning when l* is chosen by fewer than half the bootstrap resamples."""
    sel = report.selected_layer
    if sel.stability is None or sel.stability >= 0.5:
        return []
    return [UNSTABLE_LAYER.format(share=100 * sel.stability, n=sel.bootstraps, layer=sel.layer), ""]


def _absent_and_warnings(report: AuditReport) -> list[str]:
    out = _stability(report)
    if report.absent:
        out.append("Not measured in this audit:")
        out += [f"- {_text(a.section)}: {_text(a.reason)}" for a in report.absent]
        out.append("")
    if report.warnings:
        out.append("Notes from the audit:")
        out += [f"- {_text(w)}" for w in report.warnings]
        out.append("")
    return out
