"""Splicing over 10,000 generated model cards: never raises, never touches a byte outside
the section, is idempotent, and a second audit replaces the first.

A seeded random generator rather than hypothesis: 10,000 cards in a few seconds, and a
failure prints the seed and the card's index, which rebuild the card exactly.
"""

from __future__ import annotations

import random
import time

import pytest

from depthcard.bot.publish import card_metadata
from depthcard.report.card import parse_card_section, render_card_section, splice_section
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
]  # fmt: skip


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
