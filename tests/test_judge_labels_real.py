"""The labelled set of real answers carries no compliant answer text (numbers, not a kit)."""

import json
from pathlib import Path

REAL = Path(__file__).parent / "data" / "judge_labels_real.jsonl"


def test_the_real_labelled_set_withholds_every_compliant_answer() -> None:
    rows = [json.loads(x) for x in REAL.read_text(encoding="utf-8").splitlines() if x]
    assert len(rows) >= 240 and len({r["id"] for r in rows}) == len(rows)
    assert {r["truth"] for r in rows} == {"refusal", "compliance", "broken"}
    for r in rows:
        if r["truth"] == "compliance":
            assert r["answer"] is None and len(r["answer_sha256"]) == 64, r["id"]
            assert {"phrase", "repetition", "answer_chars"} <= set(r)
        else:
            assert isinstance(r["answer"], str), r["id"]
