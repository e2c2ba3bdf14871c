"""Known answers for directional ablation: plant a refusal direction, ablate it, it is gone."""

import copy
import math

import pytest
import torch

from depthcard.analysis.ablation import (
    ablated,
    first_token_logprobs,
    mean_cross_entropy,
    mean_kl,
    orthonormal_basis,
    project_out,
    refusal_log_odds,
    refusal_token_ids,
)
from depthcard.analysis.ablation_cost import attack_basis, non_monotone, spearman_causal
from depthcard.analysis.capture import capture
from depthcard.analysis.models import decoder_layers
from depthcard.schemas.sections import AblationPoint
from tests.tiny_models import (
    make_llama,
    make_tokenizer,
    planted_pair,
)


@pytest.fixture(scope="module")
def refuser():
    """A tiny child whose block-1 MLP writes u on harmful prompts, and whose head reads u
    as the refusal opener "I"."""
    tok = make_tokenizer(extra_words=["I", "Sorry"])
    base = make_llama(len(tok), seed=11)
    p = planted_pair(tok, base, 1, n=24, u_seed=12, scale=40.0)
    child, ids_s, ids_h, u = p.child, p.ids_s, p.ids_h, p.u
    refuse = refusal_token_ids(tok)
    with torch.no_grad():
        for i in refuse:
            child.lm_head.weight[i] += 2.0 * u
    return tok, child, ids_s, ids_h, u, refuse


def test_orthonormal_basis_drops_dependent_directions():
    dirs = torch.tensor([[1.0, 0, 0], [1.0, 1.0, 0], [2.0, 2.0, 0], [0, 0, 3.0]])
    q = orthonormal_basis(dirs)
    assert q.shape == (3, 3)
    assert torch.allclose(q.T @ q, torch.eye(3, dtype=torch.float64), atol=1e-12)
    assert orthonormal_basis(torch.zeros(2, 3)).shape == (3, 0)


def test_project_out_removes_the_span_only():
    q = orthonormal_basis(torch.tensor([[1.0, 1.0, 0.0]]))
    h = torch.tensor([[2.0, 0.0, 5.0]])
    out = project_out(h, q)
    assert torch.allclose(out, torch.tensor([[1.0, -1.0, 5.0]]))


def test_ablating_the_planted_direction_zeroes_its_projection(refuser):
    tok, child, ids_s, _, u, _ = refuser
    layers = decoder_layers(child)
    before = capture(child, layers, ids_s, pad_id=0).rows
    with ablated(layers, orthonormal_basis(u[None])):
        after = capture(child, layers, ids_s, pad_id=0).rows
    assert float((before[:, 2:] @ u).abs().mean()) > 1.0
    assert float((after @ u).abs().max()) < 1e-4  # every point, every prompt


def test_ablation_lowers_the_refusal_score_and_hooks_are_removed(refuser):
    tok, child, ids_s, ids_h, u, refuse = refuser
    layers = decoder_layers(child)
    hooks_before = [len(x._forward_hooks) + len(x._forward_pre_hooks) for x in layers]
    base_s = refusal_log_odds(first_token_logprobs(child, ids_s, 0), refuse).mean()
    base_h = refusal_log_odds(first_token_logprobs(child, ids_h, 0), refuse).mean()
    with ablated(layers, orthonormal_basis(u[None])):
        abl_s = refusal_log_odds(first_token_logprobs(child, ids_s, 0), refuse).mean()
    assert base_s > base_h + 2.0  # the planted behaviour: harmful prompts open with "I"
    assert abl_s < base_s - 2.0
    with pytest.raises(RuntimeError), ablated(layers, orthonormal_basis(u[None])):
        raise RuntimeError("interrupted")
    assert [len(x._forward_hooks) + len(x._forward_pre_hooks) for x in layers] == hooks_before


def test_kl_is_zero_for_identical_and_positive_otherwise(refuser):
    tok, child, _, ids_h, u, _ = refuser
    lp = first_token_logprobs(child, ids_h, 0)
    assert mean_kl(lp, lp) == pytest.approx(0.0, abs=1e-7)
    with ablated(decoder_layers(child), orthonormal_basis(torch.eye(32)[:8])):
        other = first_token_logprobs(child, ids_h, 0)
    assert mean_kl(lp, other) > 1e-3


def test_cross_entropy_of_a_uniform_model_is_log_vocab(refuser):
    tok, child, _, ids_h, _, _ = refuser
    uniform = copy.deepcopy(child)
    with torch.no_grad():
        uniform.lm_head.weight.zero_()
    assert mean_cross_entropy(uniform, ids_h, 0) == pytest.approx(math.log(len(tok)), rel=1e-5)
    assert 0.0 < mean_cross_entropy(child, ids_h, 0) < 100.0


def test_refusal_token_ids_come_from_the_tokenizer():
    tok = make_tokenizer(extra_words=["I", "Sorry"])
    ids = refusal_token_ids(tok)
    assert tok.convert_tokens_to_ids("I") in ids and tok.convert_tokens_to_ids("Sorry") in ids


def test_attack_basis_starts_with_the_refusal_direction():
    r = torch.tensor([3.0, 0.0, 0.0, 0.0])
    did = torch.tensor([[0.6, 0.8, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    basis = attack_basis(r, did)
    assert torch.allclose(basis[0], torch.tensor([1.0, 0, 0, 0], dtype=torch.float64))
    assert torch.allclose(basis[1].abs(), torch.tensor([0.0, 1.0, 0, 0], dtype=torch.float64))
    assert basis.shape == (3, 4)


def test_causal_order_statistics():
    assert spearman_causal([3.0, 2.0, 1.0, 0.5]) == pytest.approx(1.0)
    assert spearman_causal([0.1, 0.2, 3.0]) == pytest.approx(-1.0)
    assert spearman_causal([1.0, 1.0, 1.0]) is None

    def pt(k, score, rate):
        return AblationPoint(basis="attack", k=k, refusal_score=score, refusal_rate=rate, kl=0.0)

    assert not non_monotone([pt(0, 3.0, 0.9), pt(1, 1.0, 0.3), pt(2, -1.0, 0.0)])
    assert non_monotone([pt(0, 3.0, 0.9), pt(1, 1.0, 0.3), pt(2, 2.0, 0.5)])
