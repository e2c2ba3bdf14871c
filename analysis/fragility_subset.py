"""θ_S, the parameter subset the fragility stage takes its curvature over, and the context
in which only θ_S is trainable."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from depthcard.analysis.models import decoder_layers
from depthcard.schemas.errors import UserError
from depthcard.schemas.sections import FragilitySettings


def middle_third(num_layers: int) -> tuple[int, int]:
    """Blocks [L//3, ⌈2L/3⌉): where refusal directions are usually read and written."""
    start = num_layers // 3
    return start, max(start + 1, -(-2 * num_layers // 3))


def around_selected(selected: int, window: int, num_layers: int) -> tuple[int, int]:
    """Blocks [start, stop) whose output layer is within `window` of l* = `selected`.

    Layer l is the residual stream after block l − 1 (layer 0 is the embedding output), so
    block i writes layer i + 1.
    """
    start = max(selected - 1 - window, 0)
    return start, max(min(selected + window, num_layers), start + 1)


def select_parameters(
    model: nn.Module,
    settings: FragilitySettings,
    layers_path: str | None = None,
    selected: int | None = None,
) -> tuple[str, list[nn.Parameter]]:
    """θ_S: parameters in the chosen decoder blocks whose names match the pattern.

    The blocks are `settings.layer_range` (default: the middle third), or, when
    `settings.selected_window` is set, those around l* = `selected` (`around_selected`).

    Returns:
        (description for the report, parameters in `named_parameters` order).

    Raises:
        UserError: the layer range is out of bounds or nothing matches; the message says
            which setting to change.
    """
    layers = decoder_layers(model, layers_path)
    if settings.selected_window is not None:
        if selected is None:
            raise ValueError("selected_window needs the selected layer l*")
        start, stop = around_selected(selected, settings.selected_window, len(layers))
    else:
        start, stop = settings.layer_range or middle_third(len(layers))
    if not 0 <= start < stop <= len(layers):
        raise UserError(f"layer_range ({start}, {stop}) outside the model's {len(layers)} blocks")
    inside = {id(p) for i in range(start, stop) for p in layers[i].parameters()}
    pattern = re.compile(settings.parameter_pattern)
    params = [p for name, p in model.named_parameters() if id(p) in inside and pattern.search(name)]
    if not params:
        raise UserError(
            f"no parameter in blocks {start}..{stop - 1} matches {settings.parameter_pattern!r};"
            " set parameter_pattern to a regex over model.named_parameters() names"
        )
    return f"/{settings.parameter_pattern}/ in blocks {start}..{stop - 1}", params


@contextmanager
def only_trainable(model: nn.Module, params: Sequence[nn.Parameter]) -> Iterator[None]:
    """Inside: eval mode, grad enabled, `params` require grad and nothing else does.

    Flags and mode are restored on exit, even on error.
    """
    flags = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    try:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        with torch.enable_grad():
            yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)
