"""`depthcard serve`: receive Hub webhooks and put the repos they name in the bot's inbox.

The server does no Hub calls itself: a valid event only adds its repo to the state's inbox,
and the next `watch` round examines it exactly as if polling had found it. Every request
gets an answer and none can stop the server: a missing secret is 401, a wrong one 403 (the
comparison takes constant time, and comes before the body is read), a body over the limit
413, a malformed Content-Length, malformed or too deeply nested JSON or a payload of the
wrong shape 400, anything unexpected 500.

Bursts and slow clients: the listen backlog holds `BACKLOG` waiting connections, at most
`WORKERS` requests are served at once (one thread each; the rest wait in the backlog), and a
connection that sends nothing for `READ_TIMEOUT_S` seconds is dropped, so neither a burst
nor slow clients can grow the thread count past `WORKERS`.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from pydantic import ValidationError

from depthcard.bot.state import StateStore
from depthcard.schemas.bot_config import BotConfig
from depthcard.schemas.errors import UserError
from depthcard.schemas.hub_events import WebhookPayload

log = logging.getLogger(__name__)
SECRET_HEADER = "X-Webhook-Secret"
SECRET_ENV = "DEPTHCARD_WEBHOOK_SECRET"
WATCHED_SCOPES = ("repo", "repo.content", "discussion")
BACKLOG = 1024  # connections the kernel queues while every worker is busy
WORKERS = 32  # requests served at once, one thread each
READ_TIMEOUT_S = 10.0  # a connection silent this long is dropped
_DIGITS = re.compile(r"[0-9]{1,15}")


def secret_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison of the header with the configured secret."""
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))


def triage(payload: WebhookPayload, cfg: BotConfig) -> tuple[str | None, str]:
    """(repo to examine, why) for an event; the repo is None when the event is ignored."""
    repo, event = payload.repo, payload.event
    if repo.type != "model":
        return None, f"not a model repo ({repo.type})"
    if event.scope not in WATCHED_SCOPES:
        return None, f"scope {event.scope!r} is not watched"
    if event.action not in ("create", "update"):
        return None, f"action {event.action!r} needs no audit"
    org = repo.name.split("/", 1)[0]
    if cfg.organizations and org not in cfg.organizations:
        return None, f"organisation {org!r} is not watched"
    return repo.name, f"{event.scope}.{event.action}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "depthcard-webhook"
    sys_version = ""
    cfg: BotConfig
    secret: str
    state_path: Path

    def log_message(self, fmt, *args) -> None:
        log.debug("webhook %s " + fmt, self.client_address[0], *args)

    def _reply(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status >= 400:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._reply(200 if self.path == "/healthz" else 404, {"ok": self.path == "/healthz"})

    def do_PUT(self) -> None:
        self._reply(405, {"error": "POST only"})

    do_DELETE = do_PATCH = do_PUT

    def do_POST(self) -> None:
        try:
            status, payload = self._handle()
        except Exception:  # the server must survive anything a request does
            log.exception("webhook: unexpected error")
            status, payload = 500, {"error": "internal error"}
        try:
            self._reply(status, payload)
        except OSError:
            log.info("webhook: client went away before the reply")

    def _handle(self) -> tuple[int, dict]:
        given = self.headers.get(SECRET_HEADER)  # before the body: strangers cost no read
        if given is None:
            return 401, {"error": f"missing {SECRET_HEADER}"}
        if not secret_matches(given, self.secret):
            return 403, {"error": f"wrong {SECRET_HEADER}"}
        raw_length = self.headers.get("Content-Length")
        if raw_length is None:
            return 411, {"error": "Content-Length required"}
        if not _DIGITS.fullmatch(raw_length.strip()):
            return 400, {"error": "malformed Content-Length"}
        length = int(raw_length)
        if length > self.cfg.webhook.max_body_bytes:
            return 413, {"error": f"body over {self.cfg.webhook.max_body_bytes} bytes"}
        body = self.rfile.read(length)
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):  # JSON, UTF-8, or nesting too deep
            return 400, {"error": "body is not JSON (or is nested too deeply)"}
        try:
            event = WebhookPayload.model_validate(data)
        except ValidationError as exc:
            return 400, {"error": f"not a Hub webhook payload ({exc.error_count()} error(s))"}
        except RecursionError:
            return 400, {"error": "payload nested too deeply"}
        repo, why = triage(event, self.cfg)
        if repo is None:
            return 200, {"ignored": why}
        store = StateStore(self.state_path)
        try:
            store.push_inbox(repo, f"webhook {why}")
        finally:
            store.close()
        log.info("webhook: %s queued (%s)", repo, why)
        return 202, {"queued": repo}


class _Server(ThreadingHTTPServer):
    """A threading server with a deep backlog and at most `workers` request threads."""

    request_queue_size = BACKLOG
    daemon_threads = True

    def __init__(self, address, handler, workers: int):
        self._slots = threading.BoundedSemaphore(workers)
        super().__init__(address, handler)

    def process_request(self, request, client_address) -> None:
        self._slots.acquire()  # the accept loop waits here; new connections wait in the backlog
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def make_server(
    cfg: BotConfig,
    secret: str,
    state_path: Path,
    *,
    workers: int = WORKERS,
    read_timeout: float = READ_TIMEOUT_S,
) -> ThreadingHTTPServer:
    """The webhook server bound to the configured host and port (not yet serving).

    Args:
        workers: requests served at once (threads); more wait in the listen backlog.
        read_timeout: seconds a connection may stay silent before it is dropped.

    Raises:
        UserError: no secret (the server never runs open).
    """
    if not secret:
        raise UserError(f"set {SECRET_ENV}: the webhook server never runs without a secret")
    handler = type("Handler", (_Handler,), {"cfg": cfg, "secret": secret, "timeout": read_timeout,
                                            "state_path": Path(state_path)})  # fmt: skip
    # Create the state file (and fail on a corrupt one) before binding the port, so that a
    # refusal leaves no listening socket behind.
    StateStore(Path(state_path)).close()
    return _Server((cfg.webhook.host, cfg.webhook.port), handler, workers)
