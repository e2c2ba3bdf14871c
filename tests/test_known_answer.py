"""End-to-end known answer: plant an alignment direction in one MLP of a tiny child model,
run every audit stage in-process, and recover it where it was planted."""

import hashlib
import re

import pytest
import torch

from depthcard.analysis.ablation import refusal_token_ids
from depthcard.analysis.audit import ModelHandle, audit_models
from depthcard.analysis.judges import JUDGES, RefusalJudge
from depthcard.analysis.prompt_inputs import PromptInputs
from depthcard.prompts import LoadedPromptSet
from depthcard.schemas.prompt_set import PromptItem, PromptSet
from depthcard.schemas.report import AuditConfig, AuditReport, ModelRef
from tests.tiny_models import (
    HARMLESS_WORDS,
    make_llama,
    make_tokenizer,
    planted_pair,
    prompts,
)

BLOCK = 1  # planted in decoder block 1's MLP → first visible at residual point 2


def prompt_set(name, kind, texts, categories):
    spec = PromptSet(
        name=name,
        version=1,
        kind=kind,
        domain=None,
        description="test set",
        prompts=[PromptItem(text=t, category=c) for t, c in zip(texts, categories, strict=True)],
    )
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()
    return LoadedPromptSet(spec=spec, path=f"<{name}>", sha256=digest)


def ref(role, model, n_layers):
    return ModelRef(
        role=role,
        source="local",
        path=f"/in-process/{role}",
        content_sha256="0" * 64,
        architecture="LlamaForCausalLM",
        num_parameters=sum(p.numel() for p in model.parameters()),
        dtype="float32",
        num_layers=n_layers,
        hidden_size=32,
        vocab_size=model.config.vocab_size,
    )


def config(**overrides):
    values = dict(
        eps=[0.01, 0.05, 0.1],
        headline_eps=0.05,
        num_directions=4,
        position="last",
        batch_size=8,
        max_prompts=None,
        seed=0,
        device="cpu",
        dtype="float32",
        layer_window=(0.2, 0.8),
        cross_domain_k=2,
        zero_tolerance=1e-6,
        ablation=False,
        capability_k=4,
        mode_k=4,
    )
    return AuditConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def planted():
    tok = make_tokenizer()
    base = make_llama(len(tok), seed=21, layers=4)
    p = planted_pair(tok, base, BLOCK, n=36, u_seed=22, scale=6.0)
    harmful, harmless, child, u = p.harmful, p.harmless, p.child, p.u
    cats = ["weapons", "cyber", "fraud"] * 12
    inputs = PromptInputs(
        harmful=prompt_set("h", "harmful", harmful, cats),
        harmless=prompt_set("ok", "harmless", harmless, ["misc"] * 36),
        capability=prompt_set("cap", "capability", prompts(HARMLESS_WORDS, 20, 9), ["c"] * 20),
    )
    run = audit_models(
        base=ModelHandle(lambda: base, lambda m: ref("base", m, 4)),
        child=ModelHandle(lambda: child, lambda m: ref("child", m, 4)),
        tokenizer=tok,
        prompts=inputs,
        cfg=config(),
    )
    return run, u


def test_planted_direction_is_recovered_at_its_layer_with_rank_one(planted):
    run, u = planted
    point = BLOCK + 1
    v1 = run.tensors[f"did_singular_vectors.{point}"][0]
    assert abs(float(v1 @ u)) > 0.99
    layer = run.report.layers[point]
    for name in ("aligned", "did"):
        assert [r.rank for r in layer.ranks[name].uncentered] == [1, 1, 1]
    assert layer.ranks["aligned"].energy_residual < 1e-6


def test_layers_before_the_plant_are_identical_and_indexed_from_embeddings(planted):
    run, _ = planted
    report = run.report
    assert [m.layer for m in report.layers] == [0, 1, 2, 3, 4]  # embeddings + 4 blocks
    for point in range(BLOCK + 1):
        m = report.layers[point]
        assert m.models_identical and m.ranks["aligned"].zero and m.recovery_cosine is None
        assert run.tensors[f"did_singular_vectors.{point}"].shape == (0, 32)
    assert not report.layers[BLOCK + 1].models_identical
    assert any("identical at layer(s) [0, 1]" in w for w in report.warnings)


def test_alignment_direction_points_along_the_plant(planted):
    run, u = planted
    v = run.tensors[f"alignment_direction.{BLOCK + 1}"]
    assert abs(float(v @ u)) / float(v.norm()) > 0.99
    m = run.report.layers[BLOCK + 1]
    assert m.projection_child > m.projection_base


def test_report_is_valid_and_round_trips(planted):
    run, _ = planted
    text = run.report.model_dump_json()
    again = AuditReport.model_validate_json(text)
    assert again.headline == run.report.headline
    assert run.report.kind == "pair" and run.report.verdict.code == "measured"
    assert run.report.selected_layer.rule == "norm-ratio"
    assert 1 <= run.report.selected_layer.layer <= 3  # window [⌈0.8⌉, ⌊3.2⌋]
    assert all(t.dtype == torch.float32 for t in run.tensors.values())


def test_depth_and_modes_sections_are_present(planted):
    run, _ = planted
    report = run.report
    assert report.depth is not None and 0.0 <= report.depth.score <= 1.0
    assert report.depth.chance_level == pytest.approx(4 / 32)
    assert len(report.modes.layers) == 5 and report.modes.child_species
    assert report.cross_domain is not None and set(report.cross_domain.domains) == {
        "weapons",
        "cyber",
        "fraud",
    }


class OpensWithRefusalWord(RefusalJudge):
    """Test judge: the tiny models speak a word-level vocabulary, so a refusal is an answer
    that opens with one of the planted refusal-opening words."""

    name = "opens-with-refusal-word"
    nll_rule = False  # random-weight models have no language for the NLL test to read

    def judge(self, responses):
        return [r.strip().startswith(("I", "Sorry")) for r in responses]


@pytest.fixture(scope="module")
def refusing():
    """A child that refuses: the planted direction also drives the refusal openers."""
    JUDGES[OpensWithRefusalWord.name] = OpensWithRefusalWord
    tok = make_tokenizer(extra_words=["I", "Sorry"])
    base = make_llama(len(tok), seed=21, layers=4)
    p = planted_pair(tok, base, BLOCK, n=36, u_seed=22, scale=40.0)
    harmful, harmless, child, u = p.harmful, p.harmless, p.child, p.u
    with torch.no_grad():
        for i in refusal_token_ids(tok):
            child.lm_head.weight[i] += 2.0 * u
    inputs = PromptInputs(
        harmful=prompt_set("h", "harmful", harmful, ["weapons", "cyber", "fraud"] * 12),
        harmless=prompt_set("ok", "harmless", harmless, ["misc"] * 36),
        capability=prompt_set("cap", "capability", prompts(HARMLESS_WORDS, 20, 9), ["c"] * 20),
    )
    cfg = config(ablation=True, max_new_tokens=6, judge=OpensWithRefusalWord.name)
    handles = dict(
        base=ModelHandle(lambda: base, lambda m: ref("base", m, 4)),
        child=ModelHandle(lambda: child, lambda m: ref("child", m, 4)),
    )
    yield audit_models(**handles, tokenizer=tok, prompts=inputs, cfg=cfg), base, inputs, cfg, u
    JUDGES.pop(OpensWithRefusalWord.name)


@pytest.mark.slow
def test_ablating_one_direction_strips_the_planted_refusal(refusing):
    run, *_ = refusing
    report = run.report
    assert report.headline.baseline_refusal_rate == 1.0
    assert report.selected_layer.rule == "ablation" and report.selected_layer.layer == BLOCK + 1
    ablation = report.ablation
    assert ablation.min_k == 1 and ablation.judge == OpensWithRefusalWord.name
    assert ablation.broken_share_at_min_k == 0.0 and ablation.nll_threshold is None
    attack = [p for p in ablation.curve if p.basis == "attack"]
    assert [p.k for p in attack] == list(range(len(attack)))
    assert attack[0].refusal_rate == 1.0 and attack[1].refusal_rate < ablation.threshold
    # what still counts as refusal at k = 1 is an empty answer (the design counts nothing said
    # as a refusal, whatever the refusal judge), never a refusal opener
    left = [s for s in run.samples if (s.basis, s.k, s.layer) == ("attack", 1, ablation.layer)]
    assert all(s.evidence.rule == "empty" for s in left if s.label == "refusal")
    assert attack[1].refusal_score < attack[0].refusal_score - 5
    assert report.headline.abliteration_kl == pytest.approx(attack[1].kl)
    assert 0.0 <= attack[1].kl < 0.1  # the attack costs little on harmless prompts
    singles = [p for p in ablation.curve if p.basis == "single"]
    assert singles[0].refusal_score < min(s.refusal_score for s in singles[1:])


@pytest.mark.slow
def test_a_model_that_never_refuses_gets_the_no_refusal_verdict(refusing):
    _, base, inputs, cfg, _ = refusing
    run = audit_models(
        base=None,
        child=ModelHandle(lambda: base, lambda m: ref("child", m, 4)),
        tokenizer=make_tokenizer(extra_words=["I", "Sorry"]),
        prompts=inputs,
        cfg=cfg.model_copy(update={"judge": "substring"}),
    )
    report = run.report
    assert report.kind == "child-only" and report.verdict.code == "no-refusal"
    found = re.search(r"(\d+) of (\d+) held-out harmful prompts refused", report.verdict.text)
    refused, judged = int(found[1]), int(found[2])
    assert judged == 18  # the eval half of 36
    assert refused / judged < 0.1  # empty answers of the random model count as refusals
    assert report.headline.baseline_refusal_rate == pytest.approx(refused / judged)
    assert report.ablation is None and report.depth is None
    assert report.headline.alignment_depth_score is None
    assert report.headline.abliteration_min_k is None
    absent = {a.section: a.reason for a in report.absent}
    assert "no refusal behaviour to measure" in absent["ablation"]
    assert "child-only" in absent["alignment-shift ranks"]
    assert report.headline.rho_eps_contrast is not None
