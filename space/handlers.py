"""Pure functions behind every view of the Space: reports in, tables and Markdown out.

Nothing here imports gradio; `space/app.py` wires these to components. Free text from a
report (paths, verdicts, warnings) may come from an upload, so it is escaped before it goes
into Markdown.
"""

from __future__ import annotations

import re
from pathlib import PurePath

import pandas as pd

from depthcard.report.card import render_card_section
from depthcard.report.leaderboard import NUMBER_COLUMNS, board_numbers, params_text
from depthcard.report.markdown import md_escape
from depthcard.report.metrics import metric_rows
from depthcard.report.reproduce import reproduce_command
from depthcard.schemas.report import AuditReport, ModelRef
from depthcard.space.store import ReportEntry, ReportStore
from depthcard.space.upload import UploadCheck

# The board leads with the numbers people compare (report.leaderboard), each a number rounded
# as the card rounds it, so Gradio's own column sort orders by value. The report id comes last:
# a selected row opens it, whatever order the visitor sorted or filtered the rows into.
NUMBER_HEADERS = [c.header for c in NUMBER_COLUMNS]
LEADERBOARD_COLUMNS = [
    "model",
    *NUMBER_HEADERS,
    "base model",
    "verdict",
    "kind",
    "params",
    "l*",
    "analysis",
    "date",
    "report",
]
LEADERBOARD_DATATYPES = [
    "markdown", *["number"] * len(NUMBER_HEADERS), "markdown",
    "str", "str", "str", "number", "str", "str", "str",
]  # fmt: skip
HUB_URL = "https://huggingface.co"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
ERROR_COLUMNS = ["field path", "problem", "value"]


def md_text(value: object) -> str:
    """Free text made safe for one line of Markdown (`report.markdown.md_escape`): no HTML,
    links, images, code spans or table breaks."""
    return md_escape(str(value))


def model_name(ref: ModelRef | None) -> str:
    """Hub repo id, or the local folder path; '—' when absent."""
    if ref is None:
        return "—"
    return ref.repo_id if ref.source == "hub" else ref.path


def model_link(ref: ModelRef | None) -> str:
    """Markdown: a Hub model as a link to its page; a local folder as plain (escaped) text."""
    if ref is not None and ref.source == "hub" and _REPO_ID.match(ref.repo_id or ""):
        return f"[{ref.repo_id}]({HUB_URL}/{ref.repo_id})"
    if ref is not None and ref.source == "local":
        # the folder's name: the audit machine's full path means nothing to a visitor
        return md_text(f"{PurePath(ref.path).name} (local)")
    return md_text(model_name(ref))


# ---- leaderboard ----------------------------------------------------------------------------


def leaderboard_row(entry: ReportEntry) -> dict:
    """One leaderboard row: the model, the leading numbers as the card rounds them, context."""
    r = entry.report
    return {
        "model": model_link(r.models.third or r.models.child),
        **board_numbers(r),
        "base model": model_link(r.models.base),
        "verdict": r.verdict.code,
        "kind": r.kind,
        "params": params_text(r.models.child.num_parameters),
        "l*": r.headline.layer,
        "analysis": r.tool.analysis_version,
        "date": r.created_at.strftime("%Y-%m-%d"),
        "report": entry.id,
    }


def leaderboard(store: ReportStore) -> pd.DataFrame:
    """The leaderboard table, deepest first (unmeasured depth last); the visitor re-sorts it.

    Object columns keep a count an int and a missing number None (an empty cell, not NaN).
    """
    rows = [leaderboard_row(e) for e in store.entries.values()]
    frame = pd.DataFrame(rows, columns=LEADERBOARD_COLUMNS, dtype=object)
    frame = frame.sort_values(
        NUMBER_HEADERS[0], ascending=False, na_position="last", kind="stable", key=pd.to_numeric
    )
    return frame.reset_index(drop=True)


# ---- report view ----------------------------------------------------------------------------


def headline_table(report: AuditReport) -> pd.DataFrame:
    """The card's headline rows: quantity, value, unit and one-line meaning (report.metrics)."""
    rows = [[r.label, r.value, r.unit, r.meaning] for r in metric_rows(report)]
    return pd.DataFrame(rows, columns=["quantity", "value", "unit", "meaning"])


def report_summary(entry: ReportEntry) -> str:
    """Markdown heading of the report view: models, verdict, selected layer."""
    r = entry.report
    base = model_name(r.models.base)
    lines = [
        f"## {md_text(model_name(r.models.child))}",
        f"**Report** `{md_text(entry.id)}` · **kind** {r.kind} · **base** {md_text(base)}",
        "",
        f"**Verdict** (`{r.verdict.code}`): {md_text(r.verdict.text)}",
        "",
        f"Headline at layer l* = {r.selected_layer.layer} of 0..{len(r.layers) - 1} "
        f"(rule: {r.selected_layer.rule}; {md_text(r.selected_layer.reason)})",
    ]
    return "\n".join(lines)


def provenance_markdown(report: AuditReport) -> str:
    """Exact revisions, prompt-set hashes, versions, environment and stage timings."""
    t, env = report.tool, report.environment
    lines = ["| role | model | revision / content sha256 | architecture | params | L | d | dtype |"]
    lines.append("|---|---|---|---|---|---|---|---|")
    for ref in (report.models.base, report.models.child, report.models.third):
        if ref is not None:
            pin = ref.revision if ref.source == "hub" else f"sha256 {ref.content_sha256}"
            lines.append(
                f"| {ref.role} | {md_text(model_name(ref))} | `{pin}` "
                f"| {md_text(ref.architecture)} "
                f"| {ref.num_parameters:,} | {ref.num_layers} | {ref.hidden_size} "
                f"| {md_text(ref.dtype)} |"
            )
    lines += [
        "",
        "| prompt set | role | version | sha256 | used / count |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {md_text(p.name)} | {p.role} | {p.version} | `{p.sha256}` | {p.used} / {p.count} |"
        for p in report.prompt_sets
    ]
    git = f", git `{md_text(t.git_revision)}`" if t.git_revision else ""
    lines += [
        "",
        f"**Tool** depthcard {md_text(t.version)}{git} · **analysis version** "
        f"`{md_text(t.analysis_version)}` · **report schema** {report.schema_version} · "
        f"**audit key** `{md_text(report.audit_key)}`",
        "",
        f"**Environment** {md_text(env.device)} · Python {md_text(env.python)} · torch "
        f"{md_text(env.torch)} · transformers {md_text(env.transformers)} · "
        f"{md_text(env.platform)} · written {report.created_at:%Y-%m-%d %H:%M} UTC",
        "",
        "| stage | seconds | peak memory |",
        "|---|---|---|",
    ]
    lines += [
        f"| {md_text(s.name)} | {s.seconds:.1f} | {s.peak_memory_bytes / 2**20:,.0f} MiB "
        f"({s.memory_kind}) |"
        for s in report.stages
    ]
    return "\n".join(lines)


def notes_markdown(report: AuditReport) -> str:
    """Warnings, and the sections this audit did not compute with the reason for each."""
    lines = ["### Warnings"]
    lines += [f"- {md_text(w)}" for w in report.warnings] or ["None."]
    lines += ["", "### Not measured in this audit"]
    lines += [f"- **{md_text(a.section)}**: {md_text(a.reason)}" for a in report.absent] or [
        "Every section is present."
    ]
    return "\n".join(lines)


def card_markdown(report: AuditReport, report_url: str | None = None) -> str:
    """The model-card section this report publishes (report.card), as Markdown source."""
    return render_card_section(
        report, report_url=report_url, reproduce_command=reproduce_command(report)
    )


# ---- validate -------------------------------------------------------------------------------


def error_table(check: UploadCheck) -> pd.DataFrame:
    """The located field errors of an upload check as a table."""
    rows = [[e.path, e.problem, e.value] for e in check.errors]
    return pd.DataFrame(rows, columns=ERROR_COLUMNS)


def check_markdown(check: UploadCheck) -> str:
    """The upload check's message, marked as valid or not, with a note when errors are cut."""
    # ✓/✗ rather than emoji: they render with the fonts every browser has.
    mark = "✓" if check.ok else "✗"
    text = f"{mark} {md_text(check.message)}"
    if check.total_errors > len(check.errors):
        text += f" Showing the first {len(check.errors)} of {check.total_errors}."
    return text
