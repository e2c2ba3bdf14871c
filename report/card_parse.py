"""Read a card's depthcard section back, and splice a new one into a README.

Parsing reads only the markers and the embedded JSON (the contract of the standard), never
the Markdown table. Splicing replaces the section, or appends one, and leaves every other
byte of the README as it was.
"""

from __future__ import annotations

import json
import re

from pydantic import ValidationError

from depthcard.report.card_format import (
    _END_PREFIX,
    _HEADLINE_PREFIX,
    _START_PREFIX,
    _START_RE,
    CARD_SCHEMA_VERSION,
    END_MARKER,
    START_MARKER,
    CardModel,
    CardParseError,
    ParsedCard,
)
from depthcard.schemas.report import Headline


def _find_span(text: str) -> tuple[int, int] | None:
    """(start, end) of the marker-delimited section in `text`, None when there is none."""
    starts = [m.start() for m in re.finditer(re.escape(_START_PREFIX), text)]
    ends = [m.start() for m in re.finditer(re.escape(_END_PREFIX), text)]
    if not starts and not ends:
        return None
    if len(starts) != 1 or len(ends) != 1:
        raise CardParseError(
            f"expected one depthcard start and one end marker, found {len(starts)} start and "
            f"{len(ends)} end marker(s)"
        )
    if ends[0] < starts[0]:
        raise CardParseError("the depthcard end marker comes before the start marker")
    if not _START_RE.match(text, starts[0]):
        raise CardParseError(
            "malformed depthcard start marker: expected "
            f"{START_MARKER.format(schema='MAJOR.MINOR', key='AUDIT_KEY')!r}"
        )
    if not text.startswith(END_MARKER, ends[0]):
        raise CardParseError(f"malformed depthcard end marker: expected {END_MARKER!r}")
    return starts[0], ends[0] + len(END_MARKER)


def parse_card_section(readme_text: str) -> ParsedCard | None:
    """Read the depthcard section of a README (LF or CRLF) back into its headline.

    Returns:
        The parsed card, or None when the README has no depthcard section.

    Raises:
        CardParseError: unbalanced or duplicated markers, an unsupported major version, or an
            embedded JSON that is missing, malformed, disagrees with the marker or fails
            validation.
    """
    span = _find_span(readme_text)
    if span is None:
        return None
    section = readme_text[span[0] : span[1]]
    marker = _START_RE.match(section)
    schema, key = marker["schema"], marker["key"]
    major, minor = (int(x) for x in schema.split("."))
    ours = tuple(int(x) for x in CARD_SCHEMA_VERSION.split("."))
    if major != ours[0]:
        raise CardParseError(f"card standard {schema} is not supported (this parser reads 1.x)")
    data = _embedded_json(section)
    if minor > ours[1]:
        data = _known_fields(data)
    try:
        card = ParsedCard.model_validate(data)
    except ValidationError as exc:
        raise CardParseError(f"depthcard headline JSON fails validation: {exc}") from exc
    if card.schema_version != schema or card.audit_key != key:
        raise CardParseError("depthcard headline JSON disagrees with the start marker")
    return card


def _embedded_json(section: str) -> dict:
    count = section.count(_HEADLINE_PREFIX)
    if count != 1:
        raise CardParseError(f"expected one depthcard:headline comment, found {count}")
    begin = section.index(_HEADLINE_PREFIX) + len(_HEADLINE_PREFIX)
    end = section.find(" -->", begin)
    if end < 0:
        raise CardParseError("the depthcard:headline comment is not closed")
    try:
        data = json.loads(section[begin:end])
    except json.JSONDecodeError as exc:
        raise CardParseError(f"depthcard headline JSON is malformed: {exc}") from exc
    if not isinstance(data, dict):
        raise CardParseError("depthcard headline JSON is not an object")
    return data


def _known_fields(data: dict) -> dict:
    """Drop fields a newer minor version added, so a 1.0 parser still reads a 1.x card."""
    out = {k: v for k, v in data.items() if k in ParsedCard.model_fields}
    nested = {"headline": Headline, "child": CardModel, "base": CardModel, "third": CardModel}
    for name, model in nested.items():
        if isinstance(out.get(name), dict):
            out[name] = {k: v for k, v in out[name].items() if k in model.model_fields}
    return out


def _newline(text: str) -> str:
    """The README's line ending: CRLF when most of its line breaks are CRLF."""
    crlf = text.count("\r\n")
    return "\r\n" if crlf and 2 * crlf >= text.count("\n") else "\n"


def splice_section(readme_text: str, section: str) -> str:
    """Put `section` into a README, replacing its depthcard section or appending one.

    Every character outside the markers stays as it was; the inserted section takes the
    README's line endings. Appending leaves one blank line before the section and ends the
    file with a newline. Splicing the same section twice gives the same text as once.

    Raises:
        CardParseError: when the README or `section` has unbalanced or duplicated markers,
            or `section` has no markers at all.
    """
    own = _find_span(section)
    if own is None:
        raise CardParseError("the section to splice has no depthcard markers")
    nl = _newline(readme_text)
    body = section[own[0] : own[1]].replace("\r\n", "\n").replace("\n", nl)
    span = _find_span(readme_text)
    if span is not None:
        return readme_text[: span[0]] + body + readme_text[span[1] :]
    if not readme_text or readme_text.endswith(nl + nl):
        separator = ""
    else:
        separator = nl if readme_text.endswith(nl) else nl + nl
    return readme_text + separator + body + nl
