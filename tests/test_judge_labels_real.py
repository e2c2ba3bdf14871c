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


def test_the_docs_table_is_the_score_of_the_committed_set() -> None:
    """docs/judges.md's precision/recall table is what `bench/real_judge_set.py score` gives
    on the committed rows (compliances scored from their recorded features)."""
    import importlib.util

    path = Path(__file__).parent.parent / "bench" / "real_judge_set.py"
    spec = importlib.util.spec_from_file_location("real_judge_set", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = [json.loads(x) for x in REAL.read_text(encoding="utf-8").splitlines() if x]
    docs = (path.parent.parent / "docs" / "judges.md").read_text(encoding="utf-8")
    table = bench.score(rows)
    assert table in docs, table
