"""The Space in a real browser: Debian's chromium, headless, driven by playwright.

Loads the leaderboard at 1300 px (key columns in view, a reason in every blank cell), opens
the real demo report from its row, checks that the plots drew, that the headline table shows
its last row without an inner scroll box and that the abliteration plot draws the judged
shares with integer k ticks, follows a `?report=` deep link, uploads a malformed report and
reads the located errors, and runs a live audit whose progress is drawn once. Screenshots go
to a temporary folder (printed); `docs/screenshots.py` takes the ones in docs/img/.

The test fails, never skips, when chromium or playwright is missing: CI must run it. Set-up:
`apt-get install -y chromium` and `pip install playwright` (no `playwright install`: the
browser is Debian's).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import pytest

from tests import space_support as support

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = os.environ.get("DEPTHCARD_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = support.CHROMIUM_ARGS

WIDTH = 1300  # the page width the Space is checked at
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
    context = browser.new_context(viewport={"width": WIDTH, "height": 1000})
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


def alpha_id() -> str:
    return next(i for i in support.store().ids() if i.startswith("alpha-lab/Alpha-7B"))


def test_leaderboard_row_opens_the_report_with_plots(page, app_url, shots):
    page.goto(app_url)
    board = page.locator("#leaderboard")
    # the demo audit's model cell; gradio keeps hidden copies of cells
    board.locator("text=instruct (local) >> visible=true").first.click()
    page.locator("#report-summary").get_by_text("Verdict").wait_for()
    wait_for_plots(page, ("rank", "recovery", "projection"))
    assert page.locator("#headline").get_by_text("ρ_ε aligned").count() >= 1
    assert demo_id() in page.locator("#report-summary").inner_text()
    page.wait_for_timeout(500)  # let the plots finish their transitions
    page.screenshot(path=str(shots / "report-full.png"), full_page=True)
    assert_no_traceback(page)


# Elements inside `selector` that scroll their content: taller content than box, clipped.
SCROLL_BOXES = """(selector) => [...document.querySelector(selector).querySelectorAll('*')]
  .filter(e => e.getClientRects().length && e.clientHeight > 0
          && e.scrollHeight > e.clientHeight + 1
          && ['auto', 'scroll', 'hidden'].includes(getComputedStyle(e).overflowY))
  .map(e => `${e.tagName}.${e.className} ${e.scrollHeight}/${e.clientHeight}`)"""


def test_every_headline_row_shows_without_an_inner_scroll_box(page, app_url):
    page.goto(f"{app_url}/?report={alpha_id()}")
    headline = page.locator("#headline")
    last = headline.locator(".virtual-row[role=row]:visible").last
    last.get_by_text("judge", exact=True).wait_for()  # the last row of a pair with an ablation
    assert page.evaluate(SCROLL_BOXES, "#headline") == []
    box, row = headline.bounding_box(), last.bounding_box()
    assert row["y"] + row["height"] <= box["y"] + box["height"] + 1
    assert headline.get_by_text("abliteration min k").first.is_visible()


def svg_texts(page, key: str, role: str) -> list[str]:
    """The texts of one Vega role (legend-label, axis-label, axis-title) in a drawn plot."""
    plot = page.locator(f"#plot-{key}")
    plot.locator("svg").first.wait_for()
    return plot.locator(f"g.role-{role} text").all_text_contents()


def test_the_abliteration_plot_draws_judged_shares_on_integer_k(page, app_url):
    page.goto(f"{app_url}/?report={alpha_id()}")
    page.locator("#report-summary").get_by_text("Verdict").wait_for()
    wait_for_plots(page, ("ablation-refusal", "ablation-kl", "rank"))
    legend = svg_texts(page, "ablation-refusal", "legend-label")
    assert legend == ["refusal", "compliance", "broken", "svd refusal", "threshold 10 %"]
    titles = svg_texts(page, "ablation-refusal", "axis-title")
    assert "share of answers (0–1)" in titles and not any("log-odds" in t for t in titles)
    k_axis = page.locator("#plot-ablation-refusal g.role-axis[aria-label^='X-axis']").first
    assert "discrete scale with 9 values: 0, 1, 2" in k_axis.get_attribute("aria-label")
    for key in ("ablation-refusal", "ablation-kl", "rank", "recovery", "depth"):
        x_axis = page.locator(f"#plot-{key} g.role-axis[aria-label^='X-axis']").first
        label = x_axis.get_attribute("aria-label")
        assert "discrete scale" in label and "." not in label.split(":", 1)[1], (key, label)
    # every legend label is whole: none is cut with an ellipsis
    for key in ("rank", "ablation-refusal", "depth"):
        assert not any(t.endswith("…") for t in svg_texts(page, key, "legend-label")), key


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


def test_leaderboard_key_columns_fit_1300_px_and_blank_cells_say_why(page, app_url, shots):
    page.goto(app_url)
    board = page.locator("#leaderboard")
    # gradio keeps hidden copies of cells; only the visible ones count
    board.locator("text=verdict >> visible=true").first.wait_for()
    page.wait_for_timeout(500)
    page.screenshot(path=str(shots / "leaderboard-1300.png"), full_page=True)
    for header in ("model", "verdict", "min k (coherent)", "l*", "analysis", "date", "report"):
        cell = board.locator("thead th:visible", has_text=header).first
        box = cell.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= WIDTH, header
    link = board.locator("a:visible", has_text="alpha-lab/Alpha-7B-Instruct").first
    assert link.get_attribute("href") == "https://huggingface.co/alpha-lab/Alpha-7B-Instruct"
    board.locator("text=0.153 >> visible=true").first.wait_for()  # the card's digits
    assert "0.26472727" not in board.inner_text()
    # the reasons, where there is no number
    for reason in ("no ablation run", "not above null", "child-only: no base", "only audit"):
        assert board.locator(f"text={reason} >> visible=true").count() >= 1, reason
    report_links = board.locator("a:visible", has_text="open")
    assert report_links.count() == 5
    right = report_links.first.bounding_box()
    assert right["x"] + right["width"] <= WIDTH
    assert_no_traceback(page)


def test_run_tab_shows_the_audits_own_stage_progress(page, app_url, shots):
    page.goto(app_url)
    page.get_by_role("tab", name="Run").click()
    page.get_by_role("button", name="Audit the calibration pair").click()
    # The progress text comes from the audit's JSON stage events: "stage 3/8 capture-child …"
    seen: set[str] = set()
    most_at_once = 0  # the progress text is drawn once: never beside a copy of itself
    deadline_ms, waited = 240_000, 0
    while waited < deadline_ms:
        text = page.inner_text("body")
        found = re.findall(r"stage \d/\d [a-z-]+", text)
        seen.update(found)
        most_at_once = max(most_at_once, len(found))
        if "Done: opened" in text:
            break
        page.wait_for_timeout(250)
        waited += 250
    page.screenshot(path=str(shots / "run-done.png"), full_page=True)
    stages = {s.split()[-1] for s in seen}
    assert {"capture-base", "capture-child"} & stages, seen
    assert len(stages) >= 2, seen
    assert most_at_once == 1, "the progress text is drawn more than once"
    page.locator("#report-summary").get_by_text("Verdict").wait_for()
