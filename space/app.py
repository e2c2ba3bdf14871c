"""The depthcard Space: leaderboard, report view, compare, validate and a live CPU audit.

Only gradio wiring lives here; every value shown comes from the pure functions of
`space.handlers`, `space.report_view` and `space.compare`. Reports come from a local folder
(the default, including the demo audit) or from the results dataset repo on the Hub. A card's
link `?model={org}/{name}` opens that model's own report, read from its repo
(space.model_report); `?report={org}/{model}/{revision}` opens one report of the store.
Reports a visitor brings (uploads, live runs) live in that visitor's session state only, so
one visitor never changes what another sees.

Run locally with `depthcard space` (or `python -m depthcard.space.app`); on a Hub Space the root
`app.py` written by `space.deploy` calls `main()`.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
from huggingface_hub import HfApi

from depthcard.schemas.report import AuditConfig
from depthcard.space import handlers
from depthcard.space import report_view as rv
from depthcard.space.compare import DEFAULT_METRIC, METRICS, x_title
from depthcard.space.deploy import RESULTS_VARIABLE
from depthcard.space.live_run import LIVE_CONFIG, LiveRunBusy, LiveRunError, demo_pair, live_audit
from depthcard.space.model_report import ModelReports
from depthcard.space.store import ReportEntry, ReportStore, load_store, refresh
from depthcard.space.upload import check_upload

log = logging.getLogger(__name__)

TITLE = "depthcard: how deep does safety alignment go?"
INTRO = (
    "# depthcard\n"
    "How deep the safety alignment of an open-weight model goes, measured by comparing the "
    "instruct model's residual stream with its base model's, layer by layer. Pick a pair on "
    "the **Leaderboard**, overlay several in **Compare**, check a `report.json` in "
    "**Validate**, or audit the bundled calibration pair live in **Run**."
)
# Gradio refuses larger uploads itself; below this our own check explains the size limit.
MAX_UPLOAD = "64mb"
# Events waiting in the whole queue (gradio counts every event type together); more are
# refused with "queue full". Live runs never wait in it (see `_run_tab`), so a flood of Run
# clicks cannot fill it and lock Compare and Validate out.
MAX_QUEUE = 16
CONCURRENCY = 4  # handlers of each other event run at once
UNEXPECTED = "Something went wrong on the server ({kind}); the details are in the Space's log."
RUN_INTRO = (
    "Audits the calibration pair bundled with depthcard (two tiny models trained so that the "
    "instruct one refuses) on this machine's CPU, in a separate process, then opens the "
    "report. It takes about a minute; one run at a time."
)
RUN_BUSY = (
    "Another visitor's live audit is running (one at a time on this CPU); try again in a "
    "minute. The leaderboard, Compare and Validate work meanwhile."
)
BOARD_NOTE = (
    "Numbers as the model cards print them; where there is none, the cell says why. min k is "
    "the fewest directions whose ablation removes refusal without breaking the model, and KL "
    "what that costs (\"not reached\": refusal stayed with every k tried; \"only by "
    "breaking\": it went only with too many broken answers). The depth is relative to its "
    "label-permutation null, (score − null mean)/(1 − null mean), averaged over the analysis "
    "window of layers, and shown only where p < 0.05 from at least 100 permutations; else the "
    f"cell says \"not above null\". Rows are sorted {handlers.BOARD_ORDER}; each audit setting "
    "of a model "
    "revision is its own row (see \"audit\"). Compare only rows with the same analysis "
    "version. Click a header to sort; the filter icon searches a column."
)
HEADLINE_MAX_HEIGHT = 4000  # px: far above the tallest headline table (about 12 rows)
REFRESH_SECONDS = 300.0  # how often the leaderboard reads the reports again
# System fonts only: the default theme fetches web fonts, which a Space need not wait for.
THEME = gr.themes.Base(
    font=["ui-sans-serif", "system-ui", "sans-serif"],
    font_mono=["ui-monospace", "monospace"],
)


def _safe(fn: Callable) -> Callable:
    """Turn an unexpected exception into a short message in the page (no traceback there)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as exc:
            log.exception("handler %s failed", fn.__name__)
            message = UNEXPECTED.format(kind=type(exc).__name__)
            raise gr.Error(message, print_exception=False) from None

    return wrapper


class ReportPanel:
    """The components of the report view, built in order, and the updates that fill them."""

    def __init__(self) -> None:
        self.summary = gr.Markdown(rv.NO_REPORT, elem_id="report-summary")
        self.headline = gr.Dataframe(
            label="Headline at l* (one-line meaning per number)",
            interactive=False,
            wrap=True,
            visible=False,
            column_widths=["17%", "20%", "20%", "43%"],
            # Every headline in view: no inner scroll box (gradio's default is 500 px).
            max_height=HEADLINE_MAX_HEIGHT,
            elem_id="headline",
        )
        self.plots: dict[str, gr.LinePlot] = {}
        with gr.Row():
            self._plot("rank")
            self._plot("recovery")
        with gr.Row():
            self._plot("projection")
            self._plot("depth")
        with gr.Row():
            self._plot("ablation_refusal")
            self._plot("ablation_kl")
        with gr.Row():
            self._plot("erosion")
            self._plot("species")
        self.heatmap = gr.Plot(label="Cross-domain shared directions", visible=False)
        self.plots_note = gr.Markdown()
        with gr.Accordion("Provenance: revisions, prompt sets, versions", open=False):
            self.provenance = gr.Markdown()
        self.notes = gr.Markdown(elem_id="report-notes")
        self.reproduce = gr.Code(label="Reproduce this audit", language="shell", visible=False)
        with gr.Accordion("Card section this report publishes (Markdown)", open=False):
            self.card = gr.Code(language="markdown")

    def _plot(self, key: str) -> None:
        spec = rv.PLOTS[key]
        self.plots[key] = gr.LinePlot(
            x=spec.x,
            y=spec.y,
            color="series",
            title=spec.title,
            x_title=spec.x_title,
            y_title=spec.y_title,
            tooltip="all",
            height=300,
            visible=False,
            elem_classes=["depthcard-plot"],
            elem_id=f"plot-{key.replace('_', '-')}",
        )

    @property
    def outputs(self) -> list[gr.components.Component]:
        """Components in the order `updates` fills them."""
        return [
            self.summary,
            self.headline,
            *(self.plots[key] for key in rv.PLOT_KEYS),
            self.heatmap,
            self.plots_note,
            self.provenance,
            self.notes,
            self.reproduce,
            self.card,
        ]

    @staticmethod
    def _plot_update(key: str, frame) -> gr.LinePlot:
        """A plot with data: its whole-number x axis drawn as ordered categories."""
        shown, order = rv.integer_axis(frame, rv.PLOTS[key].x)
        return gr.LinePlot(value=shown, sort=order, visible=True)

    @staticmethod
    def updates(view: rv.ReportView) -> list:
        """Component updates for a view; parts without data are hidden."""
        plots = [
            ReportPanel._plot_update(key, view.frames[key])
            if key in view.frames and not view.frames[key].empty
            else gr.LinePlot(value=None, visible=False)
            for key in rv.PLOT_KEYS
        ]
        return [
            view.summary,
            gr.Dataframe(value=view.headline, visible=view.found),
            *plots,
            gr.Plot(value=view.heatmap, visible=view.heatmap is not None),
            view.plots_note,
            view.provenance,
            view.notes,
            gr.Code(value=view.reproduce, visible=view.found),
            view.card,
        ]


@dataclass
class Shared:
    """What the tabs share: the reports, the visitor's own reports, and the report view.

    `picker` and `panel` belong to the Report tab; they are set once it is built, before any
    event is wired, because the other tabs open their reports there.
    """

    store: ReportStore
    space_url: str | None
    extra: gr.State  # this visitor's uploads and live runs: {report id: ReportEntry}
    tabs: gr.Tabs
    models: ModelReports  # `?model=` reads, remembered a while
    picker: gr.Dropdown | None = None
    panel: ReportPanel | None = None

    def view_for(self, report_id: str | None, extra: dict[str, ReportEntry]) -> list:
        """Updates of the report panel for one report (or for none)."""
        url = rv.report_link(self.space_url, rv.find_entry(report_id, self.store, extra))
        view = rv.open_report(report_id, self.store, extra, report_url=url)
        return ReportPanel.updates(view)

    def opened_model(self, model: str, extra: dict[str, ReportEntry]) -> list:
        """Switch to the Report tab showing `model`'s own report (`?model=`)."""
        found = self.models.read(model)
        picked = found.entry.id if found.entry else None
        view = rv.model_view(found, self.space_url)
        return [
            gr.Tabs(selected="report"),
            self.picker_update(extra, picked),
            *ReportPanel.updates(view),
        ]

    def picker_update(self, extra: dict[str, ReportEntry], value: str | None = None):
        """The report picker's choices; without `value` the current choice stays."""
        choices = rv.report_choices(self.store, extra)
        if value is None:
            return gr.Dropdown(choices=choices)
        return gr.Dropdown(choices=choices, value=value)

    def opened(self, report_id: str | None, extra: dict[str, ReportEntry]) -> list:
        """Switch to the Report tab showing `report_id`; the values of `open_outputs`."""
        return [
            gr.Tabs(selected="report"),
            self.picker_update(extra, report_id),
            *self.view_for(report_id, extra),
        ]

    @property
    def open_outputs(self) -> list[gr.components.Component]:
        """The components `opened` fills: the tabs, the picker and the report panel."""
        return [self.tabs, self.picker, *self.panel.outputs]


def build_app(
    store: ReportStore,
    *,
    space_url: str | None = None,
    live_config: AuditConfig = LIVE_CONFIG,
    live_args: tuple[str, ...] = (),
    refresh_seconds: float = REFRESH_SECONDS,
    hub_api: HfApi | None = None,
) -> gr.Blocks:
    """The Blocks app over `store`.

    Args:
        store: the reports the leaderboard lists.
        space_url: public URL of the Space (e.g. https://org-depthcard.hf.space), so the card
            sections shown link back to their report's page.
        live_config: the Run tab's audit settings (tests pass quicker ones).
        live_args: `depthcard audit` options that change no number (e.g. --no-plots).
        refresh_seconds: read the store's source again this often (0: never).
        hub_api: the client `?model=` links read model repos with (default: `HfApi()`,
            which follows HF_ENDPOINT and the environment's token).
    """
    models = ModelReports(hub_api or HfApi(), store)
    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        extra = gr.State({})
        last_upload = gr.State(None)
        gr.Markdown(INTRO)
        # Every tab's components are built first, in page order; the events are wired after,
        # because the Leaderboard opens its rows in the Report tab built after it.
        with gr.Tabs(selected="leaderboard") as tabs:
            ui = Shared(store, space_url, extra, tabs, models)
            with gr.Tab("Leaderboard", id="leaderboard"):
                wire_board = _leaderboard_tab(ui, refresh_seconds)
            with gr.Tab("Report", id="report"):
                wire_report = _report_tab(ui)
            with gr.Tab("Compare", id="compare"):
                wire_compare, compare_ids = _compare_tab(ui)
            with gr.Tab("Validate", id="validate"):
                wire_validate = _validate_tab(ui, last_upload, compare_ids)
            with gr.Tab("Run", id="run"):
                wire_run = _run_tab(ui, live_config, live_args)
        wire_report(demo)
        wire_board(demo)
        wire_compare()
        wire_validate()
        wire_run()
    return demo


def _leaderboard_tab(ui: Shared, refresh_seconds: float) -> Callable[[gr.Blocks], None]:
    """The table of audited pairs, with Gradio's own search, filters and column sort; a
    selected row opens in the Report tab. The reports are read again every `refresh_seconds`
    (0: never), so new audits appear without a restart."""
    board = gr.Dataframe(
        handlers.leaderboard(ui.store),
        headers=handlers.LEADERBOARD_COLUMNS,
        datatype=handlers.LEADERBOARD_DATATYPES,
        interactive=False,
        show_search="filter",
        pinned_columns=1,
        column_widths=handlers.LEADERBOARD_WIDTHS,
        wrap=True,
        buttons=["fullscreen", "copy"],
        max_height=640,
        elem_id="leaderboard",
        label="Audited pairs: select a row to open its report",
    )
    gr.Markdown(BOARD_NOTE)
    skipped = gr.Markdown(_skipped_note(ui.store))
    shown = gr.State(ui.store.version)  # the store version this page's board shows
    timer = gr.Timer(refresh_seconds or 1.0, active=refresh_seconds > 0)

    @_safe
    def show_board(extra_reports, shown_version):
        refresh(ui.store, max_age=refresh_seconds)
        if ui.store.version == shown_version:
            # Nothing new: leave the table alone (a redraw would swallow a visitor's click).
            return gr.skip(), gr.skip(), gr.skip(), shown_version
        board_now = handlers.leaderboard(ui.store)
        picker = ui.picker_update(extra_reports)
        return board_now, _skipped_note(ui.store), picker, ui.store.version

    @_safe
    def board_rows() -> list[dict]:
        """The leaderboard as rows (column: value), freshest reports first read again."""
        refresh(ui.store, max_age=refresh_seconds)
        return handlers.leaderboard(ui.store).to_dict("records")

    @_safe
    def open_from_board(extra_reports, evt: gr.SelectData):
        cells = evt.row_value or []
        at = handlers.LEADERBOARD_COLUMNS.index("report")
        report_id = handlers.report_of_cell(cells[at]) if len(cells) > at else None
        return ui.opened(report_id, extra_reports)

    def wire(demo: gr.Blocks) -> None:
        inputs, outputs = [ui.extra, shown], [board, skipped, ui.picker, shown]
        timer.tick(show_board, inputs, outputs, api_name=False, show_progress="hidden")
        demo.load(show_board, inputs, outputs, api_name=False, show_progress="hidden")
        gr.api(board_rows, api_name="board")
        board.select(open_from_board, ui.extra, ui.open_outputs, api_name=False)

    return wire


def _skipped_note(store: ReportStore) -> str:
    return f"{len(store.skipped)} file(s) were skipped: not valid reports." if store.skipped else ""


def _report_tab(ui: Shared) -> Callable[[gr.Blocks], None]:
    """The report picker and panel; a card's `?model=` link (or a `?report=` one) opens its
    report on load."""
    ui.picker = gr.Dropdown(
        rv.report_choices(ui.store),
        value=None,
        label="report",
        allow_custom_value=True,
        elem_id="report-picker",
    )
    ui.panel = ReportPanel()
    with gr.Accordion("Judged answers behind a curve point", open=False):
        point = gr.Dropdown(
            [], value=None, label="curve point", allow_custom_value=True, elem_id="sample-point"
        )
        answers = gr.Dataframe(
            value=rv.samples_table(None, None), wrap=True, elem_id="sample-answers"
        )

    @_safe
    def open_report(report_id, extra_reports):
        return ui.view_for(report_id, extra_reports)

    @_safe
    def sample_points(report_id, extra_reports):
        entry = rv.find_entry(report_id, ui.store, extra_reports)
        return gr.Dropdown(choices=rv.sample_points(entry), value=None)

    @_safe
    def sample_answers(report_id, chosen, extra_reports):
        return rv.samples_table(rv.find_entry(report_id, ui.store, extra_reports), chosen)

    @_safe
    def open_from_link(extra_reports, request: gr.Request):
        params = dict(request.query_params) if request else {}
        if params.get("model"):
            return ui.opened_model(params["model"], extra_reports)
        report_id = params.get("report")
        if not report_id:
            return [gr.Tabs(), gr.Dropdown(), *ui.view_for(None, extra_reports)]
        return ui.opened(report_id, extra_reports)

    def wire(demo: gr.Blocks) -> None:
        outputs = ui.panel.outputs
        ui.picker.input(open_report, [ui.picker, ui.extra], outputs, api_name="open_report")
        ui.picker.change(sample_points, [ui.picker, ui.extra], point, api_name=False)
        point.change(sample_answers, [ui.picker, point, ui.extra], answers, api_name="answers")
        demo.load(open_from_link, ui.extra, ui.open_outputs, api_name=False)

    return wire


def _compare_tab(ui: Shared) -> tuple[Callable[[], None], gr.Dropdown]:
    """One metric of several reports overlaid; also returns the report chooser."""
    with gr.Row():
        compare_ids = gr.Dropdown(
            rv.report_choices(ui.store), multiselect=True, label="reports (two or more)"
        )
        metric = gr.Dropdown(list(METRICS), value=DEFAULT_METRIC, label="metric")
        relative = gr.Checkbox(True, label="relative depth l / L")
    compare_plot = gr.LinePlot(
        x="x", y="value", color="report", tooltip="all", height=360,
        x_title=x_title(DEFAULT_METRIC, True), elem_id="compare-plot",
    )  # fmt: skip
    compare_note = gr.Markdown("Choose two or more reports to overlay.")

    @_safe
    def compare(ids, chosen_metric, rel, extra_reports):
        frame, note = rv.compare_view(ids, chosen_metric, rel, ui.store, extra_reports)
        return gr.LinePlot(value=frame, x_title=x_title(chosen_metric, rel)), note

    def wire() -> None:
        compare_inputs = [compare_ids, metric, relative, ui.extra]
        for i, control in enumerate(compare_inputs[:3]):
            control.change(
                compare,
                compare_inputs,
                [compare_plot, compare_note],
                api_name="compare" if i == 0 else False,
            )

    return wire, compare_ids


def discard_upload(path: str | None) -> None:
    """Delete an upload from gradio's cache once it has been read, with its folder when that
    is left empty: gradio keeps every upload until the process ends otherwise."""
    if not path:
        return
    file = Path(path)
    file.unlink(missing_ok=True)
    try:
        file.parent.rmdir()
    except OSError:  # not empty, or already gone
        pass


def _validate_tab(
    ui: Shared, last_upload: gr.State, compare_ids: gr.Dropdown
) -> Callable[[], None]:
    """Check an uploaded report.json; a valid one joins this visitor's reports."""
    gr.Markdown("Upload a `report.json` to check it against the report schema.")
    upload = gr.File(label="report.json", file_types=[".json"], elem_id="upload")
    check_md = gr.Markdown(elem_id="check-message")
    errors = gr.Dataframe(
        label="Errors, located by field path",
        interactive=False,
        wrap=True,
        visible=False,
        elem_id="check-errors",
    )
    open_upload = gr.Button("Open this report", visible=False)
    upload_card = gr.Markdown(elem_id="upload-card")

    @_safe
    def validate(path, extra_reports):
        check = check_upload(path)
        discard_upload(path)  # the report, when valid, is kept in memory
        table = handlers.error_table(check)
        message = handlers.check_markdown(check)
        if not check.ok:
            return (
                message, gr.Dataframe(value=table, visible=not table.empty),
                gr.Button(visible=False), "", extra_reports, None,
                ui.picker_update(extra_reports), gr.Dropdown(),
            )  # fmt: skip
        entry = rv.session_entry(check.report, "upload", path)
        extra_reports = {**extra_reports, entry.id: entry}
        choices_now = rv.report_choices(ui.store, extra_reports)
        return (
            message, gr.Dataframe(value=table, visible=False), gr.Button(visible=True),
            rv.report_view(entry).card, extra_reports, entry.id,
            ui.picker_update(extra_reports), gr.Dropdown(choices=choices_now),
        )  # fmt: skip

    @_safe
    def open_uploaded(report_id, extra_reports):
        return ui.opened(report_id, extra_reports)

    def wire() -> None:
        outputs = [check_md, errors, open_upload, upload_card, ui.extra, last_upload]
        upload.upload(
            validate,
            [upload, ui.extra],
            [*outputs, ui.picker, compare_ids],
            api_name="validate",
        )
        open_upload.click(open_uploaded, [last_upload, ui.extra], ui.open_outputs, api_name=False)

    return wire


def _run_tab(
    ui: Shared, live_config: AuditConfig, live_args: tuple[str, ...]
) -> Callable[[], None]:
    """A live audit of the bundled calibration pair, opened in the Report tab when done."""
    gr.Markdown(RUN_INTRO)
    run_button = gr.Button("Audit the calibration pair", variant="primary")
    run_status = gr.Markdown(elem_id="run-status")

    # A generator: gradio closes it when the run is cancelled or its client leaves, and
    # closing it kills the audit, frees the process's one slot and removes its folder.
    # The progress is drawn once, as the status text; no gr.Progress bar repeats it.
    def live_run(extra_reports):
        pair = demo_pair()
        if pair is None:
            raise gr.Error(rv.md_text("Cannot run: calibration pair missing"))
        skip = [gr.skip()] * (1 + len(ui.open_outputs))
        try:
            for step in live_audit(*pair, config=live_config, output_args=live_args):
                if step.report is None:
                    yield [rv.md_text(run_text(step.fraction, step.text)), *skip]
                    continue
                # The folder goes with the run; the session keeps the report in memory.
                entry = rv.session_entry(step.report, "live", "live-audit/report.json")
                extra_reports = {**extra_reports, entry.id: entry}
                done = f"Done: opened `{entry.id}`."
                yield [done, extra_reports, *ui.opened(entry.id, extra_reports)]
        except LiveRunBusy:
            raise gr.Error(RUN_BUSY, print_exception=False) from None
        except LiveRunError as exc:
            raise gr.Error(f"The live audit failed: {exc}", print_exception=False) from None
        except Exception as exc:
            log.exception("handler live_run failed")
            message = UNEXPECTED.format(kind=type(exc).__name__)
            raise gr.Error(message, print_exception=False) from None

    def wire() -> None:
        # Not queued: a run starts at once, and the process's one slot (live_run.live_audit)
        # refuses a second with RUN_BUSY, so runs never wait in (and fill) the shared queue.
        run_button.click(
            live_run,
            ui.extra,
            [run_status, ui.extra, *ui.open_outputs],
            api_name="live_run",
            concurrency_limit=None,
            show_progress="minimal",
            show_progress_on=[run_status],
        )

    return wire


def run_text(fraction: float, text: str) -> str:
    """The Run tab's one progress line: how far the audit is and what it does now."""
    return f"{100 * fraction:.0f} % · {text}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options of `python -m depthcard.space.app` (the same as `depthcard space`)."""
    from depthcard.space.options import add_arguments

    parser = argparse.ArgumentParser(
        prog="depthcard.space.app", description=__doc__.splitlines()[0]
    )
    add_arguments(parser)
    return parser.parse_args(argv)


def configure_queue(demo: gr.Blocks) -> gr.Blocks:
    """The Space's queue: `CONCURRENCY` handlers of an event at once, `MAX_QUEUE` waiting."""
    return demo.queue(default_concurrency_limit=CONCURRENCY, max_size=MAX_QUEUE)


def launch(args: argparse.Namespace, token: str | None = None) -> gr.Blocks:
    """Load the reports, build the app and serve it (blocking unless args.no_block)."""
    hub_repo = args.hub_repo or os.environ.get(RESULTS_VARIABLE)  # set by space.deploy
    store = load_store(args.reports, hub_repo=hub_repo, token=token)
    space_host = os.environ.get("SPACE_HOST")  # set by the Hub on a running Space
    space_url = args.space_url or (f"https://{space_host}" if space_host else None)
    refresh_seconds = args.refresh_seconds
    if refresh_seconds is None:
        refresh_seconds = float(os.environ.get("DEPTHCARD_REFRESH_SECONDS", REFRESH_SECONDS))
    demo = build_app(
        store, space_url=space_url, refresh_seconds=refresh_seconds, hub_api=HfApi(token=token)
    )
    configure_queue(demo)
    demo.launch(
        server_name=args.host,
        server_port=args.port,
        max_file_size=MAX_UPLOAD,
        theme=THEME,
        ssr_mode=False,
        prevent_thread_lock=getattr(args, "no_block", False),
        footer_links=["api"],
    )
    return demo


def main(argv: list[str] | None = None) -> None:
    """Entry point of the Space and of `python -m depthcard.space.app`."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    launch(parse_args(argv), token=os.environ.get("HF_TOKEN"))


if __name__ == "__main__":
    main()
