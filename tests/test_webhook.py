"""`depthcard serve`: secret checked in constant time, bad input answered, never a crash."""

from __future__ import annotations

import http.client
import json
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from depthcard.bot.state import StateStore
from depthcard.bot.webhook import SECRET_HEADER, make_server, secret_matches
from depthcard.schemas.bot_config import BotConfig

SECRET = "s3cret-webhook-value"
PAYLOAD = {
    "event": {"action": "update", "scope": "repo.content"},
    "repo": {
        "type": "model", "name": "acme/tiny-Instruct", "id": "abc", "private": False,
        "owner": {"id": "o1"}, "url": {"web": "https://hf.co/acme/tiny-Instruct"},
        "headSha": "0" * 40, "unknownFutureField": [1, 2],
    },
    "webhook": {"id": "w1", "version": 3},
}  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    state = tmp_path_factory.mktemp("hook") / "state.sqlite"
    cfg = BotConfig(organizations=["acme"], webhook={"host": "127.0.0.1", "port": 0})
    srv = make_server(cfg, SECRET, state)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv, state
    srv.shutdown()
    srv.server_close()


def post(srv, body: bytes, headers: dict[str, str] | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=10)
    conn.request("POST", "/", body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def good(body=None) -> bytes:
    return json.dumps(PAYLOAD if body is None else body).encode()


def test_valid_event_lands_in_the_inbox(server):
    srv, state = server
    status, data = post(srv, good(), {SECRET_HEADER: SECRET})
    assert status == 202 and json.loads(data) == {"queued": "acme/tiny-Instruct"}
    assert "acme/tiny-Instruct" in StateStore(state).inbox()


def test_missing_secret_is_401_wrong_secret_is_403(server):
    srv, _ = server
    assert post(srv, good())[0] == 401
    assert post(srv, good(), {SECRET_HEADER: "wrong"})[0] == 403
    assert post(srv, good(), {SECRET_HEADER: SECRET + "x"})[0] == 403
    assert post(srv, good(), {SECRET_HEADER: ""})[0] == 403


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"\xff\xfe", b"[]", b"null", b"{}", json.dumps({"event": 1}).encode(),
     good({**PAYLOAD, "webhook": {"id": "w", "version": 2}}),
     good({**PAYLOAD, "repo": {**PAYLOAD["repo"], "name": "../../etc"}})],
)  # fmt: skip
def test_malformed_json_and_wrong_schemas_are_400(server, body):
    srv, _ = server
    assert post(srv, body, {SECRET_HEADER: SECRET})[0] == 400


def test_oversized_body_is_413_and_unwatched_events_are_ignored(server):
    srv, _ = server
    # Only the announced length matters: the server answers before reading the body.
    conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=10)
    conn.putrequest("POST", "/")
    conn.putheader("Content-Length", "2000000")
    conn.putheader(SECRET_HEADER, SECRET)
    conn.endheaders()
    assert conn.getresponse().status == 413
    conn.close()
    other = {**PAYLOAD, "repo": {**PAYLOAD["repo"], "name": "other/model"}}
    status, data = post(srv, good(other), {SECRET_HEADER: SECRET})
    assert status == 200 and "not watched" in json.loads(data)["ignored"]


def test_server_refuses_to_start_without_a_secret(tmp_path):
    with pytest.raises(ValueError, match="DEPTHCARD_WEBHOOK_SECRET"):
        make_server(BotConfig(), "", tmp_path / "s.sqlite")


def test_secret_comparison_is_hmac_compare_digest():
    assert secret_matches(SECRET, SECRET) and not secret_matches(None, SECRET)
    assert not secret_matches("é" * 3, SECRET)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


def _mutations():
    keys = st.sampled_from(["event", "repo", "webhook", "discussion"])
    return st.builds(lambda k, v: {**PAYLOAD, k: v}, keys, json_values)


@pytest.mark.slow
@settings(max_examples=1200, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    body=st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode()),
                   _mutations().map(lambda v: json.dumps(v).encode())),
    secret=st.sampled_from([SECRET, None, "nope"]),
)  # fmt: skip
def test_thousands_of_generated_payloads_never_crash_the_server(server, body, secret):
    srv, _ = server
    headers = {SECRET_HEADER: secret} if secret is not None else {}
    status, _data = post(srv, body, headers)
    assert status in (200, 202, 400, 401, 403)
    if secret is None:
        assert status == 401
    elif secret != SECRET:
        assert status == 403


def test_head_sha_is_read_from_the_hubs_camel_case_field():
    from depthcard.schemas.hub_events import EventRepo

    fields = {"type": "model", "name": "org/m", "id": "x", "private": False,
              "owner": {"id": "o"}, "url": {"web": "https://h/org/m"}}  # fmt: skip
    repo = EventRepo.model_validate({**fields, "headSha": "a" * 40})
    assert repo.head_sha == "a" * 40
