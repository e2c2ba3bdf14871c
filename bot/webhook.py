"""`depthcard serve`: receive Hub webhooks and put the repos they name in the bot's inbox.

The server does no Hub calls itself: a valid event only adds its repo to the state's inbox,
and the next `watch` round examines it exactly as if polling had found it. Every request
gets an answer and none can stop the server: a missing secret is 401, a wrong one 403 (the
comparison takes constant time, and comes before the body is read), a body over the limit
413, a malformed Content-Length, malformed or too deeply nested JSON or a payload of the
wrong shape 400, anything unexpected 500.

Bursts and slow clients (`bot.webhook_server`): one thread reads every request whole, each
under a deadline of `REQUEST_DEADLINE_S` seconds from accept to its last byte (408 after
that), and only complete requests reach the `WORKERS` answering threads. A client that
trickles its bytes holds no worker, the accept loop never waits for one, and the thread
count never passes `WORKERS` + 1. The listen backlog holds `BACKLOG` connections; at most
`MAX_OPEN` are read at once. Every answer closes its connection.
"""

from __future__ import annotations

import hmac
import io
import json
import logging
import re
from email.message import Message
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from pydantic import ValidationError

from depthcard.bot.state import StateStore
from depthcard.bot.webhook_server import DeadlineServer
from depthcard.schemas.bot_config import BotConfig
from depthcard.schemas.errors import UserError
from depthcard.schemas.hub_events import WebhookPayload

log = logging.getLogger(__name__)
SECRET_HEADER = "X-Webhook-Secret"
SECRET_ENV = "DEPTHCARD_WEBHOOK_SECRET"
WATCHED_SCOPES = ("repo", "repo.content", "discussion")
BACKLOG = 1024  # connections the kernel queues before they are accepted
WORKERS = 32  # complete requests answered at once, one thread each
REQUEST_DEADLINE_S = 10.0  # from accept to the last byte of a request, however it trickles
MAX_OPEN = 1024  # connections read at once; more are closed on accept
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

    def setup(self) -> None:
        super().setup()
        self.rfile = io.BytesIO(self.server.preread(self.request))  # read whole, under a deadline

    @classmethod
    def body_wanted(cls, method: str, headers: Message) -> int:
        """Body bytes to wait for before this request is answered: none unless it is a POST
        the handler will read (right secret, acceptable Content-Length)."""
        if method != "POST" or cls._refusal(headers) is not None:
            return 0
        return int(headers["Content-Length"])

    @classmethod
    def _refusal(cls, headers: Message) -> tuple[int, dict] | None:
        """The answer to a POST decided by its headers alone, or None when its body is read."""
        given = headers.get(SECRET_HEADER)  # before the body: strangers cost no read
        if given is None:
            return 401, {"error": f"missing {SECRET_HEADER}"}
        if not secret_matches(given, cls.secret):
            return 403, {"error": f"wrong {SECRET_HEADER}"}
        raw_length = headers.get("Content-Length")
        if raw_length is None:
            return 411, {"error": "Content-Length required"}
        if not _DIGITS.fullmatch(raw_length.strip()):
            return 400, {"error": "malformed Content-Length"}
        if int(raw_length) > cls.cfg.webhook.max_body_bytes:
            return 413, {"error": f"body over {cls.cfg.webhook.max_body_bytes} bytes"}
        return None

    def _reply(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
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
        refusal = self._refusal(self.headers)
        if refusal is not None:
            return refusal
        body = self.rfile.read(int(self.headers["Content-Length"]))
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
        store = StateStore(self.state_path, check=False)  # checked when the server started
        try:
            store.push_inbox(repo, f"webhook {why}")
        finally:
            store.close()
        log.info("webhook: %s queued (%s)", repo, why)
        return 202, {"queued": repo}


def make_server(
    cfg: BotConfig,
    secret: str,
    state_path: Path,
    *,
    workers: int = WORKERS,
    deadline: float = REQUEST_DEADLINE_S,
) -> DeadlineServer:
    """The webhook server bound to the configured host and port (not yet serving).

    Args:
        workers: complete requests answered at once (threads).
        deadline: seconds a request may take to arrive, from accept to its last byte.

    Raises:
        UserError: no secret (the server never runs open).
    """
    if not secret:
        raise UserError(f"set {SECRET_ENV}: the webhook server never runs without a secret")
    handler = type("Handler", (_Handler,), {"cfg": cfg, "secret": secret,
                                            "state_path": Path(state_path)})  # fmt: skip
    # Create the state file (and fail on a corrupt one) before binding the port, so that a
    # refusal leaves no listening socket behind.
    StateStore(Path(state_path)).close()
    return DeadlineServer((cfg.webhook.host, cfg.webhook.port), handler, workers=workers,
                          deadline=deadline, backlog=BACKLOG, max_open=MAX_OPEN)  # fmt: skip
