"""Throwaway databases for the tests and for proving migrations; never the configured one."""

import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import delete
from sqlalchemy.engine import URL

from ..core.config import DATABASE, to_driver_url
from ..models import metadata
from .connection import execute


@contextmanager
def scratch_database(server_url: URL | None, prefix: str = "scratch") -> Iterator[URL]:
    """Create an empty database, yield its URL, and drop it afterwards.

    For a SQLite project it is a file in a temporary directory (`server_url` is ignored).
    Otherwise `server_url` names a server and a user allowed to create databases
    (TEST_DATABASE_URL), and the new database gets a random name starting with `prefix`.
    """
    if DATABASE == "sqlite":
        with tempfile.TemporaryDirectory(prefix=f"{prefix}_") as directory:
            yield to_driver_url(f"sqlite:///{Path(directory) / 'scratch.db'}")
        return
    if server_url is None:
        raise ValueError(f"a server URL is needed to create a {DATABASE} scratch database")
    name = f"{prefix}_{secrets.token_hex(6)}"
    if server_url.get_backend_name() == "postgresql":
        admin = server_url.set(database=server_url.database or "postgres")
        # A throwaway database needs no durability: commits need not wait for the disk.
        create = [
            f'CREATE DATABASE "{name}"',
            f'ALTER DATABASE "{name}" SET synchronous_commit = off',
        ]
        drop = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
    else:
        admin = server_url.set(database=None)
        create = [f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"]
        drop = f"DROP DATABASE IF EXISTS `{name}`"
    execute(admin, *create)
    try:
        yield server_url.set(database=name)
    finally:
        execute(admin, drop)


def empty_tables(url: URL) -> None:
    """Delete every row of every model's table, children first."""
    execute(url, *(delete(table) for table in reversed(metadata.sorted_tables)))


class _TestServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    test_database_url: SecretStr | None = None


def configured_test_server() -> URL | None:
    """TEST_DATABASE_URL (environment or .env) with this project's driver; None when it is
    not set, and for SQLite, whose scratch databases need no server."""
    raw = _TestServerSettings().test_database_url
    if DATABASE == "sqlite" or raw is None:
        return None
    return to_driver_url(raw.get_secret_value())
