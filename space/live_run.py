"""Audit a small local pair live, on CPU, in a child process, reporting progress as it goes.

The audit runs as `python -m depthcard audit BASE CHILD --out DIR` rather than in the server
process: the models' memory is returned when it ends, a crash cannot take the Space down,
and a run that overstays its time limit is killed. Progress is the audit's own: it runs with
`--progress json` and writes one `ProgressEvent` per stage start, step and end on stderr
(`analysis.progress`); each new event moves the bar to its stage's place in `STAGES` plus the
stage's done/total, and names the stage and task.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from depthcard.analysis.audit import DEMO_DIR
from depthcard.report.reproduce import audit_words
from depthcard.schemas.progress import ProgressEvent
from depthcard.schemas.report import AuditConfig, AuditReport
from depthcard.space.store import read_report

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]
TIMEOUT_SECONDS = 900.0
POLL_SECONDS = 0.5
# The stages a pair audit announces, in the order `analysis.audit` runs them. A stage the
# run's flags skip (ablation, fragility) is simply never announced, so the bar jumps past it.
STAGES = (
    "resolve", "dtype", "capture-base", "capture-child", "spectra", "ablation", "fragility",
    "modes-depth", "nulls",
)  # fmt: skip


BUSY = "another live audit is running; try again when it has finished"
_SLOT = threading.Lock()  # one live audit per process, whatever the queue's count says
# A run started right after a cancel waits this long for the cancelled one to let go of the
# slot (gradio closes the old generator on another thread) before it is refused as busy.
SLOT_WAIT_S = 5.0


class LiveRunError(RuntimeError):
    """The live audit could not run or did not produce a valid report."""


class LiveRunBusy(LiveRunError):
    """Another live audit holds the process's only slot."""


# The live audit's settings: the default audit on this Space's CPU, in float32 (a CPU's
# bf16 check would cost the visitor time; the bundled pair is tiny).
LIVE_CONFIG = AuditConfig(device="cpu", dtype="float32")


def demo_pair() -> tuple[Path, Path] | None:
    """(base, child) folders of the bundled calibration pair, or None when not installed."""
    base, child = DEMO_DIR / "base", DEMO_DIR / "instruct"
    if (base / "config.json").is_file() and (child / "config.json").is_file():
        return base, child
    return None


def audit_command(
    base: Path,
    child: Path,
    out: Path,
    config: AuditConfig = LIVE_CONFIG,
    output_args: tuple[str, ...] = (),
) -> list[str]:
    """The command line of the live audit into the report folder `out`.

    The settings are `config`, passed as the flags `report.reproduce` builds from it (the
    Space holds no audit default of its own); `output_args` are options that change no
    number, e.g. ("--no-plots",).
    """
    cmd = [sys.executable, "-m", "depthcard", "-v", "audit", str(base), str(child)]
    cmd += ["--out", str(out), "--overwrite", "--progress", "json"]
    return cmd + audit_words(config) + list(output_args)


def stage_fraction(event: ProgressEvent) -> float:
    """Where `event` puts the whole audit, 0..1: its stage's slot in STAGES, plus done/total."""
    if event.stage not in STAGES:
        return 0.0
    within = 1.0 if event.event == "end" else 0.0
    if event.event == "step" and event.total:
        within = min(1.0, event.done / event.total)
    return (STAGES.index(event.stage) + within) / len(STAGES)


def describe(event: ProgressEvent) -> str:
    """One line for the progress bar: stage n of N, the task's done/total, work so far."""
    place = f"{STAGES.index(event.stage) + 1}/{len(STAGES)} " if event.stage in STAGES else ""
    text = f"stage {place}{event.stage}"
    if event.event == "end":
        text += " done"
    elif event.task:
        count = f"{event.done}/{event.total}" if event.total else str(event.done)
        text += f" · {event.task} {count} {event.unit}"
    return f"{text} · {event.forward_calls:,} forward passes"


class EventReader:
    """Reads the progress events a running audit appends to its log, from where it left off."""

    def __init__(self, path: Path):
        self.path, self.offset = path, 0

    def new_events(self) -> list[ProgressEvent]:
        """The events in the complete lines written since the last call (log lines skipped)."""
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except OSError:
            return []
        end = chunk.rfind(b"\n") + 1  # a line still being written waits for the next call
        self.offset += end
        events = []
        for line in chunk[:end].splitlines():
            if line.startswith(b"{"):
                try:
                    events.append(ProgressEvent.model_validate_json(line))
                except ValidationError:
                    continue
        return events


def _last_line(path: Path) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 4096))
            lines = f.read().decode("utf-8", "replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


@dataclass(frozen=True)
class Step:
    """One progress update of a live audit; the last one carries the validated report.

    `event` is the audit's progress event behind the step (None for the first and last).
    """

    fraction: float
    text: str
    report: AuditReport | None = None
    event: ProgressEvent | None = None


def live_audit(
    base: Path,
    child: Path,
    out: Path | None = None,
    *,
    config: AuditConfig = LIVE_CONFIG,
    output_args: tuple[str, ...] = (),
    timeout_seconds: float = TIMEOUT_SECONDS,
    slot_wait: float | None = None,
) -> Iterator[Step]:
    """Run the audit of `base` vs `child`, yielding its progress; the last step holds the report.

    At most one live audit runs per process: the slot is taken on the first `next()` (waiting
    up to `slot_wait` seconds for a cancelled run to let go of it) and given back in
    `finally`, so a cancelled run (gradio closes the generator, or drops it) kills its audit
    and frees the slot, and a queue that loses count cannot start a second one. With
    `out=None` the report folder is a temporary folder, removed at the end.

    Raises:
        LiveRunBusy: another live audit is running in this process.
        LiveRunError: the audit failed (with its last error line), timed out, or wrote an
            invalid report.
    """
    if not _SLOT.acquire(timeout=SLOT_WAIT_S if slot_wait is None else slot_wait):
        raise LiveRunBusy(BUSY)
    tmp = None
    proc = None
    try:
        if out is None:
            tmp = Path(tempfile.mkdtemp(prefix="depthcard-live-"))
            out = tmp / "audit"
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        logfile = out.parent / f"{out.name}.log"
        cmd = audit_command(base, child, out, config, output_args)
        # A client that left while queued is not resumed past this first step (gradio checks
        # the event is alive before each iteration), so its audit never starts.
        yield Step(0.0, "starting the audit")
        log.info("live audit: %s", " ".join(cmd))
        with logfile.open("wb") as sink:
            proc = subprocess.Popen(
                cmd, stdout=sink, stderr=subprocess.STDOUT, cwd=DEMO_DIR.parent.parent
            )
            start = time.monotonic()
            reader = EventReader(logfile)
            last = Step(0.0, "loading the models")
            while proc.poll() is None:
                if time.monotonic() - start > timeout_seconds:
                    raise LiveRunError(
                        f"the audit ran past its {timeout_seconds:.0f} s limit and was stopped"
                    )
                # At least one step per poll, the last one again when nothing happened: a
                # generator is closed (run cancelled, client gone) only where it yields.
                steps = _steps(reader.new_events()) or [last]
                yield from steps
                last = steps[-1]
                time.sleep(POLL_SECONDS)
            yield from _steps(reader.new_events())
        if proc.returncode != 0:
            raise LiveRunError(f"the audit failed (exit {proc.returncode}): {_last_line(logfile)}")
        try:
            report = read_report(out / "report.json")
        except (OSError, ValueError) as exc:
            first = str(exc).splitlines()[0]
            raise LiveRunError(f"the audit wrote no valid report: {first}") from exc
        yield Step(1.0, "done", report)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        _SLOT.release()


def _steps(events: list[ProgressEvent]) -> list[Step]:
    return [Step(stage_fraction(e), describe(e), event=e) for e in events]


def run_live_audit(
    base: Path,
    child: Path,
    out: Path,
    *,
    progress: Progress | None = None,
    config: AuditConfig = LIVE_CONFIG,
    output_args: tuple[str, ...] = (),
    timeout_seconds: float = TIMEOUT_SECONDS,
) -> AuditReport:
    """Run the audit of `base` vs `child` into `out` and return its validated report.

    Raises:
        LiveRunBusy: another live audit is running in this process.
        LiveRunError: the audit failed (with its last error line), timed out, or wrote an
            invalid report.
    """
    progress = progress or (lambda fraction, text: None)
    steps = live_audit(
        base, child, out, config=config, output_args=output_args,
        timeout_seconds=timeout_seconds,
    )  # fmt: skip
    with closing(steps):
        for step in steps:
            progress(step.fraction, step.text)
            if step.report is not None:
                return step.report
    raise LiveRunError("the audit ended without a report")
