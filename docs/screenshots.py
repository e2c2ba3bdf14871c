"""The Space's screenshots in docs/img/, taken from the code as it is.

Run: `python docs/screenshots.py [--out docs/img]` (needs the test extra and Debian's
chromium at /usr/bin/chromium, or DEPTHCARD_CHROMIUM).

Launches the real Gradio app on loopback over the test fixtures (`tests/space_support`: the
synthetic factory reports and a real audit of the bundled calibration pair), opens it in
headless chromium at 1300 px and saves:

- `space-leaderboard.png`: the Leaderboard tab;
- `space-report.png`: the report view of the factory's Alpha-7B report (the one with an
  ablation section, so the judged-answers plot is drawn), from its heading down.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WIDTH = 1300
REPORT = "alpha-lab/Alpha-7B-Instruct"


def take(out: Path) -> list[Path]:
    """Launch the app, take both screenshots into `out`; returns their paths."""
    sys.path.insert(0, str(ROOT))
    from playwright.sync_api import sync_playwright

    from tests import space_support as support

    demo, url = support.launch_app()
    out.mkdir(parents=True, exist_ok=True)
    board_png, report_png = out / "space-leaderboard.png", out / "space-report.png"
    chromium = os.environ.get("DEPTHCARD_CHROMIUM", "/usr/bin/chromium")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=support.CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": WIDTH, "height": 900})
            page.set_default_timeout(60_000)
            page.goto(url)
            page.locator("#leaderboard").locator("text=verdict >> visible=true").first.wait_for()
            page.wait_for_timeout(1000)
            page.screenshot(path=str(board_png))
            report_id = next(i for i in support.store().ids() if i.startswith(REPORT))
            page.goto(f"{url}/?report={report_id}")
            page.locator("#report-summary").get_by_text("Verdict").wait_for()
            page.locator("#plot-ablation-refusal svg").first.wait_for()
            page.wait_for_timeout(1500)  # the plots' transitions
            top = page.locator("#report-summary").bounding_box()["y"]
            clip = {"x": 0, "y": max(0.0, top - 16), "width": WIDTH, "height": 2300}
            page.screenshot(path=str(report_png), full_page=True, clip=clip)
            browser.close()
    finally:
        demo.close()
    return [board_png, report_png]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args(argv)
    for path in take(args.out):
        print(path)


if __name__ == "__main__":
    main()
