"""Options of the Space server, shared by `depthcard space` and `python -m depthcard.space.app`.

Kept free of gradio so the CLI starts fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by `depthcard space` and `python -m space.app`."""
    p.add_argument(
        "--reports",
        type=Path,
        default=None,
        help="folder searched for report.json files (default: space/reports and ./demo-audit)",
    )
    p.add_argument(
        "--hub-repo",
        default=None,
        help="results dataset repo to read reports from (env DEPTHCARD_RESULTS_REPO)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default loopback)")
    p.add_argument("--port", type=int, default=None, help="port (default: gradio picks one)")
    p.add_argument(
        "--space-url",
        default=None,
        help="public URL of the Space, for the report links in card sections",
    )
    p.add_argument(
        "--refresh-seconds",
        type=float,
        default=None,
        help="read the reports again this often so new audits appear (0: never; default 300, "
        "env DEPTHCARD_REFRESH_SECONDS)",
    )
