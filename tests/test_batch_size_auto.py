"""`--batch-size auto`: resolved per device, and every batched stage halves on out-of-memory."""

from __future__ import annotations

import pytest
import torch

from depthcard.analysis.capture import halving_on_oom
from depthcard.cli.audit_command import config_from_args
from depthcard.cli.main import build_parser
from depthcard.schemas.report import AUTO_BATCH_CPU, AUTO_BATCH_GPU, AuditConfig


def test_auto_resolves_per_device_and_numbers_stay_numbers() -> None:
    auto = AuditConfig(batch_size="auto")
    assert auto.with_concrete_dtype(False).batch_size == AUTO_BATCH_CPU == 16
    assert auto.with_concrete_dtype(True).batch_size == AUTO_BATCH_GPU == 64
    assert auto.model_copy(update={"device": "cpu"}).with_concrete_dtype(True).batch_size == 16
    assert AuditConfig(batch_size=8).with_concrete_dtype(True).batch_size == 8
    with pytest.raises(ValueError):
        AuditConfig(batch_size=0)
    with pytest.raises(ValueError):
        AuditConfig(batch_size="big")


def test_the_cli_takes_auto_or_a_number() -> None:
    parser = build_parser()

    def parsed(value: str):
        return config_from_args(
            parser.parse_args(["audit", "--demo", "--out", "x", "--batch-size", value])
        )

    assert parsed("auto").batch_size == "auto" and parsed("8").batch_size == 8
    with pytest.raises(SystemExit):
        parsed("eight")


def test_a_stage_that_runs_out_of_memory_runs_again_at_half_the_batch() -> None:
    tried = []

    def stage(cfg: AuditConfig) -> str:
        tried.append(cfg.batch_size)
        if cfg.batch_size > 8:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return "done"

    result, cfg = halving_on_oom(stage, AuditConfig(batch_size=64))
    assert (result, cfg.batch_size, tried) == ("done", 8, [64, 32, 16, 8])


def test_other_errors_and_batch_one_are_not_retried() -> None:
    def broken(cfg: AuditConfig) -> None:
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        halving_on_oom(broken, AuditConfig(batch_size=64))

    def always_oom(cfg: AuditConfig) -> None:
        raise torch.OutOfMemoryError("out of memory")

    with pytest.raises(torch.OutOfMemoryError):
        halving_on_oom(always_oom, AuditConfig(batch_size=2))
