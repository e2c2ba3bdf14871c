"""Read a card's depthcard section back, and splice a new one into a README.

Parsing reads only the markers and the embedded JSON (the contract of the standard), never
the Markdown table. Splicing replaces the section, or appends one, and leaves every other
byte of the README as it was.
"""

from __future__ import annotations

import re

from pydantic import ValidationError

from depthcard.report.card_format import (
    _HEADLINE_PREFIX,
    _START_RE,
    CARD_SCHEMA_VERSION,
    READ_MAJORS,
    START_MARKER,
    CardModel,
    CardParseError,
    ParsedCard,
)
from depthcard.schemas.json_text import loads_bounded
from depthcard.schemas.report import Headline

# A marker counts only where it begins a line after at most three spaces (where CommonMark
# starts an HTML block; four spaces or a tab make indented code), outside fenced code and
# outside the YAML front matter; anything may follow it on its line.
_START_LINE = re.compile(r"[ ]{0,3}(<!--\s*depthcard:start\b.*?-->)")
_END_LINE = re.compile(r"[ ]{0,3}(<!--\s*depthcard:end\s*-->)")
# A fence opens after at most three spaces, or inside list items (`- ```, `1. - ~~~`); its
# content column is where the fence starts, and it closes at most three spaces past that.
_FENCE = re.compile(r"((?:[ ]{0,3}(?:[-+*]|[0-9]{1,9}[.)])[ ]{1,4})*[ ]{0,3})(`{3,}|~{3,})")


def _lines(text: str):
    """(offset, line without its line break) of every line of `text`."""
    offset = 0
    for line in text.split("\n"):
        yield offset, line.removesuffix("\r")
        offset += len(line) + 1


def _front_matter_end(text: str) -> int:
    """Offset just past the YAML front matter (0 when the card has none)."""
    lines = _lines(text)
    first = next(lines, (0, ""))[1].removeprefix("\ufeff")
    if first.rstrip() != "---":
        return 0
    for offset, line in lines:
        if line.rstrip() in ("---", "..."):
            return offset + len(line)
    return 0


def _find_span(text: str) -> tuple[int, int] | None:
    """(start, end) of the depthcard section of `text`, None when there is none."""
    return _scan(text)[0]


def _scan(text: str) -> tuple[tuple[int, int] | None, str | None]:
    """(the section's span or None, the fence still open at the end of `text` or None).

    The section is a start-marker line and the next end-marker line, both outside fenced
    code blocks (``` and ~~~) and the front matter; of several start lines before that end,
    the last. A stray or unpaired marker is not a section and is left alone; a start marker
    of another schema version still starts one.
    """
    skip = _front_matter_end(text)
    fence: str | None = None
    column = 0  # where the open fence starts
    start: int | None = None
    for offset, line in _lines(text):
        if offset < skip:
            continue
        opening = _FENCE.match(line)
        if fence is not None:
            indent = len(line) - len(line.lstrip(" "))
            closing = line.strip(" ")
            if indent <= column + 3 and closing and set(closing) == {fence[0]}:
                if len(closing) >= len(fence):
                    fence = None
            continue
        if opening and not (opening[2][0] == "`" and "`" in line[opening.end() :]):
            fence, column = opening[2], len(opening[1])
            continue
        if m := _START_LINE.match(line):
            start = offset + m.start(1)
        elif start is not None and (m := _END_LINE.match(line)):
            return (start, offset + m.end(1)), None
    return None, fence


def parse_card_section(readme_text: str) -> ParsedCard | None:
    """Read the depthcard section of a README (LF or CRLF) back into its headline.

    Returns:
        The parsed card, or None when the README has no depthcard section (stray or unpaired
        markers are not a section).

    Raises:
        CardParseError: a malformed start marker, an unsupported major version, or an
            embedded JSON that is missing, malformed, disagrees with the marker or fails
            validation.
    """
    span = _find_span(readme_text)
    if span is None:
        return None
    section = readme_text[span[0] : span[1]]
    marker = _START_RE.match(section)
    if marker is None:
        raise CardParseError(
            "malformed depthcard start marker: expected "
            f"{START_MARKER.format(schema='MAJOR.MINOR', key='AUDIT_KEY')!r}"
        )
    schema, key = marker["schema"], marker["key"]
    major, minor = (int(x) for x in schema.split("."))
    ours = tuple(int(x) for x in CARD_SCHEMA_VERSION.split("."))
    if major not in READ_MAJORS:
        raise CardParseError(
            f"card standard {schema} is not supported (this parser reads 1.x and 2.x)"
        )
    data = _embedded_json(section)
    if major < ours[0] or minor > ours[1]:
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
        data = loads_bounded(section[begin:end])
    except ValueError as exc:  # malformed, a huge integer, nesting too deep
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

    Every character outside the section stays as it was (BOM, front matter, tabs, a missing
    final newline); the inserted section takes the README's line endings. An older or broken
    section is replaced; stray markers are left where they are. Appending leaves one blank
    line before the section and ends the file with a newline. Splicing the same section twice
    gives the same text as once. Never fails on the README's content.

    Raises:
        CardParseError: `section` (the bot's own text) has no depthcard markers.
    """
    own = _find_span(section)
    if own is None:
        raise CardParseError("the section to splice has no depthcard markers")
    nl = _newline(readme_text)
    body = section[own[0] : own[1]].replace("\r\n", "\n").replace("\n", nl)
    span, fence = _scan(readme_text)
    if span is not None:
        return readme_text[: span[0]] + body + readme_text[span[1] :]
    if fence is not None:  # the card ends inside a code block: close it, or it hides the section
        readme_text += ("" if readme_text.endswith("\n") else nl) + fence + nl
    if not readme_text or readme_text.endswith(nl + nl):
        separator = ""
    else:
        separator = nl if readme_text.endswith(nl) else nl + nl
    return readme_text + separator + body + nl
