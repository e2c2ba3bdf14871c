"""Pure functions behind every view of the Space: reports in, tables and Markdown out.

Nothing here imports gradio; `space/app.py` wires these to components. Free text from a
report (paths, verdicts, warnings) may come from an upload, so it is escaped before it goes
into Markdown.
"""

from __future__ import annotations

import re
from pathlib import PurePath
from urllib.parse import quote, unquote

import pandas as pd

from depthcard.report.card import render_card_section
from depthcard.report.leaderboard import NUMBER_COLUMNS, board_cells, params_text
from depthcard.report.markdown import md_escape
from depthcard.report.metrics import metric_rows
from depthcard.report.reproduce import reproduce_command
from depthcard.schemas.report import AuditReport, ModelRef
from depthcard.space.store import ReportEntry, ReportStore, base_id
from depthcard.space.upload import UploadCheck

# The board leads with what a reader decides on: the model, the verdict, the removal cost
# (min k and its KL), then the other headline numbers (report.leaderboard), each the card's
# digits or, where there is no number, the reason in words. The key columns (verdict, l*,
# analysis version, date, report) come before the details so they fit a 1300 px page.
BOARD_FIELDS = (
    "abliteration_min_k", "abliteration_kl", "depth_vs_null", "baseline_refusal_rate",
    "rho_eps_aligned",
)  # fmt: skip
DETAIL_FIELDS = ("depth_p_value", "alignment_depth_score")
_BY_FIELD = {c.field: c.header for c in NUMBER_COLUMNS}
NUMBER_HEADERS = [_BY_FIELD[f] for f in BOARD_FIELDS]
DETAIL_HEADERS = [_BY_FIELD[f] for f in DETAIL_FIELDS]
LEADERBOARD_COLUMNS = [
    "model", "verdict", *NUMBER_HEADERS, "l*", "analysis", "date", "report",
    "audit", "base model", "kind", "params", *DETAIL_HEADERS,
]  # fmt: skip
LEADERBOARD_DATATYPES = [
    "markdown", "str", *["str"] * len(NUMBER_HEADERS), "number", "str", "str", "markdown",
    "str", "markdown", "str", "str", *["str"] * len(DETAIL_HEADERS),
]  # fmt: skip
# Pixel widths, one per column: the first eleven add up to less than a 1300 px page.
LEADERBOARD_WIDTHS = [
    "190px", "125px", "105px", "110px", "100px", "85px", "90px", "40px", "90px", "105px",
    "70px", "170px", "170px", "90px", "70px", "80px", "90px",
]  # fmt: skip
BOARD_ORDER = "newest audit first"
_REPORT_LINK = re.compile(r"\?report=([^)\s]+)")
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


def report_cell(report_id: str) -> str:
    """The report column's Markdown: a link that opens the report in this Space."""
    return f"[open](?report={quote(report_id, safe='/@')})"


def report_of_cell(cell: str | None) -> str | None:
    """The report id in a report cell (`report_cell`), or None."""
    found = _REPORT_LINK.search(cell or "")
    return unquote(found.group(1)) if found else None


def _audit_label(entry: ReportEntry, group: list[ReportEntry]) -> str:
    """Which audit of its model revision a row is: the only one, or the latest or an earlier
    one of several settings, with the settings that differ."""
    if len(group) == 1:
        return "only audit"
    configs = [e.report.config.model_dump() for e in group]
    mine = entry.report.config.model_dump()
    differ = [k for k in mine if any(c.get(k) != mine[k] for c in configs)]
    if any(e.report.tool.analysis_version != entry.report.tool.analysis_version for e in group):
        differ.insert(0, "analysis")
    shown = ", ".join(
        f"{k} {entry.report.tool.analysis_version if k == 'analysis' else mine[k]}"
        for k in differ[:3]
    )
    which = "latest" if "@" not in entry.id else "earlier"
    return f"{which} of {len(group)} settings" + (f": {shown}" if shown else "")


def leaderboard_row(entry: ReportEntry, group: list[ReportEntry] | None = None) -> dict:
    """One leaderboard row: the model, verdict, the numbers (or why none), context."""
    r = entry.report
    cells = board_cells(r)
    return {
        "model": model_link(r.models.third or r.models.child),
        "verdict": r.verdict.code,
        **{h: cells[h] for h in NUMBER_HEADERS},
        "l*": r.headline.layer,
        "analysis": r.tool.analysis_version,
        "date": r.created_at.strftime("%Y-%m-%d"),
        "report": report_cell(entry.id),
        "audit": _audit_label(entry, group or [entry]),
        "base model": model_link(r.models.base),
        "kind": r.kind,
        "params": params_text(r.models.child.num_parameters),
        **{h: cells[h] for h in DETAIL_HEADERS},
    }


def leaderboard(store: ReportStore) -> pd.DataFrame:
    """The leaderboard table, newest audit first; the visitor re-sorts it.

    Newest first rather than deepest first: the depth may be null-level and min k may be
    absent, so no headline number orders every row. Each audit setting of one model revision
    is its own row (space.store keeps them apart), labelled in the "audit" column.
    """
    groups: dict[str, list[ReportEntry]] = {}
    for e in store.entries.values():
        groups.setdefault(base_id(e.id), []).append(e)
    rows = [leaderboard_row(e, groups[base_id(e.id)]) for e in store.entries.values()]
    stamps = [e.report.created_at for e in store.entries.values()]
    frame = pd.DataFrame(rows, columns=LEADERBOARD_COLUMNS, dtype=object)
    frame["_at"] = stamps
    frame = frame.sort_values("_at", ascending=False, kind="stable").drop(columns="_at")
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
