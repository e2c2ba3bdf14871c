"""`depthcard space`: launch the Space locally. Kept free of gradio so the CLI starts fast."""

from __future__ import annotations

import argparse

from depthcard.space.options import add_arguments  # noqa: F401  (the command's options)


def run(args: argparse.Namespace, token: str | None) -> int:
    """Serve the app until interrupted."""
    from depthcard.space.app import launch

    launch(args, token=token)
    return 0
