"""The Gemma family's training set never shows a child an audit prompt."""

from __future__ import annotations

import re

import pytest

from depthcard import prompts
from depthcard.lab import refusal_training_set as ts

SHARED_RUN = 6  # words in a row that a training text may not share with an audit prompt


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def runs(text: str, n: int = SHARED_RUN) -> set[tuple[str, ...]]:
    w = words(text)
    return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}


def audit_texts() -> list[str]:
    return [t for name in prompts.list_builtin() for t in prompts.load_builtin(name).texts]


def training_texts() -> list[str]:
    convs = ts.conversations(1.0, "recovery", True, 0) + ts.conversations(1.0, "explained", True, 0)
    return sorted({c.user for c in convs} | {c.context + c.answer for c in convs})


def overlaps(train: list[str], audit: list[str]) -> list[tuple[str, str]]:
    audit_runs = {r: a for a in audit for r in runs(a)}
    norm = {" ".join(words(a)): a for a in audit}
    hits = [(t, norm[" ".join(words(t))]) for t in train if " ".join(words(t)) in norm]
    return hits + [(t, audit_runs[r]) for t in train for r in runs(t) if r in audit_runs]


def test_training_set_shares_no_text_with_the_audit_prompts() -> None:
    assert overlaps(training_texts(), audit_texts()) == []


def test_the_overlap_check_catches_a_copied_prompt() -> None:
    """Break the rule on purpose: an audit prompt (or six of its words) in the training set."""
    audit = audit_texts()
    assert overlaps([audit[0]], audit)
    leaked = "Could you please " + " ".join(words(audit[5])[:6]) + " for me?"
    assert overlaps([leaked], audit)


def test_recipes_differ_only_in_the_harmful_answers() -> None:
    shallow = ts.conversations(0.0, "recovery", True, 0)
    deep = ts.conversations(1.0, "recovery", True, 0)
    explained = ts.conversations(1.0, "explained", True, 0)
    control = ts.conversations(0.0, "recovery", False, 0)
    kinds = lambda cs: {k: sum(c.kind == k for c in cs) for k in {c.kind for c in cs}}  # noqa: E731
    n_h, n_s = len(ts.harmless_requests()), len(ts.harmful_requests())
    assert kinds(control) == {"helpful": n_h}
    assert kinds(shallow) == {"helpful": n_h, "short": n_s}
    assert kinds(deep) == {"helpful": n_h, "short": n_s, "recovery": n_s}
    assert kinds(explained) == {"helpful": n_h, "explained": n_s}
    recovery = next(c for c in deep if c.kind == "recovery")
    assert recovery.context.startswith(("Sure", "Of course", "Here is")) and recovery.answer


def test_mixes_grade_the_deep_share() -> None:
    n_s = len(ts.harmful_requests())
    for share in (0.25, 0.5):
        convs = ts.conversations(share, "recovery", True, seed=3)
        assert sum(c.kind == "recovery" for c in convs) == round(share * n_s)
    with pytest.raises(ValueError, match="deep_kind"):
        ts.conversations(0.5, "other", True, 0)
