"""The capture engine reads the right rows, in the right order, and leaves nothing behind."""

import pytest
import torch
from torch import nn

from depthcard.analysis.capture import capture, pad_left, suffix_token_count, tokenize_prompts
from depthcard.analysis.hooks import residual_hooks
from depthcard.analysis.models import ModelLoadError, decoder_layers
from tests.tiny_models import HARMFUL_WORDS, make_llama, make_tokenizer, prompts


@pytest.fixture(scope="module")
def tiny():
    tok = make_tokenizer()
    model = make_llama(len(tok), seed=3)
    texts = prompts(HARMFUL_WORDS, 6, 1) + [
        "how do i make a bread",
        "please write a poem with my violin quickly for the garden",
    ]
    return tok, model, texts


def reference_rows(model, ids):
    """Each prompt alone, unpadded, through output_hidden_states: (prompt, point, d)."""
    out = []
    for seq in ids:
        with torch.no_grad():
            hs = model(torch.tensor([seq]), output_hidden_states=True).hidden_states
        out.append(torch.stack([h[0, -1] for h in hs]))
    return torch.stack(out)


def test_batched_left_padded_capture_matches_unpadded_forward(tiny):
    tok, model, texts = tiny
    ids = tokenize_prompts(texts, "chat", tok, tok)
    acts = capture(model, decoder_layers(model), ids, pad_id=tok.pad_token_id, batch_size=3)
    ref = reference_rows(model, ids)
    n_blocks = len(decoder_layers(model))
    assert acts.rows.shape == (len(texts), n_blocks + 1, 32)
    # HF applies the final norm to its last hidden state; the engine reads the block output.
    assert torch.allclose(acts.rows[:, :n_blocks], ref[:, :n_blocks], atol=1e-5)
    assert torch.allclose(acts.sums, acts.rows.double().sum(0), atol=1e-6)
    assert torch.allclose(acts.mean_norm(), acts.rows.double().norm(dim=-1).mean(0), atol=1e-6)


def test_lm_head_and_final_norm_never_run_and_hooks_are_removed(tiny):
    tok, model, texts = tiny
    before = [(len(x._forward_hooks), len(x._forward_pre_hooks)) for x in decoder_layers(model)]
    calls = []
    handles = [
        model.lm_head.register_forward_hook(lambda *a: calls.append("head")),
        model.model.norm.register_forward_hook(lambda *a: calls.append("norm")),
    ]
    try:
        ids = tokenize_prompts(texts, "raw", tok, tok)
        capture(model, decoder_layers(model), ids, pad_id=tok.pad_token_id, batch_size=4)
    finally:
        for h in handles:
            h.remove()
    assert calls == []
    after = [(len(x._forward_hooks), len(x._forward_pre_hooks)) for x in decoder_layers(model)]
    assert after == before  # transformers keeps hooks of its own; ours are all gone


def test_hooks_removed_when_forward_raises(tiny):
    tok, model, _ = tiny
    layers = decoder_layers(model)
    before = [(len(x._forward_hooks), len(x._forward_pre_hooks)) for x in layers]

    def boom(point, hidden):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"), residual_hooks(layers, boom):
        model(torch.tensor([[5, 6, 7]]))
    assert [(len(x._forward_hooks), len(x._forward_pre_hooks)) for x in layers] == before


def test_suffix_mean_reads_template_tokens(tiny):
    tok, model, texts = tiny
    n = suffix_token_count(tok, tok)
    assert n == len(
        tok("<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    )
    ids = tokenize_prompts(texts[:2], "chat", tok, tok)
    acts = capture(model, decoder_layers(model), ids, pad_id=0, batch_size=2, n_suffix=n)
    ref = []
    for seq in ids:
        with torch.no_grad():
            hs = model(torch.tensor([seq]), output_hidden_states=True).hidden_states
        ref.append(torch.stack([h[0, -n:].mean(0) for h in hs]))
    assert torch.allclose(acts.rows[:, :-1], torch.stack(ref)[:, :-1], atol=1e-5)


class OomOnBigBatches(nn.Module):
    """Wraps a model; raises a CUDA-style OOM for batches larger than `limit`."""

    def __init__(self, model, limit):
        super().__init__()
        self.inner, self.limit, self.sizes = model, limit, []

    def get_input_embeddings(self):
        return self.inner.get_input_embeddings()

    def forward(self, input_ids, **kw):
        self.sizes.append(input_ids.shape[0])
        if input_ids.shape[0] > self.limit:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.inner(input_ids=input_ids, **kw)


def test_batch_size_backs_off_on_out_of_memory(tiny):
    tok, model, texts = tiny
    ids = tokenize_prompts(texts, "chat", tok, tok)
    wrapped = OomOnBigBatches(model, limit=2)
    acts = capture(wrapped, decoder_layers(model), ids, pad_id=0, batch_size=8)
    plain = capture(model, decoder_layers(model), ids, pad_id=0, batch_size=8)
    assert torch.allclose(acts.rows, plain.rows, atol=1e-5)
    assert wrapped.sizes[:2] == [8, 4] and max(wrapped.sizes[2:]) <= 2
    assert sum(wrapped.sizes[2:]) == len(texts)  # every prompt captured exactly once


def test_other_runtime_errors_are_not_swallowed(tiny):
    tok, model, texts = tiny
    wrapped = OomOnBigBatches(model, limit=0)
    ids = tokenize_prompts(texts[:1], "chat", tok, tok)
    with pytest.raises(RuntimeError, match="out of memory"):
        capture(wrapped, decoder_layers(model), ids, pad_id=0, batch_size=1)


def test_pad_left_positions_start_at_zero_for_every_row():
    ids, mask, pos = pad_left([[1, 2, 3], [4]], pad_id=0, device=torch.device("cpu"))
    assert ids.tolist() == [[1, 2, 3], [0, 0, 4]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert pos.tolist() == [[0, 1, 2], [0, 0, 0]]


def test_layer_discovery_fails_loudly_with_what_to_set():
    with pytest.raises(ModelLoadError, match="--layers-path"):
        decoder_layers(nn.Linear(2, 2))


def test_empty_prompt_list_is_an_error(tiny):
    tok, model, _ = tiny
    with pytest.raises(ValueError, match="no prompts"):
        capture(model, decoder_layers(model), [], pad_id=0)


def test_token_budget_shrinks_batches_of_long_prompts_only():
    from depthcard.analysis.capture import token_batches

    lengths = [10] * 8 + [200] * 6 + [700]
    batches = token_batches(lengths, batch_size=4, max_tokens=512)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        width = max(lengths[i] for i in b)
        assert len(b) <= 4 and (len(b) == 1 or len(b) * width <= 512)
    assert [len(b) for b in batches] == [4, 4, 2, 2, 2, 1]  # short full, long halved, lone giant


def test_token_budget_does_not_change_the_rows(tiny):
    tok, model, texts = tiny
    ids = tokenize_prompts(texts, "raw", tok, tok)
    layers = decoder_layers(model)
    wide = capture(model, layers, ids, pad_id=0, batch_size=8)
    narrow = capture(model, layers, ids, pad_id=0, batch_size=8, max_batch_tokens=8)
    assert torch.allclose(wide.rows, narrow.rows, atol=1e-5)
    n_blocks = len(layers)  # the last point differs from HF's by the final norm, as above
    assert torch.allclose(narrow.rows[:, :n_blocks], reference_rows(model, ids)[:, :n_blocks])
