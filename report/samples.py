"""samples.jsonl: read the judged answers back, and judge them again without the model.

Every answer the ablation curve judged is kept in the report folder (one `JudgedAnswer` per
line), with the mean per-token NLL the unablated child gave it. `rejudge` recomputes each
curve point's refusal / compliance / broken shares from that file alone, so a different
phrase list or threshold can be tried on an audit without re-running it.

Example:
    >>> from depthcard.analysis.judges import AnswerJudge, SubstringJudge
    >>> shares = rejudge(Path("audit/samples.jsonl"), AnswerJudge(SubstringJudge()))
    >>> shares[("attack", 1)]["refusal"]
    0.125
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from depthcard.analysis.judges import AnswerJudge, shares
from depthcard.schemas.errors import UserError
from depthcard.schemas.sections import AnswerClass, JudgedAnswer

PointKey = tuple[str, int]  # (basis, k)


def read_samples(path: Path) -> list[JudgedAnswer]:
    """Every row of a samples.jsonl file, validated.

    Raises:
        UserError: the file is missing or a line is not a judged answer (the message says
            which line).
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UserError(f"{path}: cannot read samples ({exc.strerror})") from exc
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(JudgedAnswer.model_validate_json(line))
        except ValueError as exc:
            raise UserError(f"{path}, line {number}: not a judged answer ({exc})") from exc
    return rows


def rejudge(samples_path: Path, judge: AnswerJudge) -> dict[PointKey, dict[AnswerClass, float]]:
    """Each curve point's three shares, judged again by `judge` from the file alone.

    The NLL rule reads the NLL recorded with each answer; a `judge` without an
    `nll_threshold` uses the threshold recorded with the row (the audit's calibration).

    Args:
        samples_path: a report folder's samples.jsonl.
        judge: the three-way judge to apply (its refusal judge, repetition and NLL thresholds).

    Returns:
        (basis, k) → {"refusal": share, "compliance": share, "broken": share}.
    """
    labels: dict[PointKey, list[AnswerClass]] = defaultdict(list)
    for row in read_samples(samples_path):
        threshold = judge.nll_threshold
        own = AnswerJudge(
            judge.refusal,
            judge.repetition_threshold,
            row.evidence.nll_threshold if threshold is None else threshold,
        )
        labels[(row.basis, row.k)].append(own.classify([row.answer], [row.evidence.nll])[0].label)
    return {key: shares(got) for key, got in labels.items()}
