"""The live audit's process handling, without running a whole audit."""

from __future__ import annotations

import inspect
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import pytest

from depthcard.report.reproduce import audit_words
from depthcard.space import app, live_run


def test_the_bundled_pair_is_found_and_the_command_is_cpu_float32(tmp_path):
    pair = live_run.demo_pair()
    assert pair is not None and all((p / "config.json").is_file() for p in pair)
    quick = live_run.LIVE_CONFIG.model_copy(update={"max_prompts": 8, "ablation": False})
    cmd = live_run.audit_command(*pair, tmp_path / "out", quick, ("--no-plots",))
    assert cmd[:3] == [sys.executable, "-m", "depthcard"]
    assert cmd[cmd.index("--device") + 1] == "cpu" and cmd[cmd.index("--dtype") + 1] == "float32"
    assert cmd[cmd.index("--max-prompts") + 1] == "8" and "--no-ablation" in cmd
    # every setting is a flag built from the config, none written by hand
    assert cmd[cmd.index("json") + 1 :] == [*audit_words(quick), "--no-plots"]
    # every setting comes from the config: the default live run names only CPU and float32
    default = live_run.audit_command(*pair, tmp_path / "out")
    assert default[-4:] == ["--device", "cpu", "--dtype", "float32"]


def test_a_run_past_its_time_limit_is_stopped(tmp_path, monkeypatch):
    # A command that would sleep for a minute stands in for a stuck audit.
    monkeypatch.setattr(
        live_run,
        "audit_command",
        lambda *a, **k: [sys.executable, "-c", "import time; print('working'); time.sleep(60)"],
    )
    seen = []
    with pytest.raises(live_run.LiveRunError, match="time limit|limit"):
        live_run.run_live_audit(
            Path("b"), Path("c"), tmp_path / "out",
            progress=lambda f, text: seen.append((f, text)), timeout_seconds=1.0,
        )  # fmt: skip
    assert seen and seen[0] == (0.0, "starting the audit")
    assert all(0.0 <= f <= 0.95 for f, _ in seen)


def test_a_failed_audit_reports_its_last_line(tmp_path, monkeypatch):
    monkeypatch.setattr(
        live_run,
        "audit_command",
        lambda *a, **k: [sys.executable, "-c", "import sys; sys.exit('depthcard: error: bad')"],
    )
    with pytest.raises(live_run.LiveRunError, match="exit 1.*bad"):
        live_run.run_live_audit(Path("b"), Path("c"), tmp_path / "out")


def _fake_audit(monkeypatch, code: str) -> None:
    """Stand a short Python script in for the audit command."""
    monkeypatch.setattr(live_run, "audit_command", lambda *a, **k: [sys.executable, "-c", code])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_second_run_is_refused_while_one_holds_the_slot(tmp_path, monkeypatch):
    _fake_audit(monkeypatch, "import time; time.sleep(60)")
    monkeypatch.setattr(live_run, "SLOT_WAIT_S", 0.2)
    first = live_run.live_audit(Path("b"), Path("c"), tmp_path / "one")
    next(first)  # the slot is taken, the audit about to start
    second = live_run.live_audit(Path("b"), Path("c"), tmp_path / "two")
    with pytest.raises(live_run.LiveRunBusy):
        next(second)
    with pytest.raises(live_run.LiveRunBusy):
        live_run.run_live_audit(Path("b"), Path("c"), tmp_path / "three")
    first.close()


def test_a_cancelled_run_kills_its_audit_frees_the_slot_and_removes_its_folder(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    pid_file = tmp_path / "pid"
    _fake_audit(
        monkeypatch,
        f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)",
    )
    steps = live_run.live_audit(Path("b"), Path("c"))
    next(steps)
    next(steps)  # the audit is running
    deadline = time.monotonic() + 10
    while not pid_file.is_file() or not pid_file.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    pid = int(pid_file.read_text())
    steps.close()  # what gradio does when the run is cancelled or its client leaves
    assert not _alive(pid)
    assert not list(tmp_path.glob("depthcard-live-*"))
    # The slot is free again: a new run starts.
    _fake_audit(monkeypatch, "import sys; sys.exit('depthcard: error: bad')")
    with pytest.raises(live_run.LiveRunError, match="bad"):
        list(live_run.live_audit(Path("b"), Path("c")))
    assert not list(tmp_path.glob("depthcard-live-*"))


def test_a_run_whose_client_left_before_it_started_starts_no_audit(tmp_path, monkeypatch):
    started = tmp_path / "started"
    _fake_audit(monkeypatch, f"open({str(started)!r}, 'w')")
    steps = live_run.live_audit(Path("b"), Path("c"), tmp_path / "out")
    assert next(steps).text == "starting the audit"
    steps.close()  # gradio does not resume an event whose client is gone
    time.sleep(0.3)
    assert not started.exists()
    assert live_run._SLOT.acquire(blocking=False)
    live_run._SLOT.release()


def test_the_run_event_never_queues_and_is_a_generator_gradio_can_close():
    from tests.space_support import store

    demo = app.build_app(store())
    (fn,) = [f for f in demo.fns.values() if f.api_name == "live_run"]
    # A plain function would run on in its thread after a cancel, its audit with it.
    assert inspect.isgeneratorfunction(fn.fn)
    assert fn.concurrency_limit is None  # one at a time is the slot's job, not the queue's


def test_a_run_started_right_after_a_cancel_waits_for_the_slot(tmp_path, monkeypatch):
    """gradio closes a cancelled run's generator on its own thread: the next run, started
    meanwhile, is not refused as busy but starts once the slot is free."""
    import threading

    _fake_audit(monkeypatch, "import time; time.sleep(60)")
    first = live_run.live_audit(Path("b"), Path("c"), tmp_path / "one")
    next(first)
    closer = threading.Timer(0.5, first.close)  # the cancel lands while the next one waits
    closer.start()
    second = live_run.live_audit(Path("b"), Path("c"), tmp_path / "two")
    assert next(second).text == "starting the audit"
    second.close()
    closer.join()


def test_progress_follows_the_audits_own_stage_events(tmp_path, monkeypatch):
    # A stand-in audit writes what `--progress json` writes: one ProgressEvent per line on
    # stderr, mixed with log lines, then exits without a report.
    events = [
        {"event": "start", "stage": "capture-child"},
        {"event": "step", "stage": "capture-child", "task": "harmful_chat", "done": 1,
         "total": 4, "unit": "batch", "forward_calls": 12},
        "INFO depthcard.analysis: a log line between events",
        {"event": "end", "stage": "capture-child"},
        {"event": "start", "stage": "spectra"},
    ]  # fmt: skip
    lines = [e if isinstance(e, str) else json.dumps(e) for e in events]
    code = f"import sys, time\nfor line in {lines!r}:\n    print(line, file=sys.stderr)\n"
    _fake_audit(monkeypatch, code + "sys.exit('depthcard: error: stop here')")
    seen = []
    with pytest.raises(live_run.LiveRunError, match="stop here"):
        live_run.run_live_audit(Path("b"), Path("c"), tmp_path / "out",
                                progress=lambda f, text: seen.append((f, text)))  # fmt: skip
    seen = [s for i, s in enumerate(seen) if i == 0 or s != seen[i - 1]]  # polls repeat
    seen = [s for s in seen if s[1] != "loading the models"]
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and len(seen) == 5  # "starting" + four events
    n = len(live_run.STAGES)
    child = live_run.STAGES.index("capture-child")
    assert seen[2] == ((child + 0.25) / n, "stage 4/9 capture-child · harmful_chat 1/4 batch · "
                       "12 forward passes")  # fmt: skip
    assert seen[3][0] == (child + 1) / n and "capture-child done" in seen[3][1]
    assert "spectra" in seen[4][1]


def test_the_live_audit_asks_for_json_progress(tmp_path):
    cmd = live_run.audit_command(Path("b"), Path("c"), tmp_path)
    assert cmd[cmd.index("--progress") + 1] == "json"
