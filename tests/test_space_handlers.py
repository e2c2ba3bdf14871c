"""The Space's pure functions: store, leaderboard, report view, compare, upload checks."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from depthcard.space import handlers, upload
from depthcard.space import report_view as rv
from depthcard.space.compare import METRICS
from depthcard.space.store import MAX_REPORT_BYTES, ReportEntry, ReportStore, report_id
from depthcard.space.upload import check_bytes, check_upload
from tests import space_support as support
from tests.report_factory import make_report


@pytest.fixture(scope="module")
def store() -> ReportStore:
    return support.store()


def entry(report) -> ReportEntry:
    return ReportEntry(id=report_id(report), report=report, source="mem")


@pytest.mark.slow
def test_store_reads_every_valid_report_and_records_the_broken_one(store):
    assert len(store.entries) == 5
    assert "local/instruct" in " ".join(store.ids())
    [(path, reason)] = store.skipped
    assert "broken" in str(path) and reason


@pytest.mark.slow
def test_leaderboard_leads_with_the_verdict_and_the_removal_cost(store):
    board = handlers.leaderboard(store)
    assert list(board.columns[:11]) == [
        "model", "verdict", "min k (coherent)", "KL at min k (nats)", "depth vs null",
        "baseline refusal (%)", "ρ_ε aligned", "l*", "analysis", "date", "report",
    ]  # fmt: skip
    assert len(board) == 5
    alpha = board[board["report"].str.contains("alpha-lab/Alpha-7B")].iloc[0]
    assert handlers.report_of_cell(alpha["report"]).startswith("alpha-lab/Alpha-7B-Instruct/")
    # the card's digits (0.153, 94.0 %, 0.0208), kept numbers where there is one
    assert alpha["depth vs null"] == 0.153 and alpha["depth score (raw)"] == 0.265
    assert alpha["baseline refusal (%)"] == 94.0 and alpha["KL at min k (nats)"] == 0.0208
    assert alpha["ρ_ε aligned"] == 0.007812 and isinstance(alpha["min k (coherent)"], int)
    assert alpha["model"] == (
        "[alpha-lab/Alpha-7B-Instruct](https://huggingface.co/alpha-lab/Alpha-7B-Instruct)"
    )
    assert alpha["params"] == "7B" and alpha["audit"] == "only audit"
    # newest audit first (the demo audit is written now, the factory reports in 2025)
    dates = list(board["date"])
    assert dates == sorted(dates, reverse=True)
    # no blank cell anywhere: a missing number is a reason in words
    assert all(v is not None and v != "" for v in board.to_numpy().ravel())
    demo = board[board["report"].str.contains("local/")].iloc[0]
    assert demo["depth vs null"] == "not above null"  # never the null-level number
    assert demo["min k (coherent)"] == "no ablation run"


def _ablated(reason: str):
    report = make_report(with_ablation=True)
    ablation = report.ablation.model_copy(
        update={"min_k": None, "kl_at_min_k": None, "min_k_reason": reason}
    )
    headline = report.headline.model_copy(
        update={"abliteration_min_k": None, "abliteration_kl": None}
    )
    return report.model_copy(update={"ablation": ablation, "headline": headline})


@pytest.mark.parametrize(
    "reason, min_k, kl",
    [("not reached", "not reached (k ≤ 8)", "no min k: not reached (k ≤ 8)"),
     ("refusal only goes away by breaking the model", "only by breaking (> 10 % broken)",
      "no min k: only by breaking (> 10 % broken)")],
)  # fmt: skip
def test_blank_min_k_and_kl_cells_say_which_reason(reason, min_k, kl):
    row = handlers.leaderboard_row(ReportEntry("acme/x/1", _ablated(reason), Path("r.json")))
    assert row["min k (coherent)"] == min_k and row["KL at min k (nats)"] == kl


def test_two_settings_of_one_revision_are_two_labelled_rows():
    first = make_report(created_at="2025-03-14T09:00:00Z")
    second = make_report(created_at="2025-04-01T09:00:00Z", config={"max_prompts": 64})
    store = ReportStore()
    store.add(ReportEntry(report_id(first), first, Path("a/report.json")))
    store.add(ReportEntry(report_id(second), second, Path("b/report.json")))
    board = handlers.leaderboard(store)
    assert len(board) == 2
    assert list(board["audit"]) == [
        "latest of 2 settings: max_prompts 64",
        "earlier of 2 settings: max_prompts 128",
    ]
    ids = [handlers.report_of_cell(c) for c in board["report"]]
    assert ids[0] == report_id(second) and ids[1].startswith(report_id(first) + "@")
    # the same setting again replaces, it does not add a row
    store.add(ReportEntry(report_id(second), second, Path("c/report.json")))
    assert len(handlers.leaderboard(store)) == 2


def test_params_read_as_model_pages_write_them():
    from depthcard.report.leaderboard import params_text

    assert [params_text(n) for n in (345_000, 1_200_000_000, 7_000_000_000, 135_000_000)] == [
        "345K", "1.2B", "7B", "135M",
    ]  # fmt: skip


def test_a_local_or_odd_model_name_is_escaped_text_not_a_link():
    report = make_report(models={"child": {"repo_id": "gamma/<b>Gamma</b>|x"}})
    cell = handlers.model_link(report.models.child)
    assert "](" not in cell and "<b>" not in cell
    local = make_report(
        models={
            "child": {
                "source": "local",
                "path": "/srv/audits/my-model",
                "repo_id": None,
                "revision": None,
                "content_sha256": "a" * 64,
            }
        }
    )
    assert handlers.model_link(local.models.child) == "my-model (local)"


def test_the_store_reads_its_source_again_only_when_stale(tmp_path):
    from depthcard.space.store import load_store, refresh

    root = tmp_path / "reports"
    first = make_report(models={"child": {"repo_id": "a/One"}})
    (root / "a").mkdir(parents=True)
    (root / "a" / "report.json").write_text(first.model_dump_json(), encoding="utf-8")
    store = load_store(root)
    assert len(store.entries) == 1
    second = make_report(models={"child": {"repo_id": "b/Two"}})
    (root / "b").mkdir()
    (root / "b" / "report.json").write_text(second.model_dump_json(), encoding="utf-8")
    assert not refresh(store, max_age=3600) and len(store.entries) == 1
    assert refresh(store, max_age=0) and len(store.entries) == 2
    assert store.version == 1  # a page showing version 0 redraws; others are left alone


def test_report_view_of_a_full_factory_report_has_every_plot():
    report = make_report(with_ablation=True, with_depth=True, with_modes=True)
    view = rv.report_view(entry(report), report_url="https://x.hf.space/?report=a")
    assert view.found and view.heatmap is not None
    drawn = {k for k, f in view.frames.items() if not f.empty}
    assert drawn == set(rv.PLOT_KEYS) - {"erosion"}
    assert "ρ_ε aligned" in list(view.headline["quantity"])
    assert view.headline["meaning"].str.len().min() > 20
    assert view.reproduce.startswith("depthcard audit ")
    assert "https://x.hf.space/?report=a" in view.card
    assert "erosion" in view.plots_note


@pytest.mark.slow
def test_report_view_of_the_real_demo_audit():
    view = rv.report_view(entry(support.demo_report()))
    assert view.found
    for key in ("rank", "recovery", "projection"):
        assert not view.frames[key].empty, key
    # Without ablation the plot is absent and the note gives the report's own reason.
    assert view.frames["ablation_refusal"].empty
    assert "ablation refusal" in view.plots_note
    assert "sha256" in view.provenance and "harmful-core" in view.provenance


def test_three_model_view_draws_erosion_and_child_only_has_no_projection():
    three = rv.report_view(entry(make_report(kind="three-model", with_erosion=True)))
    assert not three.frames["erosion"].empty
    assert set(three.frames["projection"]["series"]) == {"base", "child", "third"}
    child_only = rv.report_view(entry(make_report(kind="child-only")))
    assert child_only.frames["projection"].empty
    assert "child contrast" in " ".join(child_only.frames["rank"]["series"])


@pytest.mark.slow
def test_free_text_is_escaped_in_markdown(store):
    report = make_report(
        models={"child": {"repo_id": "evil/<script>x</script>"}},
        warnings=["<img src=x onerror=alert(1)> | pipe"],
        verdict={"text": "**bold** <b>"},
    )
    view = rv.report_view(entry(report))
    assert "<script>" not in view.summary and "&lt;script&gt;" in view.summary
    assert "<img" not in view.notes and "\\|" in view.notes
    assert "<b>" not in view.summary


@pytest.mark.slow
def test_open_report_by_deep_link_id_and_unknown_ids(store):
    demo_id = next(i for i in store.ids() if i.startswith("local/"))
    assert rv.open_report(demo_id, store).found
    assert rv.open_report(f"/{demo_id}/", store).found
    missing = rv.open_report("no/such/<b>", store)
    assert not missing.found and "&lt;b&gt;" in missing.summary
    assert rv.open_report(None, store).summary == rv.NO_REPORT
    local = store.get(demo_id)
    assert rv.report_link("https://s.hf.space/", local) == f"https://s.hf.space/?report={demo_id}"
    hub = next(store.get(i) for i in store.ids() if i.startswith("alpha-lab/Alpha-7B"))
    link = rv.report_link("https://s.hf.space/", hub)
    assert link == "https://s.hf.space/?model=alpha-lab/Alpha-7B-Instruct"
    assert rv.report_link(None, hub) is None


@pytest.mark.slow
def test_session_reports_come_first_and_never_shadow_the_store(store):
    upload = rv.session_entry(make_report(), "upload", "/tmp/r.json")
    extra = {upload.id: upload}
    assert upload.id.startswith("upload/")
    assert rv.report_choices(store, extra)[0] == upload.id
    assert rv.find_entry(upload.id, store, extra) is upload


@pytest.mark.slow
def test_compare_overlays_two_reports_on_relative_depth(store):
    # the 7B pair and the three-model audit (listed under its fine-tune, whose card links it)
    ids = [i for i in store.ids() if i.startswith(("alpha-lab/", "example-org/"))]
    frame, note = rv.compare_view(ids, "refusal-direction recovery |cos|", True, store)
    assert set(frame["report"]) == set(ids)
    assert frame["x"].between(0, 1).all()
    assert note == ""
    frame, note = rv.compare_view(ids, "depth score", False, store)
    assert "No data" in note
    empty, note = rv.compare_view(ids[:1], next(iter(METRICS)), False, store)
    assert empty.empty and "two or more" in note


def test_upload_of_a_valid_report_renders(tmp_path):
    path = tmp_path / "report.json"
    path.write_text(make_report().model_dump_json(), encoding="utf-8")
    check = check_upload(str(path))
    assert check.ok and check.report is not None
    assert handlers.check_markdown(check).startswith("✓")
    assert handlers.error_table(check).empty


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "empty"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "top level is list"),
        (b"[" * 100_000, "nested too deeply"),
    ],
)
def test_malformed_uploads_give_a_message(data, expected):
    check = check_bytes(data)
    assert not check.ok and expected in check.message


def test_wrong_schema_version_and_nan_are_located_by_field_path():
    data = make_report().model_dump(mode="json")
    data["schema_version"] = "0.3"
    check = check_bytes(json.dumps(data).encode())
    assert 'schema_version "0.3" is not supported' in check.message
    assert [e.path for e in check.errors] == ["schema_version"]
    nan = check_bytes(support.nan_report_bytes())
    paths = {e.path for e in nan.errors}
    assert {"layers[2].norm_ratio", "headline.rho_eps_aligned"} <= paths
    table = handlers.error_table(nan)
    assert list(table.columns) == handlers.ERROR_COLUMNS and len(table) == len(nan.errors)
    assert "NaN" in " ".join(table["value"])


def test_a_50_mb_upload_is_refused_before_it_is_read(tmp_path):
    big = tmp_path / "big.json"
    with big.open("wb") as f:
        f.truncate(50 * 1024 * 1024)
    check = check_upload(str(big))
    assert not check.ok and "over this Space's" in check.message
    assert f"{MAX_REPORT_BYTES:,}" in check.message
    assert not check_upload(None).ok and not check_upload(str(tmp_path / "gone")).ok


def test_a_large_invalid_upload_encodes_only_the_errors_it_shows(monkeypatch):
    # 200 layers with every number a string: thousands of errors, 200 shown.
    data = make_report().model_dump(mode="json")
    bad = {k: ("x" if type(v) in (int, float) else v) for k, v in data["layers"][0].items()}
    data["layers"] = [bad] * 400
    encoded = []
    real_short = upload._short
    monkeypatch.setattr(upload, "_short", lambda v: encoded.append(1) or real_short(v))
    check = check_bytes(json.dumps(data).encode())
    assert check.total_errors > upload.MAX_ERRORS_SHOWN == len(check.errors)
    assert len(encoded) <= upload.MAX_ERRORS_SHOWN
    assert f"{check.total_errors} error(s)" in check.message
    assert f"Showing the first {upload.MAX_ERRORS_SHOWN} of {check.total_errors}" in (
        handlers.check_markdown(check)
    )
    assert all(e.value == '"x"' for e in check.errors if e.path.startswith("layers["))


def test_a_huge_value_is_cut_without_encoding_all_of_it():
    assert len(upload._short(list(range(10**6)))) == upload.MAX_VALUE_CHARS


def test_headline_table_is_a_frame_with_units():
    table = handlers.headline_table(make_report(with_ablation=True))
    assert isinstance(table, pd.DataFrame)
    assert "abliteration min k" in list(table["quantity"])


def test_a_three_model_report_is_found_where_the_fine_tunes_card_links():
    from depthcard.bot.publish import card_model, report_url
    from depthcard.space.store import report_id

    report = make_report(kind="three-model", with_erosion=True)
    model = card_model(report)
    link = report_url("https://x.hf.space/", model.repo_id, model.revision)
    assert link.endswith(f"?report={report_id(report)}")


def test_the_abliteration_plot_is_the_judged_shares_with_the_threshold():
    from depthcard.space import series

    report = make_report(with_ablation=True)
    frame = series.ablation_shares_frame(report)
    assert set(frame.columns) == {"k", "share", "series"}  # no log-odds score in it
    attack = {p.k: p for p in report.ablation.curve if p.basis == "attack"}
    for word, field in (("refusal", "refusal_rate"), ("compliance", "compliance_share"),
                        ("broken", "broken_share")):  # fmt: skip
        line = frame[frame["series"] == word].set_index("k")["share"]
        assert line.to_dict() == {k: getattr(p, field) for k, p in attack.items()}, word
    threshold = frame[frame["series"] == "threshold 10 %"]
    assert set(threshold["share"]) == {0.1} and list(threshold["k"]) == sorted(attack)
    # a k the judge did not read is not drawn
    unjudged = [p.model_copy(update={"refusal_rate": None}) if p.k == 5 else p
                for p in report.ablation.curve]  # fmt: skip
    ablation = report.ablation.model_copy(update={"curve": unjudged})
    frame = series.ablation_shares_frame(report.model_copy(update={"ablation": ablation}))
    assert 5 not in set(frame["k"])
