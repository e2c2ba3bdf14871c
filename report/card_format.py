"""The card standard's fixed parts: markers, the embedded JSON's models, the parse error.

Shared by the renderer (`report.card`) and the reader (`report.card_parse`); see
docs/card-standard.md for the standard itself.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field

from depthcard.schemas._base import Strict
from depthcard.schemas.errors import UserError
from depthcard.schemas.report import Headline

CARD_SCHEMA_VERSION = "2.1"  # the newest version this module reads and writes
# 2.0 (every kind): nulls, placebos and intervals beside the scores; 1.x sections still read.
# 2.1: depth against its null (p, permutations, window), placebo baselines, fragility paragraph.
PAIR_CARD_VERSION = "2.1"
READ_MAJORS = (1, 2)  # major versions the parser reads
START_MARKER = "<!-- depthcard:start schema={schema} key={key} -->"
END_MARKER = "<!-- depthcard:end -->"
HEADLINE_COMMENT = "<!-- depthcard:headline {payload} -->"
HEADING = "## Safety alignment depth (depthcard audit)"

_START_PREFIX = "<!-- depthcard:start"
_END_PREFIX = "<!-- depthcard:end"
_HEADLINE_PREFIX = "<!-- depthcard:headline "
_START_RE = re.compile(
    r"<!-- depthcard:start schema=(?P<schema>[0-9]{1,6}\.[0-9]{1,6}) key=(?P<key>\S+) -->"
)


class CardParseError(ValueError):
    """A README's depthcard section is malformed: markers, embedded JSON or its values."""


class CardModel(Strict):
    """A model's identity as the card records it: hub repo at a commit, or a content hash."""

    source: Literal["hub", "local"] = Field(description="Hub repo at a revision, or local folder.")
    repo_id: str | None = Field(None, description="Hub repo id (source=hub).")
    revision: str | None = Field(None, description="40-hex commit sha (source=hub).")
    content_sha256: str | None = Field(None, description="Content hash (source=local).")


class ParsedCard(Strict):
    """What the embedded JSON of a card section carries (also what `render` embeds)."""

    schema_version: str = Field(description="Card standard version, MAJOR.MINOR.")
    audit_key: str = Field(description="base sha / child sha / analysis version.")
    kind: Literal["pair", "child-only", "three-model"] = Field(description="Audit kind.")
    analysis_version: str = Field(description="Version of the analysis method.")
    report_schema_version: str = Field(description="schema_version of the report.")
    child: CardModel = Field(description="The audited child model.")
    base: CardModel | None = Field(None, description="The base model; absent in child-only.")
    third: CardModel | None = Field(
        None, description="The third model (a fine-tune of the child); three-model audits (1.1)."
    )
    verdict: Literal["measured", "no-refusal", "identical-models", "partial"] = Field(
        description="Verdict code of the audit."
    )
    headline: Headline = Field(description="The headline numbers at l*.")

    @property
    def child_revision(self) -> str | None:
        """The child's commit sha, or its content hash for a local model."""
        return self.child.revision or self.child.content_sha256


def start_marker(audit_key: str, version: str = CARD_SCHEMA_VERSION) -> str:
    """The start marker for `audit_key`; raises ValueError for keys that cannot sit in it."""
    if not re.fullmatch(r"[^\s<>]+", audit_key) or "--" in audit_key:
        raise UserError(f"audit key {audit_key!r} cannot be written into a card marker")
    return START_MARKER.format(schema=version, key=audit_key)
