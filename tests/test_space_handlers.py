"""The Space's pure functions: store, leaderboard, report view, compare, upload checks."""

from __future__ import annotations

import json

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
def test_leaderboard_filters_by_org_size_and_verdict(store):
    choices = handlers.filter_choices(store)
    assert choices["org"][:1] == [handlers.ALL] and "alpha-lab" in choices["org"]
    alpha = handlers.leaderboard(store, org="alpha-lab")
    assert set(alpha["org"]) == {"alpha-lab"} and len(alpha) == 2
    big = handlers.leaderboard(store, size="≥ 30B")
    assert list(big["verdict"]) == ["identical-models"]
    measured = handlers.leaderboard(store, verdict="measured")
    assert len(measured) and set(measured["verdict"]) == {"measured"}
    assert handlers.leaderboard(store, org="nobody").empty


@pytest.mark.slow
def test_leaderboard_sorts_with_missing_values_last(store):
    up = handlers.leaderboard(store, sort_by="params (B)")
    assert list(up["params (B)"]) == sorted(up["params (B)"])
    down = handlers.leaderboard(store, sort_by="alignment depth score", descending=True)
    depth = down["alignment depth score"]
    assert depth.notna().iloc[0] and depth.isna().iloc[-1]
    # Sorted on the numbers, shown as the card writes them (beside the null where the report
    # has one): 0.265 above 0.223.
    first, second = depth.iloc[:2]
    assert first.startswith("0.265 (permutation null 0.132")
    assert second.startswith("not above null (0.223)")
    rho = handlers.leaderboard(store, sort_by="ρ_ε aligned")["ρ_ε aligned"]
    assert rho.iloc[1].startswith("0.007812 (rank 7 of d = 896); ρ_ε of M_DiD")
    assert rho.isna().iloc[-1]
    with pytest.raises(ValueError, match="cannot sort"):
        handlers.leaderboard(store, sort_by="nope")


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
    assert rv.report_link("https://s.hf.space/", "a/b/c") == "https://s.hf.space/?report=a/b/c"


@pytest.mark.slow
def test_session_reports_come_first_and_never_shadow_the_store(store):
    upload = rv.session_entry(make_report(), "upload", "/tmp/r.json")
    extra = {upload.id: upload}
    assert upload.id.startswith("upload/")
    assert rv.report_choices(store, extra)[0] == upload.id
    assert rv.find_entry(upload.id, store, extra) is upload


@pytest.mark.slow
def test_compare_overlays_two_reports_on_relative_depth(store):
    ids = [i for i in store.ids() if i.startswith("alpha-lab/")]
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
