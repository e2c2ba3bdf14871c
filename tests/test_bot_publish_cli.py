"""`depthcard publish REPORT_DIR --repo CHILD`: the maintainer's path, against the Hub double."""

from __future__ import annotations

import pytest

from tests.bot_helpers import (
    CHILD,
    CHILD_README,
    TOKEN,
    add_pair,
    bot_env,
    depthcard,
    write_config,
)
from tests.hub_double import HubDouble
from tests.report_factory import make_report


def _report_dir(tmp_path, base_sha, child_sha):
    report = make_report(
        models={"base": {"repo_id": "acme/tiny", "revision": base_sha},
                "child": {"repo_id": CHILD, "revision": child_sha}},
        audit_key=f"{base_sha}/{child_sha}/a1",
    )  # fmt: skip
    folder = tmp_path / "report"
    folder.mkdir()
    (folder / "report.json").write_text(report.model_dump_json())
    return folder


@pytest.mark.slow
def test_publish_dry_run_then_real_then_update_is_a_no_op(tmp_path):
    with HubDouble(token=TOKEN) as hub:
        base_sha, child_sha = add_pair(hub)
        folder = _report_dir(tmp_path, base_sha, child_sha)
        env = bot_env(hub, tmp_path)
        cfg = ["--config", str(write_config(tmp_path))]
        dry = depthcard(["publish", str(folder), "--repo", CHILD, "--dry-run", *cfg], env)
        assert dry.returncode == 0, dry.stderr
        assert "dry-run" in dry.stdout and "+<!-- depthcard:start" in dry.stdout
        assert hub.prs(CHILD) == []
        real = depthcard(["publish", str(folder), "--repo", CHILD, *cfg], env)
        assert real.returncode == 0 and "opened PR #1" in real.stdout, real.stderr
        assert hub.readme(CHILD, "refs/pr/1").startswith(CHILD_README)
        again = depthcard(["publish", str(folder), "--repo", CHILD, *cfg], env)
        assert "unchanged PR #1" in again.stdout and len(hub.prs(CHILD)) == 1
        for out in (dry, real, again):
            assert TOKEN not in out.stdout + out.stderr


@pytest.mark.slow
def test_publish_rejects_a_report_for_another_repo_and_bad_folders(tmp_path):
    with HubDouble() as hub:
        base_sha, child_sha = add_pair(hub)
        folder = _report_dir(tmp_path, base_sha, child_sha)
        env = bot_env(hub, tmp_path)
        cfg = ["--config", str(write_config(tmp_path))]
        wrong = depthcard(["publish", str(folder), "--repo", "acme/other", "--dry-run", *cfg], env)
        assert wrong.returncode == 2 and "not acme/other" in wrong.stderr
        empty = depthcard(["publish", str(tmp_path), "--repo", CHILD, "--dry-run", *cfg], env)
        assert empty.returncode == 2 and "no report.json" in empty.stderr
        assert "Traceback" not in wrong.stderr + empty.stderr


@pytest.mark.slow
def test_three_model_dry_run_diffs_the_finetune_card_the_pr_goes_to(tmp_path):
    from tests.bot_helpers import CALIBRATION

    ft, ft_readme = "acme/tiny-medical", "# Tiny medical\n\nThe fine-tune's own card.\n"
    with HubDouble(token=TOKEN) as hub:
        base_sha, child_sha = add_pair(hub)
        ft_sha = hub.add_folder(ft, CALIBRATION / "instruct", readme=ft_readme, parameters=1)
        report = make_report(
            kind="three-model",
            with_erosion=True,
            models={"base": {"repo_id": "acme/tiny", "revision": base_sha},
                    "child": {"repo_id": CHILD, "revision": child_sha},
                    "third": {"repo_id": ft, "revision": ft_sha}},
            audit_key=f"{base_sha}/{child_sha}/{ft_sha}/a1",  # the factory's analysis version
        )  # fmt: skip
        folder = tmp_path / "report"
        folder.mkdir()
        (folder / "report.json").write_text(report.model_dump_json())
        cfg = ["--config", str(write_config(tmp_path))]
        dry = depthcard(
            ["publish", str(folder), "--repo", ft, "--dry-run", *cfg], bot_env(hub, tmp_path)
        )
        assert dry.returncode == 0, dry.stderr
        # the diff is against the fine-tune's README, the card the PR would change
        assert " The fine-tune's own card." in dry.stdout
        assert CHILD_README.splitlines()[-1] not in dry.stdout
        assert hub.prs(ft) == [] and hub.prs(CHILD) == []


@pytest.mark.slow
def test_publish_takes_only_its_own_accounts_prs_as_its_own(tmp_path):
    """A stranger's PRs titled like ours, one closed and one open, neither block publishing
    nor receive its commit: with no `hub_user` configured, the token's account (whoami) is
    the bot's."""
    from datetime import UTC, datetime

    from tests.hub_double import PR

    with HubDouble(token=TOKEN) as hub:
        base_sha, child_sha = add_pair(hub)
        repo = hub.repo(CHILD)
        for num, status in ((1, "closed"), (2, "open")):
            repo.prs.append(PR(num, "depthcard: safety-alignment depth audit", "mallory", status,
                               datetime.now(UTC), "not the bot"))  # fmt: skip
            repo.refs[f"refs/pr/{num}"] = repo.refs["main"]
        folder = _report_dir(tmp_path, base_sha, child_sha)
        cfg = ["--config", str(write_config(tmp_path, hub_user=None))]
        out = depthcard(["publish", str(folder), "--repo", CHILD, *cfg], bot_env(hub, tmp_path))
        assert out.returncode == 0 and "opened PR #3" in out.stdout, out.stdout + out.stderr
        assert [p.author for p in hub.prs(CHILD)] == ["mallory", "mallory", hub.user]
        assert repo.refs["refs/pr/2"] == repo.refs["main"]  # the stranger's PR is untouched
