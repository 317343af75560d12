"""The package's shape: no import cycle among our modules, the configuration a leaf, public
names of the last release still importable, and every dotted name the docs use real."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

import mrl_pg

PACKAGE = Path(mrl_pg.__file__).parent
REPO = PACKAGE.parent

# Every name in these modules' __all__ at the release before the layout change (6a4c090),
# where the module kept its path; moved modules' names are re-exported from the top level.
RELEASED_NAMES = {
    "mrl_pg": [
        "DEFAULT_FULL_DIM", "DEFAULT_PREFIX_DIM", "DEFAULT_TABLE", "TableConfig", "connect",
        "connect_async", "configure_connection", "configure_connection_async", "create_engine",
        "create_async_engine", "DatabaseError", "DatabaseNotConfiguredError",
        "DimensionMismatchError", "EmbeddingError", "IngestError", "InvalidConfigError",
        "InvalidIdentifierError", "InvalidSearchError", "InvalidTextError", "InvalidVectorError",
        "LockTimeoutError", "MrlPgError", "PgvectorVersionError", "ServerError",
        "AsyncEmbeddingClient", "Embedder", "EmbeddingClient", "IngestReport", "DeleteReport",
        "delete_rows", "ingest_arrays", "ingest_file", "ingest_records", "create_ddl", "drop_ddl",
        "install", "install_script", "SearchResult", "adaptive_search_statement", "exact_search",
        "exact_search_async", "exact_search_statement", "explain", "search", "search_async",
        "EmbeddedServer", "resolve_dsn", "truncate_and_normalize", "__version__",
    ],
    "mrl_pg.psycopg": [
        "SearchResult", "SearchStatement", "adaptive_search_statement", "exact_search_statement",
        "search", "exact_search", "explain", "explain_statement", "run_statement",
        "search_async", "exact_search_async",
    ],
    "mrl_pg.sqlalchemy": [
        "MrlMixin", "mrl_mixin", "table_args", "search_select", "exact_search_select", "search",
        "exact_search", "search_async", "exact_search_async", "VectorColumn",
    ],
    "mrl_pg.alembic": [
        "create_mrl_table", "drop_mrl_table", "create_search_function", "drop_search_function",
        "adopt_table", "release_table",
    ],
    "mrl_pg.embeddings": [
        "DEFAULT_DIMENSIONS", "DEFAULT_MAX_BATCH_TOKENS", "DEFAULT_MODEL", "MAX_BATCH_INPUTS",
        "AsyncEmbeddingClient", "Embedder", "EmbeddingClient", "estimate_tokens",
    ],
    "mrl_pg.migrate": [
        "VERSION_TABLE", "OWN_TABLES", "include_name", "include_object", "alembic_config",
        "upgrade", "downgrade", "current", "migration_engine",
    ],
    "mrl_pg.config": [
        "TableConfig", "DEFAULT_TABLE", "DEFAULT_FULL_DIM", "DEFAULT_PREFIX_DIM",
        "DEFAULT_HNSW_M", "DEFAULT_HNSW_EF_CONSTRUCTION", "validate_identifier", "column_name",
    ],
    "mrl_pg.ingest": ["IngestReport", "ingest_arrays", "ingest_file", "ingest_records"],
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{name} uses a relative import"
                targets = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_among_our_modules_lazy_imports_included():
    graph = _import_graph()
    assert len(graph) > 40
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_configuration_and_the_errors_are_leaves():
    graph = _import_graph()
    assert graph["mrl_pg.errors"] == set()
    assert graph["mrl_pg.config"] == {"mrl_pg.errors"}


def test_the_statement_never_reaches_up_into_the_database_layers():
    graph = _import_graph()
    below = {"mrl_pg.config", "mrl_pg.errors", "mrl_pg.vectors"}
    for name, targets in graph.items():
        if name.startswith("mrl_pg.statement."):
            outside = {t for t in targets if not t.startswith("mrl_pg.statement")} - below
            assert outside == set(), f"{name} imports {outside}"


@pytest.mark.parametrize("module", sorted(RELEASED_NAMES))
def test_names_of_the_last_release_still_import(module):
    imported = importlib.import_module(module)
    missing = [n for n in RELEASED_NAMES[module] if not hasattr(imported, n)]
    assert missing == []
    assert set(RELEASED_NAMES[module]) - {"__version__"} <= set(imported.__all__)


def test_every_name_in_every_all_exists():
    import pkgutil

    for info in pkgutil.walk_packages(mrl_pg.__path__, "mrl_pg."):
        if info.name.startswith(("mrl_pg.migrations.", "mrl_pg.__main__")):
            continue
        module = importlib.import_module(info.name)
        for name in getattr(module, "__all__", ()):
            assert hasattr(module, name), f"{info.name}.__all__ names {name}, which is missing"


_DOTTED = re.compile(r"\bmrl_pg(?:\.[A-Za-z_][A-Za-z0-9_]*)+")


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        return True
    return False


def test_every_dotted_name_in_the_docs_and_docstrings_is_real():
    texts = [REPO / "README.md", REPO / "BENCHMARKS.md", REPO / "SECURITY.md",
             *(REPO / "docs").glob("*.md"), *PACKAGE.rglob("*.py")]
    names = {m.group(0).rstrip(".") for t in texts if t.exists()
             for m in _DOTTED.finditer(t.read_text())}
    names = {n for n in names if not n.endswith((".py", ".md", ".json", ".txt", ".png"))
             and not n.startswith(("mrl_pg.migrations", "mrl_pg.sql"))}
    assert len(names) > 30
    broken = sorted(n for n in names if not _resolves(n))
    assert broken == []


def test_one_version_shown_by_the_package_its_metadata_and_the_cli():
    from importlib.metadata import version

    from click.testing import CliRunner

    from mrl_pg.cli import cli

    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"mrl-pg, version {mrl_pg.__version__}"
    assert version("mrl_pg") == mrl_pg.__version__
