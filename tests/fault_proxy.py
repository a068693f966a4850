"""An HTTP proxy in front of the local server that injects faults: 429s, 500s and stalls.

`plan(body) -> action` decides per POST: "ok" forwards, "429"/"500" answer with that status,
"stall" sleeps past the client's timeout. Bound to loopback; it stops with the test.

A stall is silence, and a client's read timeout measures silence. A busy shared server may take
longer than that timeout to answer a healthy request, so with `heartbeat_seconds` set the proxy
answers "ok" requests at once with a 200 and a space every `heartbeat_seconds` until the upstream
body arrives (leading whitespace is valid JSON): a slow server is then never mistaken for a stall,
and the client's timeout can stay short. The upstream's status is not passed on in that mode.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor, TimeoutError  # builtin only from Python 3.11
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx


class FaultProxy:
    def __init__(self, upstream: str, plan: Callable[[int, bytes], str], stall_seconds: float = 5.0,
                 heartbeat_seconds: float | None = None):
        self.upstream = upstream.rstrip("/")
        self.plan = plan
        self.stall_seconds = stall_seconds
        self.heartbeat_seconds = heartbeat_seconds
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
                def forward() -> httpx.Response:
                    return httpx.post(proxy.upstream + self.path, content=body,
                                      headers={"Content-Type": "application/json"}, timeout=300)

                if proxy.heartbeat_seconds is None:
                    response = forward()
                    return self._reply(response.status_code, response.content)
                self._heartbeat_until(forward)

            def _heartbeat_until(self, forward):
                self.send_response(200)  # HTTP/1.0 and no length: the body ends when the connection closes
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                with ThreadPoolExecutor(max_workers=1) as pool:
                    pending = pool.submit(forward)
                    try:
                        while True:
                            try:
                                response = pending.result(timeout=proxy.heartbeat_seconds)
                                break
                            except TimeoutError:
                                self.wfile.write(b" ")
                                self.wfile.flush()
                        self.wfile.write(response.content)
                    except OSError:  # the client gave up and closed the connection
                        return

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
