"""Which files of a report folder may be published, and the digest of those that may not.

A report folder holds two files that are an abliteration kit rather than a result:
`directions.safetensors` (the refusal direction and the attack basis at every layer) and
`samples.jsonl` (the child's answers to harmful prompts with refusal ablated). Public copies
(the results dataset, a job's upload, the Space) carry only the numbers, the card and the
plots, by an allow-list, so a file added to the folder later stays private until someone
decides otherwise. Every file left out is named in `withheld.json` with its sha256, so
whoever holds the audit folder can show that a public result is the one it produced.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

WITHHELD_FILE = "withheld.json"
# The model repo's folder holding the public report: `depthcard publish` adds it in the pull
# request's commit, and the Space's `?model=org/name` link reads it from there.
REPORT_FOLDER = "depthcard"
# Public: the report's numbers, the card section and the standard plots.
PUBLIC = re.compile(r"(report\.json|card\.md|plots/[^/]+\.png)")
WITHHELD_NOTE = (
    "Files of the audit folder that are not published: the refusal directions and attack "
    "basis (directions.safetensors) and the judged answers, ablated ones included "
    "(samples.jsonl), would help strip the model's safety training. Their sha256 lets the "
    "holder of the audit folder show that this public report is the one the audit wrote."
)


def model_report_url(space_url: str, repo_id: str) -> str:
    """The Space page of a model's own report, the card's and the PR's "Full report" link:
    `{space_url}/?model={org}/{name}` (the report under REPORT_FOLDER of the model repo, at
    main or in its open depthcard pull request)."""
    return f"{space_url.rstrip('/')}/?model={repo_id}"


def is_public(relative: str) -> bool:
    """True when a path inside a report folder (POSIX, relative) may be published."""
    return PUBLIC.fullmatch(relative) is not None


def public_files(folder: Path) -> dict[str, bytes]:
    """The publishable files of a report folder by relative path, plus `withheld.json`
    listing every other file with its size and sha256 (always present, even when empty)."""
    folder = Path(folder)
    public: dict[str, bytes] = {}
    withheld: dict[str, dict] = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        relative = path.relative_to(folder).as_posix()
        data = path.read_bytes()
        if is_public(relative):
            public[relative] = data
        elif not relative.endswith(".log") and relative != WITHHELD_FILE:
            withheld[relative] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    manifest = {"note": WITHHELD_NOTE, "files": withheld}
    public[WITHHELD_FILE] = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    return public


def write_public_copy(folder: Path, out: Path) -> list[str]:
    """Write `public_files(folder)` under `out` (created); returns the relative paths."""
    files = public_files(folder)
    for relative, data in files.items():
        dest = Path(out) / relative
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
    return sorted(files)
