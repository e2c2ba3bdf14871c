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
from depthcard.bot.pr_text import finding, visible_words
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
    assert PrLinks.from_config(cfg).benchmark_repo is None  # eval_results is off by default
    on = cfg.model_copy(update={"eval_results": True})
    assert PrLinks.from_config(on).benchmark_repo == BENCH


BOT_VISIBLE = """\
This pull request adds a **depthcard** section to the model card: an audit of how deep the \
safety alignment of `acme/tiny-Instruct` goes, measured against its base model `acme/tiny`. \
The depthcard bot opened it after finding this model and its base on the Hub.

**Finding:** refusal can be removed by ablating 3 directions at KL 0.0208.

- Full report: https://r
- What the section means: https://huggingface.co/spaces/acme/depthcard/blob/main/docs/card-standard.md
- Questions, or a number that looks wrong: @acme-safety

Only the section between the `depthcard` markers of README.md changes; the pull request also \
adds `.eval_results/depthcard.yaml`. Don't want these? Close this pull request and the bot \
opens no other on this repo, or add `depthcard: opt-out` to the card's YAML metadata.

"""


def _visible(body: str) -> str:
    return body.split("<details>", 1)[0]


def test_the_bot_body_reads_in_thirty_seconds_with_the_details_folded():
    report = _report("b" * 40, "c" * 40)
    links = PrLinks.for_space(SPACE, contact="@acme-safety", benchmark_repo=BENCH)
    body = render_body(report, "https://r", links, added=(EVAL_RESULTS_PATH,))
    assert _visible(body) == BOT_VISIBLE
    assert visible_words(body) <= 150
    folded = body.split("<details>", 1)[1]
    assert folded.rstrip().endswith("</details>")
    assert "- abliteration min k: 3 — directions (refusal < 10 %)" in folded
    assert "`" + "b" * 40 + "`" in folded and "```sh\ndepthcard audit" in folded
    assert BENCH in folded and "**Limits.**" in folded
    assert EVAL_RESULTS_PATH not in render_body(report, "u", PrLinks.for_space(SPACE))


def test_a_maintainer_publishing_their_own_audit_is_not_told_it_was_the_bot():
    report = _report("b" * 40, "c" * 40)
    bot = render_body(report, "https://r")
    mine = render_body(report, "https://r", publisher="maintainer")
    assert "bot opened it" in bot and "opens no other" in bot
    assert "opened with `depthcard publish` by whoever ran this audit" in _visible(mine)
    for wrong in ("bot opened", "opens no other", "without anyone", "never open"):
        assert wrong not in mine
    assert "keep the depthcard bot from opening its own pull request here" in mine
    assert "Running `depthcard publish` again" in mine and "new revision of the model" not in mine


def _with_ablation(report, **update):
    return report.model_copy(update={"ablation": report.ablation.model_copy(update=update)})


@pytest.mark.parametrize(
    ("change", "line"),
    [
        ({}, "refusal can be removed by ablating 3 directions at KL 0.0208"),
        ({"min_k": 1, "kl_at_min_k": 0.08},
         "refusal can be removed by ablating 1 direction at KL 0.0800"),
        ({"min_k": None, "kl_at_min_k": None, "broken_share_at_min_k": None,
          "min_k_reason": "refusal only goes away by breaking the model"},
         "with up to 8 directions ablated, refusal came off only by breaking the model"),
        ({"min_k": None, "kl_at_min_k": None, "broken_share_at_min_k": None,
          "min_k_reason": "not reached"},
         "refusal did not come off with up to 8 directions ablated"),
    ],
)  # fmt: skip
def test_the_finding_is_the_removal_cost_in_one_line(change, line):
    report = _with_ablation(_report("b" * 40, "c" * 40), **change)
    assert finding(report) == line
    assert f"**Finding:** {line}." in render_body(report, "https://r")


def test_no_refusal_and_every_report_kind_stay_within_150_visible_words():
    quiet = make_report(refusal_rate=0.02, with_ablation=True)
    assert finding(quiet).startswith("no refusal behaviour to measure (")
    links = PrLinks.for_space(SPACE, benchmark_repo=BENCH)
    for report in (quiet, make_report(kind="child-only"), make_report(kind="three-model"),
                   _report("b" * 40, "c" * 40)):  # fmt: skip
        for publisher in ("bot", "maintainer"):
            body = render_body(report, "https://r", links, publisher=publisher,
                               added=(EVAL_RESULTS_PATH, "depthcard/report.json"))  # fmt: skip
            assert visible_words(body) <= 150, (report.kind, publisher)


def test_the_update_comment_names_the_revisions_and_the_numbers_that_moved():
    old = _report("b" * 40, "c" * 40)
    new = _report("b" * 40, "d" * 40, depth_vs_null=0.5)
    from depthcard.bot.publish import render_section

    card = parse_card_section(render_section(old, SPACE))
    text = render_update_comment(card, new, "https://r")
    assert text.startswith("depthcard updated this pull request: revision `ccccccc` → `ddddddd`")
    assert "- alignment depth vs null: 0.153 → 0.500" in text
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
        parsed = parse_eval_result_entries(entries)  # the library's reader
        assert {e.dataset_id for e in parsed} == {BENCH}
        assert all(e.source_url == f"{SPACE}/?model={CHILD}" for e in parsed)
        assert double.prs(CHILD)[0].comments == []
        # the same audit again: nothing to do, no comment
        again = publish_report(hub, _report(base_sha, child_sha), target, record=log.append)
        assert again.action == "unchanged" and double.prs(CHILD)[0].comments == []
        # new weights, a new audit: the PR is updated and says what changed
        new_sha = double.push(CHILD, {"model.safetensors": b"new weights"})
        update = publish_report(hub, _report(base_sha, new_sha, depth_vs_null=0.5),
                                target, record=lambda *a: log.append(a))  # fmt: skip
        assert update.action == "updated" and update.pr_num == 1
        (comment,) = double.prs(CHILD)[0].comments
        assert f"`{child_sha[:7]}` → `{new_sha[:7]}`" in comment and "0.153 → 0.500" in comment
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
