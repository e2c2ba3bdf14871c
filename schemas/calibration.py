"""`calibration.json`: what `depthcard calibrate` measured on its family of organisms.

Schema 2 adds the knobs of the graded family (target entanglement τ, rank r, seed), the
audit's depth null and the min_k rule; every field it adds is optional, so schema-1 files
(the λ family) still validate.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from depthcard.schemas._base import Strict

CALIBRATION_SCHEMA_VERSION = 2


class SiblingSettings(Strict):
    """The knobs of one instruct sibling (`lab.organism_family.SiblingSpec`)."""

    name: str = Field(description="Folder name under the output folder.")
    target: float = Field(ge=0.0, le=1.0, description="Target entanglement τ.")
    rank: int = Field(ge=1, description="Harm-category groups with their own refusal direction.")
    seed: int = Field(ge=0, description="Offset of the instruct seed from the family seed.")


class FamilySettings(Strict):
    """How the family was trained, audited and eroded."""

    quick: bool = Field(description="The --quick (test-sized) family.")
    lambdas: list[float] = Field(
        default_factory=list,
        description="Schema 1: regulariser weights λ, one instruct sibling each (empty in 2).",
    )
    siblings: list[SiblingSettings] = Field(
        default_factory=list, description="Schema 2: the knobs of each instruct sibling."
    )
    entangle_weight: float | None = Field(
        None, ge=0.0, description="μ_e: weight of the squared distance from the target τ."
    )
    rank_weight: float | None = Field(
        None, ge=0.0, description="μ_r: weight of the groups' mean squared cosine (r > 1)."
    )
    base_steps: int = Field(ge=1, description="AdamW steps of the shared base.")
    instruct_steps: int = Field(ge=1, description="AdamW steps of each instruct sibling.")
    capability_k: int = Field(ge=1, description="K_c of the regulariser's capability subspace.")
    regularised_layers: list[int] = Field(description="Residual points the regulariser reads.")
    erosion_steps: list[int] = Field(description="Benign fine-tune steps of the eroded organisms.")
    erosion_lr: float = Field(gt=0.0, description="Peak learning rate of the benign fine-tune.")
    max_prompts: int = Field(ge=1, description="Audit --max-prompts.")
    max_new_tokens: int = Field(ge=1, description="Audit --max-new-tokens (and erosion judge).")
    seed: int = Field(description="Seed of training, erosion and prompt subsampling.")
    threads: int = Field(ge=1, description="torch threads (bit-identical only at the same count).")


class OrganismResult(Strict):
    """One organism of the family and the audit numbers the predictions use."""

    name: str = Field(description="Folder name under the output folder.")
    kind: Literal["instruct", "eroded"] = Field(description="Instruct sibling or benign fine-tune.")
    lam: float | None = Field(None, description="Schema 1: λ it (or its parent) was trained with.")
    target: float | None = Field(
        None, ge=0.0, le=1.0, description="Target entanglement τ it (or its parent) had."
    )
    rank: int | None = Field(None, ge=1, description="Rank knob r it (or its parent) had.")
    seed: int | None = Field(None, ge=0, description="Instruct seed offset (or its parent's).")
    parent: str | None = Field(None, description="Eroded organisms: the sibling fine-tuned.")
    erosion_steps: int | None = Field(None, ge=0, description="Benign fine-tune steps.")
    trained_entanglement: float | None = Field(
        None, ge=0.0, le=1.0, description="mean_l ‖P_C r̂_l‖² after training (regulariser's view)."
    )
    trained_group_overlap: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="mean_l,g<g' cos²(r_l,g, r_l,g') after training (0 = orthogonal groups).",
    )
    refusal_rate: float | None = Field(
        None, ge=0.0, le=1.0, description="Refusal rate on the audit's harmful prompts (judge)."
    )
    refusal_drop: float | None = Field(
        None, ge=-1.0, le=1.0, description="Eroded: parent's refusal rate minus this one's."
    )
    erosion: float | None = Field(
        None,
        le=1.0,
        description="Eroded: share of the parent's refusal lost, 1 − rate / parent rate "
        "(negative: it refuses more); None when the parent refuses nothing.",
    )
    depth_score: float | None = Field(None, ge=0.0, le=1.0, description="Audit depth score.")
    depth_vs_null: float | None = Field(
        None, ge=0.0, le=1.0, description="Depth rescaled against its permutation null's mean."
    )
    depth_null_mean: float | None = Field(None, ge=0.0, le=1.0, description="Null mean.")
    depth_null_p95: float | None = Field(None, ge=0.0, le=1.0, description="Null 95th pct.")
    depth_p_value: float | None = Field(None, ge=0.0, le=1.0, description="Depth's null p.")
    rho_eps_aligned: float | None = Field(None, ge=0.0, le=1.0, description="Audit ρ_0.05.")
    min_k: int | None = Field(None, ge=0, description="Audit abliteration min_k.")
    min_k_rule: Literal["refusal-only", "coherent"] | None = Field(
        None,
        description="The audit's rule: refusal below threshold, or that and broken share ≤ 10 %.",
    )
    min_k_reason: str | None = Field(None, description="Why min_k is None, as the audit says.")
    attack_k: int | None = Field(
        None, ge=0, description="K, the attack basis size; a None min_k ranks as K + 1."
    )
    kl_at_min_k: float | None = Field(None, ge=0.0, description="First-token KL at min_k.")
    sharpness: float | None = Field(None, description="Top Hessian eigenvalue of L_A.")
    audit_seconds: float | None = Field(None, ge=0.0, description="Wall time of its audit.")
    absent: list[str] = Field(default_factory=list, description="Numbers missing, and why.")


class Prediction(Strict):
    """One prediction tested across the family by a Spearman rank correlation."""

    name: str = Field(description="Short id of the prediction.")
    claim: str = Field(description="What should hold if the metric means something.")
    x: str = Field(description="Predictor (the audit's number, or a knob), labelled.")
    y: str = Field(description="What it should predict (measured or trained).")
    n: int = Field(ge=0, description="Organisms with both numbers.")
    spearman: float | None = Field(None, ge=-1.0, le=1.0, description="Spearman ρ; None: why.")
    p_value: float | None = Field(
        None, ge=0.0, le=1.0, description="One-sided exact permutation p of ρ ≥ observed."
    )
    held: bool | None = Field(None, description="ρ ≥ the threshold; None when not testable.")
    reason: str | None = Field(None, description="Why spearman is None.")
    verdict: str = Field(description="One honest line with the numbers.")


class CalibrationReport(Strict):
    """Everything `depthcard calibrate` measured; validated before it is written."""

    schema_version: Literal[1, 2] = Field(description="Version of this schema.")
    created_at: datetime = Field(description="UTC time the suite finished.")
    tool_version: str = Field(description="depthcard version.")
    settings: FamilySettings
    organisms: list[OrganismResult]
    predictions: list[Prediction]
    held_threshold: float = Field(ge=-1.0, le=1.0, description="Spearman ρ at which 'held'.")
    seconds: dict[str, float] = Field(description="Wall seconds: train, audit, erode, total.")
