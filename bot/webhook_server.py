"""The webhook's HTTP server: one thread reads every request whole, workers only answer.

A thread-per-connection server hands its threads to whoever connects: 32 clients that send a
byte every few seconds hold 32 workers and the health check waits behind them (slowloris). So
reading is not a worker's job here. One selector thread accepts connections and reads them
without blocking, each under a deadline for the whole request (`deadline` seconds from
accept to the last byte it waits for, however the bytes trickle in). Only a complete request
goes to the worker pool, whose handler reads it from memory and answers at once; a request
that misses its deadline gets 408, and one whose client shuts its side before the body its
Content-Length announced is whole gets 400 at once. The accept loop never waits for a
worker: a full pool only queues complete requests, which each take milliseconds.

What "complete" means is the handler's call (`body_wanted`): the headers, plus the body only
when the handler will read it (a POST with the right secret and an acceptable length), so a
stranger's 401 still comes before any body is read. At most `max_open` connections are read
at once; more are closed on accept. Every answer closes its connection.
"""

from __future__ import annotations

import io
import logging
import selectors
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.message import Message
from http.client import parse_headers

log = logging.getLogger(__name__)
HEADER_LIMIT = 65_536  # bytes of request line and headers (http.server's own line limit)
WRITE_TIMEOUT_S = 5.0  # an answer is a few hundred bytes: a write never waits long
POLL_S = 0.2
TIMEOUT_REPLY = (
    b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
    b"Content-Length: 30\r\nConnection: close\r\n\r\n"
    b'{"error": "request too slow"}\n'
)
BODY_CUT_SHORT = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
    b"Content-Length: 50\r\nConnection: close\r\n\r\n"
    b'{"error": "body shorter than its Content-Length"}\n'
)
HEADERS_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: application/json\r\n"
    b"Content-Length: 31\r\nConnection: close\r\n\r\n"
    b'{"error": "headers too large"}\n'
)


@dataclass
class _Pending:
    """A connection whose request is still arriving."""

    address: tuple
    deadline: float
    data: bytearray = field(default_factory=bytearray)


def request_head(data: bytes) -> tuple[str, Message] | None:
    """(method, headers) of a request whose header block is complete in `data`, else None."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    line, _, rest = bytes(data[: end + 4]).partition(b"\r\n")
    method = line.split(b" ", 1)[0].decode("latin-1")
    return method, parse_headers(io.BytesIO(rest))


class DeadlineServer:
    """Accepts and reads on one thread, answers complete requests on `workers` threads.

    Args:
        address: (host, port) to bind; port 0 picks a free one (`server_address`).
        handler: a `BaseHTTPRequestHandler` class whose `body_wanted(method, headers)` says
            how many body bytes to wait for; it reads the request from memory.
        workers: answering threads.
        deadline: seconds a request may take to arrive, from accept to its last byte.
        backlog: connections the kernel queues before accept.
        max_open: connections read at once; more are closed on accept.
    """

    def __init__(self, address, handler, *, workers: int, deadline: float, backlog: int,
                 max_open: int):  # fmt: skip
        self.handler, self.deadline, self.max_open = handler, deadline, max_open
        self.socket = socket.create_server(address, backlog=backlog)
        self.socket.setblocking(False)
        self.server_address = self.socket.getsockname()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="webhook")
        self._selector = selectors.DefaultSelector()
        self._pending: dict[socket.socket, _Pending] = {}
        self._preread: dict[socket.socket, bytes] = {}
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._stopped.set()

    def serve_forever(self) -> None:
        """Accept, read and dispatch until `shutdown`."""
        self._stopped.clear()
        self._selector.register(self.socket, selectors.EVENT_READ)
        try:
            while not self._stop.is_set():
                for key, _ in self._selector.select(timeout=self._wait()):
                    if key.fileobj is self.socket:
                        self._accept()
                    else:
                        self._read(key.fileobj)
                self._expire()
        finally:
            self._selector.unregister(self.socket)
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop `serve_forever` and wait until it returned."""
        self._stop.set()
        self._stopped.wait()

    def server_close(self) -> None:
        """Close the listening socket and every connection still being read."""
        for conn in list(self._pending):
            self._drop(conn)
        self.socket.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _wait(self) -> float:
        if not self._pending:
            return POLL_S
        first = min(p.deadline for p in self._pending.values())
        return max(0.0, min(POLL_S, first - time.monotonic()))

    def _accept(self) -> None:
        while True:
            try:
                conn, address = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of file descriptors: the rest wait in the backlog
                log.warning("webhook: accept failed: %s", exc)
                return
            if len(self._pending) >= self.max_open:
                conn.close()
                continue
            conn.setblocking(False)
            self._pending[conn] = _Pending(address, time.monotonic() + self.deadline)
            self._selector.register(conn, selectors.EVENT_READ)

    def _read(self, conn: socket.socket) -> None:
        pending = self._pending[conn]
        try:
            chunk = conn.recv(65_536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # reset: nobody is left to answer
            self._drop(conn)
            return
        if not chunk:  # the client shut its side before its request was whole
            if request_head(pending.data) is not None:
                self._dispatch(conn, reply=BODY_CUT_SHORT)  # it may still read the answer
            else:
                self._drop(conn)
            return
        pending.data += chunk
        head = request_head(pending.data)
        if head is None:
            if len(pending.data) > HEADER_LIMIT:
                self._dispatch(conn, reply=HEADERS_TOO_LARGE)
            return
        body = len(pending.data) - (pending.data.find(b"\r\n\r\n") + 4)
        if body >= self.handler.body_wanted(*head):
            self._dispatch(conn)

    def _expire(self) -> None:
        now = time.monotonic()
        for conn in [c for c, p in self._pending.items() if p.deadline <= now]:
            self._dispatch(conn, reply=TIMEOUT_REPLY)

    def _drop(self, conn: socket.socket) -> None:
        self._selector.unregister(conn)
        del self._pending[conn]
        conn.close()

    def _dispatch(self, conn: socket.socket, reply: bytes | None = None) -> None:
        """Hand a connection to a worker: its whole request to the handler, or `reply`."""
        self._selector.unregister(conn)
        pending = self._pending.pop(conn)
        conn.setblocking(True)
        conn.settimeout(WRITE_TIMEOUT_S)
        self._pool.submit(self._answer, conn, pending.address, bytes(pending.data), reply)

    def _answer(self, conn: socket.socket, address, data: bytes, reply: bytes | None) -> None:
        try:
            if reply is not None:
                conn.sendall(reply)
            else:
                self._preread[conn] = data
                self.handler(conn, address, self)
        except Exception:  # a worker must outlive any request
            log.exception("webhook: answering %s failed", address[0])
        finally:
            self._preread.pop(conn, None)
            try:
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            conn.close()

    def preread(self, conn: socket.socket) -> bytes:
        """The request read for `conn` (the handler's input)."""
        return self._preread[conn]
