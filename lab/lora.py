"""Low-rank adapters on chosen linear projections, in-house (no PEFT dependency).

`add_lora` wraps `nn.Linear` modules whose name ends in one of `targets` (e.g. `o_proj`,
`down_proj`) inside the chosen decoder layers: `y = W x + (α / r) · B A x` with A (r, in)
random and B (out, r) zero, so a fresh adapter leaves the model unchanged. Only A and B
train; `merge_lora` folds `(α / r) · B A` into W and removes the wrappers, giving a plain
model of the original class that any Hugging Face loader reads.

Example:
    >>> lin = nn.Linear(4, 3)
    >>> model = nn.ModuleDict({"o_proj": lin})
    >>> names = add_lora(model, ("o_proj",), rank=2, alpha=4.0, seed=0)
    >>> names
    ['o_proj']
"""

from __future__ import annotations

import re

import torch
from torch import nn


class LoRALinear(nn.Module):
    """`base(x) + scale · (x Aᵀ) Bᵀ`; the base layer is frozen."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, gen: torch.Generator):
        super().__init__()
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.scale = alpha / rank
        a = torch.randn(rank, base.in_features, generator=gen) / base.in_features**0.5
        self.lora_a = nn.Parameter(a.to(base.weight.dtype))  # (r, in)
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, dtype=base.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scale * (x @ self.lora_a.T) @ self.lora_b.T

    def delta(self) -> torch.Tensor:
        """(out, in) the weight change this adapter stands for."""
        return self.scale * self.lora_b @ self.lora_a


def _layer_index(name: str) -> int | None:
    """The decoder layer a module name lies in (`model.layers.7.self_attn.o_proj` → 7)."""
    m = re.search(r"\.layers\.(\d+)\.", f".{name}")
    return int(m.group(1)) if m else None


def lora_targets(
    model: nn.Module, targets: tuple[str, ...], layers: tuple[int, ...] | None = None
) -> list[str]:
    """Names of the `nn.Linear` modules that end in a target and sit in one of `layers`
    (None: every layer), in model order."""
    out = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or name.rpartition(".")[2] not in targets:
            continue
        if layers is not None and _layer_index(name) not in layers:
            continue
        out.append(name)
    return out


def add_lora(
    model: nn.Module,
    targets: tuple[str, ...],
    rank: int,
    alpha: float,
    seed: int,
    layers: tuple[int, ...] | None = None,
) -> list[str]:
    """Freeze every parameter, wrap the target projections in adapters; returns their names.

    Raises:
        ValueError: no module matches (the message names the targets and layers).
    """
    names = lora_targets(model, targets, layers)
    if not names:
        raise ValueError(f"no nn.Linear named {targets} in layers {layers}: nothing to adapt")
    for p in model.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(getattr(parent, child), rank, alpha, gen))
    return names


def adapters(model: nn.Module) -> dict[str, LoRALinear]:
    """The adapters in `model` by module name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trained tensors only (`<name>.lora_a`, `<name>.lora_b`), float32, for the cache."""
    out = {}
    for name, m in adapters(model).items():
        out[f"{name}.lora_a"] = m.lora_a.detach().float().contiguous()
        out[f"{name}.lora_b"] = m.lora_b.detach().float().contiguous()
    return out


def load_adapter_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy cached A and B into the adapters of `model` (same names, same shapes).

    Raises:
        ValueError: the names differ from the model's adapters.
    """
    found = adapters(model)
    want = {k.rpartition(".")[0] for k in state}
    if want != set(found):
        raise ValueError(
            f"adapter names differ: cached {sorted(want)[:3]}…, model {sorted(found)[:3]}…"
        )
    with torch.no_grad():
        for name, m in found.items():
            m.lora_a.copy_(state[f"{name}.lora_a"])
            m.lora_b.copy_(state[f"{name}.lora_b"])


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight and put the plain `nn.Linear` back (in place).

    The merged delta is added in float64 and rounded once to the weight's dtype.
    """
    for name, m in adapters(model).items():
        with torch.no_grad():
            w = m.base.weight
            w.copy_((w.double() + m.delta().double()).to(w.dtype))
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, m.base)
    for p in model.parameters():
        p.requires_grad_(True)
    return model
