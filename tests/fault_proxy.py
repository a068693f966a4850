"""An HTTP proxy in front of the local server that injects faults: 429s, 500s and stalls.

`plan(body) -> action` decides per POST: "ok" forwards, "429"/"500" answer with that status,
"stall" sleeps past the client's timeout. Bound to loopback; it stops with the test.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx


class FaultProxy:
    def __init__(self, upstream: str, plan: Callable[[int, bytes], str], stall_seconds: float = 5.0):
        self.upstream = upstream.rstrip("/")
        self.plan = plan
        self.stall_seconds = stall_seconds
        self.seen: list[str] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                response = httpx.get(proxy.upstream + self.path, timeout=30)
                self._reply(response.status_code, response.content)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with proxy._lock:
                    action = proxy.plan(len(proxy.seen), body)
                    proxy.seen.append(action)
                if action == "429":
                    return self._reply(429, b'{"error": {"message": "rate limited (injected)"}}')
                if action == "500":
                    return self._reply(500, b'{"error": {"message": "server error (injected)"}}')
                if action == "stall":
                    time.sleep(proxy.stall_seconds)
                    try:
                        return self._reply(504, b'{"error": {"message": "stalled (injected)"}}')
                    except OSError:
                        return None
                response = httpx.post(proxy.upstream + self.path, content=body,
                                      headers={"Content-Type": "application/json"}, timeout=300)
                self._reply(response.status_code, response.content)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
