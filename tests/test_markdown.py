"""A tampered report cannot inject Markdown or HTML into the card or the PR body."""

import re

import pytest

from depthcard.bot.publish import render_body
from depthcard.report.card import HEADING, render_card_section
from depthcard.report.markdown import md_code, md_escape, md_fence
from depthcard.report.reproduce import reproduce_command
from depthcard.schemas.report import AbsentSection
from tests.report_factory import make_report

EVIL = (
    "ok\n# Owned [x](http://evil) ![i](http://evil/x.png) <img src=x onerror=alert(1)> "
    "<script>alert(1)</script> **bold** _em_ `tick` | cell"
)
LEADING = "# Owned"  # a value that would be a heading where it begins a line


def tampered():
    r = make_report(with_ablation=True, local=True)
    m = r.models
    return r.model_copy(
        update={
            "verdict": r.verdict.model_copy(update={"text": EVIL}),
            "warnings": [LEADING, EVIL],
            "absent": [AbsentSection(section=EVIL, reason=EVIL)],
            "models": m.model_copy(
                update={
                    "base": m.base.model_copy(update={"path": EVIL}),
                    "child": m.child.model_copy(update={"path": EVIL}),
                }
            ),
            "headline": r.headline.model_copy(update={"judge": EVIL}),
            "config": r.config.model_copy(update={"judge": EVIL}),
            "prompt_sets": [p.model_copy(update={"name": EVIL}) for p in r.prompt_sets],
            "selected_layer": r.selected_layer.model_copy(update={"reason": EVIL}),
        }
    )


def outside_fences(text):
    """The lines where Markdown is active: outside fenced code blocks and the card's comments.

    The headline comment holds the judge name as JSON; `_comment_safe` keeps it a comment.
    """
    out, fence = [], None
    for line in text.splitlines():
        run = re.match(r"`{3,}", line)
        if fence is None and run:
            fence = run.group()
        elif fence is not None and line.strip() == fence:
            fence = None
        elif fence is None and not (line.startswith("<!--") and line.endswith("-->")):
            out.append(line)
    assert fence is None, "a fence was left open"
    return out


def assert_inert(text):
    lines = outside_fences(text)
    prose = "\n".join(lines)
    assert "Owned" in prose  # the fields are shown, as text
    headings = [x for x in lines if re.match(r"(?:[-*+] |\d+[.)] )?#", x) and x != HEADING]
    assert headings == []
    assert "<img" not in prose and "<script" not in prose
    prose = re.sub(r"(?<!\\)`[^`\n]*`", "`code`", prose)  # a code span shows text verbatim
    assert not re.search(r"(?<!\\)\]\(", prose)
    assert not re.search(r"(?<!\\)\*\*bold", prose)
    assert not re.search(r"(?<![\\\w])_em", prose)


def test_a_tampered_report_renders_inert_in_the_card():
    report = tampered()
    card = render_card_section(report, report_url=None, reproduce_command=reproduce_command(report))
    assert_inert(card)


def test_a_tampered_report_renders_inert_in_the_pr_body():
    report = tampered()
    body = render_body(report, "https://hf.co/spaces/d/d?report=x/y")
    assert_inert(body)


@pytest.mark.parametrize(
    "text",
    [
        "the child refuses 94 % of harmful prompts (base 12 %)",
        "ρ_ε of M_DiD 0.004464 [95 % CI 0.006–0.009]",
        "-5 % at layer 3; 0.25 of d",
        "base and child are identical at layer(s) [0]: nothing changed",
    ],
)
def test_ordinary_text_is_left_readable(text):
    assert md_escape(text) == text


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("# Owned", "\\# Owned"),
        ("- item", "\\- item"),
        ("12. item", "12\\. item"),
        ("[x]: http://evil", "\\[x]: http://evil"),
        ("a\n\n# b", "a # b"),
        ("[x](http://evil)", "\\[x\\](http://evil)"),
        ("a_b _c_", "a_b \\_c\\_"),
        ("x <b> & y", "x &lt;b&gt; &amp; y"),
    ],
)
def test_specials_are_escaped_where_they_could_act(text, escaped):
    assert md_escape(text) == escaped


def test_code_spans_and_fences_cannot_be_closed_from_inside():
    assert md_code("a`b|c\nd") == "`a'b\\|c d`"
    assert md_fence("x ```` y", "sh") == ["`````sh", "x ```` y", "`````"]
