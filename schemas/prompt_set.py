"""Schema of a contrast prompt set file (`prompts/*.yaml`).

A prompt set is versioned data: reports record its name, version and the sha256 of the file's
bytes, so a set is never edited in place without bumping `version`.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

SLUG = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"
Kind = Literal["harmful", "harmless", "capability", "domain"]


def normalise_text(text: str) -> str:
    """The form two prompts are compared in: whitespace collapsed, case folded."""
    return re.sub(r"\s+", " ", text).strip().casefold()


class PromptItem(BaseModel):
    """One prompt: the text a model reads, and the category it belongs to."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    text: str = Field(
        min_length=1,
        description="The prompt exactly as the user would type it (surrounding whitespace is "
        "stripped).",
    )
    category: str = Field(
        min_length=1,
        description="Group within the set (for harmful sets: the harm domain, e.g. 'weapons'); "
        "used for stratified subsampling and cross-domain analysis.",
    )


class PromptSet(BaseModel):
    """A named, versioned list of prompts of one kind."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        pattern=SLUG, description="Slug naming the set, e.g. 'harmful-core' ([a-z0-9-]+)."
    )
    version: int = Field(
        ge=1, strict=True, description="Bumped on every change to the prompts; reports record it."
    )
    kind: Kind = Field(
        description="Role in an audit: 'harmful' (Ds), 'harmless' (Dh), 'capability' (Dc) or "
        "'domain' (a named harmful domain for cross-domain analysis)."
    )
    domain: str | None = Field(
        default=None,
        description="Name of the domain; required when kind is 'domain', absent otherwise.",
    )
    description: str = Field(description="What the set is and how it was written.")
    prompts: list[PromptItem] = Field(description="The prompts, in file order.")

    @field_validator("prompts")
    @classmethod
    def _not_empty(cls, prompts: list[PromptItem]) -> list[PromptItem]:
        if not prompts:
            raise PydanticCustomError("empty_prompt_set", "a prompt set needs at least one prompt")
        return prompts

    @field_validator("prompts")
    @classmethod
    def _no_duplicates(cls, prompts: list[PromptItem]) -> list[PromptItem]:
        seen: dict[str, int] = {}
        for i, item in enumerate(prompts):
            key = normalise_text(item.text)
            if key in seen:
                # ctx carries the indices so a loader can point at the offending line.
                raise PydanticCustomError(
                    "duplicate_prompt",
                    "prompts[{index}] duplicates prompts[{first}] (case and whitespace "
                    "ignored): {quoted}",  # pydantic's template has no !r conversion
                    {"index": i, "first": seen[key], "text": item.text, "quoted": repr(item.text)},
                )
            seen[key] = i
        return prompts

    @model_validator(mode="after")
    def _domain_iff_domain_kind(self) -> PromptSet:
        if self.kind == "domain" and not self.domain:
            raise PydanticCustomError(
                "domain_missing",
                "kind 'domain' requires a non-empty 'domain'",
                {"field": "kind"},
            )
        if self.kind != "domain" and self.domain is not None:
            raise PydanticCustomError(
                "domain_unexpected",
                "'domain' is only allowed with kind 'domain', not {kind!r}",
                {"field": "domain", "kind": self.kind},
            )
        return self
