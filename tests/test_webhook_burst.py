"""`depthcard serve` under bursts and slow clients, on loopback: every request of a burst is
answered, slow clients cannot grow the thread count past the worker cap, and bad
Content-Length or deeply nested JSON is a 400, not a 500."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from depthcard.bot.state import StateStore
from depthcard.bot.webhook import SECRET_HEADER, make_server
from depthcard.schemas.bot_config import BotConfig
from tests.test_webhook import PAYLOAD, SECRET

BURST = 200
WORKERS = 8


@pytest.fixture
def server(tmp_path):
    state = tmp_path / "state.sqlite"
    cfg = BotConfig(organizations=["acme"], webhook={"host": "127.0.0.1", "port": 0})
    srv = make_server(cfg, SECRET, state, workers=WORKERS, read_timeout=1.0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv, state
    srv.shutdown()
    srv.server_close()


def request(port: int, method: str, body: bytes | None = None, headers=None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, "/" if method == "POST" else "/healthz", body=body,
                     headers=headers or {})  # fmt: skip
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def test_a_burst_of_posts_and_health_checks_is_all_answered(server):
    srv, state = server
    port = srv.server_address[1]
    posts = [dict(PAYLOAD, repo=dict(PAYLOAD["repo"], name=f"acme/m{i}")) for i in range(BURST)]
    with ThreadPoolExecutor(2 * BURST) as pool:
        futures = [pool.submit(request, port, "POST", json.dumps(p).encode(),
                               {SECRET_HEADER: SECRET}) for p in posts]  # fmt: skip
        futures += [pool.submit(request, port, "GET") for _ in range(BURST)]
        statuses = [f.result(timeout=120) for f in futures]
    assert statuses.count(202) == BURST and statuses.count(200) == BURST
    assert len(StateStore(state).inbox()) == BURST


def test_slow_clients_do_not_grow_the_thread_count(server):
    srv, _ = server
    port = srv.server_address[1]
    before = threading.active_count()
    socks = []
    for _ in range(BURST):  # each sends half a request line, then nothing
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(b"POST / HTTP/1.1\r\n")
        socks.append(sock)
    peak = before
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        peak = max(peak, threading.active_count())
        time.sleep(0.02)
    for sock in socks:
        sock.close()
    assert peak - before <= WORKERS
    assert request(port, "GET") == 200  # the slow ones were dropped; the server still answers


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b"{}", {"Content-Length": "1e3"}),
        (b"{}", {"Content-Length": "\u00b2"}),
        (b"[" * 100_000 + b"]" * 100_000, {}),
        (b'{"event": ' * 5000 + b"1" + b"}" * 5000, {}),
    ],
    ids=["float length", "superscript length", "nested lists", "nested objects"],
)
def test_bad_length_and_deep_nesting_are_400(server, body, headers):
    srv, _ = server
    conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=10)
    conn.putrequest("POST", "/")
    conn.putheader(SECRET_HEADER, SECRET)
    length = headers.get("Content-Length", str(len(body)))
    conn.putheader("Content-Length", length.encode("utf-8"))
    conn.endheaders()
    conn.send(body)
    status = conn.getresponse().status
    conn.close()
    assert status == 400


def test_the_secret_is_checked_before_the_body_is_read(server):
    srv, _ = server
    sock = socket.create_connection(("127.0.0.1", srv.server_address[1]), timeout=10)
    sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
    reply = sock.recv(100)  # answered without sending a byte of the promised body
    sock.close()
    assert reply.startswith(b"HTTP/1.1 401")
