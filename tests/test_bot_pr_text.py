"""PRs that explain themselves: the body names the audit as automated and links the card
standard, the report and a contact; `.eval_results/depthcard.yaml` rides along when the
benchmark is configured; an update for a new revision leaves a comment saying what changed;
`depthcard publish --upload-report` puts the report and the leaderboard in the results
dataset. All against the Hub double through the real huggingface_hub client."""

from __future__ import annotations

import json

import pytest
import yaml
from huggingface_hub import HfApi, parse_eval_result_entries

from depthcard.bot.hub import Hub
from depthcard.bot.publish import (
    PrLinks,
    Target,
    publish_report,
    render_body,
    render_update_comment,
)
from depthcard.report.card import parse_card_section
from depthcard.report.eval_results import EVAL_RESULTS_PATH
from depthcard.schemas.bot_config import BotConfig
from depthcard.schemas.eval_results import EvalResultsFile
from tests.bot_helpers import CHILD, TOKEN, add_pair, bot_env, depthcard, write_config
from tests.hub_double import HubDouble
from tests.report_factory import make_report

SPACE = "https://huggingface.co/spaces/acme/depthcard"
BENCH = "acme/depthcard-benchmark"


def _report(base_sha: str, child_sha: str, **headline):
    report = make_report(
        with_ablation=True,
        with_depth=True,
        models={"base": {"repo_id": "acme/tiny", "revision": base_sha},
                "child": {"repo_id": CHILD, "revision": child_sha}},
        audit_key=f"{base_sha}/{child_sha}/a1",
    )  # fmt: skip
    if headline:
        report = report.model_copy(update={"headline": report.headline.model_copy(update=headline)})
    return report


def test_links_default_into_the_space_and_config_overrides_them():
    links = PrLinks.from_config(BotConfig(space_url=SPACE))
    assert links.card_standard_url == f"{SPACE}/blob/main/docs/card-standard.md"
    assert links.contact == f"{SPACE}/discussions" and links.benchmark_repo is None
    cfg = BotConfig(space_url=SPACE, contact="@acme-safety", benchmark_repo=BENCH)
    assert PrLinks.from_config(cfg).contact == "@acme-safety"


def test_the_body_says_it_is_automated_and_links_standard_report_and_contact():
    report = _report("b" * 40, "c" * 40)
    links = PrLinks.for_space(SPACE, contact="@acme-safety", benchmark_repo=BENCH)
    body = render_body(report, f"{SPACE}?report=x", links)
    first = body.splitlines()[0]
    assert first.startswith("> **Automated audit.**")
    assert f"card standard ({SPACE}/blob/main/docs/card-standard.md)" in first
    assert f"{SPACE}?report=x" in first and "@acme-safety" in first
    assert EVAL_RESULTS_PATH in body and BENCH in body
    assert EVAL_RESULTS_PATH not in render_body(report, "u", PrLinks.for_space(SPACE))


def test_the_update_comment_names_the_revisions_and_the_numbers_that_moved():
    old = _report("b" * 40, "c" * 40)
    new = _report("b" * 40, "d" * 40, alignment_depth_score=0.5)
    from depthcard.bot.publish import render_section

    card = parse_card_section(render_section(old, SPACE))
    text = render_update_comment(card, new, "https://r")
    assert text.startswith("depthcard updated this pull request: revision `ccccccc` → `ddddddd`")
    assert "- alignment depth score: 0.265 → 0.500" in text
    assert "baseline refusal rate" not in text  # unchanged numbers are not listed


@pytest.mark.slow
def test_a_pr_carries_eval_results_and_an_update_leaves_a_comment(tmp_path):
    with HubDouble(token=TOKEN) as double:
        base_sha, child_sha = add_pair(double)
        hub = Hub(TOKEN, endpoint=double.url, sleep=lambda s: None, cache_dir=tmp_path / "c")
        links = PrLinks.for_space(SPACE, benchmark_repo=BENCH)
        target = Target(CHILD, SPACE, double.user, False, links=links)
        log: list = []
        first = publish_report(hub, _report(base_sha, child_sha), target,
                               record=lambda *a: log.append(a))  # fmt: skip
        assert first.action == "opened"
        files = double.repo(CHILD).files("refs/pr/1")
        entries = yaml.safe_load(files[EVAL_RESULTS_PATH])
        EvalResultsFile.model_validate(entries)  # our schema
        parsed = parse_eval_result_entries(entries)  # and the library's reader
        assert {e.dataset_id for e in parsed} == {BENCH}
        assert all(e.source_url == f"{SPACE}?report={CHILD}/{child_sha}" for e in parsed)
        assert double.prs(CHILD)[0].comments == []
        # the same audit again: nothing to do, no comment
        again = publish_report(hub, _report(base_sha, child_sha), target, record=log.append)
        assert again.action == "unchanged" and double.prs(CHILD)[0].comments == []
        # new weights, a new audit: the PR is updated and says what changed
        new_sha = double.push(CHILD, {"model.safetensors": b"new weights"})
        update = publish_report(hub, _report(base_sha, new_sha, alignment_depth_score=0.5),
                                target, record=lambda *a: log.append(a))  # fmt: skip
        assert update.action == "updated" and update.pr_num == 1
        (comment,) = double.prs(CHILD)[0].comments
        assert f"`{child_sha[:7]}` → `{new_sha[:7]}`" in comment and "0.265 → 0.500" in comment
        pr_files = double.repo(CHILD).files("refs/pr/1")
        assert new_sha in pr_files[EVAL_RESULTS_PATH].decode()
        # the comment is what HfApi reads back as the PR's events
        details = HfApi(endpoint=double.url, token=TOKEN).get_discussion_details(CHILD, 1)
        assert [e.content for e in details.events if e.type == "comment"] == [comment]
        assert ("comment", "done", "PR #1") in log


@pytest.mark.slow
def test_publish_upload_report_fills_the_results_dataset(tmp_path):
    with HubDouble(token=TOKEN) as double:
        base_sha, child_sha = add_pair(double)
        folder = tmp_path / "report"
        (folder / "plots").mkdir(parents=True)
        (folder / "report.json").write_text(_report(base_sha, child_sha).model_dump_json())
        (folder / "plots" / "rank.png").write_bytes(b"png")
        env = bot_env(double, tmp_path)
        cfg = write_config(tmp_path, results_repo="acme/results", space_url=SPACE)
        out = depthcard(["publish", str(folder), "--repo", CHILD, "--upload-report",
                         "--config", str(cfg)], env)  # fmt: skip
        assert out.returncode == 0, out.stderr
        files = double.repo("acme/results", "dataset").files()
        dest = f"reports/{CHILD}/{child_sha}"
        assert f"{dest}/report.json" in files and f"{dest}/plots/rank.png" in files
        (row,) = [json.loads(line) for line in files["leaderboard.jsonl"].decode().splitlines()]
        assert row["model"] == CHILD and row["revision"] == child_sha
        assert row["alignment_depth_score"] == pytest.approx(0.2647, abs=1e-4)
        assert row["report_url"] == f"{SPACE}?report={CHILD}/{child_sha}"
        front = files["README.md"].decode().split("---\n")[1]
        (config,) = yaml.safe_load(front)["configs"]
        assert config["data_files"][0]["path"] == "leaderboard.jsonl"
        assert "opened PR #1" in out.stdout


def test_the_leaderboard_is_rebuilt_from_the_dataset_only_when_it_changed(tmp_path):
    from depthcard.bot.results_upload import refresh_leaderboard

    with HubDouble(token=TOKEN) as double:
        hub = Hub(TOKEN, endpoint=double.url, sleep=lambda s: None, cache_dir=tmp_path / "c")
        assert not refresh_leaderboard(hub, "acme/results", SPACE)  # no dataset yet
        report = _report("b" * 40, "c" * 40)
        double.add_repo("acme/results", {
            f"reports/{CHILD}/{'c' * 40}/report.json": report.model_dump_json(),
            "reports/broken/x/y/report.json": "{}",  # left out, never fails the rebuild
        }, repo_type="dataset")  # fmt: skip
        assert refresh_leaderboard(hub, "acme/results", SPACE)
        files = double.repo("acme/results", "dataset").files()
        (row,) = [json.loads(x) for x in files["leaderboard.jsonl"].decode().splitlines()]
        assert row["report"] == f"{CHILD}/{'c' * 40}" and "README.md" in files
        commits = len(double.repo("acme/results", "dataset").commits)
        assert not refresh_leaderboard(hub, "acme/results", SPACE)  # nothing changed
        assert len(double.repo("acme/results", "dataset").commits) == commits
