"""A local OpenAI-compatible /v1/chat/completions server answering from a script, counting requests."""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tests.support.http_server import LocalHTTPServer, Route, serve

__all__ = ["ChatScript", "HTTPError", "chat_server"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HTTPError:
    """A scripted error answer."""

    status: int
    message: str = "scripted error"


class ChatScript:
    """Answers in order (the last one repeats); every request body is kept in ``requests``."""

    def __init__(self, server: LocalHTTPServer, model: str = "test-chat") -> None:
        self.server = server
        self.model = model
        self.answers: deque[str | HTTPError] = deque()
        self.last: str | HTTPError = '{"memories": [], "preferences": [], "tool_trajectories": []}'
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        server.routes["/v1/chat/completions"] = Route(handler=self._handle)

    @property
    def url(self) -> str:
        """The model URL for chat_model_from_url."""
        return f"openai+http://127.0.0.1:{self.server.server_address[1]}/v1?model={self.model}"

    def say(self, *answers: str | HTTPError) -> None:
        """Queue answers; the last queued one is repeated once the queue is empty."""
        with self._lock:
            self.answers.extend(answers)

    def _handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
        request = json.loads(body or b"{}")
        with self._lock:
            self.requests.append(request)
            if self.answers:
                self.last = self.answers.popleft()
            answer = self.last
        if isinstance(answer, HTTPError):
            error = {"error": {"message": answer.message, "type": "server_error", "code": None}}
            return answer.status, "application/json", json.dumps(error).encode()
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in request.get("messages", []))
        reply = {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": 0,
            "model": request.get("model", self.model),
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": len(answer.split()),
                "total_tokens": prompt_tokens + len(answer.split()),
            },
        }
        return 200, "application/json", json.dumps(reply).encode()


@contextmanager
def chat_server(model: str = "test-chat") -> Iterator[ChatScript]:
    """A running OpenAI-compatible chat server with an empty script."""
    with serve() as server:
        yield ChatScript(server, model)
