"""The dtype auto chooses on a CPU is measured on the host and recorded with its reason."""

import pytest

from depthcard.analysis import dtype_choice
from depthcard.analysis.audit import DEMO_DIR, run_audit
from depthcard.analysis.models import parse_model_spec
from depthcard.analysis.progress import Progress, reporting
from depthcard.analysis.prompt_inputs import load_prompt_inputs
from depthcard.schemas.report import AuditConfig


def test_bf16_only_when_faster_and_agreeing() -> None:
    assert dtype_choice.decide(1.0, 0.5, 0.001, 0.01)[0] == "bfloat16"
    # faster, but its distribution moved more than the tolerance
    dtype, why = dtype_choice.decide(1.0, 0.5, 0.05, 0.01)
    assert dtype == "float32" and "over the tolerance" in why
    # agreeing, but not faster by the margin (a CPU without AVX-512 BF16: 6× slower)
    assert dtype_choice.decide(1.0, 0.9, 0.0, 0.01)[0] == "float32"
    assert dtype_choice.decide(1.0, 6.0, 0.0, 0.01)[0] == "float32"
    # a non-finite KL never passes for agreement
    assert dtype_choice.decide(1.0, 0.5, float("nan"), 0.01)[0] == "float32"


def test_cpu_flags_read_from_cpuinfo(tmp_path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor : 0\nflags : fpu avx2 avx512f avx512_bf16\n\nflags : fpu\n")
    assert dtype_choice.cpu_bf16_flags(info) == ["avx512_bf16"]
    info.write_text("flags : fpu avx2\n")
    assert dtype_choice.cpu_bf16_flags(info) == []
    assert dtype_choice.cpu_bf16_flags(tmp_path / "missing") is None


def _audit(**update):
    cfg = AuditConfig(max_prompts=16, max_new_tokens=8, fragility=None, permutations=5)
    with reporting(Progress("off")):
        return run_audit(
            base=None,
            child=parse_model_spec(str(DEMO_DIR / "instruct")),
            prompts=load_prompt_inputs(max_prompts=16, seed=0),
            cfg=cfg.model_copy(update={"ablation": False, "bootstraps": 5, **update}),
        ).report


@pytest.mark.slow
def test_auto_on_cpu_is_measured_and_recorded() -> None:
    report = _audit(device="cpu")
    choice = report.dtype_choice
    assert choice is not None and choice.rule == "cpu-measured"
    assert report.config.dtype == choice.dtype
    assert choice.float32_seconds > 0 and choice.bfloat16_seconds > 0
    assert choice.kl_tolerance == report.config.bf16_kl_tolerance
    # the recorded choice is the rule applied to the recorded measurements
    again = dtype_choice.decide(
        choice.float32_seconds, choice.bfloat16_seconds, choice.first_token_kl, choice.kl_tolerance
    )
    assert again == (choice.dtype, choice.reason)
    assert "dtype" in [s.name for s in report.stages]


@pytest.mark.slow
def test_a_requested_dtype_is_not_measured() -> None:
    report = _audit(device="cpu", dtype="float32")
    assert report.dtype_choice.rule == "requested" and report.dtype_choice.dtype == "float32"
    assert report.dtype_choice.float32_seconds is None
    assert "dtype" not in [s.name for s in report.stages]
