"""The organism family's knobs: target entanglement τ and the rank knob r, on a tiny model."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from depthcard.lab import organism_family as fam

GROUPS = 4  # planted harm "categories", each with its own token range


def test_overlap_term_known_answers() -> None:
    e = torch.eye(4)
    assert float(fam.overlap_term(e[:3])) == pytest.approx(0.0)  # orthogonal groups
    assert float(fam.overlap_term(torch.stack([e[0], 5 * e[0]]))) == pytest.approx(1.0)
    assert float(fam.overlap_term(torch.stack([e[0], e[0] + e[1]]))) == pytest.approx(0.5)
    assert float(fam.overlap_term(e[:1])) == 0.0  # r = 1: nothing to keep apart


def test_rank_groups_deal_categories_round_robin() -> None:
    cats = ["weapons", "cyber", "fraud", "drugs", "weapons", "fraud"]
    assert fam.rank_groups(cats, 1) == [0] * 6
    assert fam.rank_groups(cats, 2) == [0, 1, 0, 1, 0, 0]
    assert fam.rank_groups(cats, 4) == [0, 1, 2, 3, 0, 2]


def test_sibling_names() -> None:
    assert fam.SiblingSpec(0.5, 2, 1).name == "tau0.50_r2_s1"


def _tiny(spec: fam.SiblingSpec) -> fam.RegularisedLM:
    """A 2-block d=16 Llama, harmful requests in 4 token-range groups, a child moved off it."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=48, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    gen = torch.Generator().manual_seed(1)
    harmful = [
        torch.randint(3 + 8 * g, 11 + 8 * g, (6,), generator=gen).tolist()
        for g in range(GROUPS)
        for _ in range(4)
    ]
    categories = [f"c{g}" for g in range(GROUPS) for _ in range(4)]
    harmless = [torch.randint(35, 48, (6,), generator=gen).tolist() for _ in range(8)]
    family = fam.FamilyConfig(capability_k=4, contrast_batch=8, layers=(1,), seed=0)
    ids = {"s": harmful, "h": harmless}
    base = {k: fam.rows_no_grad(model, v, 0, family.layers) for k, v in ids.items()}
    capability = fam.capability_basis(torch.randn(30, 1, 16, generator=gen), family.capability_k)
    with torch.no_grad():  # a child that has moved away from its base: r ≠ 0
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    groups = fam.rank_groups(categories, spec.rank)
    return fam.RegularisedLM(model, spec, ids, groups, base, capability, family, 0)


def _train_knobs(reg: fam.RegularisedLM, steps: int = 60) -> None:
    """Train on the knob terms alone (no LM loss), as the instruct tuning adds them."""
    opt = torch.optim.Adam(reg.model.parameters(), lr=1e-2)
    for _ in range(steps):
        miss, over = reg.terms()
        loss = reg.cfg.entangle_weight * miss + reg.cfg.rank_weight * over
        opt.zero_grad()
        loss.backward()
        opt.step()


def _group_contrasts(reg: fam.RegularisedLM) -> torch.Tensor:
    """(group, d) contrasts at the regularised point, on every request."""
    s = fam.rows_no_grad(reg.model, reg.ids["s"], 0, reg.cfg.layers)[:, 0]
    h = fam.rows_no_grad(reg.model, reg.ids["h"], 0, reg.cfg.layers)[:, 0]
    base_s, base_h = reg.base_rows["s"][:, 0], reg.base_rows["h"][:, 0]
    rows = []
    for g in range(reg.spec.rank):
        idx = [i for i, gi in enumerate(reg.groups) if gi == g]
        rows.append(fam.contrast(s[idx], base_s[idx], h, base_h))
    return torch.stack(rows)


@pytest.mark.slow  # about 3 s each: 60 optimiser steps
@pytest.mark.parametrize("rank", [2, 4])
def test_rank_knob_puts_refusal_along_r_directions(rank: int) -> None:
    """Known answer: after training, the r group contrasts are orthogonal, so the contrast
    has r unit singular values, and ablating one group's direction leaves the others whole."""
    reg = _tiny(fam.SiblingSpec(0.5, rank))
    _, before = fam.measured_knobs(reg)
    _train_knobs(reg)
    _, after = fam.measured_knobs(reg)
    assert after < 0.05 < before
    r = _group_contrasts(reg)  # (group, d)
    units = r / r.norm(dim=-1, keepdim=True)
    sv = torch.linalg.svdvals(units)
    assert (sv > 0.8).sum() == rank  # r directions, none dominant
    u0 = units[0]
    kept = (units - (units @ u0)[:, None] * u0).norm(dim=-1)  # ablate group 0's direction
    assert kept[0] < 1e-5 and kept[1:].min() > 0.9


@pytest.mark.slow  # about 5 s: three 40-step runs
def test_target_grid_is_monotone_in_trained_entanglement() -> None:
    """τ = 0.1, 0.5, 0.9 end near their targets and in order (chance K_c/d = 0.25)."""
    ends = []
    for tau in (0.1, 0.5, 0.9):
        reg = _tiny(fam.SiblingSpec(tau, 1))
        _train_knobs(reg, steps=40)
        ends.append(fam.measured_knobs(reg)[0])
    assert ends == sorted(ends)
    assert ends == pytest.approx([0.1, 0.5, 0.9], abs=0.1)
