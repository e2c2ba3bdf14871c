"""The work of an audit, counted before it runs: forward passes, generated tokens, FLOPs.

Pure functions of config.json (as a dict), the audit's settings and the token count of every
prompt; no torch, no model. The counts mirror the stages' code (`capture.capture_sets`,
`ablation_stage`, `ablation_cost`, `fragility`); where a count depends on what the model
does (how many answers are refusals, where bisection goes, when a row stops), the plan takes
the upper bound. docs/estimate.md gives the formulas.

FLOPs per token are 2 × the parameters a token's matmuls touch: the decoder blocks always,
the LM head (V·d) only where logits are computed. Capture stops after the last block, a
first-token pass computes logits at one position per prompt, and cross-entropy, answer NLL
and the fragility losses compute them at every token. A gradient costs ≈ 3 forwards
(6·N·T), a Hessian-vector product by double backprop ≈ 2 gradients (12·N·T). Attention's
score FLOPs (≈ 4·L·d·context per token, about context / 6d of the matmuls) are left out: 3 %
for 100-token prompts at d = 576, less for wider models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from depthcard.schemas.errors import UserError
from depthcard.schemas.estimate import ModelSize, PlanTotals, WorkItem
from depthcard.schemas.report import AUTO_BATCH_GPU, AuditConfig

EXACT_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})
_UNTIED_BY_DEFAULT = EXACT_TYPES  # their config classes default tie_word_embeddings to False
_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
CE_BATCH = 8  # `ablation.mean_cross_entropy`'s batch size (the Evaluator keeps its default)
MinKSearch = Literal["ordered", "bisect", "all"]
RUNNER_UPS = 2  # candidate layers besides l* whose min_k is searched
RUNNER_UP_K = 3  # ... up to this many directions (analysis.ablation_stage)
CANDIDATES = 3  # layers the bootstrap re-measures (analysis.layer_choice)


def _first(config: dict, *keys: str) -> int | None:
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def model_size(config: dict, source: str) -> ModelSize:
    """Parameters and shape from a config.json dict (a nested `text_config` wins).

    Per block: attention q, k, v, o (grouped-query: k and v have `num_key_value_heads`
    heads of `head_dim`), their biases where the type has them (Qwen2: q, k, v; Llama,
    Qwen3: all four when `attention_bias`), Qwen3's q/k norms, a gated MLP (3·d·I, biases
    when `mlp_bias`) and two norms; then the final norm, the embedding, and the LM head
    unless tied.

    Raises:
        UserError: config.json lacks the hidden size, layer count or vocabulary size.
    """
    nested = config.get("text_config")
    c = {**config, **nested} if isinstance(nested, dict) else dict(config)
    d = _first(c, "hidden_size", "n_embd", "d_model")
    layers = _first(c, "num_hidden_layers", "n_layer", "num_layers")
    vocab = _first(c, "vocab_size")
    if d is None or layers is None or vocab is None:
        raise UserError(f"{source}: config.json lacks hidden size, layer count or vocab size")
    model_type = c.get("model_type") if isinstance(c.get("model_type"), str) else None
    heads = _first(c, "num_attention_heads", "n_head") or max(1, d // 64)
    kv_heads = _first(c, "num_key_value_heads") or heads
    head_dim = _first(c, "head_dim") or d // heads
    width = _first(c, "intermediate_size", "n_inner") or 4 * d
    tied = c.get("tie_word_embeddings", model_type not in _UNTIED_BY_DEFAULT)
    q, kv = heads * head_dim, kv_heads * head_dim
    block = 2 * d * q + 2 * d * kv + 3 * d * width + 2 * d
    if model_type == "qwen2":
        block += q + 2 * kv
    elif c.get("attention_bias"):
        block += q + 2 * kv + d
    if model_type == "qwen3":
        block += 2 * head_dim
    if c.get("mlp_bias"):
        block += 2 * width + d
    embedding = vocab * d
    parameters = layers * block + d + embedding + (0 if tied else embedding)
    archs = c.get("architectures") or ["unknown"]
    dtype = c.get("torch_dtype") or c.get("dtype")
    return ModelSize(
        source=source,
        architecture=str(archs[0]),
        model_type=model_type,
        parameters=parameters,
        exact=model_type in EXACT_TYPES,
        num_layers=layers,
        hidden_size=d,
        intermediate_size=width,
        vocab_size=vocab,
        tied_embeddings=bool(tied),
        embedding_parameters=embedding,
        head_parameters=embedding,
        weight_bytes=parameters * _DTYPE_BYTES.get(str(dtype), 2),
    )


def body_parameters(size: ModelSize) -> int:
    """Parameters of the decoder blocks and final norm: what every token's forward touches."""
    untied_head = 0 if size.tied_embeddings else size.head_parameters
    return size.parameters - size.embedding_parameters - untied_head


@dataclass(frozen=True)
class PromptLengths:
    """Token count per prompt of every tokenized set, and the held-out split.

    `tokens` is keyed like `TokenizedInputs.ids` (harmful_chat, harmless_chat, harmful_raw,
    capability_chat, capability_raw, domain{i}_chat); `fit`/`eval` map a role (harmful,
    harmless, capability) to prompt indices; `nll_context` is the tokens of the (empty)
    user turn every answer is NLL-scored after.
    """

    tokens: dict[str, list[int]]
    fit: dict[str, list[int]]
    eval: dict[str, list[int]]
    nll_context: int

    def total(self, key: str, idx: list[int] | None = None) -> int:
        rows = self.tokens.get(key, [])
        return sum(rows) if idx is None else sum(rows[i] for i in idx)


# `analysis.ablation_cost.random_ablation`: RANDOM_DRAWS (3) draws at k = 1 and at min_k (at
# most; a test holds the two modules to the same count).
PLACEBO_SETTINGS = 2 * 3


def generation_points(k: int, search: MinKSearch) -> int:
    """Attack points that generate, at most: all of k = 1..K+1 (`all`, and `ordered`, whose
    search stops at the first coherent success but runs to the end where there is none), or
    the 1 + ⌈log2(K+1)⌉ a bisection visits on a monotone curve, plus the runner-up layers'
    min_k search (RUNNER_UPS × RUNNER_UP_K points) in every case."""
    n = k + 1
    at_l = n if search != "bisect" else min(n, 1 + math.ceil(math.log2(n)))
    return at_l + RUNNER_UPS * min(RUNNER_UP_K, n)


def _batches(rows: int, batch_size: int) -> int:
    return -(-rows // batch_size)


class PassFlops:
    """FLOPs of the audit's kinds of pass for one model size."""

    def __init__(self, size: ModelSize):
        self.body, self.head = body_parameters(size), size.head_parameters

    def capture(self, tokens: int) -> float:
        return 2.0 * self.body * tokens

    def first_token(self, tokens: int, rows: int) -> float:
        return 2.0 * self.body * tokens + 2.0 * self.head * rows

    def full(self, tokens: int) -> float:
        return 2.0 * (self.body + self.head) * tokens


def _capture(stage, keys, lengths: PromptLengths, cfg: AuditConfig, f: PassFlops) -> WorkItem:
    present = [k for k in keys if k in lengths.tokens]
    rows = sum(len(lengths.tokens[k]) for k in present)
    tokens = sum(lengths.total(k) for k in present)
    return WorkItem(
        stage=stage, purpose=f"activations of {len(present)} sets, every layer",
        kind="forward", settings=1, passes=rows, tokens=tokens, flops=f.capture(tokens),
        calls=sum(_batches(len(lengths.tokens[k]), cfg.batch_size) for k in present),
    )  # fmt: skip


def capture_items(cfg: AuditConfig, lengths: PromptLengths, paired: bool, f) -> list[WorkItem]:
    """The base's and the child's activation captures (`audit._capture_base`, child)."""
    domains = tuple(k for k in lengths.tokens if k.startswith("domain"))
    child = ("harmful_chat", "harmless_chat", "capability_chat", *domains)
    items = [_capture("capture-child", child, lengths, cfg, f)]
    if paired:
        base = ("harmful_chat", "harmless_chat", "harmful_raw", "capability_chat", *domains)
        items.insert(0, _capture("capture-base", base, lengths, cfg, f))
    return items


def ablation_items(
    cfg: AuditConfig,
    lengths: PromptLengths,
    f: PassFlops,
    num_layers: int,
    nll_rule: bool,
    search: MinKSearch,
) -> list[WorkItem]:
    """The ablation stage: baseline, layer search on the fit half, the curve on the eval half.

    The curve ablates the attack basis (K+1 directions), the SVD basis (K) and each SVD
    direction alone (K); every point reads first-token log-probs, the capability
    cross-entropy is computed at the baseline and min_k (`capability_ce` "min-k", counted as 2
    settings: at most, since min_k may be absent), the judged points ("judged": the baseline
    and the generation points), the attack points k = 0..K+1 ("attack") or every point
    ("every-point"), and only the generation points generate. First-token passes are counted
    in full: reusing the prompts' cached opening (`reuse_opening`) makes them cheaper.
    """
    k, bs, new = cfg.num_directions, cfg.batch_size, cfg.max_new_tokens
    ev, fit = lengths.eval, lengths.fit
    e_s, e_h = len(ev["harmful"]), len(ev["harmless"])
    eval_tok = lengths.total("harmful_chat", ev["harmful"]) + lengths.total(
        "harmless_chat", ev["harmless"]
    )
    lo, hi = _window(num_layers, cfg.layer_window)
    searched = hi - lo + 1
    f_rows = len(fit["harmful"]) + len(fit["harmless"])
    fit_tok = lengths.total("harmful_chat", fit["harmful"]) + lengths.total(
        "harmless_chat", fit["harmless"]
    )
    score_settings = 1 + (k + 1) + k + k  # baseline, attack, svd, single
    boot = getattr(cfg, "layer_bootstraps", 0)
    where = getattr(cfg, "capability_ce", "attack")
    judged = 1 + generation_points(k, search)  # the baseline and the points that generate
    ce_settings = {"min-k": 2, "judged": judged, "attack": k + 2}.get(where, score_settings)
    h_tok = lengths.total("harmless_chat", ev["harmless"])
    items = [
        _forward("ablation", "first token: refusal score + harmless",
                 score_settings, e_s + e_h, eval_tok, _batches(e_s, bs) + _batches(e_h, bs),
                 f.first_token(eval_tok, e_s + e_h)),
        _forward("ablation", f"layer search, {searched} layers and {boot} refitted resamples "
                 "(first token, fit)",
                 1 + searched + boot * CANDIDATES, f_rows, fit_tok,
                 _batches(len(fit["harmful"]), bs) + _batches(len(fit["harmless"]), bs),
                 f.first_token(fit_tok, f_rows)),
        _forward("ablation", "KL placebo: random directions at k = 1 and min k",
                 PLACEBO_SETTINGS, e_h, h_tok, _batches(e_h, bs), f.first_token(h_tok, e_h)),
    ]  # fmt: skip
    if "capability_raw" in lengths.tokens and "capability" in ev:
        rows, tok = len(ev["capability"]), lengths.total("capability_raw", ev["capability"])
        items.append(
            _forward(
                "ablation",
                f"capability cross-entropy, {ce_settings} points",
                ce_settings,
                rows,
                tok,
                _batches(rows, CE_BATCH),
                f.full(tok),
            )  # fmt: skip
        )
    points = generation_points(k, search)
    h_tok = lengths.total("harmful_chat", ev["harmful"])
    rows = e_h + (1 + points) * e_s  # baseline Ds and Dh, then Ds at each generation point
    prompt_tok = lengths.total("harmless_chat", ev["harmless"]) + (1 + points) * h_tok
    steps = (_batches(e_h, bs) + (1 + points) * _batches(e_s, bs)) * new
    items.append(
        WorkItem(
            stage="ablation",
            purpose=f"greedy answers: baseline Ds + Dh, {points} points",
            kind="generate",
            settings=1 + points,
            passes=rows,
            calls=steps,
            tokens=prompt_tok + rows * new,
            generated_tokens=rows * new,
            decode_steps=steps,
            flops=f.first_token(prompt_tok, rows) + f.full(rows * new),
        )  # fmt: skip
    )
    if nll_rule:
        tok = rows * (lengths.nll_context + new)
        items.append(
            _forward(
                "ablation",
                "answer NLL (the judge's broken test)",
                1,
                rows,
                tok,
                _batches(rows, bs),
                f.full(tok),
            )  # fmt: skip
        )
    return items


def _window(num_blocks: int, window: tuple[float, float]) -> tuple[int, int]:
    """`directions.layer_window`, restated here to keep this module free of torch."""
    lo, hi = math.ceil(window[0] * num_blocks), math.floor(window[1] * num_blocks)
    return (min(1, num_blocks), num_blocks) if lo > hi else (lo, hi)


def _forward(stage, purpose, settings, rows, tokens, calls, flops, kind="forward") -> WorkItem:
    """A work item repeated under `settings` ablations: rows, tokens, calls, FLOPs of one."""
    return WorkItem(
        stage=stage, purpose=purpose, kind=kind, settings=settings, passes=settings * rows,
        calls=settings * calls, tokens=settings * tokens, flops=settings * flops,
    )  # fmt: skip


def fragility_items(cfg: AuditConfig, lengths: PromptLengths, f: PassFlops) -> list[WorkItem]:
    """The fragility stage on the child's refusals (upper bound: every eval prompt refused)."""
    s = cfg.fragility
    if s is None or not cfg.ablation or "capability_raw" not in lengths.tokens:
        return []
    refusals = len(lengths.eval["harmful"])
    align = lengths.total("harmful_chat", lengths.eval["harmful"]) + refusals * cfg.max_new_tokens
    benign = lengths.tokens["capability_raw"]
    batches = [sorted(benign)[i : i + s.batch_size] for i in range(0, len(benign), s.batch_size)]
    steps = [batches[t % len(batches)] for t in range(s.steps)]
    step_tok = sum(sum(b) for b in steps)
    a_calls, b_calls = _batches(refusals, s.batch_size), len(batches)
    hvps = s.power_iterations + 1  # the power iteration's cap, then the coupling's g_F
    return [
        _forward("fragility", "gradients of L_A and L_F", 1,
                 refusals + len(benign), align + sum(benign), a_calls + b_calls,
                 3 * f.full(align + sum(benign)), "backward"),
        _forward("fragility", f"Hessian-vector products (≤ {s.power_iterations} + 1)", hvps,
                 refusals, align, a_calls, 6 * f.full(align), "hvp"),
        _forward("fragility", f"benign SGD steps (T = {s.steps})", 1,
                 sum(len(b) for b in steps), step_tok, s.steps, 3 * f.full(step_tok),
                 "backward"),
        _forward("fragility", "L_A before and after each step", s.steps + 1, refusals, align,
                 a_calls, f.full(align)),
    ]  # fmt: skip


def work_plan(
    cfg: AuditConfig,
    size: ModelSize,
    lengths: PromptLengths,
    *,
    paired: bool,
    nll_rule: bool = True,
) -> list[WorkItem]:
    """Every model pass of the audit `cfg` describes, by stage and purpose.

    Args:
        cfg: the audit settings; `min_k_search` and `capability_ce` are read where they
            exist (else "ordered" and "attack").
        size: the child's size (a base of a pair has the same shape; the audit checks).
        lengths: token counts per prompt and the held-out split.
        paired: a base model is captured too.
        nll_rule: the judge scores answers' NLL (`RefusalJudge.nll_rule`).

    Returns:
        Work items in the order the audit runs them.
    """
    if cfg.batch_size == "auto":  # counted at the GPU start size; a CPU run starts at 16
        cfg = cfg.model_copy(update={"batch_size": AUTO_BATCH_GPU})
    f = PassFlops(size)
    items = capture_items(cfg, lengths, paired, f)
    if cfg.ablation:
        search = getattr(cfg, "min_k_search", "ordered")
        items += ablation_items(cfg, lengths, f, size.num_layers, nll_rule, search)
        items += fragility_items(cfg, lengths, f)
    return items


def plan_totals(plan: list[WorkItem]) -> PlanTotals:
    return PlanTotals(
        passes=sum(i.passes for i in plan),
        tokens=sum(i.tokens for i in plan),
        generated_tokens=sum(i.generated_tokens for i in plan),
        decode_steps=sum(i.decode_steps for i in plan),
        flops=sum(i.flops for i in plan),
    )
