"""Safe loading: safetensors only, no remote code, matched pairs, clear errors."""

import json

import pytest
import torch

from depthcard.analysis.models import (
    ModelLoadError,
    content_sha256,
    decoder_layers,
    load_model,
    parse_model_spec,
    resolve_model,
)
from depthcard.analysis.pairing import (
    check_shapes,
    compare_vocab,
    load_tokenizer,
    require_chat_template,
)
from tests.tiny_models import make_llama, make_tokenizer


def save_tiny(folder, *, hidden=32, layers=2, seed=0, template=True, extra_words=None):
    tok = make_tokenizer(extra_words)
    if not template:
        tok.chat_template = None
    make_llama(len(tok), seed=seed, hidden=hidden, layers=layers).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_local_folder_resolves_with_content_hash(tmp_path):
    folder = save_tiny(tmp_path / "m")
    resolved = resolve_model(parse_model_spec(str(folder)))
    assert resolved.source == "local" and len(resolved.content_sha256) == 64
    model = load_model(resolved.folder, "cpu", "float32")
    assert len(decoder_layers(model)) == 2
    (folder / "config.json").write_text(
        (folder / "config.json")
        .read_text()
        .replace('"rms_norm_eps": 1e-06', '"rms_norm_eps": 1e-05')
    )
    assert content_sha256(folder) != resolved.content_sha256


def test_pickle_only_folder_is_refused(tmp_path):
    folder = save_tiny(tmp_path / "m")
    weights = folder / "model.safetensors"
    torch.save({"w": torch.zeros(1)}, folder / "pytorch_model.bin")
    weights.unlink()
    with pytest.raises(ModelLoadError, match="only pickle weights.*safetensors only"):
        resolve_model(parse_model_spec(str(folder)))


def test_remote_code_config_is_refused(tmp_path):
    folder = save_tiny(tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="auto_map.*never runs trust_remote_code"):
        resolve_model(parse_model_spec(str(folder)))


def test_missing_and_malformed_specs(tmp_path):
    with pytest.raises(ModelLoadError, match="not a Hub id"):
        parse_model_spec(str(tmp_path / "nope"))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ModelLoadError, match="is a file"):
        parse_model_spec(str(tmp_path / "file.txt"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        resolve_model(parse_model_spec(str(tmp_path / "empty")))
    spec = parse_model_spec("org/model@abc123")
    assert (spec.repo_id, spec.revision, spec.path) == ("org/model", "abc123", None)


def test_mismatched_hidden_size_is_not_a_pair(tmp_path):
    a = resolve_model(parse_model_spec(str(save_tiny(tmp_path / "a", hidden=32))))
    b = resolve_model(parse_model_spec(str(save_tiny(tmp_path / "b", hidden=64))))
    with pytest.raises(ModelLoadError, match="hidden size differs"):
        check_shapes(a, b)


def test_conflicting_vocabularies_are_refused_and_extra_tokens_reported(tmp_path):
    base = make_tokenizer()
    child = make_tokenizer(extra_words=["extra"])
    equal, knows, warnings = compare_vocab(base, child)
    assert not equal and knows and "1 tokens the base lacks" in warnings[0]
    shuffled = make_tokenizer(extra_words=None)
    vocab = shuffled.get_vocab()
    assert compare_vocab(shuffled, base)[0] is True and len(vocab) == len(base)
    other = load_tokenizer(save_tiny(tmp_path / "o", extra_words=["zzz"]))
    reordered = make_tokenizer(extra_words=["zzz", "yyy"])
    assert compare_vocab(other, reordered)[0] is False
    from tokenizers import Tokenizer, models

    swapped_vocab = {t: i for i, t in enumerate(reversed(list(base.get_vocab())))}
    swapped = make_tokenizer()
    swapped._tokenizer = Tokenizer(models.WordLevel(vocab=swapped_vocab, unk_token="<unk>"))
    with pytest.raises(ModelLoadError, match="different ids"):
        compare_vocab(base, swapped)


def test_child_without_chat_template_is_refused(tmp_path):
    folder = save_tiny(tmp_path / "m", template=False)
    tok = load_tokenizer(folder)
    with pytest.raises(ModelLoadError, match="no chat template"):
        require_chat_template(tok, folder)
