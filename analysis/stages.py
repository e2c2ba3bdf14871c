"""Timing, peak memory and work of audit stages (seconds, bytes, forward passes), recorded
for the report; each stage also announces itself on the ambient progress sink."""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from depthcard.analysis.progress import stage_events
from depthcard.schemas.progress import WorkCount
from depthcard.schemas.report import StageTiming


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


@contextmanager
def stage(name: str, record: list[StageTiming]) -> Iterator[None]:
    """Time a stage and append its `StageTiming` (CUDA peak if a GPU is used, else RSS).

    The RSS figure is the process's high-water mark at the end of the stage (the OS gives
    no per-stage peak on CPU); the CUDA figure is the stage's own peak.
    """
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with stage_events(name) as progress:
        work_before, generated_before = progress.snapshot(), progress.generated
        try:
            yield
        finally:
            cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
            peak = torch.cuda.max_memory_allocated() if cuda else _peak_rss_bytes()
            record.append(
                StageTiming(
                    name=name,
                    seconds=time.perf_counter() - start,
                    peak_memory_bytes=int(peak),
                    memory_kind="cuda" if cuda else "rss",
                    work=work_delta(work_before, progress.snapshot()),
                    generated_tokens=progress.generated - generated_before,
                )
            )


def work_delta(before: dict[str, WorkCount], after: dict[str, WorkCount]) -> dict[str, WorkCount]:
    """What was counted between two snapshots, purposes with no work left out."""
    out = {}
    for key, a in after.items():
        b = before.get(key, WorkCount.zero())
        diff = WorkCount(calls=a.calls - b.calls, rows=a.rows - b.rows, tokens=a.tokens - b.tokens)
        if diff.calls:
            out[key] = diff
    return out
