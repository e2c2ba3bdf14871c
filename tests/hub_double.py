"""A Hugging Face Hub double: a real HTTP server on loopback serving the REST routes that the
real `huggingface_hub` client calls, so the bot is tested through the real client.

Routes (checked against huggingface_hub 2.x: hf_api.py, file_download.py, _commit_api.py,
utils/_pagination.py): list models (newest first, paged with a `Link: <...>; rel="next"`
header as `paginate` follows, filtered by author, gated, pipeline_tag, num_parameters and
tags), model/dataset info (head or revision, `refs/pr/N` included, `expand=` honoured), tree
listing, file resolve (HEAD + GET with X-Repo-Commit / ETag), validate-yaml, preupload, commit
(NDJSON, `create_pr` based on `parentCommit` when given; a stale `parentCommit` on a direct
commit → 412), discussions list and details, comments on a discussion, repo creation.

What the Hub derives from a repo, the double derives too: the `safetensors` library tag and
the parameter count from the weight headers, `pipeline_tag` from the card or a
`*ForCausalLM` architecture, and the model tree (`base_model:{relation}:{id}` tags and
`baseModels`) from the card's `base_model`.
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
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import yaml

_EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
_REPO = r"(?P<repo>[^/]+/[^/]+)"
# Fields of a listing or info that `expand=` cannot remove (the Hub always sends the id).
_ALWAYS = ("id", "_id")
_SUFFIX = {"K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def safetensors_parameters(data: bytes) -> int | None:
    """Parameters in one safetensors file, read from its header; None when it is not one."""
    try:
        size = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + size])
        shapes = [v["shape"] for k, v in header.items() if k != "__metadata__"]
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    total = 0
    for shape in shapes:
        n = 1
        for dim in shape:
            n *= dim
        total += n
    return total


def parse_count(text: str) -> int:
    """`6B`, `500M`, `1000` → a parameter count (the `num_parameters` range syntax)."""
    text = text.strip().upper()
    if text and text[-1] in _SUFFIX:
        return int(float(text[:-1]) * _SUFFIX[text[-1]])
    return int(float(text))


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
    # A Space's variables, as `add_space_variable` sets them: key -> {"value", "description"}.
    variables: dict[str, dict[str, str]] = field(default_factory=dict)

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
        # Most models in one page of /api/models. The real Hub's cap is not documented in
        # huggingface_hub (it follows `Link` until there is none); tests set it small.
        self.page_size = 1000
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

    def model_json(self, repo: Repo, rev: str = "main", expand: list[str] | None = None) -> dict:
        sha = repo.resolve(rev)
        files = repo.commits[sha]
        card = _card_data(files.get("README.md", b"").decode("utf-8", "replace"))
        parameters = repo.parameters
        if parameters is None and any(n.endswith(".safetensors") for n in files):
            counts = [safetensors_parameters(d) for n, d in files.items()
                      if n.endswith(".safetensors")]  # fmt: skip
            parameters = sum(c for c in counts if c is not None) or None
        tags, tree = _derived_tags(repo, files, card)
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
            "tags": tags,
            "pipeline_tag": _pipeline_tag(files, card),
            "siblings": [{"rfilename": name} for name in sorted(files)],
            "cardData": card or None,
            "likes": 0,
            "downloads": 0,
        }
        if parameters is not None:
            out["safetensors"] = {"parameters": {"F32": parameters}, "total": parameters}
        if expand is None:
            return out
        # `expand` lists the properties to return: "When used, only the properties in the list
        # will be returned" (HfApi.model_info / list_models docstrings). `baseModels` comes only
        # when asked; its payload shape is not documented by huggingface_hub (ModelInfo keeps it
        # raw): the double sends {"relation": ..., "models": [{"id": ...}]}, an assumption.
        if "baseModels" in expand and tree:
            out["baseModels"] = tree
        return {k: v for k, v in out.items() if k in expand or k in _ALWAYS}

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


def _pipeline_tag(files: dict[str, bytes], card: dict) -> str | None:
    """The card's `pipeline_tag`, else text-generation for a causal LM config (the Hub infers
    it from transformers' architectures; only this one case is modelled)."""
    if isinstance(card.get("pipeline_tag"), str):
        return card["pipeline_tag"]
    try:
        arch = json.loads(files.get("config.json", b"{}")).get("architectures") or []
    except (ValueError, AttributeError):
        return None
    return "text-generation" if any(str(a).endswith("ForCausalLM") for a in arch) else None


def _derived_tags(repo: Repo, files: dict[str, bytes], card: dict) -> tuple[list[str], dict]:
    """(tags, model tree) as the Hub derives them: the `safetensors` library tag, and for each
    card `base_model` the tags `base_model:{id}` and `base_model:{relation}:{id}`. The relation
    is the card's `base_model_relation`, else inferred (adapter_config.json → adapter, a .gguf
    → quantized, otherwise finetune; the Hub's full inference rules are not public)."""
    tags = list(repo.tags)
    if any(n.endswith(".safetensors") for n in files) and "safetensors" not in tags:
        tags.append("safetensors")
    bases = card.get("base_model")
    bases = [bases] if isinstance(bases, str) else [b for b in bases or [] if isinstance(b, str)]
    relation = card.get("base_model_relation")
    if not isinstance(relation, str):
        relation = ("adapter" if "adapter_config.json" in files
                    else "quantized" if any(n.endswith(".gguf") for n in files)
                    else "finetune")  # fmt: skip
    for base in bases:
        tags += [t for t in (f"base_model:{base}", f"base_model:{relation}:{base}")
                 if t not in tags]  # fmt: skip
    tree = {"relation": relation, "models": [{"id": b} for b in bases]} if bases else {}
    return tags, tree


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
            ("GET", r"/api/whoami-v2", self._whoami),
            ("POST", r"/api/validate-yaml", lambda: self._json(200, {"warnings": []})),
            ("POST", r"/api/repos/create", self._create_repo),
            ("GET", rf"/api/(?P<t>model|dataset)s/{_REPO}/revision/(?P<rev>[^/]+)", self._info),
            ("GET", rf"/api/(?P<t>model|dataset|space)s/{_REPO}/tree/(?P<rev>[^/]+)(?P<sub>/.*)?",
             self._tree),
            ("POST", rf"/api/(?P<t>model|dataset|space)s/{_REPO}/preupload/(?P<rev>[^/]+)",
             self._preupload),
            ("POST", rf"/api/(?P<t>model|dataset|space)s/{_REPO}/commit/(?P<rev>[^/]+)",
             self._commit),
            ("POST", rf"/api/(?P<t>space)s/{_REPO}/variables", self._space_variable),
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

    def _whoami(self) -> int:
        if not self.headers.get("Authorization"):
            return self._json(401, {"error": "Invalid credentials in Authorization header"})
        return self._json(200, {"type": "user", "name": self.double.user, "orgs": []})

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
        d = self.double
        expand = self.query.get("expand")
        author, gated = self._q("author"), self._q("gated")
        models = [r for r in d.repos.values() if r.repo_type == "model" and not r.private]
        models = [r for r in models if author is None or r.repo_id.split("/")[0] == author]
        if gated is not None:  # gated=false: "only non-gated models are returned"
            models = [r for r in models if bool(r.gated) == (gated.lower() == "true")]
        if self._q("sort") not in (None, "createdAt"):
            return self._json(400, {"error": "the double sorts by createdAt only"})
        # Newest first, ties by id; a page starts after the cursor's (createdAt, id), so models
        # created while a client pages do not shift the pages it has not read yet.
        models.sort(key=lambda r: (r.created, r.repo_id), reverse=True)
        cursor = self._q("cursor")
        if cursor is not None:
            after = tuple(json.loads(base64.urlsafe_b64decode(cursor)))
            models = [r for r in models if (_iso(r.created), r.repo_id) < after]
        views = [(r, d.model_json(r)) for r in models]
        views = [(r, v) for r, v in views if self._matches(v)]
        size = min(int(self._q("limit") or d.page_size), d.page_size)
        page, more = views[:size], len(views) > size
        headers = {}
        if more:
            last = page[-1][0]
            key = json.dumps([_iso(last.created), last.repo_id]).encode()
            query = {k: v for k, v in self.query.items() if k != "cursor"}
            query["cursor"] = [base64.urlsafe_b64encode(key).decode()]
            headers["Link"] = f'<{d.url}/api/models?{urlencode(query, doseq=True)}>; rel="next"'
        payload = [d.model_json(r, expand=expand) for r, _ in page]
        return self._json(200, payload, headers)

    def _matches(self, view: dict) -> bool:
        """The listing filters on one model's full view: pipeline_tag, tags (`filter`), and the
        `num_parameters` range (`min:6B,max:128B`). A model without a parameter count fails a
        range (an assumption: the Hub counts from safetensors and has nothing else)."""
        if self._q("pipeline_tag") not in (None, view.get("pipeline_tag")):
            return False
        if not set(self.query.get("filter", [])) <= set(view["tags"]):
            return False
        wanted = self._q("num_parameters")
        if wanted is None:
            return True
        total = (view.get("safetensors") or {}).get("total")
        if total is None:
            return False
        bounds = dict(part.split(":", 1) for part in wanted.split(","))
        low, high = bounds.get("min"), bounds.get("max")
        return (low is None or total >= parse_count(low)) and (
            high is None or total <= parse_count(high)
        )

    def _info(self) -> int:
        repo = self._repo()
        rev = self.params.get("rev") or "main"
        try:
            return self._json(200, self.double.model_json(repo, rev, self.query.get("expand")))
        except KeyError:
            return self._json(404, {"error": "Revision not found"},
                              {"X-Error-Code": "RevisionNotFound"})  # fmt: skip

    def _tree(self) -> int:
        repo = self._repo()
        try:
            files = repo.files(self.params["rev"])
        except KeyError:  # as the Hub: a known repo at an unknown revision
            return self._json(404, {"error": "Invalid rev id"},
                              {"X-Error-Code": "RevisionNotFound"})  # fmt: skip
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
        # `get_repo_discussions(discussion_status=...)` sends status=open|closed|all; the Hub
        # counts a merged PR as closed.
        status = self._q("status", "all")
        if status != "all":
            prs = [p for p in prs if (p.status == "open") == (status == "open")]
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

    def _space_variable(self) -> int:
        # huggingface_hub's add_space_variable: POST {"key", "value"[, "description"]}; the
        # Hub answers with every variable of the Space, key -> {"value", "description", ...}.
        if not self.headers.get("Authorization"):
            return self._json(401, {"error": "Invalid credentials in Authorization header"})
        body = json.loads(self.body)
        repo = self._repo()
        repo.variables[body["key"]] = {k: body[k] for k in ("value", "description") if k in body}
        return self._json(200, repo.variables)

    def _create_repo(self) -> int:
        body = json.loads(self.body)
        repo_id = f"{body.get('organization') or self.double.user}/{body['name']}"
        t = body.get("type", "model")
        if self.double._key(t, repo_id) in self.double.repos:
            return self._json(409, {"error": "You already created this repo", "url": repo_id})
        self.double.add_repo(repo_id, {".gitattributes": ""}, repo_type=t)
        return self._json(200, {"url": f"{self.double.url}/{repo_id}"})
