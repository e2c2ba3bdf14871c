"""Errors by kind: `UserError` is input the user can fix; anything else is a bug.

It sits at the bottom of the dependency rule so every layer can raise it. The CLI prints a
`UserError` as one line and exits 2 (no traceback, even under -v); every other exception
keeps its traceback and exits 1, so a bug inside torch never looks like a typo.
"""

from __future__ import annotations


class UserError(ValueError):
    """Wrong input, with a message that says what to change.

    A subclass of ValueError so callers that already catch ValueError keep working; the
    CLI's exit code and message depend on this class alone, not on ValueError.
    """
