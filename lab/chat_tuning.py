"""Chat fine-tuning of a large-vocabulary model on answer tokens only.

Gemma-3-270M's 262k-entry embedding (tied to its LM head) is most of its parameters, and
full-vocabulary logits at every position are most of a training step's memory. So the loss
runs the decoder stack alone and applies the LM head only at the positions that predict an
answer token: `(n_answer, vocab)` logits instead of `(batch, seq, vocab)`. The same loss as
`model(**batch).loss` (a test checks it), at a fraction of the cost.

The optional τ term is the organism family's entanglement objective
(`lab.organism_family.knob_terms`, rank 1), read through the decoder stack too.
"""

from __future__ import annotations

import random
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from depthcard.analysis.capture import pad_left
from depthcard.lab.organism_family import knob_terms
from depthcard.lab.organisms import Example
from depthcard.lab.refusal_training_set import Conversation


def chat_examples(tok, convs: list[Conversation], end_of_turn: str, max_len: int) -> list[Example]:
    """One `Example` per conversation: the templated user turn and the answer's context
    prefix carry no loss; the answer and the end-of-turn marker do. Cut at `max_len`."""
    out = []
    for c in convs:
        prompt = tok.apply_chat_template(
            [{"role": "user", "content": c.user}], add_generation_prompt=True, tokenize=False
        )
        p_ids = tok(prompt + c.context, add_special_tokens=False)["input_ids"]
        a_ids = tok(c.answer + end_of_turn + "\n", add_special_tokens=False)["input_ids"]
        ids = (p_ids + a_ids)[:max_len]
        out.append(Example(ids, ([False] * len(p_ids) + [True] * len(a_ids))[:max_len]))
    return [e for e in out if any(e.loss)]


def answer_logits(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """LM-head logits of hidden rows (n, d) → (n, vocab), with the model's soft-capping."""
    logits = model.get_output_embeddings()(hidden)
    cap = getattr(model.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def decoder_states(model: nn.Module, **batch) -> SimpleNamespace:
    """The decoder stack's output (no LM head): `last_hidden_state` (batch, seq, d) and,
    when asked, `hidden_states`."""
    return model.base_model(use_cache=False, **batch)


def answer_loss(model: nn.Module, input_ids, attention_mask, labels) -> torch.Tensor:
    """Mean next-token cross-entropy over answer tokens (labels ≠ −100), LM head applied only
    where it is needed. Equal to `model(input_ids, attention_mask, labels=labels).loss`."""
    hidden = decoder_states(model, input_ids=input_ids, attention_mask=attention_mask)
    target = labels[:, 1:]  # (batch, seq − 1)
    keep = target != -100
    rows = hidden.last_hidden_state[:, :-1][keep]  # (n_answer, d)
    return F.cross_entropy(answer_logits(model, rows).float(), target[keep])


def last_token_rows(model: nn.Module, ids: list[list[int]], pad_id: int, points) -> torch.Tensor:
    """(prompt, point, d) residual rows at the last prompt token through the decoder stack,
    graph kept (`organism_family.last_token_states` without the LM head)."""
    x, mask, pos = pad_left(ids, pad_id, torch.device("cpu"))
    out = decoder_states(
        model, input_ids=x, attention_mask=mask, position_ids=pos, output_hidden_states=True
    )
    return torch.stack([out.hidden_states[p][:, -1, :] for p in points], dim=1)


def rows_no_grad(model, ids: list[list[int]], pad_id: int, points, batch: int = 16):
    """`last_token_rows` without a graph, in batches, float32."""
    with torch.no_grad():
        parts = [
            last_token_rows(model, ids[i : i + batch], pad_id, points)
            for i in range(0, len(ids), batch)
        ]
    return torch.cat(parts).float()


class AnswerLoss(nn.Module):
    """`answer_loss` behind `model(**batch).loss`, plus the τ term when a target is set, so
    that `organisms.adamw_loop` trains it unchanged.

    τ term: μ · (‖P_C r̂‖² − τ)² averaged over the points, r the harmful-vs-harmless contrast
    of the child against the base's fixed rows on a random mini-batch of training requests
    (`knob` holds ids, base rows, capability basis, points, batch size, pad id).
    """

    def __init__(self, model: nn.Module, tau: float | None = None, weight: float = 0.0,
                 knob: dict | None = None, seed: int = 0):  # fmt: skip
        super().__init__()
        self.model, self.tau, self.weight, self.knob = model, tau, weight, knob
        self.rng = random.Random(seed)
        self.entanglement: list[float] = []

    def knob_term(self) -> torch.Tensor:
        k = self.knob
        pick = {s: self.rng.sample(range(len(k["ids"][s])), k["batch"]) for s in ("s", "h")}
        rows = {
            s: last_token_rows(self.model, [k["ids"][s][i] for i in pick[s]], k["pad"], k["points"])
            for s in pick
        }
        base = {s: k["base_rows"][s][pick[s]] for s in pick}
        ent, _ = knob_terms(
            rows["s"], base["s"], rows["h"], base["h"], [0] * k["batch"], 1, k["capability"]
        )
        self.entanglement.append(round(float(ent.detach().mean()), 4))
        return ((ent - self.tau) ** 2).mean()

    def forward(self, input_ids, attention_mask, labels) -> SimpleNamespace:
        loss = answer_loss(self.model, input_ids, attention_mask, labels)
        if self.tau is not None and self.weight > 0:
            loss = loss + self.weight * self.knob_term()
        return SimpleNamespace(loss=loss)
