"""Pure functions behind every view of the Space: reports in, tables and Markdown out.

Nothing here imports gradio; `space/app.py` wires these to components. Free text from a
report (paths, verdicts, warnings) may come from an upload, so it is escaped before it goes
into Markdown.
"""

from __future__ import annotations

import pandas as pd

from depthcard.report.card import render_card_section
from depthcard.report.metrics import METRICS, metric_row, metric_rows
from depthcard.report.reproduce import reproduce_command
from depthcard.schemas.report import AuditReport, ModelRef
from depthcard.space.store import ReportEntry, ReportStore, size_bucket
from depthcard.space.upload import UploadCheck

ALL = "all"
# The headline columns are the metric table's labels (report.metrics), in its order.
HEADLINE_COLUMNS = [m.label for m in METRICS if m.source == "headline"]
LEADERBOARD_COLUMNS = [
    "report",
    "child model",
    "base model",
    "org",
    "size",
    "params (B)",
    "kind",
    "verdict",
    "l*",
    *HEADLINE_COLUMNS,
    "analysis",
    "date",
]
SORTABLE = LEADERBOARD_COLUMNS[1:]
ERROR_COLUMNS = ["field path", "problem", "value"]


def md_text(value: object) -> str:
    """Free text made safe for one line of Markdown: no HTML, no table breaks."""
    text = " ".join(str(value).split())
    for raw, safe in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("|", "\\|")):
        text = text.replace(raw, safe)
    return text


def model_name(ref: ModelRef | None) -> str:
    """Hub repo id, or the local folder path; '—' when absent."""
    if ref is None:
        return "—"
    return ref.repo_id if ref.source == "hub" else ref.path


# ---- leaderboard ----------------------------------------------------------------------------


def leaderboard_row(entry: ReportEntry) -> dict:
    """One leaderboard row: identity, size, verdict and the raw headline values (for sorting)."""
    r, h = entry.report, entry.report.headline
    return {
        "report": entry.id,
        "child model": model_name(r.models.child),
        "base model": model_name(r.models.base),
        "org": entry.org,
        "size": entry.size,
        "params (B)": round(r.models.child.num_parameters / 1e9, 3),
        "kind": r.kind,
        "verdict": r.verdict.code,
        "l*": h.layer,
        **{m.label: getattr(h, m.field) for m in METRICS if m.source == "headline"},
        "analysis": r.tool.analysis_version,
        "date": r.created_at.strftime("%Y-%m-%d"),
    }


def leaderboard_cells(report: AuditReport) -> dict[str, str | None]:
    """The headline columns as the card writes them; None where the card has no row."""
    cells: dict[str, str | None] = dict.fromkeys(HEADLINE_COLUMNS)
    for m in METRICS:
        row = metric_row(report, m) if m.source == "headline" else None
        if row is not None and row.number != "—":
            cells[m.label] = row.value
    return cells


def filter_choices(store: ReportStore) -> dict[str, list[str]]:
    """Choices of the leaderboard filters: 'all' first, then the values present."""
    entries = list(store.entries.values())
    sizes = {e.size for e in entries}
    ordered_sizes = [s for s in _size_order() if s in sizes]
    return {
        "org": [ALL, *sorted({e.org for e in entries})],
        "size": [ALL, *ordered_sizes],
        "verdict": [ALL, *sorted({e.report.verdict.code for e in entries})],
    }


def _size_order() -> list[str]:
    return [size_bucket(int(n)) for n in (1e8, 2e9, 5e9, 2e10, 1e11)]


def leaderboard(
    store: ReportStore,
    org: str = ALL,
    size: str = ALL,
    verdict: str = ALL,
    sort_by: str = "ρ_ε aligned",
    descending: bool = False,
) -> pd.DataFrame:
    """The leaderboard table, filtered and sorted (missing values always last).

    Raises:
        ValueError: `sort_by` is not a column.
    """
    if sort_by not in SORTABLE:
        raise ValueError(f"cannot sort by {sort_by!r}; choose one of {SORTABLE}")
    entries = [
        e
        for e in store.entries.values()
        if org in (ALL, e.org) and size in (ALL, e.size) and verdict in (ALL, e.report.verdict.code)
    ]
    frame = pd.DataFrame([leaderboard_row(e) for e in entries], columns=LEADERBOARD_COLUMNS)
    if frame.empty:
        return frame
    # Sort on the raw values, then show the card's formatted text in the headline columns.
    frame = frame.sort_values(sort_by, ascending=not descending, na_position="last", kind="stable")
    shown = pd.DataFrame([leaderboard_cells(entries[i].report) for i in frame.index])
    frame = frame.reset_index(drop=True)
    frame[HEADLINE_COLUMNS] = shown[HEADLINE_COLUMNS].astype(object)
    return frame


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
