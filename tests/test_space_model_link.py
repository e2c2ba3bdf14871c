"""`?model=org/name`: the Space opens a model's own report from its repo, for the bot's PR and
a maintainer's alike.

The PR is opened by the real `depthcard publish` (a maintainer's token) against the Hub
double; the Space runs as its own process with HF_ENDPOINT pointing at the double, as on the
Hub, and Chromium follows the card's link. The first tests call `read_model_report` directly
with the real huggingface_hub client.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from urllib.parse import quote

import pytest
from huggingface_hub import HfApi, constants

from depthcard.report.markdown import md_code
from depthcard.space.model_report import MAX_PRS, REPORT_PATH, read_model_report
from depthcard.space.store import ReportEntry, ReportStore
from tests.bot_helpers import CHILD, ROOT, TOKEN, add_pair, bot_env, depthcard, write_config
from tests.hub_double import HubDouble
from tests.report_factory import make_report

SPACE = "https://huggingface.co/spaces/depthcard/depthcard"
OTHER = "acme/other-Instruct"


@pytest.fixture(autouse=True)
def online(monkeypatch):
    # Other Space tests set HF_HUB_OFFLINE=1 for their process; these talk to the double.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def _report(base_sha: str, child_sha: str, child: str = CHILD):
    return make_report(
        models={"base": {"repo_id": "acme/tiny", "revision": base_sha},
                "child": {"repo_id": child, "revision": child_sha}},
        audit_key=f"{base_sha}/{child_sha}/a1",
    )  # fmt: skip


def _folder(tmp_path, report):
    folder = tmp_path / "report"
    folder.mkdir()
    (folder / "report.json").write_text(report.model_dump_json(), encoding="utf-8")
    return folder


def _publish(hub, tmp_path, report) -> None:
    """`depthcard publish` as a maintainer (their token, `results_repo` unset)."""
    env = bot_env(hub, tmp_path)
    cfg = ["--config", str(write_config(tmp_path, hub_user=None, space_url=SPACE))]
    out = depthcard(["publish", str(_folder(tmp_path, report)), "--repo", CHILD, *cfg], env)
    assert out.returncode == 0 and "opened PR #1" in out.stdout, out.stderr


def _api(hub) -> HfApi:
    return HfApi(endpoint=hub.url, token=TOKEN)


@pytest.mark.slow
def test_a_maintainers_open_pr_then_main_then_nothing(tmp_path):
    with HubDouble(user="alice", token=TOKEN) as hub:
        base_sha, child_sha = add_pair(hub)
        report = _report(base_sha, child_sha)
        _publish(hub, tmp_path, report)
        pr_files = hub.repo(CHILD).files("refs/pr/1")
        assert REPORT_PATH in pr_files
        card = pr_files["README.md"].decode()
        assert f"{SPACE}/?model={CHILD})" in card  # the card's "Full report" link
        assert f"{SPACE}/?model={CHILD}" in hub.prs(CHILD)[0].description

        found = read_model_report(CHILD, _api(hub))
        assert found.entry is not None and found.entry.report.audit_key == report.audit_key
        assert "open pull request #1" in found.note and "`alice`" in found.note

        # The owner merges: main now holds the folder, and the PR is no longer open.
        hub.push(CHILD, {REPORT_PATH: pr_files[REPORT_PATH]})
        hub.close_pr(CHILD, 1)
        found = read_model_report(CHILD, _api(hub))
        assert found.entry is not None and "at main" in found.note

        kept = {k: v for k, v in hub.repo(CHILD).files().items() if k != REPORT_PATH}
        hub.push(CHILD, kept, replace=True)  # the owner deletes the folder again
        found = read_model_report(CHILD, _api(hub))
        assert found.entry is None and "has no" in found.note


def test_a_closed_pr_is_not_read_and_the_store_is_the_last_resort(tmp_path):
    with HubDouble(user="alice", token=TOKEN) as hub:
        base_sha, child_sha = add_pair(hub)
        report = _report(base_sha, child_sha)
        api = _api(hub)
        api.upload_file(path_or_fileobj=report.model_dump_json().encode(), path_in_repo=REPORT_PATH,
                        repo_id=CHILD, create_pr=True)  # fmt: skip
        hub.close_pr(CHILD, 1)
        assert read_model_report(CHILD, api).entry is None
        store = ReportStore()
        store.add(ReportEntry(id="x", report=report, source=tmp_path / "report.json"))
        found = read_model_report(CHILD, api, store)
        assert found.entry is not None and "this Space's results" in found.note


def test_a_report_about_another_model_is_refused(tmp_path):
    with HubDouble(user="mallory", token=TOKEN) as hub:
        base_sha, child_sha = add_pair(hub)
        hub.add_repo(OTHER, {"README.md": "# other\n"})
        elsewhere = _report(base_sha, child_sha, child=CHILD)  # about CHILD, put on OTHER
        hub.push(OTHER, {REPORT_PATH: elsewhere.model_dump_json()})
        found = read_model_report(OTHER, _api(hub))
        assert found.entry is None and "describes another model" in found.note


def test_only_the_newest_open_prs_are_tried(tmp_path):
    with HubDouble(token=TOKEN) as hub:
        base_sha, child_sha = add_pair(hub)
        api = _api(hub)
        data = _report(base_sha, child_sha).model_dump_json().encode()
        api.upload_file(path_or_fileobj=data, path_in_repo=REPORT_PATH, repo_id=CHILD,
                        create_pr=True)  # fmt: skip
        for i in range(MAX_PRS):  # newer PRs without a report push it out of reach
            api.upload_file(path_or_fileobj=b"x", path_in_repo=f"f{i}", repo_id=CHILD,
                            create_pr=True)  # fmt: skip
        assert read_model_report(CHILD, api).entry is None
        hub.close_pr(CHILD, MAX_PRS + 1)
        assert read_model_report(CHILD, api).entry is not None


@pytest.mark.parametrize("model", ["no-slash", "a/b/c", "x` [y](https://evil.example) `"])
def test_a_bad_id_is_echoed_as_code_without_a_request(model):
    with HubDouble() as hub:
        found = read_model_report(model, _api(hub))
        assert found.entry is None and "is not a Hub model id" in found.note
        assert hub.requests == []
    assert md_code(model) in found.note  # one code span: no link, image or HTML


def test_a_missing_repo_and_an_unreachable_hub_are_one_line():
    with HubDouble() as hub:
        assert "No model" in read_model_report("acme/none", _api(hub)).note
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    closed = HfApi(endpoint=f"http://127.0.0.1:{port}")
    assert "could not be reached" in read_model_report("acme/x", closed).note


# -- in the browser ----------------------------------------------------------------------------


def _launch_space(hub, tmp_path) -> tuple[subprocess.Popen, str]:
    """The Space as its own process, reading the Hub double as the Hub (HF_ENDPOINT)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    empty = tmp_path / "no-reports"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "DEPTHCARD_"))}
    env |= {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "space-home"),
            "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1",
            "PYTHONPATH": str(ROOT)}  # fmt: skip
    cmd = [sys.executable, "-m", "depthcard.space.app", "--reports", str(empty),
           "--port", str(port), "--space-url", SPACE, "--refresh-seconds", "0"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=open(tmp_path / "space.log", "w"))  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            assert proc.poll() is None, (tmp_path / "space.log").read_text()
            time.sleep(0.5)
    proc.kill()
    raise AssertionError("the Space did not start")


@pytest.mark.slow
@pytest.mark.browser
def test_the_cards_link_opens_the_report_in_the_browser(tmp_path):
    from playwright.sync_api import sync_playwright

    from tests.test_space_browser import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, assert_no_traceback

    with HubDouble(user="alice", token=TOKEN) as hub:
        base_sha, child_sha = add_pair(hub)
        _publish(hub, tmp_path, _report(base_sha, child_sha))
        card = hub.readme(CHILD, "refs/pr/1")
        link = card.split(f"{SPACE}/", 1)[1].split(")", 1)[0]  # "?model=acme/tiny-Instruct"
        hub.add_repo(OTHER, {"README.md": "# other\n"})
        proc, url = _launch_space(hub, tmp_path)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                            args=CHROMIUM_ARGS)  # fmt: skip
                page = browser.new_page(viewport={"width": 1300, "height": 1000})
                page.set_default_timeout(TIMEOUT_MS)
                page.goto(f"{url}/{link}")
                summary = page.locator("#report-summary")
                summary.get_by_text("Verdict").wait_for()
                assert "open pull request #1" in summary.inner_text()
                assert "alice" in summary.inner_text()
                page.locator("#plot-rank").locator("canvas, svg").first.wait_for()
                page.screenshot(path=str(tmp_path / "model-link.png"), full_page=True)

                page.goto(f"{url}/?model={OTHER}")
                summary.get_by_text("has no").wait_for()

                fetched: list[str] = []
                page.route(
                    "**/*evil.example*/**",
                    lambda route: (fetched.append(route.request.url), route.abort()),
                )
                bad = "[y](https://evil.example/login) ![p](https://evil.example/p.png)"
                page.goto(f"{url}/?model={quote(bad, safe='')}")
                summary.get_by_text("is not a Hub model id").wait_for()
                page.wait_for_timeout(500)
                assert summary.locator("a[href*='evil.example'], img").count() == 0
                assert fetched == []
                assert_no_traceback(page)
                browser.close()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
