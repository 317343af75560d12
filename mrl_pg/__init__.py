"""mrl_pg: Matryoshka adaptive retrieval on PostgreSQL + pgvector.

A table keeps the full embedding and a generated, re-normalized ``halfvec``
prefix with a small HNSW index; a search takes ``k * oversample`` candidates
by prefix and re-ranks them by full-dimension cosine in one statement.
"""

__version__ = "0.2.0"  # the one source: pyproject.toml and mrl-pg --version read it

from mrl_pg.config import DEFAULT_FULL_DIM, DEFAULT_PREFIX_DIM, DEFAULT_TABLE, TableConfig
from mrl_pg.db import (
    configure_connection,
    configure_connection_async,
    connect,
    connect_async,
    create_async_engine,
    create_engine,
)
from mrl_pg.embeddings import AsyncEmbeddingClient, Embedder, EmbeddingClient
from mrl_pg.errors import (
    DatabaseError,
    DatabaseNotConfiguredError,
    DimensionMismatchError,
    EmbeddingError,
    IngestError,
    InvalidConfigError,
    InvalidIdentifierError,
    InvalidSearchError,
    InvalidTextError,
    InvalidVectorError,
    LockTimeoutError,
    MrlPgError,
    PgvectorVersionError,
    ServerError,
)
from mrl_pg.index.adopt import AdoptReport, adopt_table, release_table
from mrl_pg.ingest.delete import DeleteReport, delete_rows
from mrl_pg.ingest.load import IngestReport, ingest_arrays, ingest_file, ingest_records
from mrl_pg.psycopg._search import (
    SearchResult,
    adaptive_search_statement,
    exact_search,
    exact_search_async,
    exact_search_statement,
    explain,
    search,
    search_async,
)
from mrl_pg.schema.catalog import table_config
from mrl_pg.schema.install import create_ddl, drop_ddl, install, install_script
from mrl_pg.server import EmbeddedServer, resolve_dsn
from mrl_pg.vectors import truncate_and_normalize

__all__ = [
    "__version__",
    "DEFAULT_FULL_DIM",
    "DEFAULT_PREFIX_DIM",
    "DEFAULT_TABLE",
    "TableConfig",
    "table_config",
    "AdoptReport",
    "adopt_table",
    "release_table",
    "connect",
    "connect_async",
    "configure_connection",
    "configure_connection_async",
    "create_engine",
    "create_async_engine",
    "DatabaseError",
    "DatabaseNotConfiguredError",
    "DimensionMismatchError",
    "EmbeddingError",
    "IngestError",
    "InvalidConfigError",
    "InvalidIdentifierError",
    "InvalidSearchError",
    "InvalidTextError",
    "InvalidVectorError",
    "LockTimeoutError",
    "MrlPgError",
    "PgvectorVersionError",
    "ServerError",
    "AsyncEmbeddingClient",
    "Embedder",
    "EmbeddingClient",
    "IngestReport",
    "DeleteReport",
    "delete_rows",
    "ingest_arrays",
    "ingest_file",
    "ingest_records",
    "create_ddl",
    "drop_ddl",
    "install",
    "install_script",
    "SearchResult",
    "adaptive_search_statement",
    "exact_search",
    "exact_search_async",
    "exact_search_statement",
    "explain",
    "search",
    "search_async",
    "EmbeddedServer",
    "resolve_dsn",
    "truncate_and_normalize",
]

