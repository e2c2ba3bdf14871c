"""The Space through its HTTP API: gradio_client against an app launched on loopback."""

from __future__ import annotations

import pytest

from depthcard.space.store import MAX_REPORT_BYTES
from tests import space_support as support
from tests.report_factory import make_report

pytestmark = pytest.mark.slow

SPACE_URL = "https://example-depthcard.hf.space"


@pytest.fixture(scope="module")
def client():
    from gradio_client import Client

    demo, url = support.launch_app(space_url=SPACE_URL)
    try:
        yield Client(url, verbose=False, download_files=False)
    finally:
        demo.close()


@pytest.fixture(scope="module")
def ids() -> list[str]:
    return support.store().ids()


def test_leaderboard_endpoint_leads_with_the_verdict_and_links_models(client):
    rows = client.predict(api_name="/board")
    assert list(rows[0])[:3] == ["model", "verdict", "min k (coherent)"]
    alpha = next(r for r in rows if "alpha-lab/Alpha-7B" in r["report"])
    assert alpha["model"].startswith("[alpha-lab/Alpha-7B-Instruct](https://huggingface.co/")
    assert alpha["depth score (raw)"] == 0.265  # a number with the card's digits


def test_the_board_uses_gradios_own_search_sort_and_pinned_column():
    from depthcard.space.app import build_app

    demo = build_app(support.store(), refresh_seconds=60)
    board = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "leaderboard")
    assert board.show_search == "filter" and board.pinned_columns == 1
    assert board.datatype[0] == "markdown" and len(board.column_widths) == len(board.datatype)
    timers = [b for b in demo.blocks.values() if type(b).__name__ == "Timer"]
    assert [t.value for t in timers] == [60] and timers[0].active


def test_open_report_returns_the_headline_and_plot_data(client, ids):
    demo_id = next(i for i in ids if i.startswith("local/"))
    out = client.predict(demo_id, api_name="/open_report")
    summary, headline, rank_plot = out[0], out[1], out[2]
    assert "Verdict" in summary
    assert headline["value"]["headers"][:2] == ["quantity", "value"]
    assert rank_plot["visible"] and rank_plot["value"]["data"]
    card = out[-1]
    assert f"{SPACE_URL}/?report={demo_id}" in card


def test_every_plot_gets_its_own_data(client, ids):
    from depthcard.space.report_view import PLOT_KEYS, PLOTS

    full = next(i for i in ids if i.startswith("alpha-lab/Alpha-7B"))
    plots = client.predict(full, api_name="/open_report")[2 : 2 + len(PLOT_KEYS)]
    for key, plot in zip(PLOT_KEYS, plots, strict=True):
        x, y = PLOTS[key].x, PLOTS[key].y
        if plot["visible"]:
            assert {x, y} <= set(plot["value"]["columns"]), key
            # the whole-number x axis arrives as ordered text categories: integer ticks only
            assert plot["value"]["datatypes"][x] == "nominal", key
            assert plot["sort"] == sorted(plot["sort"], key=int), key
    assert sum(p["visible"] for p in plots) == len(PLOT_KEYS) - 1  # all but erosion
    shares = plots[PLOT_KEYS.index("ablation_refusal")]["value"]
    series = {row[shares["columns"].index("series")] for row in shares["data"]}
    assert series == {"refusal", "compliance", "broken", "svd refusal", "threshold 10 %"}


def test_unknown_report_is_a_message_not_an_error(client):
    out = client.predict("nobody/none/0", api_name="/open_report")
    assert "No report" in out[0]


def test_compare_endpoint_overlays_reports(client, ids):
    # the 7B pair and the three-model audit (listed under its fine-tune's repo)
    alpha = [i for i in ids if i.startswith(("alpha-lab/", "example-org/"))]
    plot, note = client.predict(
        alpha, "refusal-direction recovery |cos|", True, api_name="/compare"
    )
    assert {row[-1] for row in plot["value"]["data"]} == set(alpha)


def _validate(client, path):
    from gradio_client import handle_file

    return client.predict(handle_file(str(path)), api_name="/validate")


def test_validate_locates_nan_errors(client, tmp_path):
    path = tmp_path / "nan.json"
    path.write_bytes(support.nan_report_bytes())
    message, errors, *_ = _validate(client, path)
    assert message.startswith("✗")
    paths = [row[0] for row in errors["value"]["data"]]
    assert "layers[2].norm_ratio" in paths and "headline.rho_eps_aligned" in paths


def test_validate_reports_not_json_and_wrong_version(client, tmp_path):
    junk = tmp_path / "junk.json"
    junk.write_text("this is not json", encoding="utf-8")
    assert "not valid JSON" in _validate(client, junk)[0]
    old = tmp_path / "old.json"
    text = make_report().model_dump_json()
    current = f'"schema_version":"{make_report().schema_version}"'
    assert current in text
    old.write_text(text.replace(current, '"schema_version":"0.9"', 1), "utf-8")
    assert "is not supported" in _validate(client, old)[0]


def test_validate_refuses_a_50_mb_file_with_a_message(client, tmp_path):
    big = tmp_path / "big.json"
    with big.open("wb") as f:
        f.truncate(50 * 1024 * 1024)
    message = _validate(client, big)[0]
    assert "over this Space's" in message and f"{MAX_REPORT_BYTES:,}" in message


def test_a_valid_upload_renders_its_card_and_joins_the_session(client, tmp_path):
    path = tmp_path / "report.json"
    path.write_text(make_report().model_dump_json(), encoding="utf-8")
    out = _validate(client, path)
    message, card, picker = out[0], out[2], out[-2]
    assert message.startswith("✓") and "depthcard:start" in card
    assert any(c[0].startswith("upload/") for c in picker["choices"])


def test_live_run_audits_the_calibration_pair_and_opens_it(client):
    out = client.predict(api_name="/live_run")
    status, picker, summary = out[0], out[1], out[2]
    assert status.startswith("Done: opened `live/local/instruct/")
    assert picker["value"].startswith("live/") and "Verdict" in summary


def test_answers_behind_a_curve_point_come_from_samples_jsonl(client, ids):
    full = next(i for i in ids if i.startswith("alpha-lab/Alpha-7B"))
    table = client.predict(full, "attack k=1", api_name="/answers")
    assert table["headers"] == ["prompt", "answer", "class", "evidence"]
    assert [row[2] for row in table["data"]] == ["refusal", "compliance"]
    assert "I cannot" in table["data"][0][3]
    # a report folder without samples.jsonl has no answers to show
    other = next(i for i in ids if i.startswith("local/"))
    assert client.predict(other, "attack k=1", api_name="/answers")["data"] == []
