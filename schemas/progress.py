"""Progress events: what an audit is doing now, and the work it has done so far.

One event per stage start and end, and per step inside a stage (a curve point, a layer
tried, a capture batch). Written as one JSON line each when the output is not a terminal
(HF Jobs logs, the Space's Run tab read them); drawn as progress bars in a terminal.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from depthcard.schemas._base import Strict


class WorkCount(Strict):
    """Forward calls and tokens run through a model for one purpose."""

    calls: int = Field(ge=0, description="Forward calls (one batch each).")
    rows: int = Field(ge=0, description="Sequences in those calls (batch rows, summed).")
    tokens: int = Field(
        ge=0, description="Input positions computed (cached positions are not recounted)."
    )

    @classmethod
    def zero(cls) -> WorkCount:
        """No work yet: where a count starts."""
        return cls(calls=0, rows=0, tokens=0)


class ProgressEvent(Strict):
    """One line of progress (`--progress json`)."""

    event: Literal["start", "step", "end"]
    stage: str = Field(description="Audit stage (capture-child, ablation, fragility, ...).")
    task: str | None = Field(None, description="What inside the stage (curve, layer search).")
    done: int = Field(0, ge=0, description="Steps done of `total`.")
    total: int | None = Field(None, ge=0, description="Steps in the task; None = unknown.")
    unit: str = Field("step", description="What a step is.")
    elapsed: float = Field(0.0, ge=0.0, description="Seconds since the stage started.")
    forward_calls: int = Field(0, ge=0, description="Forward calls so far in the audit.")
    tokens: int = Field(0, ge=0, description="Input positions computed so far in the audit.")
    generated_tokens: int = Field(0, ge=0, description="Tokens generated so far in the audit.")
