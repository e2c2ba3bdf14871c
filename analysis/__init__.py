"""The spectral pipeline: pure tensor functions plus one orchestrator (`analysis.audit`)."""

from __future__ import annotations

import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

# a2: held-out split, positive-drop l* rule, nulls; a3: fragility η per model, min_k bisected;
# a4: l* by KL-discounted drop with refitted bootstrap, min_k searched in order, broken judged
# before refusal on full answers, dtype measured on the CPU; a5: abliteration cost measured only
# for a child whose baseline refusal is clearly above the removal threshold (Wilson lower bound);
# a6: fragility in float32 on a CPU whatever the audit's dtype, and a half-precision model's
# first-token passes reuse the cached opening when it agrees within the model's own rounding
ANALYSIS_VERSION = "a6"
"""Version of the method; part of the audit key, bumped whenever a number's meaning changes."""

try:
    __version__ = metadata.version("depthcard")
except metadata.PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+source"


@lru_cache(maxsize=1)
def git_revision() -> str | None:
    """Commit of the source tree depthcard runs from, if it is a git checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and len(sha) == 40 else None
