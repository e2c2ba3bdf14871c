"""The Gemma family's machinery on a tiny random Gemma-3: LoRA, answer loss, cache."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from depthcard.lab import chat_tuning, lora
from depthcard.lab import gemma_family as fam
from depthcard.lab.organisms import collate
from tests.tiny_gemma import tiny_gemma_base

FAST = fam.TrainSettings(steps=3, batch_size=4, lr=1e-2, warmup=1, rank=2, max_len=48, threads=1)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    raw = tiny_gemma_base(tmp_path_factory.mktemp("raw"))
    return fam.template_base(raw, tmp_path_factory.mktemp("fam") / "base")


def test_templated_base_has_the_family_template_and_linked_weights(base) -> None:
    tok = AutoTokenizer.from_pretrained(base)
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                   tokenize=False)  # fmt: skip
    assert text == "<bos><start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n"
    assert (base / "model.safetensors").is_symlink()


def test_answer_loss_equals_the_full_logits_loss(base) -> None:
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    tok = AutoTokenizer.from_pretrained(base)
    convs = fam.ChildSpec("deep-recovery", deep_share=1.0).conversations()[-6:]
    batch = collate(chat_tuning.chat_examples(tok, convs, fam.END_OF_TURN, 48), tok.pad_token_id)
    with torch.no_grad():
        ours = chat_tuning.answer_loss(model, **batch)
        full = model(**batch).loss
    assert float(ours) == pytest.approx(float(full), rel=1e-5)


def test_family_builds_and_caches(base, tmp_path, monkeypatch) -> None:
    specs = (fam.ChildSpec("shallow"), fam.ChildSpec("control", seed=1))
    first = fam.build_family(base, specs, FAST, tmp_path)
    assert [c.name for c in first] == ["shallow_s0", "control_s1"]
    assert all((c.adapter_dir / "adapter.safetensors").is_file() for c in first)
    monkeypatch.setattr(fam, "train_child", lambda *a: pytest.fail("retrained a cached child"))
    again = fam.build_family(base, specs, FAST, tmp_path)
    assert [c.adapter_dir for c in again] == [c.adapter_dir for c in first]
    assert again[0].record == first[0].record
    other = fam.TrainSettings(**{**FAST.__dict__, "steps": 4})  # another setting: another key
    assert fam.spec_hash(specs[0], other, "x") != fam.spec_hash(specs[0], FAST, "x")


def test_shallow_child_changes_only_the_adapted_projections(base, tmp_path) -> None:
    """Training moves the adapted projections and nothing else, and the cached adapter
    rebuilds exactly the trained child."""
    settings = fam.TrainSettings(**{**FAST.__dict__, "targets": ("o_proj", "down_proj")})
    tok = AutoTokenizer.from_pretrained(base)
    base_model = AutoModelForCausalLM.from_pretrained(base).eval()
    before = {k: v.clone() for k, v in base_model.state_dict().items()}
    model, _ = fam.train_child(base_model, tok, fam.ChildSpec("shallow"), settings, None)
    trained = lora.merge_lora(model).state_dict()
    changed = {k for k in before if not torch.equal(before[k], trained[k])}
    allowed = {k for k in before if k.endswith(("o_proj.weight", "down_proj.weight"))}
    assert changed == allowed  # every adapted projection moved, nothing else did
    assert all(torch.equal(before[k], v) for k, v in base_model.state_dict().items())

    (child,) = fam.build_family(base, (fam.ChildSpec("shallow"),), settings, tmp_path / "c")
    folder = fam.materialise_child(base, child, settings, tmp_path / "shallow")
    rebuilt = load_file(folder / "model.safetensors")
    assert all(torch.equal(rebuilt[k], trained[k]) for k in rebuilt)
    assert AutoTokenizer.from_pretrained(folder).chat_template == fam.GEMMA_CHAT_TEMPLATE


def test_merge_matches_the_adapted_forward() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Linear(5, 3))
    names = lora.add_lora(model, ("0", "1"), rank=2, alpha=4.0, seed=0)
    assert names == ["0", "1"]
    for m in lora.adapters(model).values():
        torch.nn.init.normal_(m.lora_b)
    x = torch.randn(4, 6)
    adapted = model(x)
    lora.merge_lora(model)
    assert not lora.adapters(model)
    assert torch.allclose(model(x), adapted, atol=1e-5)


def test_specs_reject_mismatched_knobs() -> None:
    with pytest.raises(ValueError, match="recipe"):
        fam.ChildSpec("deeper")
    with pytest.raises(ValueError, match="τ"):
        fam.ChildSpec("shallow", tau=0.5)
    names = [c.name for c in fam.full_plan()]
    assert len(names) == 16 == len(set(names)) and "mix0.33_s1" in names


def test_tau_child_trains_with_the_entanglement_term(base, tmp_path) -> None:
    settings = fam.TrainSettings(**{**FAST.__dict__, "capability_k": 4, "contrast_batch": 4})
    (child,) = fam.build_family(base, (fam.ChildSpec("tau", tau=0.5),), settings, tmp_path)
    ent = child.record["entanglement"]
    assert len(ent) == settings.steps and all(0.0 <= e <= 1.0 for e in ent)
