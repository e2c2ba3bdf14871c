"""Shared pydantic base: strict, finite, documented models for everything at a boundary."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Base for every boundary model: unknown fields rejected, NaN and infinities rejected."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_assignment=True)
