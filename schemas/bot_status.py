"""`depthcard status --json`: the bot's audits by state, for scripts and dashboards."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from depthcard.schemas._base import Strict


class StatusAudit(Strict):
    """One audit as `depthcard status` lists it."""

    key: str = Field(description="Audit key: base sha / child sha [/ third sha] / analysis.")
    state: str = Field(description="State in the bot's state file (queued, published, ...).")
    card_repo: str = Field(description="Repo whose card gets the section.")
    child_repo: str = Field(description="The audited instruct model.")
    child_sha: str = Field(description="Its audited revision.")
    base_repo: str | None = Field(description="The base model (None: child-only).")
    third_repo: str | None = Field(description="The fine-tune of a three-model audit.")
    attempts: int = Field(ge=0, description="Audit attempts so far.")
    pr_num: int | None = Field(description="The pull request, once opened.")
    reason: str | None = Field(description="Why it is skipped, opted out or failed.")
    updated: str = Field(description="Last change, ISO-8601 UTC.")


class BotStatus(Strict):
    """The whole status: counts per state and every audit, oldest first."""

    schema_version: Literal["1"] = Field("1", description="Version of this document.")
    counts: dict[str, int] = Field(description="Audits per state (states with none omitted).")
    audits: list[StatusAudit] = Field(description="Every audit, oldest first.")
