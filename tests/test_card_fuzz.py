"""Splicing over 10,000 generated model cards: the section found is the one the card
standard's rule names (checked against `expected_span`, the rule restated line by line here,
independently of report/card_parse.py), reading never raises anything but CardParseError,
splicing never touches a byte outside the section, is idempotent, and a second audit
replaces the first.

The generator makes front matter, fences (also opened inside list items), markers indented
by up to three spaces, by four or by a tab (indented code), markers of old schemas and
5,000-digit numbers in a marker and in the headline JSON. Deliberate breakages of
card_parse.py this test was seen to catch: fence handling removed (`_FENCE` never matches);
the front-matter skip removed (`_front_matter_end` returns 0); markers allowed after any
indentation (`[ \t]*` instead of `[ ]{0,3}`); fences not recognised after list markers.

A seeded random generator rather than hypothesis: 10,000 cards in a few seconds, and a
failure prints the seed and the card's index, which rebuild the card exactly.
"""

from __future__ import annotations

import random
import time

import pytest

from depthcard.bot.publish import card_metadata
from depthcard.report.card import (
    CardParseError,
    parse_card_section,
    render_card_section,
    splice_section,
)
from depthcard.report.card_parse import _find_span
from tests.report_factory import make_report

CARDS = 10_000
SEED = 20250314
COMMAND = "depthcard audit org/base org/child --out audit"
SECTION = render_card_section(make_report(), report_url=None, reproduce_command=COMMAND)
SECOND = render_card_section(make_report(kind="child-only", num_layers=4), report_url=None,
                             reproduce_command=COMMAND)  # fmt: skip
SECOND_KEY = parse_card_section(SECOND).audit_key
OLD = SECTION.replace("schema=2.1", "schema=0.9")
START, END = SECTION.splitlines()[0], SECTION.splitlines()[-1]
ENCODINGS = ["utf-8", "latin-1", "cp1252", "utf-16-le", "shift_jis"]
LINES = [
    "# Model card", "Ünïcødé ✓ 模型 🤗", "\ttab\tseparated", "trailing   ", "", "| a | b |",
    "```", "~~~", "````python", "  ```", START, END, "<!-- depthcard:end-->",
    "<!-- depthcard:start schema=0.9 key=old -->", "see `" + START + "`", "---", "...",
    "depthcard: opt-out", "<!-- depthcard:headline {} -->", "\x00\x7f", "\u2028",
    "   " + START, "    " + START, "\t" + END, "    " + END, "  " + END, "- ```", "1. ~~~",
    "  - ```", "    ```", "   ~~~~", "- item", "",
    f"<!-- depthcard:start schema=2.{'1' * 5000} key=k -->",
    f'<!-- depthcard:headline {{"schema_version": {"9" * 5000}}} -->',
]  # fmt: skip


def expected_span(card: str) -> tuple[int, int] | None:
    """The section of `card` by the card standard's rule, restated without card_parse.py:
    lines after the YAML front matter (`---` first line, through the next `---` or `...`);
    a fence opens on a line whose text, after list markers and up to three spaces, starts
    with three or more backticks or tildes (not a backtick fence with a backtick in its
    info string) and closes on a line of at least as many of that character, indented at
    most three spaces past where the fence began; a marker line is up to three spaces, then
    the marker; the section runs from the last start line before the first end line that
    follows a start line, both outside fences."""
    lines, offsets, at = [], [], 0
    for raw in card.split("\n"):
        lines.append(raw[:-1] if raw.endswith("\r") else raw)
        offsets.append(at)
        at += len(raw) + 1
    first = 0
    if lines[0].removeprefix("\ufeff").rstrip() == "---":
        ends = [i for i in range(1, len(lines)) if lines[i].rstrip() in ("---", "...")]
        first = ends[0] + 1 if ends else 0
    fence, column, start = None, 0, None
    for i in range(first, len(lines)):
        line = lines[i]
        if fence is not None:
            body = line.lstrip(" ")
            if (
                len(line) - len(body) <= column + 3
                and body.rstrip(" ")
                and (set(body.rstrip(" ")) == {fence[0]} and len(body.rstrip(" ")) >= len(fence))
            ):
                fence = None
            continue
        rest, eaten = line, 0
        while True:  # list markers, each followed by 1-4 spaces
            lead = len(rest) - len(rest.lstrip(" "))
            word = rest.lstrip(" ").split(" ", 1)[0]
            is_marker = word in ("-", "+", "*") or (
                word[:-1].isdigit() and word[-1:] in (".", ")") and len(word) <= 10
            )
            after = rest.lstrip(" ")[len(word) :]
            gap = len(after) - len(after.lstrip(" "))
            if lead > 3 or not is_marker or not 1 <= gap <= 4 or not after.strip():
                break
            eaten += lead + len(word) + gap
            rest = after[gap:]
        lead = len(rest) - len(rest.lstrip(" "))
        char = rest.lstrip(" ")[:1]
        run = len(rest.lstrip(" ")) - len(rest.lstrip(" ").lstrip(char)) if char else 0
        info = rest.lstrip(" ")[run:]
        if lead <= 3 and char in ("`", "~") and run >= 3 and not (char == "`" and "`" in info):
            fence, column = char * run, eaten + lead
            continue
        lead = len(line) - len(line.lstrip(" "))
        text = line[lead:] if lead <= 3 else ""
        if text.startswith("<!--") and _is_marker(text, "start"):
            start = offsets[i] + lead
        elif start is not None and text.startswith("<!--") and _is_marker(text, "end"):
            return start, offsets[i] + lead + text.index("-->") + 3
    return None


def _is_marker(text: str, kind: str) -> bool:
    """`text` begins with a depthcard start (any attributes) or end marker comment."""
    words = text[4:].lstrip()
    if kind == "end":
        return words.startswith("depthcard:end") and words[13:].lstrip().startswith("-->")
    name = "depthcard:start"
    return words.startswith(name) and (words[15:16] in ("", " ", "\t", "-")) and "-->" in words


def _random_line(rng: random.Random) -> str:
    if rng.random() < 0.2:  # any bytes, read back in any encoding
        raw = bytes(rng.randrange(256) for _ in range(rng.randrange(30)))
        return raw.decode(rng.choice(ENCODINGS), errors="replace").replace("\n", " ")
    return rng.choice(LINES)


def make_card(rng: random.Random) -> tuple[str, bool]:
    """(a README, whether its YAML metadata opts out)."""
    nl = rng.choice(["\n", "\r\n"])
    lines: list[str] = []
    opt_out = rng.random() < 0.3
    if rng.random() < 0.6:
        lines += ["---", "license: mit"] + (["depthcard: opt-out"] if opt_out else []) + ["---"]
    else:
        opt_out = False
    front = len(lines)  # a section inside the front matter would not be one
    lines += [_random_line(rng) for _ in range(rng.randrange(12))]
    if rng.random() < 0.4:  # an earlier audit, of this schema or an older one
        block = rng.choice([SECTION, SECOND, OLD]).rstrip("\n").splitlines()
        at = rng.randrange(front, len(lines) + 1)
        lines[at:at] = block
    text = nl.join(lines) + rng.choice(["", nl, nl + nl, " "])
    if rng.random() < 0.5 and rng.random() < 0.5:
        text = text.replace(nl, "\n" if nl == "\r\n" else "\r\n", 1)  # mixed line endings
    return ("\ufeff" if rng.random() < 0.25 else "") + text, opt_out


def check_card(card: str, opt_out: bool) -> None:
    assert _find_span(card) == expected_span(card)
    try:
        parse_card_section(card)
    except CardParseError:
        pass  # a broken section is the owner's; anything else raised is a bug
    spliced = splice_section(card, SECTION)
    a, b = _find_span(spliced)
    prefix, suffix = spliced[:a], spliced[b:]
    replaced = card.startswith(prefix) and card.endswith(suffix)
    appended = prefix.startswith(card) and suffix in ("\n", "\r\n")
    assert (replaced and len(prefix) + len(suffix) <= len(card)) or appended
    assert splice_section(spliced, SECTION) == spliced
    again = splice_section(spliced, SECOND)
    assert again.startswith(prefix) and again.endswith(suffix)
    assert parse_card_section(again).audit_key == SECOND_KEY
    if opt_out:
        assert card_metadata(spliced).get("depthcard") == "opt-out"


@pytest.mark.slow
def test_splice_over_ten_thousand_generated_cards():
    rng = random.Random(SEED)
    began = time.perf_counter()
    for index in range(CARDS):
        card, opt_out = make_card(rng)
        try:
            check_card(card, opt_out)
        except Exception as exc:
            raise AssertionError(f"card #{index} of seed {SEED}: {card!r}") from exc
    assert time.perf_counter() - began < 60
