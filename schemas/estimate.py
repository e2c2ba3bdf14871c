"""A dry estimate of an audit: its work counted from config.json and the prompts, its time
predicted per hardware flavour. No forward pass is run to make it (`depthcard estimate`).

The counts mirror the audit's code; the minutes are predictions from nominal hardware
numbers and stated utilisations, not measurements (docs/estimate.md).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from depthcard.schemas._base import Strict
from depthcard.schemas.report import AuditConfig

ESTIMATE_SCHEMA_VERSION = "1"
NonNeg = Annotated[float, Field(ge=0.0)]
StageName = Literal["capture-base", "capture-child", "ablation", "fragility"]
WorkKind = Literal["forward", "generate", "backward", "hvp"]


class ModelSize(Strict):
    """A model's size, read from its config.json (no weights are opened)."""

    source: str = Field(description="The model as given: a local folder or org/name[@rev].")
    architecture: str = Field(description="transformers architecture class name.")
    model_type: str | None = Field(None, description="config.json `model_type`.")
    parameters: int = Field(ge=1, description="Parameters, computed from the architecture fields.")
    exact: bool = Field(
        description="The parameter formula is the one of this model type (Llama, Mistral, Qwen2, "
        "Qwen3); False: the Llama formula applied to another type, an approximation."
    )
    num_layers: int = Field(ge=1, description="Decoder blocks L.")
    hidden_size: int = Field(ge=1, description="Residual width d.")
    intermediate_size: int = Field(ge=1, description="MLP width.")
    vocab_size: int = Field(ge=1, description="Vocabulary size V.")
    tied_embeddings: bool = Field(description="The LM head shares the input embedding.")
    embedding_parameters: int = Field(ge=0, description="V·d of the input embedding.")
    head_parameters: int = Field(
        ge=0, description="V·d multiplied in the LM head (counted once if tied)."
    )
    weight_bytes: int = Field(ge=0, description="Bytes of the stored weights (config dtype).")


class SetTokens(Strict):
    """One tokenized prompt set of the audit: its size, split and tokens."""

    key: str = Field(description="Set and format, e.g. harmful_chat, capability_raw.")
    prompts: int = Field(ge=0, description="Prompts in the set after --max-prompts.")
    fit: int | None = Field(None, ge=0, description="Prompts in the fit half (split sets).")
    eval: int | None = Field(None, ge=0, description="Prompts in the eval half (split sets).")
    tokens: int = Field(ge=0, description="Tokens over all its prompts.")


class WorkItem(Strict):
    """One kind of model work of the audit, repeats counted."""

    stage: StageName = Field(description="The audit stage it runs in.")
    purpose: str = Field(description="What it computes.")
    kind: WorkKind = Field(description="forward, greedy generation, gradient, or Hessian-vector.")
    settings: int = Field(ge=0, description="Ablations (or repeats) the passes run under.")
    passes: int = Field(ge=0, description="Sequences through the model, all settings.")
    calls: int = Field(ge=0, description="Model invocations (batches; generation: decode steps).")
    tokens: int = Field(ge=0, description="Tokens processed; generation: prompt + generated.")
    generated_tokens: int = Field(
        0, ge=0, description="Generated tokens, an upper bound (rows × max_new_tokens)."
    )
    decode_steps: int = Field(0, ge=0, description="Sequential decode steps (batches × tokens).")
    flops: NonNeg = Field(description="Floating-point operations (upper bound for generation).")


class PlanTotals(Strict):
    passes: int = Field(ge=0, description="Sequences through the model.")
    tokens: int = Field(ge=0, description="Tokens processed.")
    generated_tokens: int = Field(ge=0, description="Generated tokens (upper bound).")
    decode_steps: int = Field(ge=0, description="Sequential decode steps (upper bound).")
    flops: NonNeg = Field(description="Floating-point operations.")


class FlavourEstimate(Strict):
    """Predicted minutes of the audit on one Hugging Face Jobs flavour."""

    flavour: str = Field(description="Hub Jobs flavour name (huggingface_hub JobHardware).")
    hardware: str = Field(description="What the flavour is, e.g. 1x Nvidia A10G.")
    dtype: str = Field(description="dtype the audit runs in there (bf16 on GPU, fp32 on CPU).")
    memory_gb: NonNeg = Field(description="GPU memory (all GPUs), or RAM for a CPU flavour.")
    memory_needed_gb: NonNeg = Field(description="Weights in that dtype × 1.2 + 2 GB margin.")
    fits: bool = Field(description="memory_needed_gb ≤ memory_gb.")
    assumptions: str = Field(description="The rates and utilisation the minutes assume.")
    stage_minutes: dict[str, NonNeg] = Field(description="Predicted minutes per stage.")
    compute_minutes: NonNeg = Field(description="Sum of the stages.")
    setup_minutes: NonNeg = Field(description="Job start and weight downloads (assumed).")
    job_minutes: NonNeg = Field(description="compute + setup: what a job timeout must cover.")
    usd_per_hour: NonNeg = Field(description="List price per hour.")
    usd: NonNeg = Field(description="Predicted cost of the job.")


class AuditEstimate(Strict):
    """What `depthcard estimate` prints with --json."""

    schema_version: Literal["1"] = Field(
        ESTIMATE_SCHEMA_VERSION, description="Version of this document's schema."
    )
    kind: Literal["pair", "child-only"] = Field(description="Audit kind.")
    base: ModelSize | None = Field(None, description="The base model; None in child-only.")
    child: ModelSize = Field(description="The child (instruct) model.")
    config: AuditConfig = Field(description="The audit settings the plan is for.")
    min_k_search: Literal["ordered", "bisect", "all"] = Field(
        description="How min_k is searched: in order (at most all K+1 points: the estimate "
        "counts them all), bisection (≤ 1 + ⌈log2(K+1)⌉ points), or all K+1; plus the "
        "runner-up layers' points."
    )
    token_source: Literal["tokenizer", "words"] = Field(
        description="Prompt tokens counted by the child's tokenizer, or from words (estimated)."
    )
    sets: list[SetTokens] = Field(description="The tokenized prompt sets.")
    plan: list[WorkItem] = Field(description="The work, by stage and purpose.")
    totals: PlanTotals = Field(description="Sums over the plan.")
    flavours: list[FlavourEstimate] = Field(description="Predictions for the flavours asked.")
    chosen: str | None = Field(
        None,
        description="The bot's choice: the cheapest flavour that fits and finishes within the "
        "timeout cap (else the fastest that fits); None if none fits.",
    )
    timeout_minutes: NonNeg | None = Field(
        None, description="The job timeout the bot would set on `chosen`: minutes × 3, ≥ 20."
    )
    timeout_cap_minutes: NonNeg = Field(description="The configured timeout, the cap.")
    notes: list[str] = Field(default_factory=list, description="What the numbers leave out.")
