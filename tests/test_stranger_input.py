"""What a stranger writes is read, refused or recorded, never raised: huge integers in a card's
markers or headline JSON, in a repo's config.json or in an upload, and repo ids that
huggingface_hub refuses, at the webhook and in the inbox."""

from __future__ import annotations

import pytest

from depthcard.analysis import ANALYSIS_VERSION
from depthcard.bot.discover import read_config
from depthcard.bot.dispatch import LocalBackend
from depthcard.bot.hub import Hub
from depthcard.bot.pairs import RepoFacts
from depthcard.bot.state import StateStore
from depthcard.bot.watch import Round, run_round
from depthcard.bot.webhook import SECRET_HEADER
from depthcard.report.card import CardParseError, parse_card_section
from depthcard.schemas.bot_config import load_bot_config
from depthcard.schemas.json_text import MAX_INT_DIGITS, JsonLimitError, loads_bounded
from depthcard.space.upload import check_bytes
from tests.bot_helpers import TOKEN, write_config
from tests.hub_double import HubDouble
from tests.test_webhook import PAYLOAD, SECRET, good, post, server  # noqa: F401

HUGE = "1" * 5000
START = "<!-- depthcard:start schema={schema} key=k -->"


@pytest.mark.parametrize(
    "card",
    [
        f"{START.format(schema='2.' + HUGE)}\n<!-- depthcard:headline {{}} -->\n"
        "<!-- depthcard:end -->\n",
        f"{START.format(schema=HUGE + '.0')}\n<!-- depthcard:end -->\n",
        f'{START.format(schema="2.0")}\n<!-- depthcard:headline {{"n": {HUGE}}} -->\n'
        "<!-- depthcard:end -->\n",
        f'{START.format(schema="2.0")}\n<!-- depthcard:headline {{"n": -{HUGE}}} -->\n'
        "<!-- depthcard:end -->\n",
    ],
    ids=["minor", "major", "headline int", "negative int"],
)
def test_a_huge_integer_in_a_card_is_a_card_parse_error(card):
    with pytest.raises(CardParseError):
        parse_card_section(card)


def test_the_bounded_reader_reads_ordinary_numbers_and_refuses_long_ones():
    assert loads_bounded('{"a": [1, -2, 3.5e300, %s]}' % ("9" * MAX_INT_DIGITS)) == {
        "a": [1, -2, 3.5e300, int("9" * MAX_INT_DIGITS)]
    }
    with pytest.raises(JsonLimitError, match="5,000 digits"):
        loads_bounded(HUGE)
    with pytest.raises(JsonLimitError, match="nested too deeply"):
        loads_bounded("[" * 100_000 + "]" * 100_000)


def test_the_space_says_why_a_huge_integer_is_not_a_report():
    check = check_bytes(f'{{"schema_version": {HUGE}}}'.encode())
    assert not check.ok and "5,000 digits" in check.message


def test_a_config_json_with_a_huge_integer_counts_as_unreadable(tmp_path):
    with HubDouble(token=TOKEN) as double:
        sha = double.add_repo("acme/m", {"config.json": f'{{"hidden_size": {HUGE}}}'})
        hub = Hub(TOKEN, endpoint=double.url, sleep=lambda s: None, cache_dir=tmp_path / "c")
        facts = RepoFacts(repo_id="acme/m", sha=sha, files=("config.json",))
        assert read_config(hub, facts) is None


@pytest.mark.parametrize("name", ["acme/a--b", "acme/a..b", "acme/" + "x" * 97, "x" * 97 + "/m",
                                  "acme/m.git", "acme/-m", "acme"])  # fmt: skip
def test_the_webhook_refuses_repo_ids_huggingface_hub_refuses(server, name):  # noqa: F811
    srv, state = server
    status, _ = post(srv, good({**PAYLOAD, "repo": {**PAYLOAD["repo"], "name": name}}),
                     {SECRET_HEADER: SECRET})  # fmt: skip
    assert status == 400
    assert StateStore(state).inbox() == []


def test_a_bad_id_in_the_inbox_is_recorded_and_removed_in_one_round(tmp_path):
    with HubDouble(token=TOKEN) as double:
        cfg = load_bot_config(write_config(tmp_path, recheck_limit=0))
        hub = Hub(TOKEN, endpoint=double.url, sleep=lambda s: None, cache_dir=tmp_path / "c")
        store = StateStore(cfg.state_path)
        store.push_inbox("acme/a--b", "webhook")
        run_round(Round(hub, store, cfg, LocalBackend(cfg), ANALYSIS_VERSION))
        (row,) = store.rows()
        assert row.child_repo == "acme/a--b" and row.state == "skipped"
        assert "not a Hub repo id" in row.reason and store.inbox() == []


@pytest.mark.parametrize(
    "card",
    [
        "---\nlicense: [mit\ndepthcard: opt-out\n---\n# a bad YAML line elsewhere\n",
        "---\ndepthcard: opt-out\n...\n# front matter ended by ...\n",
        "\ufeff---\r\ntags: {a: [\r\ndepthcard: never\r\n---\r\n",
    ],
    ids=["bad yaml line", "dot end", "bom crlf bad yaml"],
)
def test_an_opt_out_holds_whatever_else_the_front_matter_gets_wrong(card):
    from depthcard.bot.pairs import opted_out_in_card
    from depthcard.bot.publish import card_metadata

    assert opted_out_in_card(card_metadata(card))
    assert not opted_out_in_card(card_metadata(card.replace("depthcard:", "other:")))


@pytest.mark.slow
def test_publish_of_a_tampered_or_unknown_revision_is_a_one_line_error(tmp_path):
    from tests.bot_helpers import CHILD, add_pair, bot_env, depthcard
    from tests.report_factory import make_report

    with HubDouble(token=TOKEN) as double:
        base_sha, _ = add_pair(double)
        env = bot_env(double, tmp_path)
        config = ["--config", str(write_config(tmp_path))]
        for name, base, child_sha in (("gone", "acme/tiny", "e" * 40),
                                      ("tampered", "acme/x-->y", "e" * 40)):  # fmt: skip
            report = make_report(
                models={"base": {"repo_id": base, "revision": base_sha},
                        "child": {"repo_id": CHILD, "revision": child_sha}},
                audit_key=f"{base_sha}/{child_sha}/a1",
            )  # fmt: skip
            folder = tmp_path / name
            folder.mkdir()
            (folder / "report.json").write_text(report.model_dump_json())
            out = depthcard(["publish", str(folder), "--repo", CHILD, *config], env)
            assert out.returncode == 2, out.stderr
            assert "Traceback" not in out.stderr, out.stderr
            assert double.prs(CHILD) == []
