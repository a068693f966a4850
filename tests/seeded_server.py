"""A loopback OpenAI-compatible server that samples from the request's `seed` alone, as vLLM and
OpenAI do when asked to: the same seed gives the same text, a missing seed a fresh one. It serves
`/v1/models` and `/v1/chat/completions`; `answer(messages, seed)` writes each reply."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class SeededServer:
    def __init__(self, answer: Callable[[list[dict], int], str], model: str = "seeded-model"):
        self.answer = answer
        self.model = model
        self.seeds: list[int | None] = []
        unseeded = itertools.count(10**9)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, payload: dict) -> None:
                body = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                self._reply({"object": "list", "data": [{"id": server.model, "object": "model"}]})

            def do_POST(self):
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                seed = request.get("seed")
                server.seeds.append(seed)
                text = server.answer(request["messages"], seed if seed is not None else next(unseeded))
                self._reply({"id": "x", "object": "chat.completion", "created": 0, "model": server.model,
                             "choices": [{"index": 0, "finish_reason": "stop",
                                          "message": {"role": "assistant", "content": text}}],
                             "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}})

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self._http.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    def __enter__(self) -> SeededServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._http.shutdown()
        self._http.server_close()
