"""Everything the report view shows, assembled from one report by pure functions.

`report_view(entry)` returns a `ReportView`: Markdown texts, the headline table, one
long-format frame per interactive plot (space.series) and the cross-domain heatmap as a
matplotlib figure (a heatmap has no hover-friendly line form). `space/app.py` only maps the
fields onto components, so the whole view is testable without gradio.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from depthcard.report.markdown import md_code
from depthcard.report.plots import plot_cross_domain
from depthcard.report.public_files import model_report_url
from depthcard.report.reproduce import reproduce_command
from depthcard.report.samples import read_samples
from depthcard.schemas.report import AuditReport
from depthcard.schemas.sections import JudgedAnswer
from depthcard.space import series
from depthcard.space.compare import COMPARE_COLUMNS, compare_frame, missing_from
from depthcard.space.handlers import (
    card_markdown,
    headline_table,
    md_text,
    notes_markdown,
    provenance_markdown,
    report_summary,
)
from depthcard.space.model_report import ModelReport
from depthcard.space.store import ReportEntry, ReportStore, samples_path
from depthcard.space.store import report_id as id_of_report


@dataclass(frozen=True)
class PlotSpec:
    """One interactive plot: its frame builder (space.series), axes, titles and caption.

    The x axis (a layer or a number of directions) is a whole number: the app draws it as
    ordered categories (`integer_axis`), so its ticks are the integers in the data, never 1.2.
    """

    frame: Callable[[AuditReport], pd.DataFrame]
    x: str
    y: str
    title: str
    x_title: str
    y_title: str
    caption: str = ""


PLOTS: dict[str, PlotSpec] = {
    "rank": PlotSpec(
        series.rank_frame, "layer", "rho", "Effective rank ρ_ε per layer (headline ε)",
        "layer l", "ρ_ε = rank_ε / d", series.RANK_CAPTION,
    ),
    "recovery": PlotSpec(
        series.recovery_frame, "layer", "recovery", "Refusal-direction recovery per layer",
        "layer l", "|cos| (0–1)", "|cos| between the top direction of M_DiD and r_l.",
    ),
    "projection": PlotSpec(
        series.projection_frame, "layer", "projection",
        "Projections s_l on the alignment direction", "layer l", "s_l (activation units)",
    ),
    "erosion": PlotSpec(
        series.erosion_frame, "layer", "erosion", "Erosion per layer (third model)",
        "layer l", "e_l (1 = alignment kept)",
    ),
    "depth": PlotSpec(
        series.depth_frame, "layer", "value", "Alignment depth per layer", "layer l",
        "fraction (0–1)",
    ),
    "ablation_refusal": PlotSpec(
        series.ablation_shares_frame, "k", "share",
        "Abliteration: judged answers against k (attack basis)", "k, directions ablated",
        "share of answers (0–1)",
        "shares of the judged answers at each judged k on the attack basis (refusal, "
        "compliance, broken) and the svd basis's refusal; min k is the first attack k whose "
        "refusal share is under the threshold line with few broken answers.",
    ),
    "ablation_kl": PlotSpec(
        series.ablation_frame, "k", "kl", "Abliteration: first-token KL against k",
        "k, directions ablated", "KL (nats)",
    ),
    "species": PlotSpec(
        series.species_frame, "layer", "count", "Mode species alive per layer", "layer l",
        "tracks / modes",
    ),
}  # fmt: skip
PLOT_KEYS = tuple(PLOTS)
NOT_FOUND = (
    "No report {id} in this Space. Pick one on the leaderboard; reports are listed by "
    "`org/model/child revision`."
)
SHOWN_ID_CHARS = 120  # of an unknown `?report=` value echoed back
NO_REPORT = "Choose a report on the leaderboard, or upload one under **Validate**."
# report section -> plot keys that need it, for the note under the plots
NEEDS = {
    "ablation": ("ablation_refusal", "ablation_kl"),
    "depth": ("depth",),
    "modes": ("species",),
    "cross_domain": ("cross_domain",),
}


@dataclass
class ReportView:
    """The report view's content; `found` is False when there is nothing to show."""

    found: bool
    summary: str
    headline: pd.DataFrame = field(default_factory=pd.DataFrame)
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    heatmap: Figure | None = None
    plots_note: str = ""
    provenance: str = ""
    notes: str = ""
    reproduce: str = ""
    card: str = ""


def plot_frame(entry: ReportEntry, key: str) -> pd.DataFrame:
    """The long-format frame of plot `key` for one report (empty when it has no data)."""
    return PLOTS[key].frame(entry.report)


def integer_axis(frame: pd.DataFrame, x: str) -> tuple[pd.DataFrame, list[str]]:
    """`frame` with its whole-number column `x` as text, and the texts in numeric order.

    Drawn as ordered categories, the axis has one tick per value in the data, each an
    integer, where a numeric axis would add ticks at 1.2, 1.4, …
    """
    order = [str(v) for v in sorted(frame[x].unique())]
    return frame.assign(**{x: frame[x].astype(int).astype(str)}), order


def plots_note(entry: ReportEntry, frames: dict[str, pd.DataFrame], heatmap) -> str:
    """How to read the drawn plots (their captions), then one line per plot not drawn, with
    the report's own reason when it gives one."""
    reasons = {a.section: a.reason for a in entry.report.absent}
    missing = [key for key, frame in frames.items() if frame.empty]
    if heatmap is None:
        missing.append("cross_domain")
    lines = []
    for key in missing:
        section = next((s for s, keys in NEEDS.items() if key in keys), None)
        reason = reasons.get(section or "", "the report has no data for it")
        lines.append(f"- *{key.replace('_', ' ')}*: not drawn, {md_text(reason)}")
    # Under the plots rather than in them: a plot's own caption is cut by its fixed height.
    keys = [k for k, frame in frames.items() if not frame.empty and PLOTS[k].caption]
    reading = [f"- *{PLOTS[k].title}*: {PLOTS[k].caption}" for k in keys]
    parts = []
    if reading:
        parts.append("\n".join(["**Reading the plots**", *reading]))
    if lines:
        parts.append("\n".join(["**Plots not drawn**", *lines]))
    return "\n\n".join(parts)


def report_view(entry: ReportEntry | None, report_url: str | None = None) -> ReportView:
    """The full view of one report, or an empty view telling the reader what to do."""
    if entry is None:
        return ReportView(found=False, summary=NO_REPORT)
    report = entry.report
    frames = {key: plot_frame(entry, key) for key in PLOT_KEYS}
    heatmap = plot_cross_domain(report)
    try:
        card = card_markdown(report, report_url=report_url)
    except ValueError as exc:
        # An uploaded report can hold an audit key the card format refuses; say so instead.
        card = f"The card section cannot be rendered: {md_text(exc)}"
    return ReportView(
        found=True,
        summary=report_summary(entry),
        headline=headline_table(report),
        frames=frames,
        heatmap=heatmap,
        plots_note=plots_note(entry, frames, heatmap),
        provenance=provenance_markdown(report),
        notes=notes_markdown(report),
        reproduce=reproduce_command(report),
        card=card,
    )


def find_entry(
    report_id: str | None, store: ReportStore, extra: dict[str, ReportEntry] | None = None
) -> ReportEntry | None:
    """The entry with this id among the session's own reports (uploads, live runs) or the
    store's."""
    if not report_id:
        return None
    report_id = report_id.strip().strip("/")
    return (extra or {}).get(report_id) or store.get(report_id)


def open_report(
    report_id: str | None,
    store: ReportStore,
    extra: dict[str, ReportEntry] | None = None,
    report_url: str | None = None,
) -> ReportView:
    """The view for `report_id`; an unknown id gives a not-found message, never an error."""
    entry = find_entry(report_id, store, extra)
    if entry is None and report_id:
        # A stranger writes the link: echoed as one code span (md_code turns a backtick into
        # `'`), so no part of it can become a link, an image or HTML.
        cut = "…" if len(report_id) > SHOWN_ID_CHARS else ""
        shown = md_code(report_id[:SHOWN_ID_CHARS] + cut)
        return ReportView(found=False, summary=NOT_FOUND.format(id=shown))
    return report_view(entry, report_url=report_url)


def report_choices(store: ReportStore, extra: dict[str, ReportEntry] | None = None) -> list[str]:
    """Ids for the report picker: the session's own reports first, then the store's."""
    return [*(extra or {}), *store.ids()]


def report_link(base_url: str | None, entry: ReportEntry | None) -> str | None:
    """The Space page a card section links to: the model's own report (`?model=org/name`,
    read from its repo) for a Hub model, `?report={id}` for a local one; None without a base
    URL or a report."""
    if not base_url or entry is None:
        return None
    model = entry.report.models.third or entry.report.models.child
    if model.source == "hub":
        return model_report_url(base_url, model.repo_id)
    return f"{base_url.rstrip('/')}/?report={entry.id}"


def model_view(found: ModelReport, base_url: str | None) -> ReportView:
    """The view a `?model=` link opens: the report with a line saying where it was read, or
    the reason there is none."""
    if found.entry is None:
        return ReportView(found=False, summary=found.note)
    view = report_view(found.entry, report_url=report_link(base_url, found.entry))
    view.summary = f"{found.note}\n\n{view.summary}"
    return view


def session_entry(report: AuditReport, prefix: str, source: str | Path) -> ReportEntry:
    """A report the session brought itself (an upload, a live run), under `prefix/{id}` so it
    never shadows a published report."""
    return ReportEntry(id=f"{prefix}/{id_of_report(report)}", report=report, source=Path(source))


def compare_view(
    report_ids: list[str] | None,
    metric: str,
    relative: bool,
    store: ReportStore,
    extra: dict[str, ReportEntry] | None = None,
) -> tuple[pd.DataFrame, str]:
    """(long-format frame with one line per report, Markdown note) for the Compare tab."""
    entries = [find_entry(i, store, extra) for i in report_ids or []]
    found = [(e.id, e.report) for e in entries if e is not None]
    if len(found) < 2:
        return pd.DataFrame(columns=COMPARE_COLUMNS), "Choose two or more reports to overlay."
    frame = compare_frame(found, metric, relative=relative)
    missing = missing_from(found, metric)
    note = ""
    if missing:
        names = ", ".join(f"`{md_text(m)}`" for m in missing)
        note = f"No data for *{md_text(metric)}* in {names}."
    return frame, note


SAMPLE_COLUMNS = ["prompt", "answer", "class", "evidence"]


def _evidence(row: JudgedAnswer) -> str:
    ev = row.evidence
    parts = [ev.rule, f"repetition {ev.repetition:.2f}"]
    if ev.phrase:
        parts.append(f"phrase “{ev.phrase}”")
    if ev.nll is not None:
        limit = "" if ev.nll_threshold is None else f" (limit {ev.nll_threshold:.2f})"
        parts.append(f"NLL {ev.nll:.2f}{limit}")
    return "; ".join(parts)


def sample_points(entry: ReportEntry | None) -> list[str]:
    """The curve points with kept answers, as choices ("attack k=1"); [] without samples."""
    path = None if entry is None else samples_path(entry)
    if path is None:
        return []
    seen = dict.fromkeys(f"{r.basis} k={r.k}" for r in read_samples(path))
    return list(seen)


def samples_table(entry: ReportEntry | None, point: str | None) -> pd.DataFrame:
    """The answers behind one curve point ("basis k=N"): prompt, answer, class, evidence."""
    path = None if entry is None else samples_path(entry)
    if path is None or not point:
        return pd.DataFrame(columns=SAMPLE_COLUMNS)
    basis, _, k = point.partition(" k=")
    rows = [r for r in read_samples(path) if r.basis == basis and str(r.k) == k]
    cells = [[r.prompt, r.answer, r.label, _evidence(r)] for r in rows]
    return pd.DataFrame(cells, columns=SAMPLE_COLUMNS)
