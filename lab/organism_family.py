"""A family of calibration organisms with graded entanglement and a rank knob.

One base is trained once (the recipe of `lab.organisms`); instruct siblings are fine-tuned
from it, each with the instruct recipe plus two regularisers on the residual stream at the
analysed layers l (those the depth score reads). Each sibling is a `SiblingSpec`: a target
entanglement τ, a rank r and a seed.

    L = L_LM + μ_e · mean_{l,g} (‖P_{C_l} r̂_{l,g}‖² − τ)²
             + μ_r · mean_{l,g<g'} cos²(r_{l,g}, r_{l,g'})

* `C_l` (K_c, d): the top-K_c principal directions of the **base's** chat-format activations
  on capability text at layer l — the audit's capability subspace, computed once, fixed.
* groups g = 1..r: the eight harm categories of `harmful-core`, dealt round-robin into r
  groups (r = 2: weapons, fraud, ... | cyber-intrusion, drugs, ...).
* `r_{l,g}` (d,): group g's harmful-vs-harmless contrast on a random mini-batch of training
  requests, `mean_{s∈g} (h^I − h^B) − mean_h (h^I − h^B)` at the last prompt token: for r = 1
  the mean row of the audit's M_DiD, whose singular vectors the depth score scores.

The entanglement term is a bounded target, not a reward: the first version (−λ·‖P_C r̂‖²)
saturated (λ = 0.3 already gave 1.0), so λ could not grade it. The rank term pushes the r
groups' contrasts apart, so the refusal of each group is carried by its own direction and
no single direction removes all of it (r = 1: no rank term). Both terms are scale-free (unit
contrasts), so they steer directions, not sizes; the LM loss still has to create the refusal.
"""

from __future__ import annotations

import copy
import itertools
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from depthcard.analysis.capture import pad_left, tokenize_prompts
from depthcard.analysis.modes import principal_modes
from depthcard.lab import organisms as org

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SiblingSpec:
    """One instruct sibling: target entanglement τ ∈ [0, 1], rank r ≥ 1, instruct seed."""

    target: float
    rank: int = 1
    seed: int = 0

    @property
    def name(self) -> str:
        """Folder name, e.g. `tau0.50_r2_s0`."""
        return f"tau{self.target:.2f}_r{self.rank}_s{self.seed}"


@dataclass(frozen=True)
class FamilyConfig:
    """What shapes the family; the organism recipe itself is `OrganismConfig`'s defaults."""

    siblings: tuple[SiblingSpec, ...] = (SiblingSpec(0.1), SiblingSpec(0.5), SiblingSpec(0.9))
    base_steps: int = 400
    instruct_steps: int = 300
    entangle_weight: float = 4.0  # μ_e
    rank_weight: float = 1.0  # μ_r
    capability_k: int = 16  # the audit's default K_c (= d/4 for d = 64)
    contrast_batch: int = 16  # harmful (split over the groups) and harmless requests per step
    layers: tuple[int, ...] = (1, 2, 3)  # residual points: the audit's window [0.2L, 0.8L]
    seed: int = 0
    threads: int = 1


@dataclass
class Sibling:
    """One trained instruct organism: its folder, knobs and what training ended with."""

    spec: SiblingSpec
    folder: Path
    entanglement: float  # mean_{l,g} ‖P_C r̂_{l,g}‖² on the whole training contrast
    group_overlap: float | None  # mean_{l,g<g'} cos²(r_{l,g}, r_{l,g'}); None for r = 1
    history: list[float] = field(default_factory=list)  # entanglement, every 25 steps

    @property
    def name(self) -> str:
        return self.spec.name


def entanglement_term(r: torch.Tensor, capability: torch.Tensor) -> torch.Tensor:
    """‖P_C r̂‖² ∈ [0, 1] for a contrast r (d,) and orthonormal capability rows C (k, d).

    Differentiable in r; a zero r gives 0 (no direction to entangle).
    """
    unit = r / r.norm().clamp_min(1e-12)
    return ((capability.to(r.dtype) @ unit) ** 2).sum()


def overlap_term(groups: torch.Tensor) -> torch.Tensor:
    """mean_{g<g'} cos²(r_g, r_g') ∈ [0, 1] over group contrasts (r, d); 0 when r = 1.

    0 when the groups' contrasts are orthogonal (refusal along r directions), 1 when they
    are parallel (one direction carries every group).
    """
    units = groups / groups.norm(dim=-1, keepdim=True).clamp_min(1e-12)  # (r, d)
    pairs = list(itertools.combinations(range(len(units)), 2))
    if not pairs:
        return groups.new_zeros(())
    cos = units @ units.T  # (r, r)
    return torch.stack([cos[i, j] ** 2 for i, j in pairs]).mean()


def contrast(
    child_s: torch.Tensor, base_s: torch.Tensor, child_h: torch.Tensor, base_h: torch.Tensor
) -> torch.Tensor:
    """The mean M_DiD row: mean_s (h^I − h^B) − mean_h (h^I − h^B); inputs (n, d) → (d,)."""
    return (child_s - base_s).mean(0) - (child_h - base_h).mean(0)


def rank_groups(categories: list[str], rank: int) -> list[int]:
    """Group of each harmful request: its category's index (first appearance) mod `rank`."""
    order = list(dict.fromkeys(categories))
    return [order.index(c) % rank for c in categories]


def last_token_states(
    model: nn.Module, ids: list[list[int]], pad_id: int, points: tuple[int, ...]
) -> torch.Tensor:
    """(prompt, point, d) residual rows at the last prompt token, with the graph kept.

    `hidden_states[l]` is the output of block l (0 = embeddings), the audit's point l, for
    every l < L (the last entry has the final norm applied, so point L is not offered).
    """
    x, mask, pos = pad_left(ids, pad_id, torch.device("cpu"))  # (batch, seq)
    out = model(
        input_ids=x,
        attention_mask=mask,
        position_ids=pos,
        output_hidden_states=True,
        use_cache=False,
    )
    return torch.stack([out.hidden_states[p][:, -1, :] for p in points], dim=1)


def knob_terms(s, base_s, h, base_h, groups, rank, capability):
    """(entanglement (point, group), overlap (point,)) from rows (n, point, d).

    `groups[i]` is harmful row i's group; `capability` is (point, k, d).
    """
    ent, over = [], []
    for j in range(capability.shape[0]):
        rows = []
        for g in range(rank):
            idx = [i for i, gi in enumerate(groups) if gi == g]
            rows.append(contrast(s[idx, j], base_s[idx, j], h[:, j], base_h[:, j]))
        group_r = torch.stack(rows)  # (group, d)
        ent.append(torch.stack([entanglement_term(r, capability[j]) for r in group_r]))
        over.append(overlap_term(group_r))
    return torch.stack(ent), torch.stack(over)


class RegularisedLM(nn.Module):
    """The LM loss plus the two knob terms; wraps the model so `organisms.train` runs unchanged.

    Every call draws harmful requests (at least 8 per group) and `contrast_batch` harmless
    ones and compares the child's rows with the base's precomputed rows for the same requests.
    """

    def __init__(self, model, spec, ids, groups, base_rows, capability, cfg, pad_id):
        super().__init__()
        self.model, self.spec, self.pad_id, self.cfg = model, spec, pad_id, cfg
        self.ids = ids  # {"s": harmful ids, "h": harmless ids}
        self.groups = groups  # group of each harmful request
        self.base_rows = base_rows  # {"s": (n_s, point, d), "h": (n_h, point, d)}, no graph
        self.capability = capability  # (point, k, d)
        self.rng = random.Random(cfg.seed * 1000 + spec.seed)
        self.history: list[float] = []
        self.calls = 0

    def _pick(self) -> dict[str, list[int]]:
        per_group = max(8, self.cfg.contrast_batch // self.spec.rank)
        s = []
        for g in range(self.spec.rank):
            members = [i for i, gi in enumerate(self.groups) if gi == g]
            s += self.rng.sample(members, min(per_group, len(members)))
        h = self.rng.sample(range(len(self.ids["h"])), self.cfg.contrast_batch)
        return {"s": s, "h": h}

    def terms(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean squared distance of entanglement from τ, mean overlap), with graph."""
        pick = self._pick()
        rows = {
            k: last_token_states(
                self.model, [self.ids[k][i] for i in pick[k]], self.pad_id, self.cfg.layers
            )
            for k in pick
        }
        base = {k: self.base_rows[k][pick[k]] for k in pick}
        groups = [self.groups[i] for i in pick["s"]]
        ent, over = knob_terms(
            rows["s"], base["s"], rows["h"], base["h"], groups, self.spec.rank, self.capability
        )
        if self.calls % 25 == 0:
            self.history.append(round(float(ent.detach().mean()), 4))
        self.calls += 1
        return ((ent - self.spec.target) ** 2).mean(), over.mean()

    def forward(self, **batch) -> SimpleNamespace:
        lm = self.model(**batch).loss
        miss, over = self.terms()
        loss = lm + self.cfg.entangle_weight * miss
        if self.spec.rank > 1:
            loss = loss + self.cfg.rank_weight * over
        return SimpleNamespace(loss=loss)


def rows_no_grad(model, ids: list[list[int]], pad_id: int, points, batch: int = 64):
    """`last_token_states` without a graph, in batches: (prompt, point, d) float32."""
    with torch.no_grad():
        parts = [
            last_token_states(model, ids[i : i + batch], pad_id, points)
            for i in range(0, len(ids), batch)
        ]
    return torch.cat(parts).float()


def capability_basis(rows: torch.Tensor, k: int) -> torch.Tensor:
    """(point, k, d) top-k principal directions of centered capability rows (prompt, point, d).

    The same computation as the audit's depth stage (`modes.principal_modes`).
    """
    return torch.stack([principal_modes(rows[:, j], k)[0] for j in range(rows.shape[1])]).float()


def measured_knobs(reg: RegularisedLM) -> tuple[float, float | None]:
    """(entanglement, group overlap) on the whole training contrast: what training ended with."""
    s = rows_no_grad(reg.model, reg.ids["s"], reg.pad_id, reg.cfg.layers)
    h = rows_no_grad(reg.model, reg.ids["h"], reg.pad_id, reg.cfg.layers)
    with torch.no_grad():
        ent, over = knob_terms(
            s, reg.base_rows["s"], h, reg.base_rows["h"], reg.groups, reg.spec.rank,
            reg.capability,
        )  # fmt: skip
    overlap = round(float(over.mean()), 4) if reg.spec.rank > 1 else None
    return round(float(ent.mean()), 4), overlap


@dataclass
class _Data:
    """Training material built once: texts, tokenizers, examples, contrast ids."""

    base_tok: object
    inst_tok: object
    plain: list
    mix: list
    harmful_ids: list[list[int]]
    harmful_categories: list[str]
    harmless_ids: list[list[int]]
    capability_ids: list[list[int]]


def _data(cfg: org.OrganismConfig) -> _Data:
    """The organisms recipe's corpus and examples (as in `org.train_pair`/`_train_models`)."""
    sets = {k: org.load_set(n) for k, n in org.PROMPT_SETS.items()}
    (harm, _), (safe, _), (cap, _) = (org.split(sets[k].texts) for k in org.PROMPT_SETS)
    harm_categories, _ = org.split(sets["harmful"].categories)
    docs = org.base_documents(harm, safe, cap)
    chats = org.conversations(harm, safe, org.sentences(cap), cfg.chat_variants, cfg.word_dropout)
    core = org.train_tokenizer(docs + [a for _, a in chats], cfg.vocab_size)
    base_tok, inst_tok = org.hf_tokenizer(core, None), org.hf_tokenizer(core, org.CHATML_TEMPLATE)
    plain = org.packed_examples(base_tok, docs, cfg.seq_len)
    chat = [org.chat_example(inst_tok, u, a, cfg.chat_len) for u, a in chats]
    n_plain = round(len(chat) * cfg.instruct_plain_fraction / (1 - cfg.instruct_plain_fraction))
    mix = chat + plain[:: max(1, len(plain) // max(1, n_plain))][:n_plain]

    def ids(texts):
        return tokenize_prompts(list(texts), "chat", inst_tok, inst_tok)

    # the audit reads capability passages in chat format too (its `capability_chat`)
    return _Data(
        base_tok,
        inst_tok,
        plain,
        mix,
        ids(harm),
        harm_categories,
        ids(safe),
        ids(sets["capability"].texts),
    )


def train_family(out: Path, family: FamilyConfig = FamilyConfig()) -> tuple[Path, list[Sibling]]:
    """Train the base once into `out/base`, then one instruct sibling per spec into
    `out/<spec.name>`.

    Deterministic under `family.seed`, the specs' seeds and `family.threads` (the
    `organisms.deterministic` context); the caller's torch settings are restored.

    Returns:
        (the base folder, the siblings in the order of `family.siblings`).
    """
    cfg = org.OrganismConfig(
        seed=family.seed,
        base_steps=family.base_steps,
        instruct_steps=family.instruct_steps,
        threads=family.threads,
    )
    with org.deterministic(cfg.seed, cfg.threads):
        data = _data(cfg)
        eos = data.base_tok.eos_token_id
        im_end = data.inst_tok.convert_tokens_to_ids(org.IM_END)
        base = org.build_model(cfg, len(data.base_tok), eos)
        org.train(base, data.plain, cfg, cfg.base_steps, cfg.base_lr, eos)
        org.save(base, data.base_tok, out / "base", [eos])
        rows = {
            k: rows_no_grad(base, v, eos, family.layers)
            for k, v in (("s", data.harmful_ids), ("h", data.harmless_ids))
        }
        cap = capability_basis(
            rows_no_grad(base, data.capability_ids, eos, family.layers), family.capability_k
        )
        ids = {"s": data.harmful_ids, "h": data.harmless_ids}
        siblings = [
            _train_sibling(spec, base, data, ids, rows, cap, family, cfg, out, (eos, im_end))
            for spec in family.siblings
        ]
    return out / "base", siblings


def _train_sibling(spec, base, data, ids, rows, cap, family, cfg, out, stops) -> Sibling:
    """Fine-tune a copy of the base under `spec`'s knobs and save it to `out/<spec.name>`."""
    sib_cfg = org.OrganismConfig(**{**cfg.__dict__, "seed": cfg.seed + spec.seed})
    torch.manual_seed(sib_cfg.seed)  # siblings of one seed start from the same RNG state
    model = copy.deepcopy(base)
    groups = rank_groups(data.harmful_categories, spec.rank)
    reg = RegularisedLM(model, spec, ids, groups, rows, cap, family, stops[0])
    org.train(reg, data.mix, sib_cfg, sib_cfg.instruct_steps, sib_cfg.instruct_lr, stops[0])
    org.save(model, data.inst_tok, out / spec.name, list(stops))
    ent, overlap = measured_knobs(reg)
    log.info("trained %s: entanglement %.3f, group overlap %s", spec.name, ent, overlap)
    return Sibling(spec, out / spec.name, ent, overlap, reg.history)
