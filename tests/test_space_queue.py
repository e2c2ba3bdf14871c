"""The Space stays usable while its Run tab is flooded: with the Space's own queue settings
(`app.configure_queue`), 20 visitors pressing Run at once (one audit runs, the rest are told
it is busy) leave Compare and Validate answering for everyone else. Real gradio, real HTTP,
through gradio_client."""

from __future__ import annotations

import sys
import time

import pytest
from gradio_client import Client, handle_file

from depthcard.space import app, live_run
from tests import space_support as support

pytestmark = pytest.mark.slow
FLOOD = 20


@pytest.fixture
def app_url(monkeypatch):
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    monkeypatch.setattr(live_run, "audit_command", lambda *a, **k: sleeper)
    monkeypatch.setattr(live_run, "SLOT_WAIT_S", 0.5)
    demo = app.configure_queue(app.build_app(support.store()))
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=support.free_port(),
                            prevent_thread_lock=True, quiet=True, ssr_mode=False)  # fmt: skip
    try:
        yield url
    finally:
        demo.close()
        # the run that held the slot was cancelled: wait for it to let go (other tests run here)
        assert live_run._SLOT.acquire(timeout=20)
        live_run._SLOT.release()


def test_a_flood_of_runs_leaves_compare_and_validate_usable(app_url, tmp_path):
    runners = [Client(app_url, verbose=False) for _ in range(FLOOD)]
    jobs = [c.submit(api_name="/live_run") for c in runners]
    time.sleep(2)  # every run event has been pushed and has started or been refused
    visitor = Client(app_url, verbose=False)
    start = time.monotonic()
    ids = support.store().ids()[:2]
    visitor.predict(ids, api_name="/compare")
    bad = tmp_path / "report.json"
    bad.write_text("{}")
    visitor.predict(handle_file(str(bad)), api_name="/validate")
    assert time.monotonic() - start < 30
    refused = 0
    for job in jobs:
        try:
            job.result(timeout=1)
        except Exception as exc:  # noqa: BLE001 - the busy runs end in gr.Error
            refused += "running" in str(exc) or "try again" in str(exc)
    assert refused >= FLOOD - 1
    for job in jobs:
        job.cancel()
