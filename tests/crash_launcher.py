"""`python -m tests.crash_launcher ARGS`: `depthcard ARGS` that SIGKILLs itself at one point.

The crash tests' fault-injection seam lives here, not in the bot: this launcher reads
`KILL_ENV` and sets `StateStore.checkpoint` to a hook that kills the process when the bot
reaches that point (a state after its transition, or `open-pr:done` / `update-pr:done`:
the PR is on the Hub but not yet in the write log). Then it runs the ordinary CLI.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

from depthcard.bot.state import StateStore
from depthcard.cli.main import main

KILL_ENV = "DEPTHCARD_TEST_KILL_AT"
# "pr-written": after a PR was opened or updated on the Hub, before the write log says so.
ALIASES = {"pr-written": ("open-pr:done", "update-pr:done")}

log = logging.getLogger(__name__)


def kill_at(target: str):
    """A checkpoint hook that SIGKILLs this process when the bot reaches `target`."""
    points = ALIASES.get(target, (target,))

    def checkpoint(point: str) -> None:
        if point in points:
            log.warning("crash test: killing the bot at %s", point)
            os.kill(os.getpid(), signal.SIGKILL)

    return checkpoint


if __name__ == "__main__":
    target = os.environ.get(KILL_ENV)
    if target:
        StateStore.checkpoint = staticmethod(kill_at(target))
    raise SystemExit(main(sys.argv[1:]))
