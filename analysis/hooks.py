"""The one way depthcard touches a model's forward pass: hooks that are always removed.

Residual-stream points are numbered as in docs/metrics.md: point 0 is the input of the first
decoder block (the embedding output, after any model-specific scaling), point l ≥ 1 is the
output of decoder block l.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

# hook(point, hidden) -> replacement hidden or None; hidden is (batch, seq, d_model).
ResidualHook = Callable[[int, torch.Tensor], torch.Tensor | None]


@contextmanager
def add_hooks(
    pre_hooks: Sequence[tuple[nn.Module, Callable]] = (),
    hooks: Sequence[tuple[nn.Module, Callable]] = (),
) -> Iterator[None]:
    """Register forward pre-hooks (with kwargs) and forward hooks; remove them on exit.

    Handles are removed in `finally`, so an exception inside the block (including the one
    used to stop a forward early) never leaves a hook behind.
    """
    handles = []
    try:
        for module, fn in pre_hooks:
            handles.append(module.register_forward_pre_hook(fn, with_kwargs=True))
        for module, fn in hooks:
            handles.append(module.register_forward_hook(fn))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _hidden_of(output: object) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output  # type: ignore[return-value]


@contextmanager
def residual_hooks(
    layers: nn.ModuleList, fn: ResidualHook, points: Sequence[int] | None = None
) -> Iterator[None]:
    """Call `fn(point, hidden)` at each residual point; a returned tensor replaces it."""
    wanted = range(len(layers) + 1) if points is None else points

    def pre(module, args, kwargs):
        if args:
            new = fn(0, args[0])
            return None if new is None else ((new, *args[1:]), kwargs)
        new = fn(0, kwargs["hidden_states"])
        return None if new is None else (args, {**kwargs, "hidden_states": new})

    def post_for(point: int) -> Callable:
        def post(module, args, output):
            new = fn(point, _hidden_of(output))
            if new is None:
                return None
            return (new, *output[1:]) if isinstance(output, tuple) else new

        return post

    pre_hooks = [(layers[0], pre)] if 0 in wanted else []
    post_hooks = [(layers[p - 1], post_for(p)) for p in wanted if p >= 1]
    with add_hooks(pre_hooks, post_hooks):
        yield
