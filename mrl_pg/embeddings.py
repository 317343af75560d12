"""Embedding texts through any OpenAI-compatible ``/v1/embeddings`` server.

The official ``openai`` SDK does the HTTP: retries with backoff on 429, 5xx
and connection errors, timeouts, and reading ``OPENAI_API_KEY`` and
``OPENAI_BASE_URL``. This module adds what the SDK leaves to callers: batches
under the API's limits, answers checked for order, count, shape and finite
values, and client-side Matryoshka truncation when a server ignores
``dimensions``. The SDK is imported lazily because it takes most of a second
to import and only this module needs it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from mrl_pg.errors import EmbeddingError, InvalidConfigError, InvalidTextError, InvalidVectorError
from mrl_pg.vectors import FloatArray, truncate_and_normalize

if TYPE_CHECKING:
    import openai
    from openai.types import CreateEmbeddingResponse

__all__ = [
    "DEFAULT_DIMENSIONS",
    "DEFAULT_MAX_BATCH_TOKENS",
    "DEFAULT_MODEL",
    "MAX_BATCH_INPUTS",
    "AsyncEmbeddingClient",
    "Embedder",
    "EmbeddingClient",
    "estimate_tokens",
]

log = logging.getLogger(__name__)

DEFAULT_MODEL = "text-embedding-3-small"
DEFAULT_DIMENSIONS = 1536
"""Native size of text-embedding-3-small; text-embedding-3-large is 3072."""
MAX_BATCH_INPUTS = 2048
"""The OpenAI API's limit on inputs per request."""
DEFAULT_MAX_BATCH_TOKENS = 250_000
"""Below the OpenAI API's 300,000 tokens per request, counted with ``estimate_tokens``."""


@runtime_checkable
class Embedder(Protocol):
    """What ingest needs from an embedding source: a fixed width and a batch call."""

    dimensions: int

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]: ...


def estimate_tokens(text: str) -> int:
    """Count a text's tokens from above without a tokenizer: its UTF-8 length in bytes.

    Byte-level BPE tokenizers (OpenAI's cl100k and o200k among them) never make
    a token shorter than one byte, so this never under-counts; for English it
    over-counts about four times, which only makes batches smaller.
    """
    return len(text.encode("utf-8"))


class _EmbeddingClientBase:
    """Options, batching and answer checks shared by the sync and async clients."""

    def __init__(
        self,
        *,
        model: str,
        dimensions: int,
        max_retries: int,
        max_batch_inputs: int,
        max_batch_tokens: int,
        send_dimensions: bool,
    ) -> None:
        if not model:
            raise InvalidConfigError("model must be a non-empty model name")
        for name, value in (("dimensions", dimensions), ("max_batch_inputs", max_batch_inputs),
                            ("max_batch_tokens", max_batch_tokens)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidConfigError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise InvalidConfigError(
                f"max_retries must be a non-negative integer, got {max_retries!r}"
            )
        self.model = model
        self.dimensions = dimensions
        self.max_batch_inputs = max_batch_inputs
        self.max_batch_tokens = max_batch_tokens
        self.send_dimensions = send_dimensions
        self._warned_truncation = False

    def _request_options(self) -> dict[str, Any]:
        # "float" because every compatible server understands it; the SDK's own
        # default, base64, is smaller but some servers reject it.
        options: dict[str, Any] = {"model": self.model, "encoding_format": "float"}
        if self.send_dimensions:
            options["dimensions"] = self.dimensions
        return options

    def _plan(self, texts: Sequence[str]) -> list[tuple[int, int]]:
        _check_texts(texts)
        return list(_batches(texts, self.max_batch_inputs, self.max_batch_tokens))

    def _rows(self, response: CreateEmbeddingResponse, start: int, stop: int) -> FloatArray:
        count = stop - start
        data = sorted(response.data, key=lambda item: item.index)
        if len(data) != count:
            raise EmbeddingError(
                f"asked for {count} embeddings (texts[{start}:{stop}]), "
                f"the server returned {len(data)}"
            )
        indices = [item.index for item in data]
        if indices != list(range(count)):
            raise EmbeddingError(
                f"the server returned embedding indices {indices[:10]}, expected 0 to {count - 1}"
            )
        rows = np.empty((count, self.dimensions), dtype=np.float32)
        for offset, item in enumerate(data):
            rows[offset] = self._fit(item.embedding, start + offset)
        return rows

    def _fit(self, embedding: Sequence[float], position: int) -> FloatArray:
        where = f"texts[{position}]"
        try:
            vector = np.asarray(embedding, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise EmbeddingError(f"{where}: the server's embedding is not numbers") from exc
        if vector.ndim != 1:
            raise EmbeddingError(f"{where}: the server's embedding has shape {vector.shape}")
        if not np.isfinite(vector).all():
            raise EmbeddingError(f"{where}: the server returned an embedding with NaN or infinity")
        if not vector.any():
            raise EmbeddingError(f"{where}: the server returned the zero vector")
        actual = vector.shape[0]
        if actual < self.dimensions:
            raise EmbeddingError(
                f"{where}: expected {self.dimensions} dimensions, the server returned {actual}; "
                f"set dimensions={actual} or use a model with at least {self.dimensions}"
            )
        if actual == self.dimensions:
            return vector
        if self.send_dimensions and not self._warned_truncation:
            self._warned_truncation = True
            log.warning(
                "%s returned %d dimensions although %d were asked for; truncating and "
                "re-normalizing client-side, which only preserves quality for Matryoshka models",
                self.model, actual, self.dimensions,
            )
        try:
            return truncate_and_normalize(vector, self.dimensions)
        except InvalidVectorError as exc:
            raise EmbeddingError(f"{where}: {exc}") from exc


class EmbeddingClient(_EmbeddingClientBase):
    """Embed texts with an OpenAI-compatible server (OpenAI, vLLM, Ollama, TEI, LM Studio).

    ``base_url`` and ``api_key`` default to ``OPENAI_BASE_URL`` and
    ``OPENAI_API_KEY``, read by the SDK. ``dimensions`` is the width asked for
    and returned (1536 is text-embedding-3-small's native size, 3072 that of
    text-embedding-3-large); pass ``send_dimensions=False`` for servers that
    reject the parameter, and wider answers are truncated client-side.
    ``timeout`` is seconds per request (None keeps the SDK's default of ten
    minutes). A pre-built ``client`` keeps its own URL, key, retries and timeout.

    >>> client = EmbeddingClient(dimensions=256)  # doctest: +SKIP
    >>> client.embed(["first passage", "second passage"]).shape  # doctest: +SKIP
    (2, 256)
    """

    def __init__(
        self,
        *,
        model: str = DEFAULT_MODEL,
        dimensions: int = DEFAULT_DIMENSIONS,
        base_url: str | None = None,
        api_key: str | None = None,
        max_retries: int = 5,
        timeout: float | None = None,
        max_batch_inputs: int = MAX_BATCH_INPUTS,
        max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
        send_dimensions: bool = True,
        client: openai.OpenAI | None = None,
    ) -> None:
        super().__init__(
            model=model,
            dimensions=dimensions,
            max_retries=max_retries,
            max_batch_inputs=max_batch_inputs,
            max_batch_tokens=max_batch_tokens,
            send_dimensions=send_dimensions,
        )
        self._owns_client = client is None
        if client is None:
            import openai

            options = _client_options(base_url, api_key, max_retries, timeout)
            try:
                client = openai.OpenAI(**options)
            except openai.OpenAIError as exc:
                raise _configuration_error(exc) from exc
        elif base_url is not None or api_key is not None:
            raise InvalidConfigError("pass base_url and api_key to the pre-built client, not here")
        self._client = client

    @property
    def base_url(self) -> str:
        """The server's address, as the SDK resolved it."""
        return str(self._client.base_url)

    def embed(
        self, texts: Sequence[str], *, on_batch: Callable[[int], None] | None = None
    ) -> FloatArray:
        """Embed ``texts`` in order as a float32 array of shape ``(len(texts), dimensions)``.

        Every text is checked before the first request, so a bad one costs no
        API call. ``on_batch`` is called with each batch's size after it is
        embedded (``tqdm``'s ``update`` fits).
        """
        result = np.empty((len(texts), self.dimensions), dtype=np.float32)
        for start, stop in self._plan(texts):
            response = self._create(list(texts[start:stop]))
            result[start:stop] = self._rows(response, start, stop)
            if on_batch is not None:
                on_batch(stop - start)
        return result

    def embed_one(self, text: str) -> FloatArray:
        """Embed one text, for a query, as a 1-D float32 array."""
        row: FloatArray = self.embed([text])[0]
        return row

    def close(self) -> None:
        """Close the HTTP connections, unless the SDK client was passed in."""
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> EmbeddingClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _create(self, batch: list[str]) -> CreateEmbeddingResponse:
        import openai

        try:
            return self._client.embeddings.create(input=batch, **self._request_options())
        except openai.OpenAIError as exc:
            raise _request_error(exc, self, self.base_url) from exc


class AsyncEmbeddingClient(_EmbeddingClientBase):
    """``EmbeddingClient`` for asyncio, on ``openai.AsyncOpenAI``; same options."""

    def __init__(
        self,
        *,
        model: str = DEFAULT_MODEL,
        dimensions: int = DEFAULT_DIMENSIONS,
        base_url: str | None = None,
        api_key: str | None = None,
        max_retries: int = 5,
        timeout: float | None = None,
        max_batch_inputs: int = MAX_BATCH_INPUTS,
        max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
        send_dimensions: bool = True,
        client: openai.AsyncOpenAI | None = None,
    ) -> None:
        super().__init__(
            model=model,
            dimensions=dimensions,
            max_retries=max_retries,
            max_batch_inputs=max_batch_inputs,
            max_batch_tokens=max_batch_tokens,
            send_dimensions=send_dimensions,
        )
        self._owns_client = client is None
        if client is None:
            import openai

            options = _client_options(base_url, api_key, max_retries, timeout)
            try:
                client = openai.AsyncOpenAI(**options)
            except openai.OpenAIError as exc:
                raise _configuration_error(exc) from exc
        elif base_url is not None or api_key is not None:
            raise InvalidConfigError("pass base_url and api_key to the pre-built client, not here")
        self._client = client

    @property
    def base_url(self) -> str:
        """The server's address, as the SDK resolved it."""
        return str(self._client.base_url)

    async def embed(
        self, texts: Sequence[str], *, on_batch: Callable[[int], None] | None = None
    ) -> FloatArray:
        """Embed ``texts`` in order; batches are sent one after another."""
        result = np.empty((len(texts), self.dimensions), dtype=np.float32)
        for start, stop in self._plan(texts):
            response = await self._create(list(texts[start:stop]))
            result[start:stop] = self._rows(response, start, stop)
            if on_batch is not None:
                on_batch(stop - start)
        return result

    async def embed_one(self, text: str) -> FloatArray:
        """Embed one text as a 1-D float32 array."""
        row: FloatArray = (await self.embed([text]))[0]
        return row

    async def aclose(self) -> None:
        """Close the HTTP connections, unless the SDK client was passed in."""
        if self._owns_client:
            await self._client.close()

    async def __aenter__(self) -> AsyncEmbeddingClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _create(self, batch: list[str]) -> CreateEmbeddingResponse:
        import openai

        try:
            return await self._client.embeddings.create(input=batch, **self._request_options())
        except openai.OpenAIError as exc:
            raise _request_error(exc, self, self.base_url) from exc


def _check_texts(texts: Sequence[str]) -> None:
    if isinstance(texts, (str, bytes)):
        raise InvalidTextError("embed() takes a sequence of strings; use embed_one() for one text")
    for position, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidTextError(f"texts[{position}] is {type(text).__name__}, expected str")
        if not text.strip():
            raise InvalidTextError(
                f"texts[{position}] is empty or whitespace only; the embeddings API rejects it"
            )


def _batches(texts: Sequence[str], max_inputs: int, max_tokens: int) -> Iterator[tuple[int, int]]:
    # A text over the token budget on its own still goes, alone: only the
    # server knows whether it really is too long.
    start = 0
    tokens = 0
    for position, text in enumerate(texts):
        cost = estimate_tokens(text)
        if position > start and (position - start >= max_inputs or tokens + cost > max_tokens):
            yield start, position
            start, tokens = position, 0
        tokens += cost
    if start < len(texts):
        yield start, len(texts)


def _client_options(
    base_url: str | None, api_key: str | None, max_retries: int, timeout: float | None
) -> dict[str, Any]:
    options: dict[str, Any] = {"base_url": base_url, "api_key": api_key, "max_retries": max_retries}
    if timeout is not None:
        options["timeout"] = timeout
    return options


def _configuration_error(exc: Exception) -> EmbeddingError:
    text = str(exc)
    if "api_key" in text or "credentials" in text.lower():
        return EmbeddingError(
            "no API key for the embedding server: set OPENAI_API_KEY or pass api_key= "
            "(any non-empty string for a local server that ignores it), and set "
            "OPENAI_BASE_URL for an OpenAI-compatible server"
        )
    return EmbeddingError(f"cannot configure the OpenAI client: {text}")


def _request_error(exc: Exception, client: _EmbeddingClientBase, base_url: str) -> EmbeddingError:
    import openai

    where = f"the embedding server at {base_url}"
    if isinstance(exc, openai.AuthenticationError):
        return EmbeddingError(
            f"{where} rejected the API key (HTTP 401): set OPENAI_API_KEY to a valid key"
        )
    if isinstance(exc, openai.PermissionDeniedError):
        return EmbeddingError(
            f"{where} refused access to model {client.model!r} (HTTP 403): {_detail(exc)}"
        )
    if isinstance(exc, openai.NotFoundError):
        return EmbeddingError(
            f"{where} has no model {client.model!r} or no /embeddings endpoint (HTTP 404): "
            "check model= and OPENAI_BASE_URL (it usually ends in /v1)"
        )
    if isinstance(exc, openai.RateLimitError):
        return EmbeddingError(
            f"{where} kept answering 429 (rate limit) through every retry: lower "
            "max_batch_tokens, raise max_retries, or check the account's quota"
        )
    if isinstance(exc, (openai.BadRequestError, openai.UnprocessableEntityError)):
        detail = _detail(exc)
        hint = ""
        if client.send_dimensions and "dimension" in detail.lower():
            hint = "; if the server does not support `dimensions`, pass send_dimensions=False"
        return EmbeddingError(
            f"{where} rejected the request (HTTP {exc.status_code}): {detail}{hint}"
        )
    if isinstance(exc, openai.APIStatusError):
        return EmbeddingError(
            f"{where} failed with HTTP {exc.status_code} through every retry: {_detail(exc)}"
        )
    if isinstance(exc, openai.APITimeoutError):
        return EmbeddingError(
            f"{where} did not answer in time: raise timeout= or lower max_batch_inputs"
        )
    if isinstance(exc, openai.APIConnectionError):
        return EmbeddingError(
            f"cannot reach {where}: is it running? Set OPENAI_BASE_URL or base_url= to its address"
        )
    return EmbeddingError(f"{where} failed: {exc}")


def _detail(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        for key in ("message", "detail", "error"):
            if isinstance(body.get(key), str):
                return str(body[key])[:300]
    return str(body if body else exc.message)[:300]
