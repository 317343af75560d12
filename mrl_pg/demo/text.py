"""The text demo: embed a small shipped corpus with the embedding client and answer questions.

Runs against OpenAI or any OpenAI-compatible server the SDK's environment
variables name (``OPENAI_API_KEY``, ``OPENAI_BASE_URL``).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import psycopg
from psycopg import sql

from mrl_pg.config import TableConfig
from mrl_pg.embeddings import EmbeddingClient
from mrl_pg.ingest.load import IngestReport, ingest_file
from mrl_pg.psycopg._search import SearchResult, search
from mrl_pg.schema.install import install

__all__ = ["TEXT_DEMO_TABLE", "TextDemoReport", "run_text_demo", "text_demo_config"]

TEXT_DEMO_TABLE = "mrl_demo_text"


@dataclass(frozen=True)
class TextDemoReport:
    config: TableConfig
    load: IngestReport
    answers: list[tuple[str, list[SearchResult]]]


def text_demo_config(dimensions: int) -> TableConfig:
    """The demo table for an embedding size: a 512-d prefix, or half of a smaller embedding."""
    return TableConfig(TEXT_DEMO_TABLE, full_dim=dimensions, prefix_dim=min(512, dimensions // 2))


def run_text_demo(
    conn: psycopg.Connection[Any], client: EmbeddingClient, *, k: int = 3
) -> TextDemoReport:
    """(Re)create the demo table, embed and load the corpus, and answer the shipped questions."""
    data = files("mrl_pg") / "data"
    config = text_demo_config(client.dimensions)
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(config.table))
    install(conn, config)
    load = ingest_file(conn, config, str(data.joinpath("corpus.jsonl")), embedder=client)
    conn.execute(sql.SQL("ANALYZE {}").format(config.table))
    questions = [q for q in data.joinpath("queries.txt").read_text().splitlines() if q.strip()]
    vectors = client.embed(questions)
    answers = [
        (question, search(conn, config, vector, k=k))
        for question, vector in zip(questions, vectors, strict=True)
    ]
    return TextDemoReport(config=config, load=load, answers=answers)
