"""How the CLI words errors, and where input from the user's own files becomes a UserError."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from depthcard.schemas.errors import UserError


def describe_error(exc: BaseException) -> str:
    """One line for a user error; pydantic errors name the field and the problem."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "input"
        return f"{exc.title}: {where}: {first['msg']} ({exc.error_count()} error(s))"
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextmanager
def reading_user_file() -> Iterator[None]:
    """Around the loading of one file the user named (a bot config, a report folder).

    What goes wrong there is the file's fault and the user's to fix: a ValueError (pydantic's
    ValidationError included) or OSError becomes a UserError with the same one-line message.
    Wrap only the loader call, never the work that follows, or bugs would pass as input.
    """
    try:
        yield
    except UserError:
        raise
    except (ValueError, OSError) as exc:
        raise UserError(describe_error(exc)) from exc
