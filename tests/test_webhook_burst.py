"""`depthcard serve` under bursts and slow clients, on loopback: every request of a burst is
answered; while 200 clients trickle a byte at a time, with the server's real worker count
and deadline, every health check is answered in under a second and the thread count stays
within the worker cap; a client that never goes silent is still cut off at its deadline; bad
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
from depthcard.bot.webhook import REQUEST_DEADLINE_S, SECRET_HEADER, WORKERS, make_server
from depthcard.schemas.bot_config import BotConfig
from tests.test_webhook import PAYLOAD, SECRET

BURST = 200


def _serve(tmp_path, **kw):
    state = tmp_path / "state.sqlite"
    cfg = BotConfig(organizations=["acme"], webhook={"host": "127.0.0.1", "port": 0})
    srv = make_server(cfg, SECRET, state, **kw)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    return srv, state


@pytest.fixture
def server(tmp_path):
    srv, state = _serve(tmp_path)  # the real worker count and deadline
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


def _timed_health_check(port: int) -> tuple[int, float]:
    start = time.monotonic()
    status = request(port, "GET")
    return status, time.monotonic() - start


def test_health_checks_are_answered_while_200_clients_trickle(server):
    srv, _ = server
    port = srv.server_address[1]
    before = threading.active_count()
    socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(BURST)]
    checks, peak = [], before
    trickle_until = time.monotonic() + 4  # well inside the deadline: all 200 keep trickling
    while time.monotonic() < trickle_until:
        for sock in socks:  # one byte each, every 0.25 s: never silent, never done
            sock.sendall(b"P" if not checks else b"x")
        checks.append(_timed_health_check(port))
        peak = max(peak, threading.active_count())
        time.sleep(0.25)
    for sock in socks:  # still connected: nobody was dropped for the health checks' sake
        sock.sendall(b"x")
        sock.close()
    assert len(checks) >= 8 and all(status == 200 for status, _ in checks)
    slowest = max(seconds for _, seconds in checks)
    assert slowest < 1.0, f"slowest health check {slowest:.2f}s"
    assert peak - before <= WORKERS


def test_a_client_that_never_goes_silent_is_cut_off_at_its_deadline(tmp_path):
    srv, _ = _serve(tmp_path, deadline=1.0)
    try:
        sock = socket.create_connection(("127.0.0.1", srv.server_address[1]), timeout=10)
        start = time.monotonic()
        sock.sendall(b"POST / HTTP/1.1\r\n")
        reply = b""
        while not reply and time.monotonic() - start < 5:
            try:
                sock.sendall(b"X")  # a byte every 0.1 s: no read ever times out
            except OSError:
                pass
            sock.settimeout(0.1)
            try:
                reply = sock.recv(100)
            except TimeoutError:
                pass
        sock.close()
        assert reply.startswith(b"HTTP/1.1 408")
        assert time.monotonic() - start < 1.0 + 1.0
    finally:
        srv.shutdown()
        srv.server_close()


def test_a_body_shorter_than_its_content_length_is_408_at_the_deadline(tmp_path):
    srv, _ = _serve(tmp_path, deadline=1.0)
    try:
        sock = socket.create_connection(("127.0.0.1", srv.server_address[1]), timeout=5)
        sock.sendall(f"POST / HTTP/1.1\r\n{SECRET_HEADER}: {SECRET}\r\n"
                     "Content-Length: 100\r\n\r\n{}".encode())  # fmt: skip
        assert sock.recv(100).startswith(b"HTTP/1.1 408")
        sock.close()
    finally:
        srv.shutdown()
        srv.server_close()


def test_a_body_cut_short_by_the_client_is_400_at_once(server, caplog):
    """The client sent fewer bytes than its Content-Length and shut its side: nothing more
    can come, so the answer is a 400 now, not a 408 at the deadline (or a 500)."""
    srv, state = server  # the real 10 s deadline
    sock = socket.create_connection(("127.0.0.1", srv.server_address[1]), timeout=5)
    start = time.monotonic()
    sock.sendall(f"POST / HTTP/1.1\r\n{SECRET_HEADER}: {SECRET}\r\n"
                 "Content-Length: 100\r\n\r\n{}".encode())  # fmt: skip
    sock.shutdown(socket.SHUT_WR)
    reply = sock.recv(200)
    sock.close()
    assert reply.startswith(b"HTTP/1.1 400"), reply
    assert b"shorter than its Content-Length" in reply
    assert time.monotonic() - start < 1.0
    assert "Traceback" not in caplog.text
    assert StateStore(state).inbox() == []


def test_the_defaults_are_the_ones_the_readme_states():
    assert (WORKERS, REQUEST_DEADLINE_S) == (32, 10.0)


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
