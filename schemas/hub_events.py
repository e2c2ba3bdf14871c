"""Hugging Face Hub webhook payloads (version 3), as `depthcard serve` receives them.

These mirror the Hub's documented payload. Unlike the project's other boundary models they
ignore unknown fields: the Hub adds fields to its payloads without notice, and rejecting
them would make the bot deaf to every event. Every field the bot reads is typed and
required where the Hub always sends it, so a payload of the wrong shape is still rejected.
"""

from __future__ import annotations

from typing import Annotated, Literal

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

NOT_ORG_NAME = "a model repo id is org/name: {repo_id!r}"


def repo_id_problem(repo_id: str) -> str | None:
    """Why `repo_id` is not an `org/name` the Hub accepts, by huggingface_hub's own rules
    (`validate_repo_id`: at most 96 characters a part, no `--` or `..`, ...); None when it is."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        return " ".join(str(exc).split())[:300]
    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        return NOT_ORG_NAME.format(repo_id=repo_id)
    return None


def _valid_repo_id(repo_id: str) -> str:
    problem = repo_id_problem(repo_id)
    if problem is not None:
        raise ValueError(problem)
    return repo_id


HubRepoId = Annotated[str, AfterValidator(_valid_repo_id)]


class _HubModel(BaseModel):
    """Base of Hub payload parts: unknown fields ignored, known fields strictly typed."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


class ObjectId(_HubModel):
    id: str = Field(description="Hub object id.")


class EventUrl(_HubModel):
    web: str = Field(description="Web URL of the object.")
    api: str | None = Field(None, description="API URL of the object.")


class WebhookInfo(_HubModel):
    id: str = Field(description="Id of the webhook that sent the event.")
    version: Literal[3] = Field(description="Payload version; only 3 is understood.")


class HubEvent(_HubModel):
    action: Literal["create", "delete", "move", "update"] = Field(description="What happened.")
    scope: str = Field(min_length=1, description="e.g. repo, repo.content, discussion.")


class EventRepo(_HubModel):
    id: str = Field(description="Hub object id of the repo.")
    type: Literal["dataset", "model", "space"] = Field(description="Repo type.")
    name: HubRepoId = Field(
        max_length=200, description="org/name, valid by huggingface_hub's `validate_repo_id`."
    )
    private: bool = Field(description="Private repo.")
    owner: ObjectId = Field(description="Owner object.")
    url: EventUrl = Field(description="URLs of the repo.")
    head_sha: str | None = Field(
        None,
        alias="headSha",  # the Hub's spelling; the attribute keeps ours
        pattern=r"^[0-9a-f]{40}$",
        description="Commit at the head of main after the event.",
    )
    tags: list[str] | None = Field(None, description="Repo tags.")


class EventDiscussion(_HubModel):
    id: str = Field(description="Hub object id of the discussion.")
    num: int = Field(ge=1, description="Discussion number in the repo.")
    title: str = Field(description="Title.")
    isPullRequest: bool = Field(description="Pull request (true) or discussion.")
    status: Literal["closed", "draft", "open", "merged"] = Field(description="Current status.")
    author: ObjectId = Field(description="Who opened it.")
    url: EventUrl = Field(description="URLs of the discussion.")


class WebhookPayload(_HubModel):
    """One webhook delivery."""

    event: HubEvent = Field(description="Action and scope.")
    repo: EventRepo = Field(description="The repo the event is about.")
    webhook: WebhookInfo = Field(description="The webhook that sent it.")
    discussion: EventDiscussion | None = Field(None, description="Set for discussion events.")
