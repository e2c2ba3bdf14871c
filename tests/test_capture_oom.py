"""Out-of-memory is recognised on every device through accelerate's helper, not one string."""

import pytest
import torch

from depthcard.analysis.capture import _is_oom


@pytest.mark.parametrize(
    "exc",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.2 GiB total)"),
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"
        ),
        RuntimeError("MPS backend out of memory (MPS allocated: 9.0 GB)"),
    ],
)
def test_out_of_memory_on_any_device(exc):
    assert _is_oom(exc)


@pytest.mark.parametrize(
    "exc", [RuntimeError("mat1 and mat2 shapes cannot be multiplied"), ValueError("out of memory.")]
)
def test_other_errors_are_not_out_of_memory(exc):
    assert not _is_oom(exc)
