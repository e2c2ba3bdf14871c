"""`depthcard space`: launch the Space locally. Kept free of gradio so the CLI starts fast."""

from __future__ import annotations

import argparse

from depthcard.schemas.errors import UserError
from depthcard.space.options import add_arguments  # noqa: F401  (the command's options)


def run(args: argparse.Namespace, token: str | None) -> int:
    """Serve the app until interrupted.

    Raises:
        UserError: gradio or pandas is not installed (they are the `space` extra).
    """
    try:
        from depthcard.space.app import launch
    except ModuleNotFoundError as exc:
        if exc.name not in ("gradio", "pandas"):
            raise
        raise UserError(
            f"the Space needs {exc.name}, which `pip install depthcard` leaves out: "
            'install the space extra (pip install ".[space]")'
        ) from exc

    launch(args, token=token)
    return 0
