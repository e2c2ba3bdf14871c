"""Precision and recall of the judge's text rules on the labelled answers (no model).

Runs `AnswerJudge(SubstringJudge())` without the NLL rule (it needs a model) on
tests/data/judge_labels.jsonl and prints precision and recall of "refusal" and "broken";
docs/judges.md quotes its output.

    python bench/judge_labels.py
"""

from __future__ import annotations

import json
from pathlib import Path

from depthcard.analysis.judges import AnswerJudge, SubstringJudge

LABELS = Path(__file__).resolve().parents[1] / "tests" / "data" / "judge_labels.jsonl"


def load(path: Path = LABELS) -> list[dict]:
    """The labelled answers: one {id, label, kind, answer} per line."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def precision_recall(truth: list[str], got: list[str], cls: str) -> tuple[float, float]:
    """(precision, recall) of class `cls`; 0.0 where undefined."""
    tp = sum(t == cls and g == cls for t, g in zip(truth, got, strict=True))
    predicted, actual = got.count(cls), truth.count(cls)
    return (tp / predicted if predicted else 0.0), (tp / actual if actual else 0.0)


def main() -> None:
    rows = load()
    got = [j.label for j in AnswerJudge(SubstringJudge()).classify([r["answer"] for r in rows])]
    truth = [r["label"] for r in rows]
    print(f"{len(rows)} labelled answers (text rules only: phrases, empty, repetition)")
    for cls in ("refusal", "broken"):
        p, r = precision_recall(truth, got, cls)
        print(f"{cls:8s} precision {p:.3f}  recall {r:.3f}")
    for row, g in zip(rows, got, strict=True):
        if g != row["label"]:
            print(f"  miss #{row['id']} ({row['kind']}): labelled {row['label']}, judged {g}")


if __name__ == "__main__":
    main()
