"""A JSON webhook on 127.0.0.1 for notification tests: apprise's ``json://`` posts to it.

``with Webhook() as hook:`` gives ``hook.url(path)`` (an apprise URL) and ``hook.received``
(the decoded bodies, in order); ``fail_first=N`` answers the first N posts with HTTP 500."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Webhook:
    def __init__(self, fail_first: int = 0):
        self.received: list[dict] = []
        self.paths: list[str] = []
        self.fail_first = fail_first
        self.posts = 0
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                hook.posts += 1
                if hook.posts <= hook.fail_first:
                    self.send_response(500)
                else:
                    hook.received.append(json.loads(body))
                    hook.paths.append(self.path)
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str = "hook") -> str:
        return f"json://127.0.0.1:{self.port}/{path}"

    def wait_for(self, pred, timeout: float = 60.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred(self.received):
                return self.received
            time.sleep(0.1)
        raise AssertionError(f"the webhook did not get what was expected in {timeout} s: {self.received}")

    def __enter__(self) -> "Webhook":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
