"""A real OpenAI-compatible embeddings server on 127.0.0.1, scriptable per test.

It speaks ``POST /v1/embeddings`` with OpenAI's request and response shapes, so
tests run the real SDK over real HTTP. Embeddings are derived from the text
alone: unit length, magnitudes decaying along the dimensions like a Matryoshka
model, and a request for fewer dimensions gets the native vector truncated and
re-normalized, as text-embedding-3 does.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from mrl_pg.embeddings import EmbeddingClient

NATIVE_DIMENSIONS = 3072
TEST_API_KEY = "test-key"
_RETRY_HEADERS = {"retry-after-ms": "10"}


def fake_embedding(text: str, dimensions: int = NATIVE_DIMENSIONS) -> npt.NDArray[np.float64]:
    """The server's embedding of ``text`` with ``dimensions`` dimensions."""
    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
    decay = 1.0 / np.sqrt(1.0 + np.arange(NATIVE_DIMENSIONS) / 64.0)
    native = np.random.default_rng(seed).standard_normal(NATIVE_DIMENSIONS) * decay
    prefix = native[:dimensions]
    return prefix / np.linalg.norm(prefix)


@dataclass(frozen=True)
class RecordedRequest:
    """One ``POST`` the server received, whatever it answered."""

    path: str
    inputs: list[str]
    model: str | None
    dimensions: int | None
    encoding_format: str | None
    authorization: str | None


class FakeOpenAIServer:
    """The server, its log of requests, and switches for misbehaving on purpose."""

    def __init__(self, *, api_key: str = TEST_API_KEY) -> None:
        self.api_key = api_key
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self.reset()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.fake = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def reset(self) -> None:
        """Forget the requests and behave again."""
        with self._lock:
            self.requests = []
            self._fail_next = 0
            self._fail_status = 429
            self._fail_always: int | None = None
            self._native: int | None = None
            self._fixed_dimensions: int | None = None
            self._shuffle = False
            self._zero_at: int | None = None
            self._nan_at: int | None = None
            self._reject_dimensions = False
            self._fail_after: tuple[int, int] | None = None
            self._on_request: Callable[[RecordedRequest], None] | None = None

    def fail_next(self, count: int, *, status: int = 429) -> None:
        """Answer the next ``count`` requests with ``status``, then succeed."""
        with self._lock:
            self._fail_next, self._fail_status = count, status

    def fail_always(self, *, status: int = 500) -> None:
        """Answer every request with ``status``."""
        with self._lock:
            self._fail_always = status

    def ignore_dimensions(self, *, native: int = NATIVE_DIMENSIONS) -> None:
        """Return ``native`` dimensions whatever was asked, like a server without ``dimensions``."""
        with self._lock:
            self._native = native

    def return_dimensions(self, dimensions: int) -> None:
        """Return exactly ``dimensions`` dimensions, e.g. fewer than asked."""
        with self._lock:
            self._fixed_dimensions = dimensions

    def shuffle_order(self) -> None:
        """List the embeddings in a random order; each keeps its true ``index``."""
        with self._lock:
            self._shuffle = True

    def return_zero_vector(self, *, at: int = 0) -> None:
        """Answer input ``at`` of every request with the zero vector."""
        with self._lock:
            self._zero_at = at

    def return_nan(self, *, at: int = 0) -> None:
        """Put a ``NaN`` literal into input ``at``; Python's json writes one, strict JSON can't."""
        with self._lock:
            self._nan_at = at

    def reject_dimensions_parameter(self) -> None:
        """Answer 400 to any request carrying ``dimensions``, as some compatible servers do."""
        with self._lock:
            self._reject_dimensions = True

    def fail_after(self, count: int, *, status: int = 500) -> None:
        """Answer ``count`` more requests well, then every later one with ``status``."""
        with self._lock:
            self._fail_after = (count, status)

    def on_request(self, hook: Callable[[RecordedRequest], None] | None) -> None:
        """Call ``hook`` with each request as it arrives, before it is answered.

        It runs on the server's thread while the client waits for the answer, so it
        sees the client's side exactly as it was when the request was sent.
        """
        with self._lock:
            self._on_request = hook

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def answer(
        self, path: str, authorization: str | None, body: Any
    ) -> tuple[int, dict[str, str], Any]:
        """Status, extra headers and JSON payload for one request."""
        request = _record(path, authorization, body)
        with self._lock:
            hook = self._on_request
        if hook is not None:
            hook(request)
        with self._lock:
            self.requests.append(request)
            if path.rstrip("/") != "/v1/embeddings":
                return 404, {}, _error(f"Unknown path {path}", "invalid_request_error")
            if authorization != f"Bearer {self.api_key}":
                return 401, {}, _error("Incorrect API key provided.", "invalid_request_error",
                                       code="invalid_api_key")
            if self._fail_always is not None:
                return self._failure(self._fail_always)
            if self._fail_next > 0:
                self._fail_next -= 1
                return self._failure(self._fail_status)
            if self._fail_after is not None:
                remaining, status = self._fail_after
                if remaining == 0:
                    return self._failure(status)
                self._fail_after = (remaining - 1, status)
            return self._embeddings(request)

    def _failure(self, status: int) -> tuple[int, dict[str, str], Any]:
        if status == 429:
            return status, _RETRY_HEADERS, _error("Rate limit reached for requests", "requests",
                                                  code="rate_limit_exceeded")
        return status, _RETRY_HEADERS, _error("The server had an error.", "server_error")

    def _embeddings(self, request: RecordedRequest) -> tuple[int, dict[str, str], Any]:
        if not request.inputs or any(not text for text in request.inputs):
            return 400, {}, _error("'$.input' is invalid.", "invalid_request_error")
        if request.dimensions is not None:
            if self._reject_dimensions:
                return 400, {}, _error("This model does not support specifying dimensions.",
                                       "invalid_request_error", param="dimensions")
            if not 1 <= request.dimensions <= NATIVE_DIMENSIONS:
                return 400, {}, _error(f"Invalid dimensions {request.dimensions}.",
                                       "invalid_request_error", param="dimensions")
        size = self._fixed_dimensions or self._native or request.dimensions or NATIVE_DIMENSIONS
        data = []
        for index, text in enumerate(request.inputs):
            vector = fake_embedding(text, size).tolist()
            if index == self._zero_at:
                vector = [0.0] * size
            if index == self._nan_at:
                vector[0] = float("nan")
            embedding: Any = vector
            if request.encoding_format == "base64":
                embedding = base64.b64encode(np.asarray(vector, "<f4").tobytes()).decode("ascii")
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        if self._shuffle:
            random.Random(len(data)).shuffle(data)
        tokens = sum(len(text.split()) for text in request.inputs)
        return 200, {}, {
            "object": "list",
            "data": data,
            "model": request.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        fake: FakeOpenAIServer = self.server.fake  # type: ignore[attr-defined]
        status, headers, payload = fake.answer(self.path, self.headers.get("Authorization"), body)
        encoded = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(encoded)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(encoded)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        pass


def _record(path: str, authorization: str | None, body: Any) -> RecordedRequest:
    body = body if isinstance(body, dict) else {}
    raw_input = body.get("input")
    inputs = [raw_input] if isinstance(raw_input, str) else list(raw_input or [])
    dimensions = body.get("dimensions")
    return RecordedRequest(
        path=path,
        inputs=[str(text) for text in inputs],
        model=body.get("model"),
        dimensions=dimensions if isinstance(dimensions, int) else None,
        encoding_format=body.get("encoding_format"),
        authorization=authorization,
    )


def _error(message: str, kind: str, *, code: str | None = None, param: str | None = None) -> Any:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


@pytest.fixture(scope="session")
def _openai_server_session() -> Iterator[FakeOpenAIServer]:
    server = FakeOpenAIServer()
    yield server
    server.close()


@pytest.fixture
def openai_server(_openai_server_session: FakeOpenAIServer) -> Iterator[FakeOpenAIServer]:
    """The local embeddings server, reset to good behaviour with an empty request log."""
    _openai_server_session.reset()
    yield _openai_server_session
    _openai_server_session.reset()


@pytest.fixture
def embedding_client(openai_server: FakeOpenAIServer) -> Iterator[EmbeddingClient]:
    """An ``EmbeddingClient`` for 256 dimensions on ``openai_server``, two quick retries."""
    client = EmbeddingClient(
        base_url=openai_server.base_url,
        api_key=TEST_API_KEY,
        dimensions=256,
        max_retries=2,
        timeout=10.0,
    )
    yield client
    client.close()
