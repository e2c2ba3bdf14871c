"""Validate costs little whatever is uploaded: an upload with more items than any report
has is refused by a one-pass shape check before the schema sees it (4 MB of empty objects in
`layers` would make pydantic build millions of errors), a full 128-layer report still
validates, and every upload is deleted from gradio's cache once it has been read."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from gradio_client import Client, handle_file

from depthcard.space import app
from depthcard.space.upload import MAX_LIST_ITEMS, MAX_VALUES, check_bytes
from tests import space_support as support
from tests.report_factory import make_report


def _report(**kw) -> dict:
    return make_report(with_ablation=True, with_depth=True).model_dump(mode="json") | kw


def test_four_megabytes_of_empty_layers_are_refused_in_well_under_a_second():
    raw = json.dumps(_report(layers=[{}] * 1_400_000)).encode()
    assert len(raw) > 4_000_000
    start = time.perf_counter()
    check = check_bytes(raw)
    assert time.perf_counter() - start < 1.0
    assert not check.ok and check.total_errors == 0
    assert "the list layers holds 1,400,000 items" in check.message


def test_many_small_lists_are_refused_by_their_total():
    layer = {"ranks": {"naive": {"uncentered": [{}] * 16}}}
    check = check_bytes(json.dumps(_report(layers=[layer] * (MAX_VALUES // 19))).encode())
    assert not check.ok and "the file holds" in check.message
    check = check_bytes(json.dumps(_report(layers=[{}] * (MAX_LIST_ITEMS + 1))).encode())
    assert not check.ok and f"{MAX_LIST_ITEMS + 1:,} items" in check.message


def test_a_full_report_of_a_128_layer_model_is_within_the_limits():
    big = make_report(num_layers=128, with_ablation=True, with_depth=True, with_modes=True,
                      with_fragility=True, with_erosion=True, kind="three-model")  # fmt: skip
    assert check_bytes(big.model_dump_json().encode()).ok


@pytest.mark.slow
def test_an_upload_is_gone_from_gradios_cache_once_validated(tmp_path, monkeypatch):
    seen: list[str] = []
    real = app.check_upload
    monkeypatch.setattr(app, "check_upload", lambda path: seen.append(path) or real(path))
    demo = app.configure_queue(app.build_app(support.store()))
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=support.free_port(),
                            prevent_thread_lock=True, quiet=True, ssr_mode=False)  # fmt: skip
    try:
        client = Client(url, verbose=False)
        for i, content in enumerate(("{}", json.dumps(_report()))):
            upload = tmp_path / f"report{i}.json"
            upload.write_text(content)
            client.predict(handle_file(str(upload)), api_name="/validate")
    finally:
        demo.close()
    assert len(seen) == 2
    assert not any(Path(p).exists() for p in seen)
