"""Free text of a report made inert for Markdown: the card and the PR body print it.

A report.json can be edited by hand before it is published, so any string in it (verdict,
warnings, reasons, model paths, judge and prompt-set names) may carry a heading, a link, an
image, emphasis or HTML. These helpers show such text as text. They escape only what could
be active where the text lands (inline, possibly at the start of a line or in a table
cell), so ordinary sentences stay readable in the Markdown source.
"""

from __future__ import annotations

import re

# Active anywhere inline: escapes, code spans, emphasis, table cells, strikethrough, and the
# attribute lists of some renderers.
_ALWAYS = re.compile(r"([\\`*|~{}])")
# Inline, a `]` makes a link or an image only right before `(` or `[`; escaping it there
# leaves a bracketed aside such as "[95 % CI 0.2–0.3]" as it is.
_LINK_CLOSE = re.compile(r"\](?=[(\[])")
# `_` opens emphasis only at a word boundary; snake_case names stay as they are.
_UNDERSCORE = re.compile(r"(?<![^\W_])_|_(?![^\W_])")
# What starts a block when the text begins a line (or a list item): a heading, a list item,
# a thematic break, a setext underline or a link definition. "-5 %" or "0.25" start nothing.
_BLOCK_START = re.compile(r"^(#{1,6}(?=\s|$)|[-+=](?=\s|$|[-=])|\[)")
_ORDERED_START = re.compile(r"^(\d{1,9})([.)])(?=\s|$)")


def _one_line_html(value: str) -> str:
    """Whitespace runs (line breaks included) to one space; `&`, `<` and `>` as entities."""
    text = " ".join(value.split())
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def md_escape(value: str) -> str:
    """`value` as one line of Markdown that renders as its own text and nothing more.

    Example:
        >>> md_escape("see [x](http://evil)\\n# Owned <img src=x>")
        'see [x\\\\](http://evil) # Owned &lt;img src=x&gt;'
    """
    text = _ALWAYS.sub(r"\\\1", _one_line_html(value))
    text = _LINK_CLOSE.sub(r"\\]", text)
    text = _UNDERSCORE.sub(r"\\_", text)
    text = _BLOCK_START.sub(r"\\\1", text)
    return _ORDERED_START.sub(r"\1\\\2", text)


def md_code(value: str) -> str:
    """`value` as an inline code span on one line, safe inside a table cell.

    Backslash escapes do not work inside a code span, so a backtick becomes `'` (it would
    close the span) and `|` becomes `\\|` (GitHub-flavoured tables split on it even there).
    """
    text = _one_line_html(value).replace("`", "'").replace("|", "\\|")
    return f"`{text}`"


def md_fence(text: str, info: str = "") -> list[str]:
    """`text` as a fenced code block: the fence is longer than any backtick run in it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [f"{fence}{info}", text.strip(), fence]
