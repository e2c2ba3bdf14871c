"""`depthcard estimate`: parameters from config.json, the audit's work counted by hand, the
CLI on the bundled pair, bad input as one line, and the bot sizing its job from it."""

from __future__ import annotations

import json
import math

import pytest
from huggingface_hub import JobHardware
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    MistralConfig,
    Qwen2Config,
    Qwen3Config,
)

from depthcard.analysis.job_time import (
    FLAVOURS,
    choose_flavour,
    flavour_estimate,
    hub_minutes,
    job_timeout_minutes,
)
from depthcard.analysis.work_plan import (
    PassFlops,
    PromptLengths,
    ablation_items,
    body_parameters,
    generation_points,
    model_size,
    plan_totals,
    work_plan,
)
from depthcard.bot.dispatch import AuditJob, JobsBackend, LocalBackend, choose_job
from depthcard.cli.main import main
from depthcard.schemas.bot_config import BotConfig, JobsConfig
from depthcard.schemas.errors import UserError
from depthcard.schemas.estimate import AuditEstimate
from depthcard.schemas.report import AuditConfig
from tests.test_bot_units import RecordingJobsApi

TINY = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=100)  # fmt: skip
# Qwen2.5-0.5B's shape: 494,032,768 parameters with tied embeddings.
QWEN_05B = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 896,
            "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
            "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True,
            "torch_dtype": "bfloat16"}  # fmt: skip
SHA_B, SHA_C = "b" * 40, "c" * 40


@pytest.mark.parametrize(
    "config_class, extra",
    [
        (LlamaConfig, {}),
        (LlamaConfig, {"tie_word_embeddings": True}),
        (LlamaConfig, {"attention_bias": True, "mlp_bias": True}),
        (Qwen2Config, {"tie_word_embeddings": True}),
        (Qwen2Config, {"tie_word_embeddings": False}),
        (Qwen3Config, {"tie_word_embeddings": False, "head_dim": 12}),
        (MistralConfig, {}),
    ],
)
def test_parameter_count_matches_a_real_model(tmp_path, config_class, extra):
    config = config_class(**TINY, **extra)
    config.save_pretrained(tmp_path)  # config.json as a checkpoint ships it
    size = model_size(json.loads((tmp_path / "config.json").read_text()), str(tmp_path))
    model = AutoModelForCausalLM.from_config(config)
    assert size.parameters == sum(p.numel() for p in model.parameters())
    assert size.exact and size.tied_embeddings == config.tie_word_embeddings
    assert (size.num_layers, size.hidden_size, size.vocab_size) == (2, 32, 100)


def test_parameter_count_of_a_known_checkpoint_shape():
    size = model_size(QWEN_05B, "qwen")
    assert size.parameters == 494_032_768
    assert body_parameters(size) == 494_032_768 - 151_936 * 896
    assert size.weight_bytes == 2 * size.parameters


def test_missing_shape_fields_are_a_user_error():
    with pytest.raises(ValueError, match="lacks hidden size"):
        model_size({"model_type": "llama"}, "x")


def hand_lengths() -> PromptLengths:
    return PromptLengths(
        tokens={
            "harmful_chat": [10, 11, 12, 13],
            "harmless_chat": [5, 6, 7, 8],
            "harmful_raw": [8, 9, 10, 11],
            "capability_chat": [25, 35, 45],
            "capability_raw": [20, 30, 40],
        },
        fit={"harmful": [0, 1], "harmless": [0, 1], "capability": [0]},
        eval={"harmful": [2, 3], "harmless": [2, 3], "capability": [1, 2]},
        nll_context=3,
    )


def test_the_placebo_count_is_the_ablation_stages():
    from depthcard.analysis.ablation_cost import RANDOM_DRAWS
    from depthcard.analysis.work_plan import PLACEBO_SETTINGS

    assert PLACEBO_SETTINGS == 2 * RANDOM_DRAWS  # k = 1 and min k


def test_work_plan_counts_a_hand_computed_case():
    """K = 3, batch 2, 5 new tokens, 5 blocks (window 0.2–0.8: layers 1..4), default fragility."""
    cfg = AuditConfig(num_directions=3, batch_size=2, max_new_tokens=5)
    size = model_size({**TINY, "model_type": "llama", "num_hidden_layers": 5}, "m")
    plan = work_plan(cfg, size, hand_lengths(), paired=True)
    got = {(i.stage, i.purpose.split(",")[0].split(" (")[0]): i for i in plan}
    rows = {k: (i.settings, i.passes, i.tokens, i.calls) for k, i in got.items()}
    assert rows == {
        ("capture-base", "activations of 4 sets"): (1, 15, 215, 8),
        ("capture-child", "activations of 3 sets"): (1, 11, 177, 6),
        # baseline 1 + attack 4 + svd 3 + single 3 settings × eval (2 + 2 rows, 25 + 15 tokens)
        ("ablation", "first token: refusal score + harmless"): (11, 44, 440, 22),
        # 1 + 4 layers + 20 resamples × 3 candidates, × fit (2 + 2 rows, 21 + 11 tokens): an
        # upper bound, since a resample runs its distinct prompts only
        ("ablation", "layer search"): (65, 260, 65 * 32, 130),
        # the baseline and min_k × eval capability (2 rows, 70 tokens)
        ("ablation", "capability cross-entropy"): (2, 4, 140, 2),
        # the KL placebo: 3 draws at k = 1 and at min k × eval Dh (2 rows, 15 tokens)
        ("ablation", "KL placebo: random directions at k = 1 and min k"): (6, 12, 6 * 15, 6),
        # the ordered search judges at most all of k = 1..4, the two runner-up layers at most
        # 3 points each: 10 points; rows: Dh 2 + (1 + 10) × Ds 2
        ("ablation", "greedy answers: baseline Ds + Dh"): (11, 24, 15 + 11 * 25 + 120, 60),
        ("ablation", "answer NLL"): (1, 24, 24 * (3 + 5), 12),
        # refusals ≤ 2 eval prompts: 25 prompt + 2 × 5 answer tokens; benign 3 passages, 90
        ("fragility", "gradients of L_A and L_F"): (1, 5, 35 + 90, 2),
        ("fragility", "Hessian-vector products"): (21, 42, 21 * 35, 21),
        ("fragility", "benign SGD steps"): (1, 30, 10 * 90, 10),
        ("fragility", "L_A before and after each step"): (11, 22, 11 * 35, 11),
    }
    gen = got[("ablation", "greedy answers: baseline Ds + Dh")]
    assert (gen.generated_tokens, gen.decode_steps) == (120, 60)
    f = PassFlops(size)
    body, head = body_parameters(size), size.head_parameters
    assert got[("ablation", "capability cross-entropy")].flops == 2 * (body + head) * 140
    assert got[("capture-child", "activations of 3 sets")].flops == 2 * body * 177
    assert gen.flops == f.first_token(290, 24) + 2 * (body + head) * 120
    hvp = got[("fragility", "Hessian-vector products")]
    assert hvp.flops == 12 * (body + head) * 21 * 35
    totals = plan_totals(plan)
    assert totals.generated_tokens == 120 and totals.flops == sum(i.flops for i in plan)


def test_child_only_without_ablation_is_one_capture():
    cfg = AuditConfig(ablation=False)
    size = model_size({**TINY, "model_type": "llama"}, "m")
    plan = work_plan(cfg, size, hand_lengths(), paired=False)
    assert [i.stage for i in plan] == ["capture-child"]


def test_min_k_search_all_generates_at_every_attack_point():
    # l*'s points, plus 2 runner-up layers × min(3, K + 1) points
    runner_ups = [2 * min(3, k + 1) for k in (1, 3, 7, 8, 15)]
    bisect = [generation_points(k, "bisect") for k in (1, 3, 7, 8, 15)]
    assert [b - r for b, r in zip(bisect, runner_ups, strict=True)] == [2, 3, 4, 5, 5]
    assert generation_points(8, "all") == generation_points(8, "ordered") == 9 + 6
    cfg = AuditConfig(num_directions=3, batch_size=2, max_new_tokens=5)
    size = model_size({**TINY, "model_type": "llama", "num_hidden_layers": 5}, "m")
    items = ablation_items(cfg, hand_lengths(), PassFlops(size), 5, True, "all")
    gen = next(i for i in items if i.kind == "generate")
    assert gen.passes == 2 + (1 + 4 + 6) * 2


def test_flavour_names_are_the_hubs_and_time_follows_the_model():
    assert set(FLAVOURS) <= {h.value for h in JobHardware}
    size = model_size(QWEN_05B, "qwen")
    plan = work_plan(AuditConfig(max_new_tokens=64), size, hand_lengths(), paired=False)
    cpu, a10g, h200 = (flavour_estimate(plan, size, FLAVOURS[n]) for n in
                       ("cpu-basic", "a10g-large", "h200"))  # fmt: skip
    assert cpu.dtype == "float32" and a10g.dtype == "bfloat16"
    assert cpu.compute_minutes > a10g.compute_minutes > h200.compute_minutes > 0
    assert a10g.fits and math.isclose(a10g.memory_needed_gb, 494_032_768 * 2 / 1e9 * 1.2 + 2)
    big = model_size({**QWEN_05B, "hidden_size": 8192, "intermediate_size": 28672,
                      "num_hidden_layers": 80, "num_attention_heads": 64,
                      "num_key_value_heads": 8}, "70b")  # fmt: skip
    over = flavour_estimate(work_plan(AuditConfig(), big, hand_lengths(), paired=False), big,
                            FLAVOURS["a100-large"])  # fmt: skip
    assert not over.fits
    assert choose_flavour([cpu, a10g, h200], cap_minutes=120).flavour in ("cpu-basic", "a10g-large")
    assert choose_flavour([over], cap_minutes=120) is None
    assert hub_minutes("2h") == 120 and hub_minutes("90m") == 90 and hub_minutes(600) == 10
    assert job_timeout_minutes(a10g, 120) == 20  # the floor
    assert job_timeout_minutes(cpu.model_copy(update={"job_minutes": 500.0}), 120) == 120


def run_cli(args, capsys):
    capsys.readouterr()
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_on_the_bundled_pair_json(capsys):
    code, out, _ = run_cli(["estimate", "--demo", "--max-prompts", "16", "--json"], capsys)
    assert code == 0
    e = AuditEstimate.model_validate_json(out)
    assert e.kind == "pair" and e.token_source == "tokenizer"
    assert e.child.parameters == 344_640 and e.child.num_layers == 4
    harmful = next(s for s in e.sets if s.key == "harmful_chat")
    assert (harmful.prompts, harmful.fit, harmful.eval) == (16, 8, 8)
    defaults = ["a10g-large", "a100-large", "h200x2"]  # the bot's (JobsConfig.flavours)
    assert [f.flavour for f in e.flavours] == defaults
    assert e.chosen == "a10g-large" and e.timeout_minutes == 20
    assert [i.stage for i in e.plan][:2] == ["capture-base", "capture-child"]


def test_cli_human_output_and_child_only(capsys):
    code, out, _ = run_cli(["estimate", "--demo", "--max-prompts", "16", "--flavour",
                            "cpu-basic"], capsys)  # fmt: skip
    assert code == 0
    assert "pair audit" in out and "bot's choice: cpu-basic" in out and "TFLOP" in out
    from depthcard.analysis.audit import DEMO_DIR

    child = str(DEMO_DIR / "instruct")
    code, out, _ = run_cli(["estimate", "--child-only", child, "--max-prompts", "16", "--json",
                            "--no-fragility"], capsys)  # fmt: skip
    e = AuditEstimate.model_validate_json(out)
    assert e.kind == "child-only" and e.base is None
    assert {i.stage for i in e.plan} == {"capture-child", "ablation"}


def assert_one_line(code, err, pattern):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("depthcard: error: ") and pattern in lines[0], lines[0]


def test_bad_inputs_are_one_line_exit_2(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line(*run_cli(["estimate", "--child-only", str(empty)], capsys)[::2],
                    "no config.json")  # fmt: skip
    assert_one_line(*run_cli(["estimate", "--demo", "--flavour", "tpu-v9"], capsys)[::2],
                    "unknown flavour 'tpu-v9'")  # fmt: skip
    assert_one_line(*run_cli(["estimate", "--demo", "--num-directions", "500"], capsys)[::2],
                    "--num-directions 500")  # fmt: skip


def test_hub_model_reads_config_json_only(tmp_path, monkeypatch, capsys):
    import huggingface_hub

    (tmp_path / "config.json").write_text(json.dumps(QWEN_05B))
    asked = []

    def fake_download(repo_id, filename, **kw):
        asked.append((repo_id, filename, kw.get("revision")))
        return str(tmp_path / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    code, out, _ = run_cli(["estimate", "--child-only", "acme/chat@main", "--max-prompts", "16",
                            "--json"], capsys)  # fmt: skip
    assert code == 0 and asked == [("acme/chat", "config.json", "main")]
    e = AuditEstimate.model_validate_json(out)
    assert e.token_source == "words" and any("a word" in n for n in e.notes)
    setup = e.flavours[0].setup_minutes  # the job downloads the weights: 988 MB at 100 MB/s
    assert math.isclose(setup, 3.0 + 494_032_768 * 2 / 100e6 / 60)

    def offline(repo_id, filename, **kw):  # what the library raises with no network
        raise huggingface_hub.errors.LocalEntryNotFoundError("not in the cache, and offline")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    assert_one_line(*run_cli(["estimate", "--child-only", "acme/gone"], capsys)[::2],
                    "acme/gone: cannot read config.json from the Hub")  # fmt: skip


def jobs_backend(tmp_path, read_config, **jobs):
    cfg = BotConfig(backend="hf-jobs", results_repo="depthcard/results", work_dir=tmp_path,
                    audit={"max_prompts": 64},
                    jobs={"namespace": "depthcard", **jobs})  # fmt: skip
    api = RecordingJobsApi()
    wheel = "wheels/0123456789abcdef/depthcard-0.1.0-py3-none-any.whl"  # shipped, not built
    return JobsBackend(cfg, api, None, None, read_config, ship=lambda: wheel), api


def test_dispatch_sizes_the_job_from_the_estimate(tmp_path):
    job = AuditJob("k1", "acme/x", SHA_B, "acme/x-Instruct", SHA_C, 494_032_768)
    backend, api = jobs_backend(tmp_path, lambda repo, sha: dict(QWEN_05B))
    backend.start(job)
    run = next(kw for name, kw in api.calls if name == "run_job")
    assert run["flavor"] == "a10g-large" and run["timeout"] == "20m"  # minutes × 3, floor 20
    assert run["env"]["DEPTHCARD_DISPATCH"].startswith("estimate: ")
    # a 20 B model does not fit the A10G's 24 GB: the A100 it is, with a longer timeout
    big = {**QWEN_05B, "hidden_size": 6144, "intermediate_size": 16384, "num_hidden_layers": 44,
           "num_attention_heads": 48, "num_key_value_heads": 8}  # fmt: skip
    backend, api = jobs_backend(tmp_path, lambda repo, sha: big)
    backend.start(AuditJob("k2", "acme/y", SHA_B, "acme/y-Instruct", SHA_C, None))
    run = next(kw for name, kw in api.calls if name == "run_job")
    assert run["flavor"] == "a100-large"
    assert 20 <= hub_minutes(run["timeout"]) <= 120


def test_dispatch_keeps_the_parameter_rule_when_the_size_is_unknown(tmp_path):
    job = AuditJob("k3", "acme/x", SHA_B, "acme/x-Instruct", SHA_C, 5_000_000_000)
    backend, api = jobs_backend(tmp_path, lambda repo, sha: None)
    backend.start(job)
    run = next(kw for name, kw in api.calls if name == "run_job")
    assert (run["flavor"], run["timeout"]) == ("a100-large", "2h")
    assert "size unknown" in run["env"]["DEPTHCARD_DISPATCH"]
    # a flavour the Hub knows but the estimate's table does not
    only_unknown = JobsConfig(namespace="n", flavours=[{"max_parameters": 10**10,
                                                        "flavor": "rtx-pro-6000"}])  # fmt: skip
    assert choose_job(only_unknown, 10**9, None).flavor == "rtx-pro-6000"


def test_the_bots_audit_settings_are_an_audit_config_passed_as_its_flags(tmp_path):
    from depthcard.cli.audit_command import config_from_args
    from depthcard.cli.main import build_parser
    from depthcard.report.reproduce import audit_words

    settings = {"max_prompts": 64, "fragility": None, "max_new_tokens": 32}
    cfg = BotConfig(audit=settings, work_dir=tmp_path)
    words = LocalBackend(cfg).args
    assert words == ["--max-prompts", "64", "--max-new-tokens", "32", "--no-fragility"]
    # the audit's own parser reads those words back into the same config
    args = build_parser().parse_args(["audit", "--demo", "--out", "x", *words])
    assert config_from_args(args) == cfg.audit
    assert audit_words(AuditConfig()) == []
    with pytest.raises(ValueError):
        BotConfig(audit={"batch_size": 0})
    # a field with no flag would not reach the audit: refused, one line
    with pytest.raises(UserError, match="tau_species"):
        LocalBackend(BotConfig(audit={"tau_species": 0.9}, work_dir=tmp_path))
