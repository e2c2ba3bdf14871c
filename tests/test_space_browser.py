"""The Space in a real browser: Debian's chromium, headless, driven by playwright.

Loads the leaderboard, opens the real demo report from its row, checks that the plots drew,
follows a `?report=` deep link, uploads a malformed report and reads the located errors.
Screenshots go to a temporary folder (printed); with DEPTHCARD_DOCS_SCREENSHOT=1 the report
view is also saved to docs/img/space-report.png for the README.

The test fails, never skips, when chromium or playwright is missing: CI must run it. Set-up:
`apt-get install -y chromium` and `pip install playwright` (no `playwright install`: the
browser is Debian's).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from tests import space_support as support

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = os.environ.get("DEPTHCARD_CHROMIUM", "/usr/bin/chromium")
# Loopback only: no background fetches, no updates, no QUIC probes.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]
DOCS_SHOT = support.ROOT / "docs" / "img" / "space-report.png"
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.fail(
            f"chromium not found at {CHROMIUM}: install it (apt-get install -y chromium) "
            "or set DEPTHCARD_CHROMIUM; the Space's browser test must run."
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install playwright (no browser download)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def app_url():
    demo, url = support.launch_app()
    try:
        yield url
    finally:
        demo.close()


@pytest.fixture(scope="module")
def shots() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="depthcard-space-shots-"))
    print(f"screenshots in {folder}")
    return folder


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    yield page
    context.close()


def demo_id() -> str:
    return next(i for i in support.store().ids() if i.startswith("local/"))


def assert_no_traceback(page) -> None:
    text = page.inner_text("body")
    assert "Traceback" not in text and 'File "' not in text


def wait_for_plots(page, keys: tuple[str, ...]) -> None:
    """Each plot has drawn: its Vega view holds a canvas or an svg with content."""
    for key in keys:
        plot = page.locator(f"#plot-{key}")
        plot.locator("canvas, svg").first.wait_for(state="visible")
        box = plot.bounding_box()
        assert box is not None and box["height"] > 100, key


def test_leaderboard_row_opens_the_report_with_plots(page, app_url, shots):
    page.goto(app_url)
    board = page.locator("#leaderboard")
    # the report id sits in the last column; gradio keeps hidden copies of cells
    board.locator(f"text={demo_id()} >> visible=true").first.click()
    page.locator("#report-summary").get_by_text("Verdict").wait_for()
    wait_for_plots(page, ("rank", "recovery", "projection"))
    assert page.locator("#headline").get_by_text("ρ_ε aligned").count() >= 1
    page.wait_for_timeout(500)  # let the plots finish their transitions
    # From the report's heading down: the headline table and the first rows of plots.
    top = page.locator("#report-summary").bounding_box()["y"]
    clip = {"x": 0, "y": max(0.0, top - 16), "width": 1280, "height": 1450}
    page.screenshot(path=str(shots / "report.png"), full_page=True, clip=clip)
    if os.environ.get("DEPTHCARD_DOCS_SCREENSHOT"):
        DOCS_SHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shots / "report.png", DOCS_SHOT)
    page.screenshot(path=str(shots / "report-full.png"), full_page=True)
    assert_no_traceback(page)


def test_deep_link_opens_the_report(page, app_url, shots):
    page.goto(f"{app_url}/?report={demo_id()}")
    page.locator("#report-summary").get_by_text("Verdict").wait_for()
    wait_for_plots(page, ("rank",))
    page.goto(f"{app_url}/?report=nobody/none/0")
    page.locator("#report-summary").get_by_text("No report").wait_for()
    page.screenshot(path=str(shots / "not-found.png"))


@pytest.mark.parametrize(
    "value",
    [
        "x` [Sign in with your HF token](https://evil.example/login) `",
        "x` ![pixel](https://evil.example/pixel.png) `",
        "x]( <img src=https://evil.example/pixel.png> [y](https://evil.example/login)",
    ],
    ids=["link", "image", "html"],
)
def test_a_deep_link_echoes_its_value_as_text_only(page, app_url, value):
    from urllib.parse import quote

    fetched: list[str] = []
    page.route("**/*evil.example*/**", lambda route: (fetched.append(route.request.url),
                                                     route.abort()))  # fmt: skip
    page.goto(f"{app_url}/?report={quote(value, safe='')}")
    summary = page.locator("#report-summary")
    summary.get_by_text("No report").wait_for()
    page.wait_for_timeout(500)  # an image would have been requested by now
    assert summary.locator("a[href*='evil.example'], img").count() == 0
    assert "evil.example" in summary.locator("code").first.inner_text()
    assert fetched == []


def test_malformed_upload_shows_located_errors(page, app_url, shots, tmp_path):
    bad = tmp_path / "report.json"
    bad.write_bytes(support.nan_report_bytes())
    page.goto(app_url)
    page.get_by_role("tab", name="Validate").click()
    page.locator("#upload input[type=file]").set_input_files(str(bad))
    page.locator("#check-message").get_by_text("does not conform").wait_for()
    errors = page.locator("#check-errors")
    errors.get_by_text("layers[2].norm_ratio").first.wait_for()
    assert errors.get_by_text("headline.rho_eps_aligned").count() >= 1
    page.screenshot(path=str(shots / "validate-errors.png"), full_page=True)
    assert_no_traceback(page)


def test_not_json_upload_gives_a_plain_message(page, app_url, tmp_path):
    junk = tmp_path / "junk.json"
    junk.write_text("<html>not a report</html>", encoding="utf-8")
    page.goto(app_url)
    page.get_by_role("tab", name="Validate").click()
    page.locator("#upload input[type=file]").set_input_files(str(junk))
    page.locator("#check-message").get_by_text("not valid JSON").wait_for()
    assert_no_traceback(page)


def test_leaderboard_leads_with_numbers_and_links_models(page, app_url, shots):
    page.set_viewport_size({"width": 1300, "height": 900})
    page.goto(app_url)
    board = page.locator("#leaderboard")
    # gradio keeps hidden copies of cells; only the visible ones count
    board.locator("text=depth score >> visible=true").first.wait_for()
    page.wait_for_timeout(500)
    page.screenshot(path=str(shots / "leaderboard-1300.png"), full_page=True)
    for header in ("model", "min k (coherent)", "baseline refusal (%)"):
        board.locator(f"text={header} >> visible=true").first.wait_for()
    link = board.locator("a:visible", has_text="alpha-lab/Alpha-7B-Instruct").first
    assert link.get_attribute("href") == "https://huggingface.co/alpha-lab/Alpha-7B-Instruct"
    board.locator("text=0.265 >> visible=true").first.wait_for()  # the card's digits
    assert "0.26472727" not in board.inner_text()
    assert_no_traceback(page)


def test_run_tab_shows_the_audits_own_stage_progress(page, app_url, shots):
    page.goto(app_url)
    page.get_by_role("tab", name="Run").click()
    page.get_by_role("button", name="Audit the calibration pair").click()
    # The progress text comes from the audit's JSON stage events: "stage 3/8 capture-child …"
    seen: set[str] = set()
    deadline_ms, waited = 240_000, 0
    while waited < deadline_ms:
        text = page.inner_text("body")
        seen.update(re.findall(r"stage \d/\d [a-z-]+", text))
        if "Done: opened" in text:
            break
        page.wait_for_timeout(250)
        waited += 250
    page.screenshot(path=str(shots / "run-done.png"), full_page=True)
    stages = {s.split()[-1] for s in seen}
    assert {"capture-base", "capture-child"} & stages, seen
    assert len(stages) >= 2, seen
    page.locator("#report-summary").get_by_text("Verdict").wait_for()
