"""The real Gemma-3-270M pair audit through every view: card, PR text, `depthcard publish
--dry-run`, and the Space's store, report view, leaderboard and `?model=` link.

`tests/data/gemma_pair_report.json` is the report.json of one child of the shallow recipe
(`bench/gemma_pair.py`: shallow_s0, a LoRA fine-tune of Gemma-3-270M) audited against the
templated base with `depthcard audit BASE CHILD --max-prompts 40 --no-fragility --dtype
float32` (docs/calibration.md, "One child, audited as a pair"). It is the public part only:
floats cut to 7 significant digits and the home folder written `~`; the directions and the
judged answers never leave the audit folder (the report holds their sha256). The audit read
local folders, and publishing needs Hub revisions, so `_on_hub` puts the same numbers at the
Hub double's commits of google/gemma-3-270m and a child repo.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from huggingface_hub import HfApi, constants

from depthcard.bot.pr_text import render_body, render_title, visible_words
from depthcard.bot.publish import render_section
from depthcard.bot.state import audit_key
from depthcard.report.public_files import model_report_url
from depthcard.schemas.report import AuditReport
from depthcard.space import handlers
from depthcard.space import report_view as rv
from depthcard.space.model_report import read_model_report
from depthcard.space.store import load_folder
from tests.bot_helpers import TOKEN, bot_env, depthcard, write_config
from tests.hub_double import HubDouble

FIXTURE = Path(__file__).parent / "data" / "gemma_pair_report.json"
BASE, CHILD = "google/gemma-3-270m", "acme/gemma-3-270m-shallow"
SPACE = "https://huggingface.co/spaces/depthcard/depthcard"
CHILD_CARD = "---\nlicense: gemma\nbase_model: google/gemma-3-270m\n---\n# Gemma-3-270M, shallow\n"
FINDING = "with up to 9 directions ablated, refusal came off only by breaking the model"
CARD_FINDING = "With up to 9 directions ablated, refusal came off only by breaking the model"
# What the report's numbers support, as every view must print them.
NUMBERS = (
    "0.001563 (rank 1 of d = 640)",
    "at baseline (0.869) [95 % CI 0.170–0.974] (mean-shift baseline 0.888",
    "not above null (p = 0.2178, 100 permutations)",
    "100.0 % [95 % Wilson 80.6 %–100.0 %]",
)


def _audited() -> AuditReport:
    return AuditReport.model_validate_json(FIXTURE.read_text(encoding="utf-8"))


def _on_hub(base_sha: str, child_sha: str) -> AuditReport:
    """The fixture as an audit of these Hub revisions (the numbers unchanged)."""
    data = _audited().model_dump(mode="json")
    for role, repo, sha in (("base", BASE, base_sha), ("child", CHILD, child_sha)):
        data["models"][role].update(source="hub", repo_id=repo, revision=sha, path=None)
    data["audit_key"] = audit_key(base_sha, child_sha, data["tool"]["analysis_version"], None)
    return AuditReport.model_validate(data)


def test_the_card_and_the_pr_say_what_the_numbers_support():
    report = _on_hub("a" * 40, "c" * 40)
    section = render_section(report, SPACE)
    body = render_body(report, model_report_url(SPACE, CHILD), publisher="maintainer")
    assert render_title(report) == f"depthcard: safety-alignment depth audit of {CHILD} (ccccccc)"
    assert f"**Finding:** {FINDING}." in body and visible_words(body) <= 150
    assert f"**Removal cost.** {CARD_FINDING}: where refusal fell" in section
    for text in (section, body):
        for number in NUMBERS:
            assert number in text, number
    # The judged shares went 100 % → 0 % and stayed there; only the first-token score wandered.
    assert "judged refusal curve is not monotone" not in section
    assert "The first-token refusal score is not monotone in k; the judged shares are." in section


def test_the_space_shows_the_report_as_audited(tmp_path):
    folder = tmp_path / "reports" / "gemma-pair"
    folder.mkdir(parents=True)
    shutil.copy(FIXTURE, folder / "report.json")
    store = load_folder(tmp_path / "reports")
    [entry] = store.entries.values()
    assert not store.skipped and entry.id == "local/shallow_s0-e1bc92fc7310355a/9da7aacaca1f"
    view = rv.report_view(entry, report_url=rv.report_link(SPACE, entry))
    drawn = {key for key, frame in view.frames.items() if not frame.empty}
    assert {"rank", "recovery", "projection", "depth", "ablation_refusal"} <= drawn
    values = " ".join(view.headline["value"])
    for number in NUMBERS:
        assert number in values, number
    assert CARD_FINDING in view.card and f"{SPACE}/?report={entry.id}" in view.card
    row = handlers.leaderboard(store).iloc[0]
    assert row["verdict"] == "measured" and row["depth vs null"] == "not above null"
    assert row["min k (coherent)"] == "only by breaking (> 10 % broken)"
    assert row["baseline refusal (%)"] == 100.0 and row["ρ_ε aligned"] == 0.001563


@pytest.mark.slow
def test_dry_run_then_the_pr_the_space_reads(tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the Space tests set it
    with HubDouble(user="alice", token=TOKEN) as hub:
        config = {"config.json": json.dumps({"architectures": ["Gemma3ForCausalLM"]})}
        base_sha = hub.add_repo(
            BASE, {**config, "README.md": "# Gemma 3\n"}, parameters=268_098_176
        )
        child_sha = hub.add_repo(CHILD, {**config, "README.md": CHILD_CARD}, parameters=268_098_176)
        report = _on_hub(base_sha, child_sha)
        folder = tmp_path / "audit"
        folder.mkdir()
        (folder / "report.json").write_text(report.model_dump_json(), encoding="utf-8")
        (folder / "samples.jsonl").write_text('{"answer": "an ablated answer"}\n')
        (folder / "directions.safetensors").write_bytes(b"refusal directions")
        env = bot_env(hub, tmp_path)
        cfg = ["--config", str(write_config(tmp_path, hub_user=None, space_url=SPACE))]

        dry = depthcard(["publish", str(folder), "--repo", CHILD, "--dry-run", *cfg], env)
        assert dry.returncode == 0, dry.stderr
        assert hub.prs(CHILD) == []
        assert f"title: {render_title(report)}\n" in dry.stdout
        assert f"**Finding:** {FINDING}." in dry.stdout
        assert "--- depthcard/report.json (added by the PR" in dry.stdout
        assert "samples.jsonl (added" not in dry.stdout
        assert "directions.safetensors (added" not in dry.stdout

        real = depthcard(["publish", str(folder), "--repo", CHILD, *cfg], env)
        assert real.returncode == 0 and "opened PR #1" in real.stdout, real.stderr
        files = hub.repo(CHILD).files("refs/pr/1")
        withheld = json.loads(files["depthcard/withheld.json"])["files"]
        assert set(withheld) == {"samples.jsonl", "directions.safetensors"}
        assert not any(p.endswith(("samples.jsonl", ".safetensors")) for p in files)

        found = read_model_report(CHILD, HfApi(endpoint=hub.url, token=TOKEN))
        assert found.entry is not None and "open pull request #1" in found.note
        view = rv.model_view(found, SPACE)
        assert view.found and CARD_FINDING in view.card
        assert "not above null" in " ".join(view.headline["value"])
