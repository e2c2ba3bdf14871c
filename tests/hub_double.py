"""A Hugging Face Hub double: a real HTTP server on loopback serving the REST routes that the
real `huggingface_hub` client calls, so the bot is tested through the real client.

Routes (checked against huggingface_hub 2.x: hf_api.py, file_download.py, _commit_api.py):
list models, model/dataset info (head or revision, `refs/pr/N` included), tree listing, file
resolve (HEAD + GET with X-Repo-Commit / ETag), validate-yaml, preupload, commit (NDJSON,
`create_pr` based on `parentCommit` when given; a stale `parentCommit` on a direct commit →
412), discussions list and details, comments on a discussion, repo creation.
Faults are injected per route: a status (429 with Retry-After, 500), a delay (timeouts).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

_EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
_REPO = r"(?P<repo>[^/]+/[^/]+)"


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def blob_sha(data: bytes) -> str:
    """The git blob id of `data` (what the Hub calls a file's oid)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Fault:
    """Answer matching requests with `status` (after `delay` seconds), `times` times."""

    method: str
    path: str  # regex searched in the request path
    status: int | None = 500
    retry_after: int | None = None
    delay: float = 0.0
    times: int = 1
    hits: int = 0


@dataclass
class PR:
    num: int
    title: str
    author: str
    status: str
    created: datetime
    description: str
    comments: list[str] = field(default_factory=list)


@dataclass
class Repo:
    repo_id: str
    repo_type: str = "model"
    private: bool = False
    gated: bool | str = False
    created: datetime = _EPOCH
    tags: list[str] = field(default_factory=list)
    parameters: int | None = None
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    prs: list[PR] = field(default_factory=list)

    def files(self, rev: str = "main") -> dict[str, bytes]:
        return self.commits[self.resolve(rev)]

    def resolve(self, rev: str) -> str:
        if rev in self.refs:
            return self.refs[rev]
        if rev in self.commits:
            return rev
        raise KeyError(rev)


class HubDouble:
    """The state of the fake Hub plus its server. Use as a context manager."""

    def __init__(self, user: str = "depthcard-bot", token: str | None = None):
        self.repos: dict[str, Repo] = {}
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str, int]] = []
        self.auth_headers: list[str] = []
        self.user, self.token = user, token
        self._counter = itertools.count(1)
        self._lock = threading.RLock()
        self._clock = itertools.count(1)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> HubDouble:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- building repos ------------------------------------------------------------------

    def _sha(self) -> str:
        return hashlib.sha1(f"commit-{next(self._counter)}".encode()).hexdigest()

    def add_repo(self, repo_id: str, files: dict[str, bytes | str], **kw) -> str:
        """Create a repo with one commit on main; returns its sha."""
        with self._lock:
            kw.setdefault("created", _EPOCH + timedelta(minutes=next(self._clock)))
            repo = Repo(repo_id, **kw)
            self.repos[self._key(repo.repo_type, repo_id)] = repo
            return self.push(repo_id, files, repo_type=repo.repo_type, replace=True)

    def add_folder(self, repo_id: str, folder: Path, readme: str | None = None, **kw) -> str:
        """Create a model repo from a local folder (weights, config, tokenizer)."""
        files: dict[str, bytes | str] = {p.name: p.read_bytes() for p in folder.iterdir()}
        if readme is not None:
            files["README.md"] = readme
        return self.add_repo(repo_id, files, **kw)

    def push(self, repo_id: str, files: dict, *, repo_type="model", ref="main", replace=False):
        """A new commit on `ref` changing `files`; returns its sha."""
        with self._lock:
            repo = self.repo(repo_id, repo_type)
            old = {} if replace or ref not in repo.refs else dict(repo.files(ref))
            old.update({k: v.encode() if isinstance(v, str) else v for k, v in files.items()})
            sha = self._sha()
            repo.commits[sha] = old
            repo.refs[ref] = sha
            return sha

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        return self.repos[self._key(repo_type, repo_id)]

    @staticmethod
    def _key(repo_type: str, repo_id: str) -> str:
        return f"{repo_type}:{repo_id}"

    def readme(self, repo_id: str, rev: str = "main") -> str:
        return self.repo(repo_id).files(rev)["README.md"].decode("utf-8")

    def fault(self, method: str, path: str, **kw) -> Fault:
        f = Fault(method, path, **kw)
        self.faults.append(f)
        return f

    # -- JSON views ----------------------------------------------------------------------

    def model_json(self, repo: Repo, rev: str = "main") -> dict:
        sha = repo.resolve(rev)
        files = repo.commits[sha]
        card = _card_data(files.get("README.md", b"").decode("utf-8", "replace"))
        out = {
            "id": repo.repo_id,
            "_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24],
            "author": repo.repo_id.split("/")[0],
            "sha": sha,
            "private": repo.private,
            "gated": repo.gated,
            "disabled": False,
            "createdAt": _iso(repo.created),
            "lastModified": _iso(repo.created),
            "tags": list(repo.tags),
            "siblings": [{"rfilename": name} for name in sorted(files)],
            "cardData": card or None,
            "likes": 0,
            "downloads": 0,
        }
        if repo.parameters is not None:
            out["safetensors"] = {"parameters": {"F32": repo.parameters}, "total": repo.parameters}
        return out

    def pr_json(self, repo: Repo, pr: PR) -> dict:
        return {
            "num": pr.num,
            "title": pr.title,
            "status": pr.status,
            "isPullRequest": True,
            "createdAt": _iso(pr.created),
            "author": {"name": pr.author},
            "repo": {"name": repo.repo_id, "type": repo.repo_type},
            "pinned": False,
            "numComments": 1,
            "topReactions": [],
        }

    def prs(self, repo_id: str) -> list[PR]:
        return self.repo(repo_id).prs

    def close_pr(self, repo_id: str, num: int) -> None:
        """The owner closes a PR without merging it."""
        for pr in self.repo(repo_id).prs:
            if pr.num == num:
                pr.status = "closed"


def _card_data(text: str) -> dict:
    text = text.replace("\r\n", "\n")
    if not text.startswith("---\n"):
        return {}
    end = text.find("\n---", 4)
    if end < 0:
        return {}
    try:
        data = yaml.safe_load(text[4:end])
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def _comment_event(pr: PR, index: int, author: str | None = None) -> dict:
    return {
        "id": f"{pr.num:04d}{index:020d}",
        "type": "comment",
        "createdAt": _iso(pr.created),
        "author": {"name": author or pr.author},
        "data": {"edited": False, "hidden": False, "latest": {"raw": pr.comments[index]}},
    }


def _handler(hub: HubDouble):
    class Handler(_Handler):
        double = hub

    return Handler


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    double: HubDouble

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PATCH(self):
        self._dispatch("PATCH")

    # -- plumbing --------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        self.query = parse_qs(split.query)
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(length) if length else b""
        auth = self.headers.get("Authorization")
        if auth:
            self.double.auth_headers.append(auth)
        status = self._fault(method, split.path)
        if status is None:
            try:
                status = self._route(method, split.path)
            except KeyError:
                status = self._json(404, {"error": "Repository not found"},
                                    {"X-Error-Code": "RepoNotFound"})  # fmt: skip
        self.double.requests.append((method, self.path, status))

    def _fault(self, method: str, path: str) -> int | None:
        with self.double._lock:
            fault = next(
                (f for f in self.double.faults
                 if f.times > 0 and f.method == method and re.search(f.path, path)),
                None,
            )  # fmt: skip
            if fault is not None:
                fault.times -= 1
                fault.hits += 1
        if fault is None:
            return None
        if fault.delay:
            time.sleep(fault.delay)
        if fault.status is None:
            return None
        headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
        try:
            return self._json(fault.status, {"error": "injected fault"}, headers)
        except OSError:  # the client gave up (timeout) and closed the connection
            return fault.status

    def _json(self, status: int, payload, headers: dict | None = None) -> int:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        return status

    def _route(self, method: str, path: str) -> int:
        d = self.double
        routes = [
            ("GET", r"/api/models", self._list_models),
            ("POST", r"/api/validate-yaml", lambda: self._json(200, {"warnings": []})),
            ("POST", r"/api/repos/create", self._create_repo),
            ("GET", rf"/api/(?P<t>model|dataset)s/{_REPO}/revision/(?P<rev>[^/]+)", self._info),
            ("GET", rf"/api/(?P<t>model|dataset)s/{_REPO}/tree/(?P<rev>[^/]+)(?P<sub>/.*)?",
             self._tree),
            ("POST", rf"/api/(?P<t>model|dataset)s/{_REPO}/preupload/(?P<rev>[^/]+)",
             self._preupload),
            ("POST", rf"/api/(?P<t>model|dataset)s/{_REPO}/commit/(?P<rev>[^/]+)", self._commit),
            ("GET", rf"/api/(?P<t>model|dataset)s/{_REPO}/discussions", self._discussions),
            ("GET", rf"/api/(?P<t>model|dataset)s/{_REPO}/discussions/(?P<num>\d+)", self._pr),
            ("POST", rf"/api/(?P<t>model|dataset)s/{_REPO}/discussions/(?P<num>\d+)/comment",
             self._comment),
            ("GET", rf"/api/(?P<t>model|dataset)s/{_REPO}", self._info),
            ("GET", rf"/(?P<ds>datasets/)?{_REPO}/resolve/(?P<rev>[^/]+)/(?P<file>.+)",
             self._resolve),
            ("HEAD", rf"/(?P<ds>datasets/)?{_REPO}/resolve/(?P<rev>[^/]+)/(?P<file>.+)",
             self._resolve),
        ]  # fmt: skip
        for m, pattern, fn in routes:
            match = re.fullmatch(pattern, path)
            if m == method and match:
                self.params = {k: unquote(v) if v else v for k, v in match.groupdict().items()}
                with d._lock:
                    return fn()
        return self._json(404, {"error": f"no route {method} {path}"})

    def _q(self, name: str, default=None):
        return self.query.get(name, [default])[0]

    def _repo(self) -> Repo:
        t = self.params.get("t") or ("dataset" if self.params.get("ds") else "model")
        repo = self.double.repo(self.params["repo"], t)
        if repo.private and not self.headers.get("Authorization"):
            raise KeyError(repo.repo_id)
        return repo

    # -- routes ----------------------------------------------------------------------------

    def _list_models(self) -> int:
        author = self._q("author")
        limit = int(self._q("limit", "1000"))
        models = [r for r in self.double.repos.values() if r.repo_type == "model"]
        models = [r for r in models if author is None or r.repo_id.split("/")[0] == author]
        models = [r for r in models if not r.private]
        models.sort(key=lambda r: r.created, reverse=True)
        return self._json(200, [self.double.model_json(r) for r in models[:limit]])

    def _info(self) -> int:
        repo = self._repo()
        rev = self.params.get("rev") or "main"
        try:
            return self._json(200, self.double.model_json(repo, rev))
        except KeyError:
            return self._json(404, {"error": "Revision not found"},
                              {"X-Error-Code": "RevisionNotFound"})  # fmt: skip

    def _tree(self) -> int:
        repo = self._repo()
        files = repo.files(self.params["rev"])
        out = [{"type": "file", "oid": blob_sha(data), "size": len(data), "path": name}
               for name, data in sorted(files.items())]  # fmt: skip
        return self._json(200, out)

    def _resolve(self) -> int:
        repo = self._repo()
        try:
            sha = repo.resolve(self.params["rev"])
        except KeyError:
            return self._json(404, {"error": "Revision not found"},
                              {"X-Error-Code": "RevisionNotFound"})  # fmt: skip
        data = repo.commits[sha].get(self.params["file"])
        if data is None:
            return self._json(404, {"error": "Entry not found"},
                              {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": sha})  # fmt: skip
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", f'"{blob_sha(data)}"')
        self.send_header("X-Repo-Commit", sha)
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(data)
        return 200

    def _preupload(self) -> int:
        self._repo()
        files = json.loads(self.body)["files"]
        out = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
        return self._json(200, {"files": out, "commitOid": None})

    def _writer_ok(self) -> bool:
        token = self.double.token
        return token is None or self.headers.get("Authorization") == f"Bearer {token}"

    def _commit(self) -> int:
        if not self._writer_ok():
            return self._json(401, {"error": "Invalid credentials"})
        repo, d = self._repo(), self.double
        lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        header = next(x["value"] for x in lines if x["key"] == "header")
        rev = self.params["rev"]
        if rev not in repo.refs:
            return self._json(404, {"error": "Revision not found"},
                              {"X-Error-Code": "RevisionNotFound"})  # fmt: skip
        # As the real Hub does (huggingface_hub's `create_commit` docstring, `parent_commit`):
        # "If specified and `create_pr` is `False`, the commit will fail if `revision` does not
        # point to `parent_commit`. If specified and `create_pr` is `True`, the pull request
        # will be created from `parent_commit`." So a stale parent only fails a direct commit;
        # a PR is silently based on the old commit.
        parent = header.get("parentCommit")
        create_pr = self._q("create_pr") == "1"
        if parent is not None and create_pr:
            base = next((c for c in repo.commits if c.startswith(parent)), None)
            if base is None:
                return self._json(404, {"error": "Revision not found"},
                                  {"X-Error-Code": "RevisionNotFound"})  # fmt: skip
        else:
            base = repo.refs[rev]
        if parent is not None and not create_pr and not repo.refs[rev].startswith(parent):
            return self._json(412, {"error": "A commit has happened since. Please refresh."})
        files = dict(repo.commits[base])
        for item in lines:
            if item["key"] == "file":
                files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            elif item["key"] == "deletedFile":
                files.pop(item["value"]["path"], None)
        sha = d._sha()
        repo.commits[sha] = files
        out = {"commitOid": sha, "commitUrl": f"{d.url}/{repo.repo_id}/commit/{sha}"}
        if create_pr:
            num = 1 + max((p.num for p in repo.prs), default=0)
            repo.prs.append(PR(num, header["summary"], d.user, "open", datetime.now(UTC),
                               header.get("description", "")))  # fmt: skip
            repo.refs[f"refs/pr/{num}"] = sha
            out["pullRequestUrl"] = f"{d.url}/{repo.repo_id}/discussions/{num}"
        else:
            repo.refs[rev] = sha
        return self._json(200, out)

    def _discussions(self) -> int:
        repo = self._repo()
        prs = [p for p in repo.prs if self._q("author") in (None, p.author)]
        if self._q("type") == "discussion":
            prs = []
        prs = sorted(prs, key=lambda p: p.num, reverse=True)
        payload = [self.double.pr_json(repo, p) for p in prs]
        start = int(self._q("p", "0")) * 50
        return self._json(200, {"discussions": payload[start : start + 50], "count": len(prs),
                                "start": start, "numClosedDiscussions": 0})  # fmt: skip

    def _pr(self) -> int:
        repo = self._repo()
        pr = next((p for p in repo.prs if p.num == int(self.params["num"])), None)
        if pr is None:
            return self._json(404, {"error": "Discussion not found"})
        out = self.double.pr_json(repo, pr)
        events = [_comment_event(pr, i) for i in range(len(pr.comments))]
        out.update(events=events, changes={"base": "refs/heads/main"}, filesWithConflicts=[])
        return self._json(200, out)

    def _comment(self) -> int:
        # huggingface_hub's `comment_discussion` POSTs {"comment": text} to
        # /api/{type}s/{repo}/discussions/{num}/comment and reads `newMessage`, a discussion
        # event (community.deserialize_event: id, type, createdAt, author.name, data.edited,
        # data.hidden, data.latest.raw). Fields beyond those the client reads are not known.
        if not self._writer_ok():
            return self._json(401, {"error": "Invalid credentials"})
        repo = self._repo()
        pr = next((p for p in repo.prs if p.num == int(self.params["num"])), None)
        if pr is None:
            return self._json(404, {"error": "Discussion not found"})
        pr.comments.append(json.loads(self.body)["comment"])
        return self._json(
            200, {"newMessage": _comment_event(pr, len(pr.comments) - 1, self.double.user)}
        )

    def _create_repo(self) -> int:
        body = json.loads(self.body)
        repo_id = f"{body.get('organization') or self.double.user}/{body['name']}"
        t = body.get("type", "model")
        if self.double._key(t, repo_id) in self.double.repos:
            return self._json(409, {"error": "You already created this repo", "url": repo_id})
        self.double.add_repo(repo_id, {".gitattributes": ""}, repo_type=t)
        return self._json(200, {"url": f"{self.double.url}/{repo_id}"})
