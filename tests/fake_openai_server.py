"""A tiny OpenAI-compatible chat server on loopback, so tests can drive the real ``openai`` client offline.

It answers ``POST /v1/chat/completions`` on 127.0.0.1 at an ephemeral port, from a thread. Tests script it:

* ``answer(prompt) -> str`` writes the assistant's reply;
* ``plan`` is a list of actions for the next requests, used up in order: ``"ok"``, an HTTP status to return
  (``429``, ``500``, ``401``…), or ``("sleep", seconds)`` to stall past the client's timeout;
* ``fail_from = n`` makes every request from the n-th (0-based) on fail with 500, until set back to ``None``.

It records every request body in ``requests``. It is bounded: past ``max_requests`` it answers 400, and it
shuts itself down after ``lifetime_s`` seconds even if a test forgets to stop it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeOpenAIServer:
    """Use as a context manager: ``with FakeOpenAIServer(answer=lambda p: "Yes") as server: ...``."""

    def __init__(self, answer: Callable[[str], str] = lambda prompt: "Yes", max_requests: int = 200, lifetime_s: float = 60.0):
        self.answer = answer
        self.plan: list[object] = []
        self.fail_from: int | None = None
        self.requests: list[dict] = []
        self.max_requests = max_requests
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._timer = threading.Timer(lifetime_s, self.stop)
        self._timer.daemon = True

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> FakeOpenAIServer:
        self._thread.start()
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._timer.cancel()
        self._httpd.shutdown()
        self._httpd.server_close()

    def _next_action(self, body: dict) -> object:
        """Record the request and decide what to do with it (under a lock: requests arrive on threads)."""
        with self._lock:
            index = len(self.requests)
            self.requests.append(body)
            if index >= self.max_requests:
                return 400
            if self.plan:
                return self.plan.pop(0)
            if self.fail_from is not None and index >= self.fail_from:
                return 500
            return "ok"

    def _completion(self, body: dict) -> dict:
        prompt = body["messages"][-1]["content"]
        text = self.answer(prompt)
        usage = {"prompt_tokens": len(prompt) // 4 + 7, "completion_tokens": max(1, len(text) // 4)}
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {**usage, "total_tokens": sum(usage.values())},
        }

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if not self.path.endswith("/chat/completions"):
                    return self._reply(404, {"error": {"message": f"no route {self.path}"}})
                action = server._next_action(body)
                if isinstance(action, tuple) and action[0] == "sleep":
                    time.sleep(action[1])
                    action = "ok"
                if action == "ok":
                    return self._reply(200, server._completion(body))
                # A real server's 401 can quote the key it was given: echo it, so tests prove it is scrubbed.
                key = self.headers.get("Authorization", "").removeprefix("Bearer ")
                message = f"Incorrect API key provided: {key}" if action == 401 else f"fake failure {action}"
                self._reply(int(action), {"error": {"message": message, "type": "fake", "code": str(action)}})

            def _reply(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and hung up
                    pass

        return Handler
