"""A local stand-in for the few Hugging Face Hub routes ``huggingface_hub`` calls to create a repo and upload
a folder (``HF_ENDPOINT=http://127.0.0.1:<port>``): it stores what it receives, so tests can read it back."""

from __future__ import annotations

import base64
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class FakeHub:
    """Serves on loopback in a thread; ``files[repo_id][path] = bytes`` is what was committed. The first
    ``fail_commits`` commits answer HTTP 500 (a flaky Hub)."""

    def __init__(self, fail_commits: int = 0):
        self.files: dict[str, dict[str, bytes]] = {}
        self.repos: set[str] = set()
        self.commits = 0
        self.failed = 0
        self.fail_commits = fail_commits
        self.tokens: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _json(self, status: int, payload) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hub.tokens.append(self.headers.get("authorization", ""))
                if self.path.startswith("/api/validate-yaml"):  # a README's metadata, checked before upload
                    return self._json(200, {"errors": [], "warnings": []})
                if self.path.startswith("/api/repos/create"):
                    data = json.loads(body)
                    repo = f"{data.get('organization') or 'user'}/{data['name']}"
                    hub.repos.add(repo)
                    return self._json(200, {"url": f"{hub.endpoint}/{repo}", "name": repo, "id": repo})
                m = re.match(r"/api/models/([^/]+/[^/]+)/(preupload|commit)/([^/?]+)", self.path)
                if m is None:
                    return self._json(404, {"error": f"no route {self.path}"})
                repo, route = m.group(1), m.group(2)
                if repo not in hub.repos:
                    return self._json(404, {"error": f"repository {repo} not found"})
                if route == "preupload":
                    files = json.loads(body)["files"]
                    return self._json(
                        200,
                        {
                            "files": [
                                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                for f in files
                            ]
                        },
                    )
                if hub.failed < hub.fail_commits:
                    hub.failed += 1
                    return self._json(500, {"error": "the fake Hub is down"})
                store = hub.files.setdefault(repo, {})
                for line in body.decode().splitlines():
                    item = json.loads(line)
                    if item.get("key") == "file":
                        value = item["value"]
                        store[value["path"]] = base64.b64decode(value["content"])
                hub.commits += 1
                oid = f"{hub.commits:040d}"
                return self._json(200, {"commitUrl": f"{hub.endpoint}/{repo}/commit/{oid}", "commitOid": oid})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def write_repo(self, repo_id: str, folder: Path) -> Path:
        """The files committed to ``repo_id``, written under ``folder`` (as a download would)."""
        for path, data in self.files[repo_id].items():
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            (folder / path).write_bytes(data)
        return folder

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
