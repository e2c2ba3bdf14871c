"""Predicted minutes of an audit's work plan on a Hugging Face Jobs flavour, and its cost.

A table of flavours (names exactly as `huggingface_hub.JobHardware` spells them) with their
nominal dense bf16 TFLOPS, GPU memory, memory bandwidth and list price, and one time model:

- forward, gradient and Hessian-vector FLOPs run at `PREFILL_UTILISATION` of the nominal
  peak (batches of 16 short prompts in eager transformers reach a fraction of it);
- a greedy decode step is memory-bandwidth bound: it reads every weight once, so it takes
  (weight bytes ÷ bandwidth × `BANDWIDTH_UTILISATION`) unless its FLOPs take longer;
- every model call pays a fixed cost per decoder block (kernel launches and Python in eager
  mode; a gradient call 3×, a Hessian-vector call 6×), which is what dominates a small
  model's decode steps;
- the `cpu-basic` row (2 vCPU) is calibrated instead, from timings on a 2-core machine.

Every GPU number is a prediction from datasheets, not a measurement: no GPU has run an
audit in this project yet (docs/estimate.md). Pure functions, no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from depthcard.analysis.work_plan import body_parameters
from depthcard.schemas.estimate import FlavourEstimate, ModelSize, WorkItem

PREFILL_UTILISATION = 0.3
BANDWIDTH_UTILISATION = 0.6
BLOCK_OVERHEAD_S = 0.6e-3  # GPU, per block per call (assumed: eager transformers)
CALL_FACTOR = {"forward": 1, "generate": 1, "backward": 3, "hvp": 6}
JOB_START_MINUTES = 3.0  # pull the image, pip install depthcard (assumed)
DOWNLOAD_BYTES_PER_S = 100e6  # Hub weights into the job (assumed)
MEMORY_FACTOR, MEMORY_MARGIN_GB = 1.2, 2.0  # weights × 1.2 + 2 GB: activations, logits, grads
TIMEOUT_SAFETY = 3.0  # a job's timeout: predicted minutes × this (generation is bounded, ...)
TIMEOUT_FLOOR_MINUTES = 20.0  # ... but never less than this (a slow image pull, a cold Hub)

# cpu-basic, calibrated on the project's 2-core machine. Issue 12: a 494 M-parameter model
# (Qwen2.5-0.5B, tied embeddings, 24 blocks) in fp32 forwards 80 short chat prompts in about
# 34 s, and generates 20 prompts × 64 tokens greedily (batch 16: 2 batches × 64 = 128 steps)
# in about 37 s; the prompts' tokens were not recorded, 40 a prompt is assumed. README's
# bench/stages.py: the 4-block organism generates 48 prompts × 64 tokens batched by 16
# (3 × 64 = 192 steps) in 0.37 s, which is all per-call cost.
CPU_REFERENCE_PARAMETERS = 494_032_768
CPU_REFERENCE_TOKENS = 80 * 40
CPU_FLOPS_PER_S = 2 * CPU_REFERENCE_PARAMETERS * CPU_REFERENCE_TOKENS / 34.0  # ≈ 93 GFLOP/s
CPU_BLOCK_OVERHEAD_S = 0.37 / 192 / 4  # ≈ 0.48 ms per block per call
_PREFILL_20 = 2 * CPU_REFERENCE_PARAMETERS * 20 * 40 / CPU_FLOPS_PER_S  # 8.5 s of the 37
_STEP_S = (37.0 - _PREFILL_20) / 128 - 24 * CPU_BLOCK_OVERHEAD_S
CPU_BYTES_PER_S = CPU_REFERENCE_PARAMETERS * 4 / _STEP_S  # ≈ 9.4 GB/s of weights a step


@dataclass(frozen=True)
class Flavour:
    """One Jobs flavour. GPU rates are per device: a model spread over several GPUs by
    `device_map="auto"` runs its blocks one GPU after another, so only memory adds up."""

    name: str
    hardware: str
    gpus: int
    memory_gb: float  # per GPU; RAM for a CPU flavour
    tflops: float  # nominal dense bf16 per GPU; effective for a calibrated CPU row
    bandwidth_gbs: float  # nominal per GPU; effective for a calibrated CPU row
    usd_per_hour: float
    calibrated: bool = False  # rates measured (CPU), not nominal
    block_overhead_s: float = BLOCK_OVERHEAD_S

    @property
    def is_cpu(self) -> bool:
        return self.gpus == 0

    @property
    def total_memory_gb(self) -> float:
        return self.memory_gb * max(self.gpus, 1)

    @property
    def flops_per_s(self) -> float:
        util = 1.0 if self.calibrated else PREFILL_UTILISATION
        return self.tflops * 1e12 * util

    @property
    def bytes_per_s(self) -> float:
        util = 1.0 if self.calibrated else BANDWIDTH_UTILISATION
        return self.bandwidth_gbs * 1e9 * util


def _gpu(name, hardware, gpus, memory, tflops, bandwidth, price) -> Flavour:
    return Flavour(name, hardware, gpus, memory, tflops, bandwidth, price)


# Datasheet numbers: dense bf16 tensor TFLOPS (half the "with sparsity" figure), GB, GB/s.
# T4 has no bf16 tensor cores: its fp32 rate is what a bf16 matmul gets. Prices: USD per
# hour as listed on huggingface.co/docs/hub/jobs-pricing (`hf jobs hardware` has the
# current ones); multi-GPU rows at n × the single-GPU price where no list price was at hand.
FLAVOURS: dict[str, Flavour] = {
    f.name: f
    for f in (
        Flavour("cpu-basic", "2 vCPU, 16 GB RAM", 0, 16, CPU_FLOPS_PER_S / 1e12,
                CPU_BYTES_PER_S / 1e9, 0.01, True, CPU_BLOCK_OVERHEAD_S),
        _gpu("t4-small", "1x Nvidia T4", 1, 16, 8.1, 320, 0.40),
        _gpu("t4-medium", "1x Nvidia T4", 1, 16, 8.1, 320, 0.60),
        _gpu("l4x1", "1x Nvidia L4", 1, 24, 121, 300, 0.80),
        _gpu("l4x4", "4x Nvidia L4", 4, 24, 121, 300, 3.80),
        _gpu("l40sx1", "1x Nvidia L40S", 1, 48, 362, 864, 1.80),
        _gpu("l40sx4", "4x Nvidia L40S", 4, 48, 362, 864, 8.30),
        _gpu("a10g-small", "1x Nvidia A10G", 1, 24, 70, 600, 1.00),
        _gpu("a10g-large", "1x Nvidia A10G", 1, 24, 70, 600, 1.50),
        _gpu("a10g-largex2", "2x Nvidia A10G", 2, 24, 70, 600, 3.00),
        _gpu("a10g-largex4", "4x Nvidia A10G", 4, 24, 70, 600, 5.00),
        _gpu("a100-large", "1x Nvidia A100 80GB", 1, 80, 312, 1935, 2.50),
        _gpu("a100x4", "4x Nvidia A100 80GB", 4, 80, 312, 1935, 10.00),
        _gpu("a100x8", "8x Nvidia A100 80GB", 8, 80, 312, 1935, 20.00),
        _gpu("h200", "1x Nvidia H200", 1, 141, 989, 4800, 5.00),
        _gpu("h200x2", "2x Nvidia H200", 2, 141, 989, 4800, 10.00),
        _gpu("h200x4", "4x Nvidia H200", 4, 141, 989, 4800, 20.00),
        _gpu("h200x8", "8x Nvidia H200", 8, 141, 989, 4800, 40.00),
    )
}  # fmt: skip


def _dtype(flavour: Flavour, requested: str | None) -> tuple[str, int]:
    """The dtype the audit runs in there (auto: bf16 on a GPU, fp32 on a CPU) and its bytes."""
    name = requested or ("float32" if flavour.is_cpu else "bfloat16")
    return name, 4 if name == "float32" else 2


def item_seconds(item: WorkItem, flavour: Flavour, size: ModelSize, dtype_bytes: int) -> float:
    """Predicted seconds of one work item: FLOPs at the flavour's rate, decode steps at the
    larger of their weight reads and their FLOPs, plus the per-block call overhead."""
    rate = flavour.flops_per_s
    overhead = item.calls * size.num_layers * flavour.block_overhead_s * CALL_FACTOR[item.kind]
    if item.kind != "generate":
        return item.flops / rate + overhead
    touched = body_parameters(size) + size.head_parameters  # weights read per decode step
    decode_flops = 2.0 * touched * item.generated_tokens
    prefill = max(item.flops - decode_flops, 0.0) / rate
    reads = item.decode_steps * touched * dtype_bytes / flavour.bytes_per_s
    return prefill + max(reads, decode_flops / rate) + overhead


def assumptions(flavour: Flavour) -> str:
    """One line on what the flavour's minutes assume."""
    if flavour.calibrated:
        return (
            f"calibrated on 2 CPU cores: {flavour.tflops * 1e3:.0f} GFLOP/s in fp32, decode "
            f"steps at {flavour.bandwidth_gbs:.1f} GB/s of weights read, "
            f"{flavour.block_overhead_s * 1e3:.2f} ms per block per call"
        )
    return (
        f"nominal {flavour.tflops:g} TFLOPS bf16 × {PREFILL_UTILISATION:g}, "
        f"{flavour.bandwidth_gbs:g} GB/s × {BANDWIDTH_UTILISATION:g} per decode step, "
        f"{flavour.block_overhead_s * 1e3:g} ms per block per call (predicted, not measured)"
    )


def flavour_estimate(
    plan: list[WorkItem],
    size: ModelSize,
    flavour: Flavour,
    *,
    dtype: str | None = None,
    download_bytes: int = 0,
) -> FlavourEstimate:
    """Minutes per stage, memory fit and cost of `plan` on `flavour`.

    Args:
        plan: the audit's work (`work_plan.work_plan`).
        size: the model the plan is for.
        flavour: a row of `FLAVOURS`.
        dtype: the audit's dtype setting (None: auto).
        download_bytes: weights the job downloads from the Hub (0 for local folders).
    """
    dtype_name, nbytes = _dtype(flavour, dtype)
    if flavour.is_cpu and nbytes == 2:
        dtype_name, nbytes = "float32", 4  # the calibration is fp32; bf16 would only be faster
    stages: dict[str, float] = {}
    for item in plan:
        seconds = item_seconds(item, flavour, size, nbytes)
        stages[item.stage] = stages.get(item.stage, 0.0) + seconds / 60.0
    compute = sum(stages.values())
    setup = JOB_START_MINUTES + download_bytes / DOWNLOAD_BYTES_PER_S / 60.0
    needed = size.parameters * nbytes / 1e9 * MEMORY_FACTOR + MEMORY_MARGIN_GB
    return FlavourEstimate(
        flavour=flavour.name,
        hardware=flavour.hardware,
        dtype=dtype_name,
        memory_gb=flavour.total_memory_gb,
        memory_needed_gb=needed,
        fits=needed <= flavour.total_memory_gb,
        assumptions=assumptions(flavour),
        stage_minutes=stages,
        compute_minutes=compute,
        setup_minutes=setup,
        job_minutes=compute + setup,
        usd_per_hour=flavour.usd_per_hour,
        usd=(compute + setup) / 60.0 * flavour.usd_per_hour,
    )


def hub_minutes(timeout: str | int | float) -> float:
    """Minutes of a Hub Jobs duration: seconds as a number, or "30s", "90m", "2h", "1d".

    Raises:
        ValueError: not a duration.
    """
    units = {"s": 1 / 60, "m": 1.0, "h": 60.0, "d": 1440.0}
    text = str(timeout).strip()
    if text and text[-1] in units:
        return float(text[:-1]) * units[text[-1]]
    return float(text) / 60.0


def job_timeout_minutes(estimate: FlavourEstimate, cap_minutes: float) -> float:
    """The job's timeout: predicted minutes × `TIMEOUT_SAFETY`, at least
    `TIMEOUT_FLOOR_MINUTES`, at most `cap_minutes` (the configured timeout)."""
    wanted = max(estimate.job_minutes * TIMEOUT_SAFETY, TIMEOUT_FLOOR_MINUTES)
    return min(math.ceil(wanted), cap_minutes)


def choose_flavour(estimates: list[FlavourEstimate], cap_minutes: float) -> FlavourEstimate | None:
    """The bot's choice: among flavours whose memory fits and whose safe timeout
    (minutes × `TIMEOUT_SAFETY`) stays within `cap_minutes`, the cheapest (then the fastest);
    when none finishes in time, the fastest that fits; None when none fits."""
    fitting = [e for e in estimates if e.fits]
    in_time = [e for e in fitting if e.job_minutes * TIMEOUT_SAFETY <= cap_minutes]
    if in_time:
        return min(in_time, key=lambda e: (e.usd, e.job_minutes))
    return min(fitting, key=lambda e: e.job_minutes, default=None)
