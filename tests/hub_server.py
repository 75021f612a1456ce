"""A Hugging Face Hub stand-in on loopback for upload tests: the endpoints `huggingface_hub` calls to create a repo,
a branch, list a revision's files and make one commit (every file inline, as the Hub's ``regular`` upload mode), with
repos kept in memory and every request recorded (method, path, query, headers, body).

`huggingface_hub` is pointed at it with ``HF_ENDPOINT``; the recorded requests show what reached the commit and
which token was sent, so tests can check the upload without the network.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class Repo:
    private: bool
    branches: dict[str, dict[str, bytes]] = field(default_factory=lambda: {"main": {}})
    commits: list[dict] = field(default_factory=list)
    pull_requests: list[dict[str, bytes]] = field(default_factory=list)


class FakeHub:
    """The server's state: repos by id, the requests it received, and an optional failure for the next commit."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[Request] = []
        self.fail_commit = False
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def files(self, repo_id: str, branch: str = "main") -> dict[str, bytes]:
        return self.repos[repo_id].branches[branch]

    def requests_to(self, pattern: str) -> list[Request]:
        return [request for request in self.requests if re.search(pattern, request.path)]


def _handler(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep the test output clean
            pass

        def _reply(self, status: int, payload, headers: dict[str, str] | None = None) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def _record(self) -> Request:
            length = int(self.headers.get("Content-Length") or 0)
            parsed = urlparse(self.path)
            request = Request(
                self.command, unquote(parsed.path), parse_qs(parsed.query), dict(self.headers), self.rfile.read(length)
            )
            with hub.lock:
                hub.requests.append(request)
            return request

        def do_GET(self) -> None:
            request = self._record()
            match = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(/.*)?", request.path)
            if match is None:
                return self._reply(404, {"error": f"no route {request.path}"})
            repo = hub.repos.get(match[1])
            if repo is None:
                return self._reply(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
            files = repo.branches.get(match[2])
            if files is None:
                return self._reply(404, {"error": "Invalid rev id"}, {"X-Error-Code": "RevisionNotFound"})
            return self._reply(
                200,
                [
                    {"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                    for name, data in sorted(files.items())
                ],
            )

        def do_POST(self) -> None:
            request = self._record()
            path = request.path
            if path == "/api/repos/create":
                payload = json.loads(request.body)
                repo_id = f"{payload['organization']}/{payload['name']}"
                if repo_id in hub.repos:  # the Hub names the existing repo's URL too
                    return self._reply(
                        409, {"error": "You already created this model repo", "url": f"{hub.url}/{repo_id}"}
                    )
                hub.repos[repo_id] = Repo(private=payload.get("visibility") == "private")
                return self._reply(200, {"url": f"{hub.url}/{repo_id}"})
            if path == "/api/validate-yaml":
                return self._reply(200, {})
            match = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(branch|preupload|commit)/(.+)", path)
            if match is None or match[1] not in hub.repos:
                return self._reply(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
            repo, kind, revision = hub.repos[match[1]], match[2], match[3]
            if kind == "branch":
                if revision in repo.branches:
                    return self._reply(409, {"error": "Reference already exists"})
                repo.branches[revision] = dict(repo.branches["main"])
                return self._reply(200, {})
            if kind == "preupload":
                files = json.loads(request.body)["files"]
                return self._reply(
                    200,
                    {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]},
                )
            return self._commit(match[1], repo, revision, request)

        def _commit(self, repo_id: str, repo: Repo, revision: str, request: Request) -> None:
            if hub.fail_commit:
                return self._reply(
                    500, {"error": "Internal Error - We're working hard to fix this as soon as possible!"}
                )
            if revision not in repo.branches:
                return self._reply(404, {"error": "Invalid rev id"}, {"X-Error-Code": "RevisionNotFound"})
            files = dict(repo.branches[revision])
            header = None
            for line in request.body.decode().splitlines():
                entry = json.loads(line)
                value = entry["value"]
                if entry["key"] == "header":
                    header = value
                elif entry["key"] == "file":
                    files[value["path"]] = base64.b64decode(value["content"])
                elif entry["key"] == "deletedFile":
                    files.pop(value["path"])
                else:
                    return self._reply(400, {"error": f"unsupported commit entry {entry['key']}"})
            oid = hashlib.sha1(json.dumps(sorted(files)).encode() + str(len(repo.commits)).encode()).hexdigest()
            repo.commits.append({"revision": revision, "header": header, "create_pr": "create_pr" in request.query})
            if "create_pr" in request.query:
                repo.pull_requests.append(files)
                number = len(repo.pull_requests)
                return self._reply(
                    200,
                    {
                        "commitUrl": f"{hub.url}/{repo_id}/commit/{oid}",
                        "commitOid": oid,
                        "pullRequestUrl": f"{hub.url}/{repo_id}/discussions/{number}",
                    },
                )
            repo.branches[revision] = files
            return self._reply(200, {"commitUrl": f"{hub.url}/{repo_id}/commit/{oid}", "commitOid": oid})

    return Handler


def start() -> FakeHub:
    """Start the stand-in on a free loopback port in a daemon thread; `hub.server.shutdown()` stops it."""
    hub = FakeHub()
    hub.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    threading.Thread(target=hub.server.serve_forever, daemon=True).start()
    return hub
