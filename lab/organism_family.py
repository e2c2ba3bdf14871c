"""A family of calibration organisms with a controlled entanglement of refusal and capability.

One base is trained once (the recipe of `lab.organisms`); several instruct siblings are
fine-tuned from it, each with the instruct recipe plus a regulariser of weight λ on the
residual stream at the analysed layers l (those the depth score reads):

    L = L_LM − λ · mean_l ‖P_{C_l} r̂_l‖²

* `C_l` (K_c, d): the top-K_c principal directions of the **base's** chat-format activations
  on capability text at layer l — the audit's capability subspace, computed once, fixed.
* `r_l` (d,): the alignment shift's harmful-vs-harmless contrast on a random mini-batch of
  training requests, `mean_s (h^I − h^B) − mean_h (h^I − h^B)` at the last prompt token:
  the mean row of the audit's M_DiD, whose top singular vector the depth score scores.

λ > 0 pulls the refusal contrast into the capability subspace (entangled, "deep"); λ < 0
pushes it out (orthogonal, "shallow"); λ = 0 is the plain recipe with fewer steps. The
penalty is scale-free (r̂ is unit), so it steers the direction of the refusal, not its size.
"""

from __future__ import annotations

import copy
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
class FamilyConfig:
    """What shapes the family; the organism recipe itself is `OrganismConfig`'s defaults."""

    lambdas: tuple[float, ...] = (-1.0, 0.0, 1.0, 3.0)
    base_steps: int = 400
    instruct_steps: int = 300
    capability_k: int = 16  # the audit's default K_c (= d/4 for d = 64)
    contrast_batch: int = 16  # harmful and harmless requests per step for r_l
    layers: tuple[int, ...] = (1, 2, 3)  # residual points: the audit's window [0.2L, 0.8L]
    seed: int = 0
    threads: int = 1


@dataclass
class Sibling:
    """One trained instruct organism: its folder, λ and the entanglement it ended with."""

    name: str
    lam: float
    folder: Path
    entanglement: float  # mean_l ‖P_C r̂_l‖² on the whole training contrast, after training
    history: list[float] = field(default_factory=list)  # regulariser value, every 25 steps


def entanglement_term(r: torch.Tensor, capability: torch.Tensor) -> torch.Tensor:
    """‖P_C r̂‖² ∈ [0, 1] for a contrast r (d,) and orthonormal capability rows C (k, d).

    Differentiable in r; a zero r gives 0 (no direction to entangle).
    """
    unit = r / r.norm().clamp_min(1e-12)
    return ((capability.to(r.dtype) @ unit) ** 2).sum()


def contrast(
    child_s: torch.Tensor, base_s: torch.Tensor, child_h: torch.Tensor, base_h: torch.Tensor
) -> torch.Tensor:
    """The mean M_DiD row: mean_s (h^I − h^B) − mean_h (h^I − h^B); inputs (n, d) → (d,)."""
    return (child_s - base_s).mean(0) - (child_h - base_h).mean(0)


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


class RegularisedLM(nn.Module):
    """The LM loss minus λ·entanglement; wraps the model so `organisms.train` runs unchanged.

    Every call draws `batch` harmful and `batch` harmless requests and compares the child's
    rows with the base's precomputed rows for the same requests.
    """

    def __init__(self, model, lam, harmful, harmless, base_rows, capability, cfg, pad_id):
        super().__init__()
        self.model, self.lam, self.pad_id, self.cfg = model, lam, pad_id, cfg
        self.ids = {"s": harmful, "h": harmless}
        self.base_rows = base_rows  # {"s": (n_s, point, d), "h": (n_h, point, d)}, no graph
        self.capability = capability  # (point, k, d)
        self.rng = random.Random(cfg.seed)
        self.history: list[float] = []
        self.calls = 0

    def penalty(self) -> torch.Tensor:
        """mean_l ‖P_{C_l} r̂_l‖² on one random contrast mini-batch (with graph)."""
        pick = {
            k: self.rng.sample(range(len(v)), self.cfg.contrast_batch) for k, v in self.ids.items()
        }
        rows = {
            k: last_token_states(
                self.model, [self.ids[k][i] for i in pick[k]], self.pad_id, self.cfg.layers
            )
            for k in pick
        }
        base = {k: self.base_rows[k][pick[k]] for k in pick}
        terms = [
            entanglement_term(
                contrast(rows["s"][:, j], base["s"][:, j], rows["h"][:, j], base["h"][:, j]),
                self.capability[j],
            )
            for j in range(len(self.cfg.layers))
        ]
        return torch.stack(terms).mean()

    def forward(self, **batch) -> SimpleNamespace:
        lm = self.model(**batch).loss
        if self.lam == 0.0:
            return SimpleNamespace(loss=lm)
        ent = self.penalty()
        if self.calls % 25 == 0:
            self.history.append(round(float(ent.detach()), 4))
        self.calls += 1
        return SimpleNamespace(loss=lm - self.lam * ent)


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


def measured_entanglement(reg: RegularisedLM) -> float:
    """mean_l ‖P_{C_l} r̂_l‖² on the whole training contrast: what training ended with."""
    s = rows_no_grad(reg.model, reg.ids["s"], reg.pad_id, reg.cfg.layers)
    h = rows_no_grad(reg.model, reg.ids["h"], reg.pad_id, reg.cfg.layers)
    terms = [
        entanglement_term(
            contrast(s[:, j], reg.base_rows["s"][:, j], h[:, j], reg.base_rows["h"][:, j]),
            reg.capability[j],
        )
        for j in range(len(reg.cfg.layers))
    ]
    return round(float(torch.stack(terms).mean()), 4)


@dataclass
class _Data:
    """Training material built once: texts, tokenizers, examples, contrast ids."""

    base_tok: object
    inst_tok: object
    plain: list
    mix: list
    harmful_ids: list[list[int]]
    harmless_ids: list[list[int]]
    capability_ids: list[list[int]]


def _data(cfg: org.OrganismConfig) -> _Data:
    """The organisms recipe's corpus and examples (as in `org.train_pair`/`_train_models`)."""
    sets = {k: org.load_set(n) for k, n in org.PROMPT_SETS.items()}
    (harm, _), (safe, _), (cap, _) = (org.split(sets[k].texts) for k in org.PROMPT_SETS)
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
        base_tok, inst_tok, plain, mix, ids(harm), ids(safe), ids(sets["capability"].texts)
    )


def train_family(out: Path, family: FamilyConfig = FamilyConfig()) -> tuple[Path, list[Sibling]]:
    """Train the base once into `out/base`, then one instruct sibling per λ into `out/lam_*`.

    Deterministic under `family.seed` and `family.threads` (the `organisms.deterministic`
    context); the caller's torch settings are restored.

    Returns:
        (the base folder, the siblings in the order of `family.lambdas`).
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
        siblings = []
        for lam in family.lambdas:
            torch.manual_seed(cfg.seed)  # every sibling starts from the same RNG state
            model = copy.deepcopy(base)
            reg = RegularisedLM(
                model, lam, data.harmful_ids, data.harmless_ids, rows, cap, family, eos
            )
            org.train(reg, data.mix, cfg, cfg.instruct_steps, cfg.instruct_lr, eos)
            name = sibling_name(lam)
            org.save(model, data.inst_tok, out / name, [eos, im_end])
            ent = measured_entanglement(reg)
            log.info("trained %s: entanglement %.3f", name, ent)
            siblings.append(Sibling(name, lam, out / name, ent, reg.history))
    return out / "base", siblings


def sibling_name(lam: float) -> str:
    """Folder name of the sibling trained with λ, e.g. `lam_+1.0`, `lam_-0.5`."""
    return f"lam_{lam:+.1f}"
