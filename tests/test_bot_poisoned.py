"""One bad repo never stops the bot: a round over healthy and poisoned repos publishes every
healthy repo in that same round and records a reason for the others. The poisons: a README
that is not UTF-8, stray and malformed markers, an opt-out after a byte-order mark, a
config.json that is not UTF-8, a 5,000-digit schema in a start marker, a 5,000-digit integer
in the headline JSON and in config.json, repo ids huggingface_hub refuses in the inbox, an
audited revision the repo no longer has (a squashed history), and a tampered report whose
base repo id carries `-->`."""

from __future__ import annotations

from depthcard.analysis import ANALYSIS_VERSION
from depthcard.bot.dispatch import LocalBackend
from depthcard.bot.hub import Hub
from depthcard.bot.state import StateStore
from depthcard.bot.watch import Round, run_round
from depthcard.schemas.bot_config import load_bot_config
from tests.bot_helpers import BASE, CALIBRATION, TOKEN, write_config
from tests.hub_double import HubDouble

CARD = "---\nbase_model: acme/tiny\n---\n# {name}\n"
POISONED = {
    "acme/latin-Instruct": "---\nbase_model: acme/tiny\n---\n# Caf\xe9\n".encode("latin-1"),
    "acme/markers-Instruct": (
        b"---\nbase_model: acme/tiny\n---\n<!-- depthcard:end -->\n"
        b"<!-- depthcard:start schema=one key=x -->\n```\n<!-- depthcard:end -->\n"
    ),
    "acme/bom-Instruct": (
        "\ufeff---\r\nbase_model: acme/tiny\r\ndepthcard: opt-out\r\n---\r\n".encode()
    ),
}
HUGE = "1" * 5000
# Cards whose old section is unreadable; the bot replaces the section, as for any broken one.
HUGE_CARDS = {
    "acme/bigschema-Instruct": (
        f"---\nbase_model: acme/tiny\n---\n<!-- depthcard:start schema=2.{HUGE} key=k -->\n"
        "<!-- depthcard:headline {} -->\n<!-- depthcard:end -->\n"
    ),
    "acme/bigjson-Instruct": (
        "---\nbase_model: acme/tiny\n---\n<!-- depthcard:start schema=2.0 key=k -->\n"
        f'<!-- depthcard:headline {{"schema_version": {HUGE}}} -->\n<!-- depthcard:end -->\n'
    ),
}
BAD_IDS = ["acme/a--b", "acme/" + "x" * 97]
HEALTHY = ["acme/ok1-Instruct", "acme/ok2-Instruct"]


def test_a_round_publishes_every_healthy_repo_past_poisoned_ones(tmp_path):
    with HubDouble(token=TOKEN) as double:
        double.add_folder(BASE, CALIBRATION / "base", readme="# tiny base\n", parameters=400_000)
        for repo, readme in POISONED.items():
            double.add_folder(repo, CALIBRATION / "instruct", parameters=400_000,
                              tags=["base_model:finetune:acme/tiny"])  # fmt: skip
            double.push(repo, {"README.md": readme})
        # Its card names the task: the Hub cannot infer one from this config, and the poll
        # asks for text-generation models only.
        cfg_card = "---\nbase_model: acme/tiny\npipeline_tag: text-generation\n---\n# cfg\n"
        double.add_folder("acme/cfg-Instruct", CALIBRATION / "instruct", parameters=400_000,
                          readme=cfg_card)  # fmt: skip
        double.push("acme/cfg-Instruct", {"config.json": b'{"hidden_size": "\xff"}'})
        double.add_folder("acme/bigcfg-Instruct", CALIBRATION / "instruct", parameters=400_000,
                          readme=cfg_card.replace("# cfg", "# bigcfg"))  # fmt: skip
        double.push("acme/bigcfg-Instruct", {"config.json": f'{{"hidden_size": {HUGE}}}'.encode()})
        for repo, readme in HUGE_CARDS.items():
            double.add_folder(repo, CALIBRATION / "instruct", readme=readme, parameters=400_000)
        for repo in HEALTHY:
            double.add_folder(repo, CALIBRATION / "instruct", readme=CARD.format(name=repo),
                              parameters=400_000)  # fmt: skip
        # Outside the polled organisation, so only the rows below bring them in.
        for repo in ("other/squashed-Instruct", "other/tampered-Instruct"):
            double.add_folder(repo, CALIBRATION / "instruct", readme=CARD.format(name=repo),
                              parameters=400_000)  # fmt: skip
        cfg = load_bot_config(
            write_config(tmp_path, max_parallel=20, cap_per_org_per_day=10, recheck_limit=0)
        )
        hub = Hub(TOKEN, endpoint=double.url, cache_dir=tmp_path / "cache", retries=1,
                  sleep=lambda s: None)  # fmt: skip
        store = StateStore(cfg.state_path)
        for repo in BAD_IDS:  # as a webhook with a looser pattern once let in
            store.push_inbox(repo, "webhook repo.create")
        base_sha = double.repo(BASE).resolve("main")
        gone = "e" * 40  # audited, then the owner squashed the history: the revision is gone
        store.add(base_repo=BASE, base_sha=base_sha, child_repo="other/squashed-Instruct",
                  child_sha=gone, analysis_version=ANALYSIS_VERSION, state="queued")  # fmt: skip
        tampered = double.repo("other/tampered-Instruct").resolve("main")
        store.add(base_repo="acme/x-->y", base_sha=base_sha, child_repo="other/tampered-Instruct",
                  child_sha=tampered, analysis_version=ANALYSIS_VERSION,
                  state="queued")  # fmt: skip
        r = Round(hub, store, cfg, LocalBackend(cfg), ANALYSIS_VERSION)
        run_round(r)
        for repo in HEALTHY + ["acme/markers-Instruct", *HUGE_CARDS]:
            assert [p.num for p in double.prs(repo)] == [1], repo
        marked = double.readme("acme/markers-Instruct", "refs/pr/1")
        assert marked.startswith(POISONED["acme/markers-Instruct"].decode())
        assert double.prs("acme/latin-Instruct") == [] and double.prs("acme/bom-Instruct") == []
        rows = {row.target_repo: row for row in r.store.rows()}
        assert rows["acme/latin-Instruct"].state == "skipped"
        assert "not UTF-8" in rows["acme/latin-Instruct"].reason
        assert rows["acme/bom-Instruct"].state == "opted_out"
        assert rows["acme/cfg-Instruct"].state == "skipped"
        assert rows["acme/bigcfg-Instruct"].state == "skipped"
        for repo in BAD_IDS:
            assert rows[repo].state == "skipped" and "not a Hub repo id" in rows[repo].reason
        assert r.store.inbox() == []
        squashed = rows["other/squashed-Instruct"]
        assert squashed.state == "skipped" and "RevisionNotFound" in squashed.reason
        assert rows["other/tampered-Instruct"].state == "failed"
        assert "not a Hub repo id" in rows["other/tampered-Instruct"].error
        assert double.prs("other/squashed-Instruct") == double.prs("other/tampered-Instruct") == []
        assert run_round(r) == r.store.counts()  # the next round runs too


def test_two_watchers_never_open_more_prs_than_the_daily_cap(tmp_path):
    """Both watchers see no finished PR while each one's commit is in flight; the cap still
    holds because a slot is reserved in the state file before the Hub write."""
    import threading

    repos = [f"acme/m{i}-Instruct" for i in range(4)]
    with HubDouble(token=TOKEN) as double:
        double.add_folder(BASE, CALIBRATION / "base", readme="# tiny base\n", parameters=400_000)
        for repo in repos:
            double.add_folder(repo, CALIBRATION / "instruct", readme=CARD.format(name=repo),
                              parameters=400_000)  # fmt: skip
        cfg = load_bot_config(
            write_config(tmp_path, max_parallel=10, cap_per_org_per_day=3, recheck_limit=0)
        )
        hub = Hub(TOKEN, endpoint=double.url, cache_dir=tmp_path / "c0", retries=1)
        first = Round(
            hub, StateStore(cfg.state_path, owner="w0"), cfg, LocalBackend(cfg), ANALYSIS_VERSION
        )
        run_round(first)  # audits done; then both watchers publish with slow commits
        for repo in repos:
            for pr in list(double.prs(repo)):
                double.repo(repo).prs.remove(pr)
        with first.store._tx() as db:  # forget the first round's writes and publications
            db.execute("DELETE FROM hub_writes")
            db.execute("UPDATE audits SET state = 'succeeded', pr_num = NULL")
        double.fault("POST", r"/commit/", status=None, delay=1.0, times=8)

        def watcher(n: int) -> None:
            store = StateStore(cfg.state_path, owner=f"w{n}")
            hub = Hub(TOKEN, endpoint=double.url, cache_dir=tmp_path / f"c{n}", retries=1)
            run_round(Round(hub, store, cfg, LocalBackend(cfg), ANALYSIS_VERSION))

        threads = [threading.Thread(target=watcher, args=(n,)) for n in (1, 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert sum(len(double.prs(repo)) for repo in repos) == 3
