"""mrl_pg: Matryoshka adaptive retrieval on PostgreSQL + pgvector.

A table keeps the full embedding and a generated, re-normalized ``halfvec``
prefix with a small HNSW index; a search takes ``k * oversample`` candidates
by prefix and re-ranks them by full-dimension cosine in one statement.
"""

from .config import DEFAULT_FULL_DIM, DEFAULT_PREFIX_DIM, DEFAULT_TABLE, TableConfig
from .db import (
    configure_connection,
    configure_connection_async,
    connect,
    connect_async,
    create_async_engine,
    create_engine,
)
from .ddl.install import create_ddl, drop_ddl, install, install_script
from .delete import DeleteReport, delete_rows
from .embeddings import AsyncEmbeddingClient, Embedder, EmbeddingClient
from .errors import (
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
from .ingest import IngestReport, ingest_arrays, ingest_file, ingest_records
from .psycopg import (
    SearchResult,
    adaptive_search_statement,
    exact_search,
    exact_search_async,
    exact_search_statement,
    explain,
    search,
    search_async,
)
from .server import EmbeddedServer, resolve_dsn
from .vectors import truncate_and_normalize

__all__ = [
    "DEFAULT_FULL_DIM",
    "DEFAULT_PREFIX_DIM",
    "DEFAULT_TABLE",
    "TableConfig",
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

__version__ = "0.1.0"
