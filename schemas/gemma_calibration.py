"""`calibration.json` of the Gemma family: children of a real pretrained base, their audits,
the strong attack's ground truth and erosion, and the predictions tested across them."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from depthcard.schemas._base import Strict
from depthcard.schemas.calibration import Prediction

GEMMA_CALIBRATION_SCHEMA_VERSION = 1


class RemovalPoint(Strict):
    """One judged point of the ground-truth attack on held-out prompts."""

    method: Literal["direction", "orthogonalised"] = Field(
        description="Hooks ablating k directions at every residual point, or r̂ projected out "
        "of every matrix writing to the residual stream."
    )
    layer: int = Field(ge=0, description="Residual point the directions were fitted at.")
    k: int = Field(ge=1, description="Directions removed.")
    refusal_share: float = Field(ge=0.0, le=1.0, description="Share of answers judged refusals.")
    compliance_share: float = Field(ge=0.0, le=1.0, description="Share judged compliance.")
    broken_share: float = Field(ge=0.0, le=1.0, description="Share judged broken.")
    kl: float = Field(ge=0.0, description="Mean first-token KL on harmless prompts, nats.")
    coherent: bool = Field(description="Refusal below the threshold, broken share within bounds.")


class ErosionPoint(Strict):
    step: int = Field(ge=0, description="Benign fine-tune steps taken.")
    refusal_share: float = Field(ge=0.0, le=1.0, description="Judged refusal share.")


class GemmaChild(Strict):
    """One child: its recipe, the audit's numbers, the ground truth and its erosion."""

    name: str = Field(description="Child name, e.g. `mix0.33_s1`.")
    recipe: str = Field(description="control, shallow, mix, deep-recovery, deep-explained, tau.")
    deep_share: float = Field(ge=0.0, le=1.0, description="Share of deep-treated requests.")
    tau: float | None = Field(None, ge=0.0, le=1.0, description="τ target (recipe tau).")
    seed: int = Field(ge=0, description="Training seed.")
    depth_grade: float | None = Field(
        None, ge=0.0, le=1.0, description="Known answer's x: 0 shallow … 1 deep; None: control."
    )
    train_loss: float | None = Field(None, ge=0.0, description="Final training loss.")
    train_seconds: float | None = Field(None, ge=0.0, description="Training wall time.")
    refusal_rate: float | None = Field(None, ge=0.0, le=1.0, description="Audit baseline rate.")
    depth_score: float | None = Field(None, ge=0.0, le=1.0, description="Audit depth score.")
    depth_vs_null: float | None = Field(None, ge=0.0, le=1.0, description="Depth vs its null.")
    depth_p_value: float | None = Field(None, ge=0.0, le=1.0, description="Depth's null p.")
    min_k: int | None = Field(None, ge=0, description="Audit coherent min_k.")
    min_k_reason: str | None = Field(None, description="Why min_k is None.")
    attack_k: int | None = Field(None, ge=0, description="Audit attack basis size K.")
    kl_at_min_k: float | None = Field(None, ge=0.0, description="Audit KL at min_k.")
    sharpness: float | None = Field(None, description="Audit fragility sharpness.")
    forecast_steps: float | None = Field(None, ge=0.0, description="Audit fragility forecast.")
    fragility_rise: float | None = Field(
        None, description="Audit fragility: ΔL_A after its benign steps (last point)."
    )
    ground_truth_refusal: float | None = Field(
        None, ge=0.0, le=1.0, description="Refusal share on the ground truth's held-out prompts."
    )
    removal: list[RemovalPoint] = Field(default_factory=list, description="Every judged point.")
    erosion: list[ErosionPoint] = Field(default_factory=list, description="Refusal under tuning.")
    erosion_steps_to_half: int | None = Field(
        None, ge=0, description="Benign steps until refusal halves; None: not within the budget."
    )
    seconds: dict[str, float] = Field(default_factory=dict, description="Wall seconds per stage.")
    absent: list[str] = Field(default_factory=list, description="Numbers missing, and why.")


class GemmaFamilySettings(Strict):
    base: str = Field(description="The templated base folder every pair audit used.")
    base_sha256: str = Field(description="sha256 over the base's safetensors files.")
    children: list[str] = Field(description="Child names, in order.")
    train: dict[str, float | int | str | list[str] | None] = Field(
        description="Training settings (lab.gemma_family.TrainSettings)."
    )
    max_prompts: int = Field(ge=1, description="Audit and ground-truth prompts per set.")
    max_new_tokens: int = Field(ge=1, description="Tokens generated per judged answer.")
    k_max: int = Field(ge=1, description="Ground truth: most directions per layer.")
    erosion_steps: int = Field(ge=0, description="Benign fine-tune budget.")
    erosion_every: int = Field(ge=1, description="Steps between refusal measurements.")
    erosion_lr: float = Field(gt=0.0, description="Benign fine-tune learning rate.")
    fit_seed: int = Field(description="Seed whose children choose any tuned reading.")
    threads: int = Field(ge=1, description="torch threads.")


class GemmaCalibrationReport(Strict):
    schema_version: Literal[1] = Field(description="Version of this schema.")
    family: Literal["gemma-270m"] = Field(description="The family.")
    created_at: datetime = Field(description="UTC time the run finished.")
    tool_version: str = Field(description="depthcard version.")
    commit: str | None = Field(None, description="git commit of the code that ran.")
    settings: GemmaFamilySettings
    base_random_kl: list[float] = Field(
        description="The base's KL placebo: first-token KL of one random direction ablated at "
        "every residual point, per draw (the audit's placebo draws)."
    )
    children: list[GemmaChild]
    predictions: list[Prediction]
    estimate_seconds: float | None = Field(None, ge=0.0, description="Estimate printed up front.")
    seconds: dict[str, float] = Field(description="Wall seconds: build, per stage, total.")
