"""Fine-tune audits: erosion e_l, the Erosion section, the card, the Space series, the CLI.

Known answers in-process on the planted tiny pair (F = I keeps everything, F = B nothing,
identical B and I leave e_l undefined); then, marked slow, a real benign fine-tune of the
bundled calibration organism audited through the CLI with `--third`.
"""

import json
import math

import pytest
import torch

from depthcard.analysis.audit import ModelHandle, audit_models
from depthcard.analysis.directions import erosion
from depthcard.analysis.erosion_stage import COMPLIANCE_OPENINGS
from depthcard.analysis.prompt_inputs import PromptInputs
from depthcard.cli.main import main
from depthcard.lab import organisms as org
from depthcard.lab.erode import erode_organism
from depthcard.report.card import CARD_SCHEMA_VERSION, parse_card_section, render_card_section
from depthcard.schemas.report import AuditReport
from depthcard.space.report_view import plot_frame, report_view
from depthcard.space.store import ReportEntry
from tests.test_cli_errors import assert_clean_error, run_cli
from tests.test_known_answer import BLOCK, config, prompt_set, ref
from tests.test_models import save_tiny
from tests.tiny_models import (
    HARMLESS_WORDS,
    make_llama,
    make_tokenizer,
    planted_pair,
    prompts,
)


@pytest.fixture(scope="module")
def planted():
    tok = make_tokenizer()
    base = make_llama(len(tok), seed=21, layers=4)
    p = planted_pair(tok, base, BLOCK, n=24, u_seed=22, scale=6.0)
    harmful, harmless, child = p.harmful, p.harmless, p.child
    inputs = PromptInputs(
        harmful=prompt_set("h", "harmful", harmful, ["weapons"] * 24),
        harmless=prompt_set("ok", "harmless", harmless, ["misc"] * 24),
        capability=prompt_set("cap", "capability", prompts(HARMLESS_WORDS, 16, 9), ["c"] * 16),
    )
    return tok, base, child, inputs


def three_model(planted, base, child, third):
    tok, _, _, inputs = planted
    return audit_models(
        base=ModelHandle(lambda: base, lambda m: ref("base", m, 4)),
        child=ModelHandle(lambda: child, lambda m: ref("child", m, 4)),
        third=ModelHandle(lambda: third, lambda m: ref("third", m, 4)),
        tokenizer=tok,
        prompts=inputs,
        cfg=config(),
    ).report


def round_trip(report: AuditReport) -> AuditReport:
    text = report.model_dump_json()
    assert "NaN" not in text and "Infinity" not in text
    return AuditReport.model_validate_json(text)


@pytest.mark.slow
def test_third_equal_to_child_keeps_all_of_the_alignment(planted):
    _, base, child, _ = planted
    report = round_trip(three_model(planted, base, child, child))
    assert report.kind == "three-model" and report.models.third.role == "third"
    defined = [m for m in report.layers if m.erosion is not None]
    assert [m.layer for m in defined] == [2, 3, 4]  # the plant is visible from point 2
    assert all(m.erosion == pytest.approx(1.0, abs=1e-9) for m in defined)
    e = report.erosion
    assert e.kept_fraction == pytest.approx(1.0, abs=1e-9) and e.window == (1, 3)
    assert e.erosion_layers == 2 and e.flags == []
    assert e.logprob_third == pytest.approx(e.logprob_child, abs=1e-6)
    assert e.completions == list(COMPLIANCE_OPENINGS) and e.sequences == 4 * 24
    assert e.gradient_cosine is not None and -1.0 <= e.gradient_cosine <= 1.0
    assert e.refusal_rate_third is None  # the audit generated nothing (ablation off)
    assert report.headline.alignment_kept == pytest.approx(1.0, abs=1e-9)
    assert "erosion" not in {a.section for a in report.absent}
    assert report.audit_key.count("/") == 3


@pytest.mark.slow
def test_third_equal_to_base_keeps_none_of_it(planted):
    _, base, child, _ = planted
    report = round_trip(three_model(planted, base, child, base))
    defined = [m.erosion for m in report.layers if m.erosion is not None]
    assert len(defined) == 3 and all(v == pytest.approx(0.0, abs=1e-9) for v in defined)
    assert report.erosion.kept_fraction == pytest.approx(0.0, abs=1e-9)
    assert report.erosion.logprob_third == pytest.approx(report.erosion.logprob_base, abs=1e-6)


@pytest.mark.slow
def test_identical_base_and_child_leave_erosion_undefined_not_nan(planted):
    _, base, _, _ = planted
    report = round_trip(three_model(planted, base, base, base))
    assert all(m.erosion is None for m in report.layers)
    assert report.erosion.kept_fraction is None and report.headline.alignment_kept is None
    assert set(report.erosion.flags) >= {"identical-parent", "no-defined-erosion"}


def test_erosion_is_none_at_the_noise_floor_and_never_inf():
    s_b = torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)
    s_i = torch.tensor([1.0 + 1e-9, 2.0, 1e-300], dtype=torch.float64)
    s_f = torch.tensor([5.0, 1.5, 1e300], dtype=torch.float64)
    out = erosion(s_f, s_i, s_b, torch.tensor([10.0, 10.0, 0.0]), tolerance=1e-6)
    assert out[0] is None and out[1] == pytest.approx(0.5)
    assert out[2] is None or math.isfinite(out[2])


@pytest.mark.slow
def test_card_of_a_three_model_audit_says_what_was_kept(planted):
    _, base, child, _ = planted
    report = three_model(planted, base, child, child)
    section = render_card_section(report, report_url=None, reproduce_command="depthcard audit")
    assert f"schema={CARD_SCHEMA_VERSION}" in section.splitlines()[0]
    assert "| alignment kept by the fine-tune | 100.0 % |" in section
    assert "kept **100.0 %** of the alignment" in section
    card = parse_card_section(section)
    assert card.kind == "three-model" and card.third is not None
    assert card.headline.alignment_kept == pytest.approx(1.0)


# --- a real benign fine-tune of the calibration organism, through the CLI ------------------


@pytest.fixture(scope="session")
def eroded(tmp_path_factory):
    out = tmp_path_factory.mktemp("eroded") / "finetune"
    record = erode_organism(org.DEFAULT_DIR / "instruct", out, steps=150, lr=3e-3, seed=0)
    return out, record


def cli_audit(tmp_path, third, *extra) -> AuditReport:
    out = tmp_path / "audit"
    args = [str(org.DEFAULT_DIR / "base"), str(org.DEFAULT_DIR / "instruct"), "--third"]
    args += [str(third), "--out", str(out), "--max-prompts", "32", "--max-new-tokens", "16"]
    assert main(["audit", *args, "--no-plots", *extra]) == 0
    report = AuditReport.model_validate_json((out / "report.json").read_text(encoding="utf-8"))
    return report, (out / "card.md").read_text(encoding="utf-8")


@pytest.mark.slow
def test_eroded_organism_shows_erosion_on_the_card_and_in_the_space(tmp_path, eroded, capsys):
    folder, record = eroded
    assert record["final_loss"] < record["first_loss"]
    assert json.loads((folder / "erosion.json").read_text())["steps"] == 150
    report, card = cli_audit(tmp_path, folder, "--no-fragility")
    # the summary row uses the metric table's label and the card's percent format
    summary = capsys.readouterr().out
    kept_row = next(line for line in summary.splitlines() if "alignment kept" in line)
    assert f"{100 * report.erosion.kept_fraction:.1f} %" in kept_row
    assert report.kind == "three-model" and report.models.third is not None
    values = [m.erosion for m in report.layers if m.erosion is not None]
    assert len(values) == len(report.layers) and all(math.isfinite(v) for v in values)
    kept = report.erosion.kept_fraction
    assert kept is not None and 0.0 < kept < 0.9
    assert f"{100 * kept:.1f} %" in card and "alignment kept by the fine-tune" in card
    e = report.erosion  # the benign fine-tune also stops refusing: behaviour erodes faster
    assert e.refusal_rate_third < e.refusal_rate_child and e.judge == "substring"
    assert f"fine-tune {100 * e.refusal_rate_third:.1f} %" in card
    assert parse_card_section(card).headline.alignment_kept == pytest.approx(kept)
    entry = ReportEntry(id="local/eroded", report=report, source=tmp_path / "audit")
    frame = plot_frame(entry, "erosion")
    assert len(frame) == len(report.layers) and frame["erosion"].notna().all()
    assert not report_view(entry).frames["erosion"].empty


@pytest.mark.slow
def test_instruct_as_its_own_fine_tune_keeps_everything(tmp_path):
    same, _ = cli_audit(tmp_path, org.DEFAULT_DIR / "instruct", "--no-fragility")
    assert same.erosion.kept_fraction == pytest.approx(1.0, abs=1e-9)
    assert same.erosion.refusal_rate_third == same.erosion.refusal_rate_child
    assert same.erosion.logprob_third == pytest.approx(same.erosion.logprob_child, abs=1e-4)


def test_third_with_a_different_hidden_size_is_a_clean_error(tmp_path, capsys):
    base, child = save_tiny(tmp_path / "b", seed=1), save_tiny(tmp_path / "c", seed=2)
    third = save_tiny(tmp_path / "f", hidden=16, seed=3)
    out = tmp_path / "out"
    args = ["audit", str(base), str(child), "--third", str(third), "--out", str(out)]
    assert_clean_error(*run_cli(args, capsys), "hidden size differs (third 16, child 32)", out)


def test_third_without_a_base_is_a_clean_error(tmp_path, capsys):
    child = save_tiny(tmp_path / "c", seed=2)
    out = tmp_path / "out"
    args = ["audit", "--child-only", str(child), "--third", str(child), "--out", str(out)]
    assert_clean_error(*run_cli(args, capsys), "--third needs a base model", out)


@pytest.mark.slow
def test_erode_is_deterministic_and_keeps_the_instruct_folder(tmp_path):
    a = erode_organism(org.DEFAULT_DIR / "instruct", tmp_path / "a", steps=3, lr=1e-3, seed=5)
    b = erode_organism(org.DEFAULT_DIR / "instruct", tmp_path / "b", steps=3, lr=1e-3, seed=5)
    assert a["model_sha256"] == b["model_sha256"] and a["steps"] == 3
    assert (tmp_path / "a" / "model.safetensors").is_file()
    assert not list((tmp_path / "a").glob("*.bin"))
    template = (org.DEFAULT_DIR / "instruct" / "chat_template.jinja").read_text()
    assert (tmp_path / "a" / "chat_template.jinja").read_text() == template
    with pytest.raises(ValueError):
        erode_organism(org.DEFAULT_DIR / "instruct", tmp_path / "c", steps=1, lr=0.0)
