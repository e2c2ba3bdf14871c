"""End to end: the Hub double lists the calibration pair, `depthcard watch --once` audits it
with the real `depthcard audit` (tiny settings) and opens one PR, then keeps it current."""

from __future__ import annotations

import pytest

from depthcard.analysis import ANALYSIS_VERSION
from depthcard.report.card import parse_card_section
from tests.bot_helpers import (
    BASE,
    CHILD,
    CHILD_README,
    REAL_AUDIT_COMMAND,
    REAL_AUDIT_SETTINGS,
    TOKEN,
    add_pair,
    bot_env,
    depthcard,
    outside_markers,
    write_config,
)
from tests.hub_double import HubDouble


def _watch(cfg, env):
    done = depthcard(["watch", "--once", "--config", str(cfg)], env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert TOKEN not in done.stdout + done.stderr
    return done


def _assert_only_section_added(pr_readme: str, original: str) -> None:
    before, after = outside_markers(pr_readme)
    # Appending keeps the card and adds one blank line (CRLF, the card's own line ending).
    assert before == original + "\r\n"
    assert after == "\r\n"
    section = pr_readme[len(before) : len(pr_readme) - len(after)]
    assert "\n" not in section.replace("\r\n", "")


@pytest.mark.slow
@pytest.mark.e2e
def test_watch_audits_a_new_pair_opens_one_pr_and_keeps_it_current(tmp_path):
    with HubDouble(token=TOKEN) as hub:
        base_sha, child_sha = add_pair(hub)
        cfg = write_config(tmp_path, audit_command=REAL_AUDIT_COMMAND, audit=REAL_AUDIT_SETTINGS)
        env = bot_env(hub, tmp_path)

        out = _watch(cfg, env)
        assert "published 1" in out.stdout
        prs = hub.prs(CHILD)
        assert [(p.num, p.status, p.author) for p in prs] == [(1, "open", "depthcard-bot")]
        assert hub.prs(BASE) == []
        pr_readme = hub.readme(CHILD, "refs/pr/1")
        _assert_only_section_added(pr_readme, CHILD_README)
        card = parse_card_section(pr_readme)
        assert card.audit_key == f"{base_sha}/{child_sha}/{ANALYSIS_VERSION}"
        assert card.child.revision == child_sha and card.base.revision == base_sha
        assert hub.readme(CHILD) == CHILD_README  # main is untouched: it is a PR
        body = prs[0].description
        for needle in (child_sha, base_sha, "depthcard audit", "opt-out", "Limits",
                       f"/?model={CHILD}"):  # fmt: skip
            assert needle in body

        # Second run: nothing new to do, nothing written.
        commits = dict(hub.repo(CHILD).refs)
        _watch(cfg, env)
        assert len(hub.prs(CHILD)) == 1 and hub.repo(CHILD).refs == commits

        # A new child revision (the owner edits the card): the same PR is updated.
        new_readme = CHILD_README + "More about the model.\r\n"
        new_sha = hub.push(CHILD, {"README.md": new_readme})
        out = _watch(cfg, env)
        assert [p.num for p in hub.prs(CHILD)] == [1]
        pr_readme = hub.readme(CHILD, "refs/pr/1")
        _assert_only_section_added(pr_readme, new_readme)
        assert parse_card_section(pr_readme).audit_key == f"{base_sha}/{new_sha}/{ANALYSIS_VERSION}"
        assert "published 2" in out.stdout

        # The owner closes the PR unmerged: no further PRs, whatever happens next.
        hub.close_pr(CHILD, 1)
        hub.push(CHILD, {"README.md": new_readme + "Even more.\r\n"})
        out = _watch(cfg, env)
        assert len(hub.prs(CHILD)) == 1 and hub.prs(CHILD)[0].status == "closed"
        assert "opted_out 1" in out.stdout
        status = depthcard(["status", "--config", str(cfg)], env)
        assert "PR #1 closed unmerged" in status.stdout
