"""First-token passes that reuse the prompts' shared opening: same numbers, checked per model."""

from __future__ import annotations

import pytest
import torch

import depthcard.analysis.ablation as ablation
from depthcard.analysis.ablation import ablated, first_token_logprobs, orthonormal_basis
from depthcard.analysis.capture import tokenize_prompts
from depthcard.analysis.models import decoder_layers
from depthcard.analysis.prefix_cache import (
    LAYOUT_FACTOR,
    TOLERANCE,
    allowed_gap,
    record_check,
    shared_prefix_length,
    suffix_batch,
    verified,
)
from depthcard.analysis.progress import Progress, counting, reporting
from tests.tiny_models import HARMFUL_WORDS, make_llama, make_tokenizer, prompts


@pytest.fixture()
def tiny():
    tok = make_tokenizer()
    return tok, make_llama(len(tok), seed=7)


def test_shared_prefix_leaves_every_row_a_token() -> None:
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5, 6]]) == 3
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3, 4]]) == 2  # row one keeps its last
    assert shared_prefix_length([[9, 2], [1, 2]]) == 0 and shared_prefix_length([]) == 0


def test_suffix_rows_are_padded_between_and_positions_skip_the_padding() -> None:
    x, mask, pos = suffix_batch([[7], [8, 9, 10]], pad_id=0, p=4, device=torch.device("cpu"))
    assert x.tolist() == [[0, 0, 7], [8, 9, 10]]
    assert mask.tolist() == [[1, 1, 1, 1, 0, 0, 1], [1, 1, 1, 1, 1, 1, 1]]
    assert pos[0, -1] == 4 and pos[1].tolist() == [4, 5, 6]  # the first own token sits at p


def test_reusing_the_opening_gives_the_plain_numbers_with_fewer_positions(tiny) -> None:
    tok, model = tiny
    opening = " ".join(HARMFUL_WORDS[:3])  # as a system prompt would: every prompt opens alike
    texts = [f"{opening} {t}" for t in prompts(HARMFUL_WORDS, 12, 2)]
    ids = tokenize_prompts(texts, "chat", tok, tok)
    assert shared_prefix_length(ids) >= 6
    basis = orthonormal_basis(torch.randn(2, model.config.hidden_size))
    layers = decoder_layers(model)
    plain_p, cached_p = Progress("off"), Progress("off")
    with counting(model), ablated(layers, basis):
        with reporting(plain_p):
            plain = first_token_logprobs(model, ids, tok.pad_token_id, 5)
        with reporting(cached_p):
            cached = first_token_logprobs(model, ids, tok.pad_token_id, 5, reuse_opening=True)
            again = first_token_logprobs(model, ids, tok.pad_token_id, 5, reuse_opening=True)
    assert verified(model) is True
    assert torch.allclose(cached, plain, atol=1e-4) and torch.allclose(again, plain, atol=1e-4)
    tokens = cached_p.work["first-token"].tokens
    assert tokens < 2 * plain_p.work["first-token"].tokens  # checked once, then cheaper
    assert cached_p.work["first-token"].calls == 2 * 3 + 1 + 2  # openings, batches, check


def test_a_model_that_disagrees_is_run_plainly_from_then_on(tiny, monkeypatch) -> None:
    tok, model = tiny
    opening = " ".join(HARMFUL_WORDS[:3])
    ids = tokenize_prompts(
        [f"{opening} {t}" for t in prompts(HARMFUL_WORDS, 6, 3)], "chat", tok, tok
    )
    plain = first_token_logprobs(model, ids, tok.pad_token_id, 4)
    real = ablation.last_logits_after

    def skewed(*args, **kwargs):
        out = real(*args, **kwargs).clone()
        out[:, 0] += 5.0  # a model family whose cached pass is wrong
        return out

    monkeypatch.setattr(ablation, "last_logits_after", skewed)
    got = first_token_logprobs(model, ids, tok.pad_token_id, 4, reuse_opening=True)
    assert verified(model) is False and torch.allclose(got, plain, atol=1e-6)
    got = first_token_logprobs(model, ids, tok.pad_token_id, 4, reuse_opening=True)
    assert torch.allclose(got, plain, atol=1e-6)


def _logp_with(top: float) -> torch.Tensor:
    """Log-probs of a 3-token vocabulary whose first token has probability `top`."""
    rest = (1.0 - top) / 2
    return torch.tensor([[top, rest, rest]]).log()


def test_a_gap_within_the_plain_passs_own_layout_rounding_keeps_the_cache(tiny) -> None:
    _, model = tiny
    plain, cached = _logp_with(0.50), _logp_with(0.52)  # a gap of 0.02, as bf16 rounding gives
    calls = []

    def layout(gap: float):
        def run() -> torch.Tensor:
            calls.append(gap)
            return _logp_with(0.50 + gap)

        return run

    assert record_check(model, cached, plain, layout(0.015)) and verified(model) is True
    assert not record_check(model, cached, plain, layout(1e-6)) and verified(model) is False
    assert not record_check(model, cached, plain, None)  # nothing to compare with: outright
    assert record_check(model, plain, plain, layout(0.5)) and len(calls) == 2  # not needed
    assert allowed_gap(None) == TOLERANCE and allowed_gap(1e-6) == TOLERANCE
    assert allowed_gap(0.02) == pytest.approx(LAYOUT_FACTOR * 0.02)


def test_in_bfloat16_a_wrong_cache_is_still_refused(tiny, monkeypatch) -> None:
    """Rounding is no cover for a cache that is wrong: +5 on a logit is far beyond it."""
    tok, model = tiny
    model = model.to(torch.bfloat16)
    opening = " ".join(HARMFUL_WORDS[:3])
    ids = tokenize_prompts(
        [f"{opening} {t}" for t in prompts(HARMFUL_WORDS, 6, 3)], "chat", tok, tok
    )
    real = ablation.last_logits_after

    def skewed(*args, **kwargs):
        out = real(*args, **kwargs).clone()
        out[:, 0] += 5.0
        return out

    monkeypatch.setattr(ablation, "last_logits_after", skewed)
    first_token_logprobs(model, ids, tok.pad_token_id, 4, reuse_opening=True)
    assert verified(model) is False
