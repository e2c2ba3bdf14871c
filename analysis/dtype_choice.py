"""The dtype an audit runs in when it is left on auto: measured on the host, not assumed.

On a GPU auto is bfloat16. On a CPU the answer depends on the processor: without AVX-512 BF16
or AMX, bfloat16 matmuls run several times slower than float32 (docs/performance.md has both
hosts' numbers); with them they can run faster. So auto on a CPU times the child's forward
pass on the first batch in both dtypes and compares their first-token distributions: bfloat16
is used only when it is at least `MIN_SPEEDUP` times faster *and* its mean first-token
KL(p_float32 ‖ p_bfloat16) is within `AuditConfig.bf16_kl_tolerance`; else float32. The report
records the choice, the two times, the KL and the CPU's bf16 flags (`DtypeChoice`).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import torch
from torch import nn

from depthcard.analysis.ablation import mean_kl, plain_last_logits
from depthcard.analysis.models import input_device
from depthcard.schemas.report import DtypeChoice

# bfloat16 must save at least a fifth of the time: a smaller gain is within timing noise on a
# shared machine, and not worth its rounding.
MIN_SPEEDUP = 1.25
PROBE_ROWS = 8  # prompts in the timed batch
REPEATS = 3  # timed passes per dtype, alternating, after one warm-up each; the best counts
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile")


def cpu_bf16_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str] | None:
    """The bf16 instruction flags this CPU reports, or None where /proc/cpuinfo is unread."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return [f for f in BF16_FLAGS if f in flags]


def decide(
    float32_seconds: float, bfloat16_seconds: float, kl: float, tolerance: float
) -> tuple[str, str]:
    """(dtype, reason) from the two timings and the agreement; pure, so tests pin the rule."""
    speedup = float32_seconds / max(bfloat16_seconds, 1e-12)
    if speedup < MIN_SPEEDUP:
        return "float32", (
            f"bfloat16 ran the first batch {speedup:.2f}× as fast as float32 on this CPU "
            f"(needs ≥ {MIN_SPEEDUP:g}×)"
        )
    if not kl <= tolerance:
        return "float32", (
            f"bfloat16 was {speedup:.2f}× faster but its first-token KL {kl:.2g} from float32 "
            f"is over the tolerance {tolerance:g}"
        )
    return "bfloat16", (
        f"bfloat16 ran the first batch {speedup:.2f}× faster than float32 on this CPU and "
        f"agreed within KL {kl:.2g} ≤ {tolerance:g}"
    )


def _timed(model: nn.Module, rows: list[list[int]], pad_id: int) -> tuple[float, torch.Tensor]:
    """Wall time of one forward pass and its last-token logits."""
    start = time.perf_counter()
    with torch.inference_mode():
        logits = plain_last_logits(model, rows, pad_id, input_device(model))
    return time.perf_counter() - start, logits


def measure_cpu_dtype(
    model: nn.Module, rows: list[list[int]], pad_id: int, tolerance: float
) -> DtypeChoice:
    """Time the float32 `model` and a bfloat16 copy on `rows` (the first batch) and choose.

    The two are timed alternately (after one warm-up pass each), REPEATS times, and the best
    time of each counts: another job on the machine then slows both alike instead of deciding
    the comparison (run back to back, one busy second once made bfloat16 look 3× slower on a
    CPU where it is 2.5× faster).

    Args:
        model: the child, loaded in float32 on the CPU (left unchanged).
        rows: token ids of the first prompts the audit reads; PROBE_ROWS of them are used.
        pad_id: padding token id.
        tolerance: the mean first-token KL bfloat16 may differ by.
    """
    rows = rows[:PROBE_ROWS]
    half = copy.deepcopy(model).to(torch.bfloat16)
    _, logits32 = _timed(model, rows, pad_id)
    _, logits16 = _timed(half, rows, pad_id)
    t32 = t16 = float("inf")
    for _ in range(REPEATS):
        t32 = min(t32, _timed(model, rows, pad_id)[0])
        t16 = min(t16, _timed(half, rows, pad_id)[0])
    del half
    kl = mean_kl(
        torch.log_softmax(logits32.float(), dim=-1), torch.log_softmax(logits16.float(), dim=-1)
    )
    dtype, reason = decide(t32, t16, kl, tolerance)
    return DtypeChoice(
        dtype=dtype,
        rule="cpu-measured",
        reason=reason,
        cpu_bf16_flags=cpu_bf16_flags(),
        float32_seconds=t32,
        bfloat16_seconds=t16,
        first_token_kl=kl,
        kl_tolerance=tolerance,
    )


def fixed_choice(dtype: str, requested: bool) -> DtypeChoice:
    """The record for a dtype that was not measured: set by the user, or auto on a GPU."""
    if requested:
        return DtypeChoice(dtype=dtype, rule="requested", reason="set in the audit settings")
    return DtypeChoice(dtype=dtype, rule="gpu-default", reason="auto on a GPU is bfloat16")
