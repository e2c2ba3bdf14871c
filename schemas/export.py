"""Export the JSON Schema of the report: `python -m schemas.export [--check]`.

The exported file is committed so that other tools can validate reports without Python;
a test fails when it drifts from the models.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from depthcard.schemas.report import AuditReport

SCHEMA_FILE = Path(__file__).with_name("audit_report.schema.json")


def render_schema() -> str:
    """The JSON Schema of `AuditReport` as stable, pretty-printed text."""
    schema = AuditReport.model_json_schema(mode="validation")
    schema["$id"] = "https://github.com/depthcard/depthcard/schemas/audit_report.schema.json"
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the file is stale")
    args = parser.parse_args(argv)
    text = render_schema()
    if args.check:
        current = SCHEMA_FILE.read_text(encoding="utf-8") if SCHEMA_FILE.exists() else ""
        if current != text:
            print(
                f"{SCHEMA_FILE} is stale: run python -m depthcard.schemas.export", file=sys.stderr
            )
            return 1
        return 0
    SCHEMA_FILE.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
