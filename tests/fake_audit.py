"""A stand-in for `depthcard audit` in bot tests: writes a valid report for the pinned pair.

Usage (as the bot calls it): python tests/fake_audit.py BASE@sha CHILD@sha --out DIR [...]
FAKE_AUDIT_FAIL=1 makes it fail like a crashed audit; FAKE_AUDIT_FAIL=2 like an audit that
refuses its input (one error line, exit 2, as `depthcard` does on a UserError).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from depthcard.analysis import ANALYSIS_VERSION  # noqa: E402
from tests.report_factory import make_report  # noqa: E402


def main(argv: list[str]) -> int:
    if os.environ.get("FAKE_AUDIT_FAIL") == "2":
        error = "depthcard: error: --num-directions 99 exceeds the 16 harmful prompts"
        print(error, file=sys.stderr)
        return 2
    if os.environ.get("FAKE_AUDIT_FAIL"):
        print("fake audit: CUDA out of memory", file=sys.stderr)
        return 1
    base, child = (a.split("@") for a in argv[:2])
    out = Path(argv[argv.index("--out") + 1])
    report = make_report(
        models={"base": {"repo_id": base[0], "revision": base[1]},
                "child": {"repo_id": child[0], "revision": child[1]}},
        audit_key=f"{base[1]}/{child[1]}/{ANALYSIS_VERSION}",
    )  # fmt: skip
    # the method version this depthcard writes, as a real audit would
    report = report.model_copy(
        update={"tool": report.tool.model_copy(update={"analysis_version": ANALYSIS_VERSION})}
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(report.model_dump_json(indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
