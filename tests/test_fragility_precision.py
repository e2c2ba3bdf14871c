"""The fragility stage's precision: a half-precision child on a CPU is run in float32.

The benign fine-tune takes SGD steps far below bfloat16's resolution; run in bfloat16 most
of them round away and the erosion curve is rounding noise. The stage therefore casts the
child to float32 for its duration and back after it.
"""

import torch

from depthcard.analysis.fragility import (
    HALF_PRECISION_REASON,
    FragilityInputs,
    FragilitySettings,
    fragility,
)
from depthcard.analysis.fragility_stage import fragility_stage, running_in, stage_dtype
from depthcard.analysis.prompt_inputs import TokenizedInputs
from tests.tiny_gemma import tiny_tokenizer
from tests.tiny_models import make_llama

SETTINGS = FragilitySettings(power_iterations=3, steps=4, learning_rate=1e-2, batch_size=4)


def _ids(n: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(8, vocab, (length,), generator=gen).tolist() for _ in range(n)]


def _child_and_inputs():
    torch.set_num_threads(1)
    tok = tiny_tokenizer()
    model = make_llama(len(tok), seed=3).to(torch.bfloat16)
    ids = {
        "harmful_chat": _ids(6, 7, len(tok), seed=1),
        "capability_raw": _ids(6, 12, len(tok), seed=2),
    }
    refusals = {i: "I can not help with that ." for i in range(6)}
    return model, tok, TokenizedInputs(ids=ids, pad_id=tok.pad_token_id, n_suffix=1), refusals


def test_the_stage_dtype_rule():
    assert stage_dtype(torch.bfloat16, "cpu") == torch.float32
    assert stage_dtype(torch.float16, "cpu") == torch.float32
    assert stage_dtype(torch.float32, "cpu") == torch.float32
    assert stage_dtype(torch.bfloat16, "cuda") == torch.bfloat16
    assert stage_dtype(torch.float64, "cpu") == torch.float64


def _plain(tok, inputs) -> FragilityInputs:
    answer = tok("I can not help with that .", add_special_tokens=False)["input_ids"]
    rows = [p + answer for p in inputs.ids["harmful_chat"]]
    lengths = [len(p) for p in inputs.ids["harmful_chat"]]
    return FragilityInputs(rows, lengths, inputs.ids["capability_raw"], inputs.pad_id)


def test_a_bfloat16_child_gets_the_float32_curve_and_comes_back_as_it_was():
    model, tok, inputs, refusals = _child_and_inputs()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    section, why = fragility_stage(model, tok, inputs, refusals, SETTINGS)
    assert why is None and section is not None
    assert section.dtype == "float32"
    for name, p in model.named_parameters():
        assert p.dtype == torch.bfloat16 and torch.equal(p, before[name]), name
    # the same weights, loaded in float32 and run directly: the same curve, rising
    reference = fragility(model.float(), _plain(tok, inputs), SETTINGS)
    assert section.delta_loss == reference.delta_loss
    assert 0 < reference.delta_loss[0] < reference.delta_loss[-1], reference.delta_loss


def test_in_bfloat16_the_same_fine_tune_is_rounding_noise():
    """Why the stage casts: the same steps on the bfloat16 weights give another curve,
    whose every point is off the float32 one by more than five times that point."""
    model, tok, inputs, _ = _child_and_inputs()
    half = fragility(model, _plain(tok, inputs), SETTINGS)
    noisy = half.delta_loss
    exact = fragility(model.float(), _plain(tok, inputs), SETTINGS).delta_loss
    assert all(abs(a - b) > 5 * abs(b) for a, b in zip(noisy, exact, strict=True)), (noisy, exact)
    # so a half-precision run (a GPU audit keeps the model as loaded) forecasts nothing
    assert HALF_PRECISION_REASON in half.no_forecast_reasons and half.forecast_steps is None


def test_running_in_is_a_no_op_in_the_models_own_dtype():
    model = make_llama(40)
    weight = model.lm_head.weight
    with running_in(model, torch.float32):
        assert model.lm_head.weight is weight and weight.dtype == torch.float32
    with running_in(model, torch.float64):
        assert model.lm_head.weight.dtype == torch.float64
    assert model.lm_head.weight.dtype == torch.float32
