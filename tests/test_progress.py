"""Progress events, work counting, early-stopped generation and the min_k bisection."""

from __future__ import annotations

import io
import json
import math

import pytest

from depthcard.analysis.ablation import first_token_logprobs
from depthcard.analysis.ablation_cost import bisect_below
from depthcard.analysis.capture import tokenize_prompts
from depthcard.analysis.generation import generate_responses
from depthcard.analysis.progress import Progress, counting, purpose, reporting, task
from depthcard.analysis.stages import stage
from depthcard.schemas.progress import ProgressEvent
from tests.tiny_models import HARMLESS_WORDS, make_llama, make_tokenizer, prompts


@pytest.fixture(scope="module")
def tiny():
    tok = make_tokenizer()
    return tok, make_llama(len(tok), seed=3)


@pytest.mark.parametrize("n", [1, 2, 3, 8, 9, 17])
def test_bisection_finds_the_first_k_below_in_log_calls(n: int) -> None:
    for first in range(1, n + 2):  # first == n + 1: never below
        calls: list[int] = []

        def below(k: int, first=first, calls=calls) -> bool:
            calls.append(k)
            return k >= first

        got = bisect_below(n, below)
        assert got == (first if first <= n else None)
        assert calls[0] == n and len(calls) <= math.ceil(math.log2(n)) + 1
        assert len(set(calls)) == len(calls)  # never the same k twice


def test_json_progress_lines_count_forward_passes_by_purpose(tiny) -> None:
    tok, model = tiny
    ids = tokenize_prompts(prompts(HARMLESS_WORDS, 10, 1), "chat", tok, tok)
    out = io.StringIO()
    timings = []
    with reporting(Progress("json", stream=out)) as p, counting(model):
        with stage("ablation", timings), task("curve", total=2, unit="point") as t:
            for _ in range(2):
                first_token_logprobs(model, ids, tok.pad_token_id, batch_size=4)  # 3 calls
                t.advance()
    events = [ProgressEvent.model_validate_json(line) for line in out.getvalue().splitlines()]
    assert [e.event for e in events][0] == "start" and events[-1].event == "end"
    assert all(e.stage == "ablation" for e in events)
    steps = [e for e in events if e.event == "step"]
    assert steps and steps[-1].done == 2 and steps[-1].total == 2 and steps[-1].unit == "point"
    assert events[-1].forward_calls == 6 == p.work["first-token"].calls
    assert p.work["first-token"].rows == 20
    (timing,) = timings
    assert timing.work["first-token"].calls == 6 and timing.generated_tokens == 0
    json.loads(out.getvalue().splitlines()[0])  # one JSON object per line


def test_unlabelled_passes_count_under_the_stage_and_nothing_leaks_out(tiny) -> None:
    tok, model = tiny
    x = tokenize_prompts(["a"], "chat", tok, tok)
    import torch

    p = Progress("off")
    with reporting(p), counting(model), stage("capture-child", []):
        with torch.inference_mode():
            model(input_ids=torch.tensor(x))
        with purpose("custom"), torch.inference_mode():
            model(input_ids=torch.tensor(x))
    assert p.work["capture-child"].calls == 1 and p.work["custom"].calls == 1
    with torch.inference_mode():
        model(input_ids=torch.tensor(x))  # the hook is gone
    assert sum(w.calls for w in p.work.values()) == 2


def test_bar_mode_announces_stages(tiny) -> None:
    out = io.StringIO()
    with reporting(Progress("bar", stream=out)), stage("fragility", []):
        with task("power iteration", total=3) as t:
            t.advance(3)
    text = out.getvalue()
    assert "▸ fragility" in text and "fragility done in" in text


def test_auto_mode_is_json_off_a_terminal() -> None:
    assert Progress("auto", stream=io.StringIO()).mode == "json"


def test_generation_stops_each_row_once_decided(tiny) -> None:
    tok, model = tiny
    asks = prompts(HARMLESS_WORDS, 6, 4)
    p = Progress("off")
    with reporting(p):
        full = generate_responses(model, tok, asks, max_new_tokens=16, batch_size=3)
        full_tokens = p.generated
        cut = generate_responses(
            model, tok, asks, max_new_tokens=16, batch_size=3,
            stop_when=lambda text: len(text.split()) >= 2,
        )  # fmt: skip
    assert p.generated - full_tokens < full_tokens
    for a, b in zip(full, cut, strict=True):
        assert a.startswith(b.rstrip())  # greedy: the stopped answer is the full one, cut short
        if len(a.split()) >= 2:
            assert len(b.split()) <= len(a.split())
    never = generate_responses(
        model, tok, asks, max_new_tokens=16, batch_size=3, stop_when=lambda text: False
    )
    assert never == full
