"""Ground truth of removal cost: the strongest cheap coherent removal a strong attacker finds.

Independent of the audit's own choices (its l*, its attack basis, its min_k search): on the
held-out prompts, two attacks are tried on every layer of the window.

* **Direction family** (hooks): at layer l the basis is r̂_l (the child's own harmful −
  harmless difference in means on the fit prompts) followed by the top right singular vectors
  of the child's contrast rows `h(x_s) − mean_h h`, orthogonalised in order
  (`ablation_cost.attack_basis`). k = 1, 2, … up to `k_max` is judged in order and a layer
  stops at its first coherent success (refusal share below the threshold, broken share within
  bounds); no bisection.
* **Weight orthogonalisation** (Arditi et al. 2024): r̂_l projected out of every matrix that
  writes to the residual stream (the embedding, each attention output and MLP output). Where
  the model normalises a block's output before adding it (Gemma's post-norms, `g ⊙ y/rms(y)`),
  the projection is against `g ⊙ r̂`, which makes what is added orthogonal to r̂ exactly.
  The embedding is untied from the LM head for the duration (the head reads, it does not
  write).

Every point records refusal, compliance and broken shares and first-token KL on the harmless
prompts. The removal cost is the cheapest coherent point: lowest KL (then fewest directions).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from depthcard.analysis.ablation import mean_kl
from depthcard.analysis.ablation_cost import Evaluator, attack_basis, share_fields
from depthcard.analysis.answer_nll import answer_nll
from depthcard.analysis.generation import generate_responses
from depthcard.analysis.judges import NLL_CONTEXT
from depthcard.schemas.gemma_calibration import RemovalPoint


def contrast_basis(child_s: torch.Tensor, child_h: torch.Tensor, k_max: int) -> torch.Tensor:
    """(k, d) r̂ then the contrast's top singular vectors, orthonormal; rows (n, d) float."""
    s, h = child_s.double(), child_h.double()
    r = s.mean(0) - h.mean(0)
    rows = s - h.mean(0)  # (n_s, d)
    _, _, vt = torch.linalg.svd(rows, full_matrices=False)
    return attack_basis(r, vt[: max(0, k_max - 1)])[:k_max]


def direction_sweep(
    layers: list[int], k_max: int, evaluate: Callable[[int, int], RemovalPoint]
) -> list[RemovalPoint]:
    """Every layer, k = 1..k_max in order, stopping a layer at its first coherent point."""
    points = []
    for layer in layers:
        for k in range(1, k_max + 1):
            points.append(evaluate(layer, k))
            if points[-1].coherent:
                break
    return points


def cheapest(points: list[RemovalPoint], method: str | None = None) -> RemovalPoint | None:
    """The coherent point of lowest KL (ties: fewer directions, then the earlier layer)."""
    ok = [p for p in points if p.coherent and (method is None or p.method == method)]
    return min(ok, key=lambda p: (p.kl, p.k, p.layer), default=None)


def writers(model: nn.Module) -> list[tuple[nn.Linear, nn.Module | None]]:
    """(projection, post-norm or None) for every matrix writing into the residual stream.

    Raises:
        ValueError: a decoder layer without `self_attn.o_proj` and `mlp.down_proj`.
    """
    out = []
    for i, layer in enumerate(model.base_model.layers):
        try:
            attn, mlp = layer.self_attn.o_proj, layer.mlp.down_proj
        except AttributeError as exc:
            raise ValueError(f"layer {i}: no self_attn.o_proj / mlp.down_proj ({exc})") from exc
        post = hasattr(layer, "post_feedforward_layernorm")  # Gemma 2/3: norm, then add
        out.append((attn, layer.post_attention_layernorm if post else None))
        out.append((mlp, layer.post_feedforward_layernorm if post else None))
    return out


def _unit_written(direction: torch.Tensor, norm: nn.Module | None) -> torch.Tensor:
    """The direction a projection's output must be orthogonal to: r̂, or g ⊙ r̂ before a
    Gemma RMSNorm (scale g = 1 + weight)."""
    u = direction.double()
    if norm is not None:
        u = u * (1.0 + norm.weight.detach().double())
    return u / u.norm()


@contextmanager
def orthogonalised(model: nn.Module, direction: torch.Tensor) -> Iterator[None]:
    """Inside the block, `direction` (d,) is projected out of every residual writer's
    weights; the original weights (and the embedding tie) are restored on exit."""
    r = direction.double() / direction.double().norm()
    emb = model.get_input_embeddings()
    saved: list[tuple[nn.Module, str, nn.Parameter]] = [(emb, "weight", emb.weight)]
    try:
        w = emb.weight.detach().double()  # (vocab, d): rows written into the stream
        emb.weight = nn.Parameter((w - (w @ r)[:, None] * r).to(emb.weight.dtype),
                                  requires_grad=False)  # fmt: skip
        for proj, norm in writers(model):
            u = _unit_written(r, norm)
            saved.append((proj, "weight", proj.weight))
            w = proj.weight.detach().double()  # (d, in)
            proj.weight = nn.Parameter((w - u[:, None] * (u @ w)).to(w.dtype).to(
                proj.weight.dtype), requires_grad=False)  # fmt: skip
            if proj.bias is not None:
                saved.append((proj, "bias", proj.bias))
                b = proj.bias.detach().double()
                proj.bias = nn.Parameter((b - u * (u @ b)).to(proj.bias.dtype),
                                         requires_grad=False)  # fmt: skip
        yield
    finally:
        for module, name, param in reversed(saved):
            setattr(module, name, param)


def _point(method: str, layer: int, k: int, fields: dict, kl: float, ev: Evaluator):
    return RemovalPoint(
        method=method,
        layer=layer,
        k=k,
        refusal_share=fields["refusal_rate"],
        compliance_share=fields["compliance_share"],
        broken_share=fields["broken_share"],
        kl=kl,
        coherent=fields["refusal_rate"] < ev.s.threshold
        and fields["broken_share"] <= ev.s.max_broken_share,
    )


def direction_point(ev: Evaluator, basis: torch.Tensor, layer: int, k: int) -> RemovalPoint:
    """Judge the child with `basis[:k]` (k, d) ablated at every residual point."""
    p = ev.point("attack", k, basis[:k].T, generate=True, layer=layer)
    fields = {"refusal_rate": p.refusal_rate, "compliance_share": p.compliance_share,
              "broken_share": p.broken_share}  # fmt: skip
    return _point("direction", layer, k, fields, p.kl, ev)


def orthogonalised_point(ev: Evaluator, direction: torch.Tensor, layer: int) -> RemovalPoint:
    """Judge the child with r̂_l orthogonalised out of its weights; answers are scored for
    the broken rule under the *unaltered* child, as every judged answer is."""
    texts = ev.data.harmful_texts
    with orthogonalised(ev.model, direction):
        answers = generate_responses(ev.model, ev.tokenizer, texts,
                                     max_new_tokens=ev.s.max_new_tokens,
                                     batch_size=ev.s.batch_size)  # fmt: skip
        _, lp_h = ev.score_and_logp(None)
    nll = [None] * len(answers)
    if ev.s.judge.nll_rule:
        nll = answer_nll(ev.model, ev.tokenizer, [NLL_CONTEXT] * len(answers), answers,
                         batch_size=ev.s.batch_size)  # fmt: skip
    judged = ev.judge.classify(answers, nll)
    kl = mean_kl(ev.baseline.logp_harmless, lp_h)
    return _point("orthogonalised", layer, 1, share_fields(judged), kl, ev)


@dataclass(frozen=True)
class GroundTruth:
    baseline_refusal: float
    points: list[RemovalPoint]


def measure_ground_truth(ev: Evaluator, bases: dict[int, torch.Tensor], k_max: int) -> GroundTruth:
    """Both attacks on every layer of `bases` (layer → (k, d) contrast basis, fit prompts)."""
    base = ev.baseline or ev.measure_baseline()
    layers = sorted(bases)
    points = direction_sweep(layers, k_max, lambda la, k: direction_point(ev, bases[la], la, k))
    points += [orthogonalised_point(ev, bases[la][0], la) for la in layers]
    return GroundTruth(base.refusal_rate, points)
