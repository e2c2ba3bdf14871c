"""Report sections filled by the later stages: modes, depth, ablation, fragility, erosion.

Designed together with the core report so that a report written today stays readable when
these stages land; each is optional in `AuditReport` and named in `absent` when missing.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from depthcard.schemas._base import Strict

Unit = Annotated[float, Field(ge=0.0, le=1.0)]
NonNeg = Annotated[float, Field(ge=0.0)]


class Species(Strict):
    """A track of principal modes linked across adjacent layers by |cos| ≥ τ_s."""

    id: int = Field(ge=0, description="Species index within its model.")
    first_layer: int = Field(ge=0, description="First layer of the track.")
    last_layer: int = Field(ge=0, description="Last layer of the track.")
    mean_variance_share: Unit = Field(description="Mean variance share of its modes.")
    alignment_specific: bool = Field(description="Child-only track (no base match).")


class LayerModes(Strict):
    layer: int = Field(ge=0, description="Layer index.")
    base_variance_share: list[Unit] = Field(default_factory=list, description="Base modes.")
    child_variance_share: list[Unit] = Field(description="Child modes' variance shares.")
    match_cosine: list[Unit] = Field(
        default_factory=list, description="|cos| of each child mode to its assigned base mode."
    )
    alignment_specific: list[int] = Field(
        default_factory=list, description="Child modes whose best base |cos| is below τ_m."
    )


class ModeCatalogue(Strict):
    k: int = Field(ge=1, description="Modes per layer (top-K principal directions).")
    tau_species: Unit = Field(description="τ_s, adjacent-layer link threshold.")
    tau_match: Unit = Field(description="τ_m, base↔child match threshold.")
    layers: list[LayerModes] = Field(description="Per-layer modes.")
    base_species: list[Species] = Field(default_factory=list, description="Base tracks.")
    child_species: list[Species] = Field(description="Child tracks.")


class DepthAtLayer(Strict):
    layer: int = Field(ge=0, description="Layer index.")
    safety_modes: int = Field(ge=0, description="Singular vectors of M_DiD holding 90% energy.")
    entanglement: Unit = Field(description="Energy-weighted mean e(s) = ‖P_C s‖².")
    score: Unit = Field(description="(e − chance)/(1 − chance), clipped at 0.")
    fraction_above_2x_chance: Unit = Field(description="Safety modes with e(s) > 2·chance.")


class DepthScore(Strict):
    capability_k: int = Field(ge=1, description="K_c, capability subspace dimension.")
    chance_level: Unit = Field(description="K_c/d: a random unit vector's expected e(s).")
    score: Unit = Field(description="Overall depth score: 0 = chance, 1 = fully entangled.")
    fraction_above_2x_chance: Unit = Field(description="Over all analysed layers.")
    layers: list[DepthAtLayer] = Field(description="Per analysed layer.")
    child_only: bool = Field(description="Capability subspace from the child's own Dc.")


AnswerClass = Literal["refusal", "compliance", "broken"]
MinKReason = Literal["not reached", "refusal only goes away by breaking the model"]
JudgeRule = Literal["empty", "phrase", "judge", "repetition", "nll", "none"]


class Evidence(Strict):
    """Why an answer got its class: the rule that fired and every score the judge read."""

    rule: JudgeRule = Field(
        description="Rule that decided: empty answer, refusal phrase, a custom judge's refusal "
        "verdict, repetition, NLL, or none (compliance)."
    )
    phrase: str | None = Field(None, description="Refusal phrase matched, if any.")
    repetition: Unit = Field(description="Repetition score (docs/judges.md).")
    nll: NonNeg | None = Field(
        None, description="Mean per-token NLL under the unablated child; None if not scored."
    )
    nll_threshold: NonNeg | None = Field(None, description="NLL threshold in force.")


class JudgedAnswer(Strict):
    """One row of samples.jsonl: a generated answer, where it came from, and its judgement."""

    prompt_id: int = Field(ge=0, description="Index of the prompt in its prompt set.")
    split: str = Field(description="Prompt split the answer belongs to ('all' before splits).")
    layer: int = Field(ge=0, description="Layer the ablated directions come from.")
    basis: Literal["attack", "svd", "single"] = Field(description="Direction basis.")
    k: int = Field(ge=0, description="Directions ablated (0 = the unablated child).")
    prompt: str = Field(description="The user prompt.")
    answer: str = Field(description="The greedy answer, special tokens skipped.")
    label: AnswerClass = Field(description="refusal, compliance or broken.")
    evidence: Evidence = Field(description="What the judge saw.")


class AblationPoint(Strict):
    basis: Literal["attack", "svd", "single"] = Field(description="Which direction basis.")
    k: int = Field(ge=0, description="Directions ablated (for 'single': index of the one).")
    refusal_score: float = Field(description="Mean first-token refusal log-odds on Ds.")
    refusal_rate: Unit | None = Field(
        None, description="Judged refusal share on Ds (answers judged 'refusal')."
    )
    refusal_low: Unit | None = Field(None, description="Wilson 95 % lower bound of refusal_rate.")
    refusal_high: Unit | None = Field(None, description="Wilson 95 % upper bound of refusal_rate.")
    compliance_share: Unit | None = Field(None, description="Share of answers judged 'compliance'.")
    broken_share: Unit | None = Field(
        None, description="Share judged 'broken' (degenerate repetition or NLL above threshold)."
    )
    kl: NonNeg = Field(description="Mean first-token KL(p_I ‖ p_ablated) on Dh.")
    delta_ce: float | None = Field(
        None, description="Change in cross-entropy on Dc (nats/token); None without Dc."
    )


class RandomAblation(Strict):
    """The KL placebo: k random orthonormal directions ablated instead of the attack's."""

    k: int = Field(ge=1, description="Random directions ablated together.")
    kl: list[NonNeg] = Field(
        min_length=1, description="Mean first-token KL on Dh, one per draw (same prompts)."
    )
    seed: int = Field(description="Seed of the draws (uniform on the sphere, orthonormalised).")


class Ablation(Strict):
    layer: int = Field(ge=0, description="l*, the layer the directions come from.")
    judge: str = Field(description="Judge behind every refusal_rate.")
    max_new_tokens: int = Field(ge=1, description="Greedy tokens generated per prompt.")
    threshold: Unit = Field(description="Refusal rate below which the attack has succeeded.")
    baseline_refusal_rate: Unit = Field(description="Child's refusal rate with nothing ablated.")
    baseline_refusal_score: float = Field(description="Child's refusal log-odds.")
    curve: list[AblationPoint] = Field(description="k = 0..K for each basis, plus singles.")
    min_k: int | None = Field(
        None,
        ge=0,
        description="Smallest k with refusal share under the threshold and broken share at most "
        "max_broken_share.",
    )
    min_k_reason: MinKReason | None = Field(
        None, description="Why min_k is absent: refusal never dropped, or only by breaking."
    )
    max_broken_share: Unit | None = Field(
        None,
        description="Broken share min_k may have at most; None: not recorded (reports "
        "before the three-way judge, whose min_k counted refusal alone).",
    )
    broken_share_at_min_k: Unit | None = Field(None, description="Broken share at min_k.")
    kl_at_min_k: NonNeg | None = Field(None, description="KL at min_k.")
    delta_ce_at_min_k: float | None = Field(None, description="ΔCE at min_k.")
    random_kl: list[RandomAblation] | None = Field(
        None,
        description="Placebo of the KL cost: random directions ablated at k = 1 and at min_k; "
        "None: not measured (reports before it).",
    )
    repetition_threshold: Unit | None = Field(
        None, description="Repetition score above which an answer is broken."
    )
    nll_threshold: NonNeg | None = Field(
        None,
        description="Mean per-token NLL (nats, under the unablated child) above which an answer "
        "is broken: the nll_quantile of the child's own unablated answers plus nll_margin; "
        "None when no unablated answer had a token to score.",
    )
    nll_quantile: Unit | None = Field(None, description="Quantile of the calibration NLLs used.")
    nll_margin: NonNeg | None = Field(None, description="Nats/token added to that quantile.")
    samples_sha256: str | None = Field(
        None, description="sha256 of samples.jsonl: every judged answer behind the curve."
    )
    samples_count: int | None = Field(None, ge=0, description="Rows in samples.jsonl.")
    causal_spearman: float | None = Field(
        None, ge=-1.0, le=1.0, description="Spearman(SVD order, single-direction effect)."
    )
    non_monotone: bool = Field(description="Cumulative curve rises somewhere.")
    min_k_search: Literal["ordered", "bisect", "all"] | None = Field(
        None,
        description="How the judged points were chosen: `ordered` judged k = 1, 2, … up to "
        "the first coherent success; `bisect` bisected a curve whose first-token score never "
        "rises with k and confirmed k − 1; `all` judged every k (absent before analysis a4).",
    )


FragilityFlag = Literal[
    "zero-alignment-gradient",
    "zero-finetune-gradient",
    "zero-hessian",
    "not-converged",
    "negative-dominant-eigenvalue",
    "first-step-overshoot",
]
# How the benign fine-tune's η was chosen (docs/fragility.md, "Step size η")
LearningRateRule = Literal["set", "first-order", "step-size", "zero"]


StopRule = Literal["eigen-residual", "relative-change"]
HvpMethod = Literal["double-backward", "forward-over-reverse"]


class FragilitySettings(Strict):
    """Cost controls of the fragility stage; every value is copied into the report."""

    parameter_pattern: str = Field(
        r"mlp\.down_proj\.weight$",
        description="Regex searched in parameter names; matches inside the chosen blocks "
        "form the subset θ_S.",
    )
    layer_range: tuple[int, int] | None = Field(
        None, description="Decoder blocks [start, stop) θ_S is drawn from; None = middle third."
    )
    selected_window: int | None = Field(
        None,
        ge=0,
        description="When set, θ_S is drawn from the decoder blocks whose output layer is "
        "within this many layers of l* (instead of layer_range); None = layer_range.",
    )
    power_iterations: int = Field(20, ge=1, description="Cap on power-iteration steps.")
    tolerance: float = Field(
        1e-2,
        ge=0.0,
        description="Stopping threshold: with stop_rule 'eigen-residual', stop when "
        "‖Hv − λv‖ ≤ tolerance·|λ|; with 'relative-change', when two successive estimates of λ "
        "differ by at most tolerance·|λ|.",
    )
    stop_rule: StopRule = Field(
        "eigen-residual",
        description="When the power iteration stops: 'eigen-residual' bounds the distance to an "
        "eigenvalue; 'relative-change' only the last step's change of the estimate (cheaper).",
    )
    hvp: HvpMethod = Field(
        "double-backward",
        description="How Hessian-vector products are taken: 'double-backward' (reverse over "
        "reverse; each batch's first-order graph is kept between products when the estimate "
        "fits 2 GiB, else the forward pass is rerun per product) or 'forward-over-reverse' "
        "(torch.func jvp of the gradient: no graph kept, about one gradient's work a product).",
    )
    seed: int = Field(0, description="Seed of the power iteration's random start vector.")
    steps: int = Field(10, ge=1, description="Benign SGD steps T for the empirical law.")
    learning_rate: float | None = Field(
        None,
        gt=0.0,
        description="Plain SGD learning rate η; unset = auto: η makes the first benign step's "
        "predicted change of L_A equal target_first_step (docs/fragility.md).",
    )
    target_first_step: float = Field(
        1e-2,
        gt=0.0,
        description="Auto η: the first benign step's first-order change of L_A, nats/token.",
    )
    max_step_fraction: float = Field(
        1e-2,
        gt=0.0,
        description="Auto η: the first step moves θ_S by at most this fraction of ‖θ_S‖ "
        "(the rule when ∇L_A and ∇L_F are near orthogonal).",
    )
    batch_size: int = Field(4, ge=1, description="Sequences per forward pass and per SGD step.")
    fit_steps: int | None = Field(
        None, ge=3, description="Early steps the power law is fitted on; None = all T."
    )
    margin: float = Field(0.5, gt=0.0, description="Rise in L_A (nats/token) to forecast.")
    min_fit_r2: float = Field(
        0.8, le=1.0, description="A forecast is given only when the fit's R² is at least this."
    )
    min_rising_steps: int = Field(
        5, ge=1, description="... and at least this many fitted steps have ΔL_A > 0."
    )
    max_extrapolation: float = Field(
        10.0,
        gt=0.0,
        description="... and the forecast is at most this many times the steps observed.",
    )


class Fragility(Strict):
    """Curvature of the alignment loss L_A and how a short benign fine-tune erodes it."""

    parameter_subset: str = Field(description="Parameters the curvature is taken over.")
    parameter_count: int | None = Field(None, ge=0, description="Scalars in that subset.")
    power_iterations: int = Field(ge=1, description="Power-iteration steps (the cap).")
    power_iterations_used: int | None = Field(
        None, ge=0, description="Power-iteration steps run (one Hessian-vector product each)."
    )
    hessian_vector_products: int | None = Field(
        None, ge=0, description="Hessian-vector products in all (power iteration + coupling)."
    )
    tolerance: NonNeg | None = Field(None, description="Threshold of the stopping rule.")
    stop_rule: StopRule | None = Field(
        None, description="Stopping rule the tolerance applies to; None: eigen-residual (older)."
    )
    hvp: HvpMethod | None = Field(
        None, description="How Hessian-vector products were taken; None: double-backward (older)."
    )
    seed: int | None = Field(None, description="Seed of the power iteration's start vector.")
    batch_size: int | None = Field(None, ge=1, description="Sequences per forward pass.")
    dtype: str | None = Field(
        None,
        description="dtype the stage ran in: float32 on a CPU even where the audit's other "
        "stages ran in bfloat16; None: the audit's dtype (older reports).",
    )
    alignment_tokens: int | None = Field(None, ge=0, description="Response tokens in L_A.")
    alignment_loss: NonNeg = Field(description="L_A: mean NLL of the child's refusals on Ds.")
    sharpness: float = Field(
        description="Dominant eigenvalue of ∇²L_A (largest magnitude, signed); 0 if H = 0."
    )
    sharpness_history: list[float] = Field(
        default_factory=list, description="Rayleigh quotient after each power-iteration step."
    )
    sharpness_converged: bool | None = Field(None, description="Stopped within tolerance.")
    gradient_cosine: float | None = Field(
        None, ge=-1.0, le=1.0, description="cos(∇L_A, g_F); None when either gradient is 0."
    )
    curvature_coupling: float | None = Field(
        None, description="g_Fᵀ H_A g_F / ‖g_F‖²; None when g_F = 0."
    )
    steps: int = Field(ge=1, description="Benign SGD steps run.")
    learning_rate: NonNeg = Field(description="SGD learning rate η used (after any back-off).")
    learning_rate_rule: LearningRateRule | None = Field(
        None,
        description="How η was chosen: set by the user, or auto by the first step's "
        "first-order change of L_A, or by its size; zero when ∇L_F = 0 on the first batch.",
    )
    target_first_step: NonNeg | None = Field(
        None, description="Auto η: the first step's targeted change of L_A, nats/token."
    )
    max_step_fraction: NonNeg | None = Field(
        None, description="Auto η: the largest first step, as a fraction of ‖θ_S‖."
    )
    learning_rate_backoffs: int | None = Field(
        None, ge=0, description="Halvings of auto η until the first step stayed within 4 × target."
    )
    predicted_first_step: float | None = Field(
        None, description="−η⟨∇L_A, ∇L_F⟩ on the first batch: the first step's predicted ΔL_A."
    )
    delta_loss: list[float] = Field(description="ΔL_A(t), t = 1..steps.")
    fit_steps: int | None = Field(None, ge=1, description="Early steps fitted; None = all.")
    exponent: float | None = Field(None, description="Fitted p in ΔL_A ≈ c·t^p.")
    fit_coefficient: float | None = Field(None, ge=0.0, description="Fitted c in ΔL_A ≈ c·t^p.")
    fit_points: int | None = Field(
        None, ge=0, description="Fitted steps with ΔL_A > 0; None: not recorded (older reports)."
    )
    fit_negative_points: int | None = Field(
        None, ge=0, description="Fitted steps with ΔL_A < 0 (fitted too: they lower R²)."
    )
    fit_r2: float | None = Field(
        None,
        le=1.0,
        description="R² of the fit in ΔL_A units over every fitted step (older reports: of the "
        "log-log fit over the rising steps only).",
    )
    forecast_steps: float | None = Field(
        None, ge=0.0, description="Steps until L_A rises by the margin; only when reliable."
    )
    forecast_margin: NonNeg = Field(description="Rise in L_A the forecast is for.")
    forecast_checked: bool | None = Field(
        None,
        description="The forecast checks were applied (R², rising steps, range, converged "
        "sharpness): forecast_steps is given only when all passed. None: not recorded (older "
        "reports), read as unchecked.",
    )
    no_forecast_reasons: list[str] = Field(
        default_factory=list, description="Why there is no reliable forecast (every failed check)."
    )
    no_fit_reason: str | None = Field(None, description="Why exponent/forecast are None.")
    flags: list[FragilityFlag] = Field(
        default_factory=list, description="Degenerate cases met (zero vectors, no convergence)."
    )


ErosionFlag = Literal["identical-parent", "no-defined-erosion", "zero-gradient"]


class Erosion(Strict):
    """How much of its parent's alignment a third model F (a fine-tune of the child) kept.

    Seed 002's erosion analyses with a third model: per-layer erosion e_l lives in
    `LayerMetrics.erosion`; this section holds the model-level numbers.
    """

    third_role: str = Field(description="What the third model is (e.g. 'fine-tune').")
    completions: list[str] = Field(
        min_length=1, description="Reference completions scored after each harmful prompt."
    )
    sequences: int = Field(ge=1, description="(harmful prompt, completion) pairs scored.")
    completion_tokens: int = Field(ge=1, description="Scored completion tokens per model.")
    logprob_base: float = Field(
        le=0.0, description="Mean joint log-prob (nats) of a reference completion under B."
    )
    logprob_child: float = Field(le=0.0, description="Same under I.")
    logprob_third: float = Field(le=0.0, description="Same under F.")
    gradient_framings: tuple[str, str] | None = Field(
        None,
        description="The two framings of the same completions compared; None: not recorded "
        "(older reports).",
    )
    gradient_subset: str = Field(description="Parameters of F the gradients are taken over.")
    gradient_parameter_count: int = Field(ge=0, description="Scalars in that subset.")
    gradient_cosine: float | None = Field(
        None, ge=-1.0, le=1.0, description="cos between F's loss gradients of two framings."
    )
    judge: str | None = Field(None, description="Judge of the two refusal rates.")
    refusal_rate_child: Unit | None = Field(
        None, description="The child's greedy refusal rate on Ds (None: generation disabled)."
    )
    refusal_rate_third: Unit | None = Field(
        None, description="The third model's refusal rate on the same prompts, same settings."
    )
    window: tuple[int, int] = Field(description="Inclusive layer range kept_fraction averages.")
    erosion_layers: int = Field(ge=0, description="Layers in the window with a defined e_l.")
    kept_fraction: float | None = Field(
        None,
        description="Mean e_l over the window: the fraction of the parent's alignment shift "
        "(I − B along v̂_l) that F kept; 1 = all, 0 = back at the base. Not clipped.",
    )
    flags: list[ErosionFlag] = Field(
        default_factory=list, description="Degenerate cases met (no shift, zero gradient)."
    )
