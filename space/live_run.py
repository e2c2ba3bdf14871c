"""Audit a small local pair live, on CPU, in a child process, reporting progress as it goes.

The audit runs as `python -m depthcard audit BASE CHILD --out DIR` rather than in the server
process: the models' memory is returned when it ends, a crash cannot take the Space down,
and a run that overstays its time limit is killed. Progress is the elapsed time against the
expected duration (the audit prints no per-stage progress), labelled with the audit's latest
log line.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from depthcard.analysis.audit import DEMO_DIR
from depthcard.schemas.report import AuditReport
from depthcard.space.store import read_report

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]
EXPECTED_SECONDS = 90.0
TIMEOUT_SECONDS = 900.0
POLL_SECONDS = 0.5


class LiveRunError(RuntimeError):
    """The live audit could not run or did not produce a valid report."""


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
    max_prompts: int | None,
    extra_args: tuple[str, ...] = (),
) -> list[str]:
    """The command line of the live audit (CPU, float32, the report folder `out`).

    `extra_args` are further `depthcard audit` options, e.g. ("--no-ablation",) for a
    quicker run.
    """
    cmd = [sys.executable, "-m", "depthcard", "-v", "audit", str(base), str(child)]
    cmd += ["--out", str(out), "--overwrite", "--device", "cpu", "--dtype", "float32"]
    if max_prompts is not None:
        cmd += ["--max-prompts", str(max_prompts)]
    return cmd + list(extra_args)


def _last_line(path: Path) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 4096))
            lines = f.read().decode("utf-8", "replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


def _wait(
    proc: subprocess.Popen, logfile: Path, progress: Progress, expected: float, timeout: float
):
    start = time.monotonic()
    while proc.poll() is None:
        elapsed = time.monotonic() - start
        if elapsed > timeout:
            proc.kill()
            proc.wait()
            raise LiveRunError(f"the audit ran past its {timeout:.0f} s limit and was stopped")
        line = _last_line(logfile) or "starting"
        progress(min(0.95, elapsed / expected), f"auditing ({elapsed:.0f} s): {line[:120]}")
        time.sleep(POLL_SECONDS)


def run_live_audit(
    base: Path,
    child: Path,
    out: Path,
    *,
    progress: Progress | None = None,
    max_prompts: int | None = None,
    extra_args: tuple[str, ...] = (),
    expected_seconds: float = EXPECTED_SECONDS,
    timeout_seconds: float = TIMEOUT_SECONDS,
) -> AuditReport:
    """Run the audit of `base` vs `child` into `out` and return its validated report.

    Raises:
        LiveRunError: the audit failed (with its last error line), timed out, or wrote an
            invalid report.
    """
    progress = progress or (lambda fraction, text: None)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    logfile = out.parent / f"{out.name}.log"
    cmd = audit_command(base, child, out, max_prompts, extra_args)
    log.info("live audit: %s", " ".join(cmd))
    progress(0.0, "starting the audit")
    with logfile.open("wb") as sink:
        proc = subprocess.Popen(
            cmd, stdout=sink, stderr=subprocess.STDOUT, cwd=DEMO_DIR.parent.parent
        )
        try:
            _wait(proc, logfile, progress, expected_seconds, timeout_seconds)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if proc.returncode != 0:
        raise LiveRunError(f"the audit failed (exit {proc.returncode}): {_last_line(logfile)}")
    try:
        report = read_report(out / "report.json")
    except (OSError, ValueError) as exc:
        raise LiveRunError(f"the audit wrote no valid report: {str(exc).splitlines()[0]}") from exc
    progress(1.0, "done")
    return report
