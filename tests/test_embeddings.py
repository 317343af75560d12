"""EmbeddingClient through the real openai SDK against a real local HTTP server."""

from __future__ import annotations

import json
import socket
from importlib import resources

import numpy as np
import pytest

from mrl_pg.embeddings import AsyncEmbeddingClient, Embedder, EmbeddingClient, estimate_tokens
from mrl_pg.errors import EmbeddingError, InvalidConfigError
from mrl_pg.vectors import truncate_and_normalize
from tests.fix_openai import TEST_API_KEY, FakeOpenAIServer, fake_embedding

TEXTS = [f"passage number {i} about something" for i in range(10)]


def client_for(server: FakeOpenAIServer, **options: object) -> EmbeddingClient:
    settings: dict[str, object] = {
        "base_url": server.base_url,
        "api_key": TEST_API_KEY,
        "dimensions": 256,
        "max_retries": 2,
        "timeout": 10.0,
    }
    settings.update(options)
    return EmbeddingClient(**settings)  # type: ignore[arg-type]


def test_embed_returns_float32_rows_of_the_requested_width_at_unit_length(
    embedding_client: EmbeddingClient, openai_server: FakeOpenAIServer
) -> None:
    result = embedding_client.embed(TEXTS[:3])
    assert result.shape == (3, 256)
    assert result.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(result, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(result[1], fake_embedding(TEXTS[1], 256), atol=1e-6)
    [request] = openai_server.requests
    assert request.dimensions == 256
    assert request.model == "text-embedding-3-small"
    assert request.authorization == f"Bearer {TEST_API_KEY}"


def test_order_is_kept_across_batches_of_three(openai_server: FakeOpenAIServer) -> None:
    with client_for(openai_server, max_batch_inputs=3) as client:
        result = client.embed(TEXTS)
        assert [len(r.inputs) for r in openai_server.requests] == [3, 3, 3, 1]
        assert [text for r in openai_server.requests for text in r.inputs] == TEXTS
        singles = np.stack([client.embed_one(text) for text in TEXTS])
    np.testing.assert_array_equal(result, singles)


def test_token_budget_splits_batches_by_utf8_bytes(openai_server: FakeOpenAIServer) -> None:
    texts = ["aaaa", "bbbb", "cccc", "\u00e9\u00e9\u00e9\u00e9\u00e9", "dd"]
    assert [estimate_tokens(t) for t in texts] == [4, 4, 4, 10, 2]
    with client_for(openai_server, max_batch_tokens=10) as client:
        result = client.embed(texts)
    assert [r.inputs for r in openai_server.requests] == [
        ["aaaa", "bbbb"], ["cccc"], ["\u00e9\u00e9\u00e9\u00e9\u00e9"], ["dd"]
    ]
    assert result.shape == (5, 256)


def test_a_text_over_the_token_budget_is_sent_alone(openai_server: FakeOpenAIServer) -> None:
    with client_for(openai_server, max_batch_tokens=5) as client:
        client.embed(["short", "this one is longer than five bytes", "tiny"])
    assert [len(r.inputs) for r in openai_server.requests] == [1, 1, 1]


def test_on_batch_reports_each_batch_size(openai_server: FakeOpenAIServer) -> None:
    sizes: list[int] = []
    with client_for(openai_server, max_batch_inputs=4) as client:
        client.embed(TEXTS, on_batch=sizes.append)
    assert sizes == [4, 4, 2]


@pytest.mark.parametrize("bad", ["", "   ", "\n\t"])
def test_empty_or_whitespace_text_is_rejected_before_any_request(
    embedding_client: EmbeddingClient, openai_server: FakeOpenAIServer, bad: str
) -> None:
    with pytest.raises(EmbeddingError, match=r"texts\[2\] is empty or whitespace"):
        embedding_client.embed(["fine", "also fine", bad])
    assert openai_server.requests == []


def test_non_string_input_is_rejected_naming_its_index(
    embedding_client: EmbeddingClient, openai_server: FakeOpenAIServer
) -> None:
    with pytest.raises(EmbeddingError, match=r"texts\[1\] is int, expected str"):
        embedding_client.embed(["fine", 42])  # type: ignore[list-item]
    assert openai_server.requests == []


def test_a_bare_string_is_rejected_instead_of_embedding_its_characters(
    embedding_client: EmbeddingClient, openai_server: FakeOpenAIServer
) -> None:
    with pytest.raises(EmbeddingError, match="embed_one"):
        embedding_client.embed("hello")
    assert openai_server.requests == []


def test_no_texts_gives_an_empty_matrix_without_a_request(
    embedding_client: EmbeddingClient, openai_server: FakeOpenAIServer
) -> None:
    assert embedding_client.embed([]).shape == (0, 256)
    assert openai_server.requests == []


def test_two_rate_limits_then_success_is_retried_by_the_sdk(
    embedding_client: EmbeddingClient, openai_server: FakeOpenAIServer
) -> None:
    openai_server.fail_next(2, status=429)
    result = embedding_client.embed(TEXTS[:2])
    assert len(openai_server.requests) == 3
    np.testing.assert_allclose(result[0], fake_embedding(TEXTS[0], 256), atol=1e-6)


def test_persistent_server_error_raises_embedding_error_after_the_retries(
    embedding_client: EmbeddingClient, openai_server: FakeOpenAIServer
) -> None:
    openai_server.fail_always(status=500)
    with pytest.raises(EmbeddingError, match="HTTP 500") as info:
        embedding_client.embed(TEXTS[:2])
    assert len(openai_server.requests) == 3
    assert info.value.__cause__ is not None


def test_persistent_rate_limit_says_what_to_change(
    embedding_client: EmbeddingClient, openai_server: FakeOpenAIServer
) -> None:
    openai_server.fail_always(status=429)
    with pytest.raises(EmbeddingError, match="max_batch_tokens"):
        embedding_client.embed(TEXTS[:1])


def test_too_few_dimensions_raise_naming_expected_and_actual(
    embedding_client: EmbeddingClient, openai_server: FakeOpenAIServer
) -> None:
    openai_server.return_dimensions(128)
    with pytest.raises(EmbeddingError, match=r"expected 256 dimensions, the server returned 128"):
        embedding_client.embed(TEXTS[:2])


def test_server_ignoring_dimensions_is_truncated_and_renormalized_client_side(
    embedding_client: EmbeddingClient, openai_server: FakeOpenAIServer
) -> None:
    openai_server.ignore_dimensions(native=3072)
    result = embedding_client.embed(TEXTS[:3])
    assert result.shape == (3, 256)
    np.testing.assert_allclose(np.linalg.norm(result, axis=1), 1.0, atol=1e-5)
    native = np.stack([fake_embedding(text, 3072) for text in TEXTS[:3]])
    np.testing.assert_allclose(result, truncate_and_normalize(native, 256), atol=1e-6)


def test_shuffled_indices_are_put_back_in_input_order(
    embedding_client: EmbeddingClient, openai_server: FakeOpenAIServer
) -> None:
    expected = embedding_client.embed(TEXTS)
    openai_server.shuffle_order()
    shuffled = embedding_client.embed(TEXTS)
    np.testing.assert_array_equal(shuffled, expected)


def test_zero_vector_from_the_server_is_rejected(
    embedding_client: EmbeddingClient, openai_server: FakeOpenAIServer
) -> None:
    openai_server.return_zero_vector(at=1)
    with pytest.raises(EmbeddingError, match=r"texts\[1\]: the server returned the zero vector"):
        embedding_client.embed(TEXTS[:3])


def test_nan_from_the_server_is_rejected_in_the_second_batch_with_its_global_index(
    openai_server: FakeOpenAIServer,
) -> None:
    openai_server.return_nan(at=1)
    with client_for(openai_server, max_batch_inputs=4) as client:
        with pytest.raises(EmbeddingError, match=r"texts\[1\]: .*NaN"):
            client.embed(TEXTS)


def test_missing_api_key_says_to_set_openai_api_key(
    monkeypatch: pytest.MonkeyPatch, openai_server: FakeOpenAIServer
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_ADMIN_KEY", raising=False)
    with pytest.raises(EmbeddingError, match="OPENAI_API_KEY") as info:
        EmbeddingClient(base_url=openai_server.base_url)
    assert "OPENAI_BASE_URL" in str(info.value)


def test_wrong_api_key_is_reported_without_retrying(openai_server: FakeOpenAIServer) -> None:
    with client_for(openai_server, api_key="wrong-key") as client:
        with pytest.raises(EmbeddingError, match="HTTP 401.*OPENAI_API_KEY"):
            client.embed(TEXTS[:1])
    assert len(openai_server.requests) == 1


def test_key_and_base_url_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, openai_server: FakeOpenAIServer
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", TEST_API_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    with EmbeddingClient(dimensions=64) as client:
        assert client.embed_one("hello").shape == (64,)
    [request] = openai_server.requests
    assert request.authorization == f"Bearer {TEST_API_KEY}"


def test_server_rejecting_dimensions_suggests_send_dimensions_false(
    openai_server: FakeOpenAIServer,
) -> None:
    openai_server.reject_dimensions_parameter()
    with client_for(openai_server) as client:
        with pytest.raises(EmbeddingError, match="send_dimensions=False"):
            client.embed(TEXTS[:1])
    with client_for(openai_server, send_dimensions=False) as client:
        result = client.embed(TEXTS[:2])
    assert openai_server.requests[-1].dimensions is None
    native = np.stack([fake_embedding(text) for text in TEXTS[:2]])
    np.testing.assert_allclose(result, truncate_and_normalize(native, 256), atol=1e-6)


def test_unreachable_server_names_the_address(openai_server: FakeOpenAIServer) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    with client_for(openai_server, base_url=url, max_retries=0) as client:
        with pytest.raises(EmbeddingError, match=f"cannot reach .*{port}.*OPENAI_BASE_URL"):
            client.embed(TEXTS[:1])


def test_wrong_path_reports_model_and_base_url_hint(openai_server: FakeOpenAIServer) -> None:
    url = openai_server.base_url.removesuffix("/v1")
    with client_for(openai_server, base_url=url) as client:
        with pytest.raises(EmbeddingError, match="HTTP 404.*OPENAI_BASE_URL"):
            client.embed(TEXTS[:1])


@pytest.mark.parametrize(
    "option", [{"dimensions": 0}, {"max_batch_inputs": 0}, {"max_batch_tokens": -1},
               {"max_retries": -1}, {"model": ""}]
)
def test_invalid_options_are_rejected_at_construction(
    openai_server: FakeOpenAIServer, option: dict[str, object]
) -> None:
    with pytest.raises(InvalidConfigError):
        client_for(openai_server, **option)


def test_embedding_client_satisfies_the_embedder_protocol(
    embedding_client: EmbeddingClient,
) -> None:
    assert isinstance(embedding_client, Embedder)
    assert embedding_client.dimensions == 256


async def test_async_client_embeds_in_order_across_batches(
    openai_server: FakeOpenAIServer,
) -> None:
    async with AsyncEmbeddingClient(
        base_url=openai_server.base_url, api_key=TEST_API_KEY, dimensions=32,
        max_batch_inputs=4, max_retries=2,
    ) as client:
        openai_server.fail_next(1, status=500)
        result = await client.embed(TEXTS)
    assert [len(r.inputs) for r in openai_server.requests] == [4, 4, 4, 2]
    expected = np.stack([fake_embedding(text, 32) for text in TEXTS])
    np.testing.assert_allclose(result, expected, atol=1e-6)


async def test_async_client_wraps_persistent_errors(openai_server: FakeOpenAIServer) -> None:
    openai_server.fail_always(status=503)
    async with AsyncEmbeddingClient(
        base_url=openai_server.base_url, api_key=TEST_API_KEY, max_retries=1
    ) as client:
        with pytest.raises(EmbeddingError, match="HTTP 503"):
            await client.embed_one("hello")
    assert len(openai_server.requests) == 2


def test_shipped_demo_corpus_and_queries_embed_in_order(
    embedding_client: EmbeddingClient, openai_server: FakeOpenAIServer
) -> None:
    data = resources.files("mrl_pg") / "data"
    records = [json.loads(line) for line in (data / "corpus.jsonl").read_text("ascii").splitlines()]
    queries = (data / "queries.txt").read_text("ascii").splitlines()
    assert len(records) >= 100 and len(queries) >= 5
    assert len({r["external_id"] for r in records}) == len(records)
    assert len({r["metadata"]["topic"] for r in records}) >= 8
    vectors = embedding_client.embed([r["content"] for r in records] + queries)
    assert vectors.shape == (len(records) + len(queries), 256)
    np.testing.assert_allclose(vectors[-1], fake_embedding(queries[-1], 256), atol=1e-6)


def test_an_empty_text_is_a_value_error_as_well_as_an_embedding_error(embedding_client):
    from mrl_pg.errors import InvalidTextError

    with pytest.raises(ValueError, match=r"texts\[1\] is empty") as excinfo:
        embedding_client.embed(["fine", ""])
    assert isinstance(excinfo.value, InvalidTextError)
    assert isinstance(excinfo.value, EmbeddingError)
