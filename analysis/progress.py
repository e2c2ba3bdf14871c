"""Progress of an audit, and the work it does: which stage, how far along, at what cost.

A `Progress` is the sink for one process: in a terminal it draws a bar per task; anywhere
else it writes one JSON line per event (`schemas.progress.ProgressEvent`) so that HF Jobs
logs and the Space can follow an audit; a callback sees every event. It also counts the
work done through the models it watches (`counting`): forward calls, rows and input
positions by *purpose* (capture, first-token, cross-entropy, generation, answer-nll,
gradient, ...), and generated tokens. The audit's stages record those counts next to their
seconds, so a report says what its time was spent on.

Everything here is ambient (a context variable), so measuring code only says what it is
doing (`with task(...)`, `with purpose(...)`) and never passes a reporter around.

Example:
    >>> with reporting(Progress("json")), counting(model):
    ...     with stage_events("ablation"), task("curve", total=9, unit="point") as t:
    ...         for k in range(9):
    ...             t.advance()
"""

from __future__ import annotations

import contextvars
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal, TextIO

from torch import nn
from tqdm.auto import tqdm

from depthcard.schemas.progress import ProgressEvent, WorkCount

Mode = Literal["auto", "bar", "json", "off"]
JSON_INTERVAL = 1.0  # seconds between two step events of one task (start/end always go out)


class Progress:
    """Where progress goes (bars, JSON lines, a callback) and the work counted so far."""

    def __init__(
        self,
        mode: Mode = "auto",
        stream: TextIO | None = None,
        callback: Callable[[ProgressEvent], None] | None = None,
    ):
        self.stream = sys.stderr if stream is None else stream
        if mode == "auto":
            mode = "bar" if getattr(self.stream, "isatty", lambda: False)() else "json"
        self.mode: Mode = mode
        self.callback = callback
        self.work: dict[str, WorkCount] = {}
        self.generated = 0
        self.stage: str | None = None
        self.stage_start = time.perf_counter()

    # --- counting ------------------------------------------------------------------------

    def add(self, what: str, calls: int = 0, rows: int = 0, tokens: int = 0) -> None:
        w = self.work.setdefault(what, WorkCount.zero())
        w.calls, w.rows, w.tokens = w.calls + calls, w.rows + rows, w.tokens + tokens

    def totals(self) -> tuple[int, int]:
        """(forward calls, input positions) over every purpose."""
        return sum(w.calls for w in self.work.values()), sum(w.tokens for w in self.work.values())

    def snapshot(self) -> dict[str, WorkCount]:
        return {k: v.model_copy() for k, v in self.work.items()}

    # --- events --------------------------------------------------------------------------

    def event(self, event: str, task: str | None = None, **fields) -> ProgressEvent:
        calls, tokens = self.totals()
        out = ProgressEvent(
            event=event,  # type: ignore[arg-type]
            stage=self.stage or "audit",
            task=task,
            elapsed=max(0.0, time.perf_counter() - self.stage_start),
            forward_calls=calls,
            tokens=tokens,
            generated_tokens=self.generated,
            **fields,
        )
        if self.mode == "json":
            self.stream.write(out.model_dump_json() + "\n")
            self.stream.flush()
        if self.callback is not None:
            self.callback(out)
        return out

    def postfix(self) -> str:
        calls, _ = self.totals()
        return f"{calls:,} fwd · {self.generated:,} tok generated"


_SILENT = Progress("off")
_current: contextvars.ContextVar[Progress] = contextvars.ContextVar("progress", default=_SILENT)
_purpose: contextvars.ContextVar[str | None] = contextvars.ContextVar("purpose", default=None)


def current() -> Progress:
    """The ambient progress sink (a silent one unless `reporting` set another)."""
    return _current.get()


@contextmanager
def reporting(progress: Progress) -> Iterator[Progress]:
    """Make `progress` the ambient sink inside the block."""
    token = _current.set(progress)
    try:
        yield progress
    finally:
        _current.reset(token)


@contextmanager
def purpose(name: str) -> Iterator[None]:
    """Count forward passes inside the block under `name`."""
    token = _purpose.set(name)
    try:
        yield
    finally:
        _purpose.reset(token)


def add_generated(n: int) -> None:
    """Count `n` newly generated tokens."""
    current().generated += int(n)


def _forward_pre_hook(module, args, kwargs) -> None:
    ids = kwargs.get("input_ids", args[0] if args else None)
    if ids is None:
        ids = kwargs.get("inputs_embeds")
    if ids is None or ids.dim() < 2:
        return
    rows, width = int(ids.shape[0]), int(ids.shape[1])
    p = current()
    p.add(_purpose.get() or p.stage or "other", calls=1, rows=rows, tokens=rows * width)


def watch(model: nn.Module) -> nn.Module:
    """Count every forward call of `model` from now on (for a model the audit loads and frees)."""
    model.register_forward_pre_hook(_forward_pre_hook, with_kwargs=True)
    return model


@contextmanager
def counting(model: nn.Module) -> Iterator[nn.Module]:
    """Count every forward call of `model` inside the block (the hook is removed after)."""
    handle = model.register_forward_pre_hook(_forward_pre_hook, with_kwargs=True)
    try:
        yield model
    finally:
        handle.remove()


class Task:
    """A counted task inside a stage: `advance()` per step; a bar or throttled JSON lines.

    A bar of a task that finishes stays on the screen complete: 100 %, its steps, "done"
    (and how many were planned when it finished early, e.g. a search that found its answer);
    a bar nested inside another task's is cleared instead, as tqdm clears inner bars.
    """

    def __init__(self, progress: Progress, name: str, total: int | None, unit: str):
        self.p, self.name, self.total, self.unit, self.done = progress, name, total, unit, 0
        self.last = 0.0
        self.bar = None
        if progress.mode == "bar":
            desc = f"{progress.stage} · {name}" if progress.stage else name
            # leave=None: the bar stays after close only when it is not nested in another.
            self.bar = tqdm(total=total, desc=desc, unit=unit, leave=None, file=progress.stream)

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.set_postfix_str(self.p.postfix(), refresh=False)
            self.bar.update(n)
        now = time.perf_counter()
        if now - self.last >= JSON_INTERVAL or self.done == self.total:
            self.last = now
            self.p.event("step", self.name, done=self.done, total=self.total, unit=self.unit)

    def close(self, finished: bool = True) -> None:
        """Close the bar; a `finished` task's bar is drawn complete, one that failed stays
        where it stopped."""
        if self.bar is None:
            return
        if finished:
            early = self.total is not None and self.done < self.total
            self.bar.total = self.done  # what ran is all there is to do: 100 %
            note = f"done ({self.done} of {self.total} planned)" if early else "done"
            self.bar.set_postfix_str(f"{self.p.postfix()} · {note}", refresh=False)
        self.bar.close()


@contextmanager
def task(name: str, total: int | None = None, unit: str = "step") -> Iterator[Task]:
    """A task of the current stage with `total` steps of `unit`."""
    t = Task(current(), name, total, unit)
    finished = False
    try:
        yield t
        finished = True
    finally:
        t.close(finished)


@contextmanager
def stage_events(name: str) -> Iterator[Progress]:
    """Announce a stage's start and end; forward passes inside default to its name."""
    p = current()
    outer, outer_start = p.stage, p.stage_start
    p.stage, p.stage_start = name, time.perf_counter()
    p.event("start")
    if p.mode == "bar":
        tqdm.write(f"▸ {name}", file=p.stream)
    try:
        yield p
    finally:
        p.event("end")
        if p.mode == "bar":
            took = time.perf_counter() - p.stage_start
            tqdm.write(f"  {name} done in {took:.1f} s ({p.postfix()})", file=p.stream)
        p.stage, p.stage_start = outer, outer_start
