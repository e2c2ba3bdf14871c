"""What a depthcard pull request says: title, body, update comment. Constants and pure renderers.

The body is read in thirty seconds: what the PR adds, the audit's finding in one line, the
report and the card standard, how to opt out, a contact. Everything else (numbers, revisions,
the reproduce command, limits) is folded in `<details>`. Who opened it decides two sentences:
the bot opens PRs no one asked for, so it says so and how to stop it; a maintainer running
`depthcard publish` on their own model chose to, and closing their PR does not stop the bot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from depthcard.bot.pairs import OPT_OUT_KEY
from depthcard.report.card_format import ParsedCard
from depthcard.report.eval_results import EVAL_RESULTS_PATH
from depthcard.report.markdown import md_code, md_escape, md_fence
from depthcard.report.metrics import METRICS, MISSING, format_value, metric_rows
from depthcard.report.removal import finding
from depthcard.report.reproduce import reproduce_command
from depthcard.schemas.report import AuditReport, ModelRef

Publisher = Literal["bot", "maintainer"]

PR_TITLE = "depthcard: safety-alignment depth audit of {child} ({rev})"
PR_BODY = """\
This pull request adds a **depthcard** section to the model card: an audit of how deep the \
safety alignment of {child} goes, measured against {against}. {who}

**Finding:** {finding}.

- Full report: {report_url}
- What the section means: {card_standard}
- Questions, or a number that looks wrong: {contact}

{changes} {opt_out}

<details>
<summary>Numbers, revisions, how to reproduce, limits</summary>

{numbers}

**Revisions.** {revisions}; analysis version {analysis_version}.

**Reproduce.**

{reproduce}

**Limits.** These numbers describe internal activations of the exact revisions above on the \
listed prompt sets. They are not a safety evaluation: few directions say the alignment is \
concentrated where directional ablation can reach it, not that any attack works, and many \
directions do not show the model is safe.{notes}

</details>
"""
WHO: dict[Publisher, str] = {
    "bot": "The depthcard bot opened it after finding this model and its base on the Hub.",
    "maintainer": "It was opened with `depthcard publish` by whoever ran this audit.",
}
OPT_OUT: dict[Publisher, str] = {
    "bot": "Don't want these? Close this pull request and the bot opens no other on this repo, "
    "or add `{key}: opt-out` to the card's YAML metadata.",
    "maintainer": "To keep the depthcard bot from opening its own pull request here, add "
    "`{key}: opt-out` to the card's YAML metadata.",
}
CHANGES = "Only the section between the `depthcard` markers of README.md changes{added}."
ADDED = "; the pull request also adds {paths}"
AGAINST_BASE = "its base model {base}"
AGAINST_NOTHING = "its own harmless prompts (no base model)"

NUMBER_LINE = "- {label}: {value} — {unit}"
UPDATES_NOTE: dict[Publisher, str] = {
    "bot": "\n\n**Updates.** When a new revision of the model is audited, this same pull request "
    "is updated, with a comment saying what changed.",
    "maintainer": "\n\n**Updates.** Running `depthcard publish` again with a newer audit updates "
    "this same pull request, with a comment saying what changed.",
}
FINETUNE_NOTE = """

**Fine-tune audit.** {third} at `{third_rev}` is a fine-tune of the instruct model \
{child}; all three models were read on the same prompts, and the section says how much of \
{child}'s alignment the fine-tune kept."""
EVAL_RESULTS_NOTE = """

**Evaluation results.** `{path}` is the Hub's format for results on the model page; it \
points at the depthcard benchmark dataset `{benchmark}` and holds the numbers that mean \
something on their own. Delete it from the pull request if you prefer only the section."""
UPDATE_COMMENT = """\
depthcard updated this pull request: {what}.

{changes}

The section and the full report ({report_url}) now describe {model} at `{revision}`."""
CHANGE_LINE = "- {label}: {old} → {new}"


@dataclass(frozen=True)
class PrLinks:
    """What a PR names besides the report: the card standard, a contact, the benchmark."""

    card_standard_url: str
    contact: str
    benchmark_repo: str | None = None  # set: the PR adds .eval_results/depthcard.yaml

    @classmethod
    def for_space(cls, space_url: str, **given: str | None) -> PrLinks:
        """Links of a Space; those not `given` (or None) point into it: its repo ships the
        card standard (space.deploy) and its discussions are the contact."""
        space = space_url.rstrip("/")
        return cls(
            card_standard_url=given.get("card_standard_url")
            or f"{space}/blob/main/docs/card-standard.md",
            contact=given.get("contact") or f"{space}/discussions",
            benchmark_repo=given.get("benchmark_repo"),
        )

    @classmethod
    def from_config(cls, cfg) -> PrLinks:
        """From a `BotConfig`; the benchmark only when its `eval_results` switch is on, so
        PRs add `.eval_results/depthcard.yaml` only then."""
        return cls.for_space(
            cfg.space_url,
            card_standard_url=cfg.card_standard_url,
            contact=cfg.contact,
            benchmark_repo=cfg.benchmark_repo if cfg.eval_results else None,
        )


DEFAULT_LINKS = PrLinks.for_space("https://huggingface.co/spaces/depthcard/depthcard")


def card_model(report: AuditReport) -> ModelRef:
    """The model whose card gets the section: the fine-tune of a three-model audit."""
    return report.models.third or report.models.child


def render_title(report: AuditReport) -> str:
    """The PR title (the commit summary)."""
    model = card_model(report)
    return PR_TITLE.format(child=model.repo_id, rev=(model.revision or "")[:7])


def render_body(
    report: AuditReport,
    url: str,
    links: PrLinks = DEFAULT_LINKS,
    *,
    publisher: Publisher = "bot",
    added: tuple[str, ...] = (),
) -> str:
    """The PR description: what it adds, the finding, links, opt-out, contact; details folded.

    Args:
        report: the validated report.
        url: the report's page (the Space, opening it from the model repo).
        links: card standard, contact, benchmark.
        publisher: who opens the PR: the bot, or a maintainer with `depthcard publish`.
        added: paths the PR adds besides README.md.

    Every string taken from the report goes through `md_escape`, `md_code` or `md_fence`: a
    report.json edited before publishing must not put a heading, link or HTML into the PR.
    """
    m = report.models
    numbers = [
        NUMBER_LINE.format(label=row.label, value=md_escape(row.value), unit=row.unit)
        for row in metric_rows(report)
    ]
    revisions = f"child {md_code(_name(m.child))} at `{m.child.revision}`"
    if m.base is not None:
        revisions = f"base {md_code(_name(m.base))} at `{m.base.revision}`, " + revisions
    paths = ", ".join(md_code(p) for p in added)
    return PR_BODY.format(
        child=md_code(_name(card_model(report))),
        against=AGAINST_BASE.format(base=md_code(_name(m.base))) if m.base else AGAINST_NOTHING,
        who=WHO[publisher],
        finding=finding(report),
        report_url=md_escape(url),
        card_standard=links.card_standard_url,
        contact=links.contact,
        changes=CHANGES.format(added=ADDED.format(paths=paths) if added else ""),
        opt_out=OPT_OUT[publisher].format(key=OPT_OUT_KEY),
        numbers="\n".join(numbers) or "- (no headline numbers)",
        revisions=revisions,
        analysis_version=md_code(report.tool.analysis_version),
        reproduce="\n".join(md_fence(reproduce_command(report), "sh")),
        notes=_notes(report, links, publisher),
    )


def visible_words(body: str) -> int:
    """Words a reader sees without unfolding anything: the body outside `<details>`."""
    shown = body.split("<details>", 1)[0]
    return len(shown.split())


def _notes(report: AuditReport, links: PrLinks, publisher: Publisher) -> str:
    m = report.models
    notes = UPDATES_NOTE[publisher]
    if m.third is not None:
        notes += FINETUNE_NOTE.format(third=md_code(_name(m.third)), third_rev=m.third.revision,
                                      child=md_code(_name(m.child)))  # fmt: skip
    if links.benchmark_repo is not None:
        notes += EVAL_RESULTS_NOTE.format(path=EVAL_RESULTS_PATH, benchmark=links.benchmark_repo)
    return notes


def render_update_comment(previous: ParsedCard | None, report: AuditReport, url: str) -> str:
    """The comment left when the PR is updated: the new revision and the numbers that moved."""
    model = card_model(report)
    rev = (model.revision or "")[:7]
    if previous is None:
        what = f"the section now describes revision `{rev}`"
    else:
        before = previous.third or previous.child
        old_rev = (before.revision or before.content_sha256 or "")[:7]
        what = f"revision `{old_rev}` → `{rev}`"
        if previous.analysis_version != report.tool.analysis_version:
            what += (f", analysis version {md_code(previous.analysis_version)} → "
                     f"{md_code(report.tool.analysis_version)}")  # fmt: skip
    changes = []
    for metric in METRICS:
        if metric.source != "headline" or metric.fmt == "text":
            continue
        new = format_value(metric.fmt, getattr(report.headline, metric.field))
        old = MISSING if previous is None else format_value(
            metric.fmt, getattr(previous.headline, metric.field)
        )  # fmt: skip
        if old != new:
            changes.append(CHANGE_LINE.format(label=metric.label, old=old, new=new))
    return UPDATE_COMMENT.format(
        what=what,
        changes="\n".join(changes) or "No headline number changed.",
        report_url=md_escape(url),
        model=md_code(_name(model)),
        revision=model.revision,
    )


def _name(ref: ModelRef) -> str:
    return (ref.repo_id if ref.source == "hub" else ref.path) or ""
