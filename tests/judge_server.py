"""A real OpenAI-compatible chat-completions server on loopback for judge tests (FastAPI + uvicorn in a thread).

Each request's behaviour is scripted by the question it asks about (the ``Question:`` line of Video-ChatGPT's user
message): the n-th request about a question plays the n-th action of its script (the last one repeats). Actions:

- ``reply(text)``: a 200 chat completion whose message content is `text`;
- ``status(code)``: an error response with ``retry-after-ms: 10`` (so the client's retry waits 10 ms);
- ``sleep(seconds, reply(...))``: wait, then reply (past the client's timeout the client has given up and retries).

The server counts every request it receives, per question and in total, remembers the headers, and records the
largest number of requests it was answering at once.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

REPORTED_MODEL_SUFFIX = "-2024-01-25"
FINGERPRINT = "fp_loopback_1"
_QUESTION = re.compile(r"^Question: (.*)$", re.MULTILINE)


def reply(text: str) -> tuple:
    return ("reply", text)


def status(code: int) -> tuple:
    return ("status", code)


def sleep(seconds: float, then: tuple) -> tuple:
    """Wait, then play the reply action `then`."""
    return ("sleep", seconds, then[-1])


def verdict(pred: str, score: float) -> tuple:
    """A well-formed judge reply."""
    return reply(f"{{'pred': '{pred}', 'score': {score}}}")


@dataclass
class JudgeServer:
    """Scripted judge; `script` maps a question to its actions, `default` plays for questions not in it."""

    script: dict[str, list[tuple]] = field(default_factory=dict)
    default: tuple = field(default_factory=lambda: verdict("yes", 5))
    requests: Counter = field(default_factory=Counter)
    headers: list[dict[str, str]] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def total(self) -> int:
        return sum(self.requests.values())

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def completions(request: Request) -> Any:
            body = await request.json()
            user = next((m["content"] for m in body["messages"] if m["role"] == "user"), "")
            match = _QUESTION.search(user)
            question = match.group(1) if match else ""
            with self._lock:
                number = self.requests[question]
                self.requests[question] += 1
                self.headers.append(dict(request.headers))
            actions = self.script.get(question, [self.default])
            action = actions[min(number, len(actions) - 1)]
            with self._lock:
                self.in_flight += 1
                self.most_in_flight = max(self.most_in_flight, self.in_flight)
            try:
                return await self._play(action, body)
            finally:
                with self._lock:
                    self.in_flight -= 1

        return app

    async def _play(self, action: tuple, body: dict[str, Any]) -> Any:
        """The response of one action to a request with JSON `body`."""
        if action[0] == "status":
            return JSONResponse(
                {"error": {"message": f"scripted {action[1]}", "type": "scripted", "code": action[1]}},
                status_code=action[1],
                headers={"retry-after-ms": "10"},
            )
        if action[0] == "sleep":
            await asyncio.sleep(action[1])
        text = action[-1]
        return {
            "id": f"chatcmpl-{self.total}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"] + REPORTED_MODEL_SUFFIX,
            "system_fingerprint": FINGERPRINT,
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }


@contextmanager
def serve(judge: JudgeServer) -> Iterator[JudgeServer]:
    """Run `judge` on 127.0.0.1 on a free port in a background thread; ``judge.url`` is its ``/v1`` base URL."""
    server = uvicorn.Server(uvicorn.Config(judge.app(), host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the loopback judge server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    judge.url = f"http://127.0.0.1:{port}/v1"
    try:
        yield judge
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def free_port() -> int:
    """A loopback port on which nothing listens (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
