"""Read JSON that a stranger wrote (a card's headline, an upload, a repo's config.json).

`json.loads` turns an integer of any length into an `int`, and Python refuses to build one of
more than 4,300 digits with a bare `ValueError`, not a `JSONDecodeError`; a reader that
catches only the latter crashes on one long number. Here every way the text can fail is a
`ValueError` with a plain message: malformed JSON (`json.JSONDecodeError`), an integer longer
than `MAX_INT_DIGITS` digits, or nesting too deep for the parser (`JsonLimitError`).
"""

from __future__ import annotations

import json

# No number in a report, card or config is near this long; 2**64 has 20 digits.
MAX_INT_DIGITS = 64
INT_TOO_LONG = "a JSON integer has {n:,} digits (at most {limit} are read)"
TOO_DEEP = "the JSON is nested too deeply to read"


class JsonLimitError(ValueError):
    """JSON text that is well-formed but beyond what is read: a huge integer, deep nesting."""


def _bounded_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise JsonLimitError(INT_TOO_LONG.format(n=digits, limit=MAX_INT_DIGITS))
    return int(text)


def loads_bounded(text: str | bytes) -> object:
    """`json.loads` that never fails with anything but a `ValueError`.

    Raises:
        json.JSONDecodeError: malformed JSON.
        UnicodeDecodeError: bytes that are not UTF-8 (also a ValueError).
        JsonLimitError: an integer over `MAX_INT_DIGITS` digits, or nesting too deep.
    """
    try:
        return json.loads(text, parse_int=_bounded_int)
    except RecursionError:
        raise JsonLimitError(TOO_DEEP) from None
