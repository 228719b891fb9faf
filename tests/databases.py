"""The database servers the tests use, SQL against them, and the scratch databases each test
makes on them and drops afterwards.

The tests talk to the servers with SQLAlchemy and one plain driver per server (psycopg,
PyMySQL), in the test's own process: what a generated project does with its own driver is
what the tests check, not how they look at the result.
"""

import os
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, urlsplit

import sqlalchemy as sa
from sqlalchemy import pool

# Servers on which the tests and the rendered projects create their scratch databases
# (the projects' TEST_DATABASE_URL).
SERVERS = {
    "postgresql": os.environ.get(
        "TEMPLATE_TEST_POSTGRESQL_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    ),
    "mysql": os.environ.get("TEMPLATE_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/"),
}
HOW_TO_RUN = (
    "start PostgreSQL on 127.0.0.1:5432 and MariaDB/MySQL on 127.0.0.1:3306, or point "
    "TEMPLATE_TEST_POSTGRESQL_URL / TEMPLATE_TEST_MYSQL_URL at servers whose user may create "
    "databases"
)
DRIVERS = {"postgresql": "postgresql+psycopg", "mysql": "mysql+pymysql", "sqlite": "sqlite"}


def server_reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=3):
            return True
    except OSError:
        return False


@contextmanager
def connect(url: str, **options: object) -> Iterator[sa.Connection]:
    """A connection to the database at `url` (a project's DATABASE_URL, any driver named in
    it) through the tests' own driver for that database."""
    parsed = sa.make_url(url)
    driver = DRIVERS[parsed.get_backend_name()]
    engine = sa.create_engine(parsed.set(drivername=driver), poolclass=pool.NullPool, **options)
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


def sql(url: str, *statements: str) -> list[list[list[str]]]:
    """Run each statement on the database at `url` in AUTOCOMMIT; return each one's rows,
    every value as a string."""
    results = []
    with connect(url, isolation_level="AUTOCOMMIT") as connection:
        for statement in statements:
            result = connection.execute(sa.text(statement))
            rows = [[str(v) for v in row] for row in result] if result.returns_rows else []
            results.append(rows)
    return results


@contextmanager
def scratch_database(database: str, directory: Path, password: str | None = None) -> Iterator[str]:
    """A new, empty database for one test; its DATABASE_URL. With a `password`, the
    database belongs to a new role (PostgreSQL) or user (MySQL) with that password, which the
    URL names. Dropped afterwards, whatever the test did."""
    name = f"t_{secrets.token_hex(6)}"
    if database == "sqlite":
        yield f"sqlite:///{directory / name}.db"
        return
    server = urlsplit(SERVERS[database])
    if password is None:  # the server's own user
        user = server.netloc.rsplit("@", 1)[0] + "@" if "@" in server.netloc else ""
    else:
        user = f"{name}:{quote(password, safe='')}@"
    if database == "postgresql":
        literal = (password or "").replace("'", "''")  # standard_conforming_strings
        owner = f" OWNER {name}" if password is not None else ""
        create = [f'CREATE DATABASE "{name}"{owner}']
        if password is not None:
            create.insert(0, f"CREATE ROLE {name} LOGIN PASSWORD '{literal}'")
        drop = [f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)']
        drop += [f"DROP ROLE IF EXISTS {name}"] if password is not None else []
    else:
        literal = (password or "").replace("\\", "\\\\").replace("'", "\\'")
        create = [f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"]
        drop = [f"DROP DATABASE IF EXISTS `{name}`"]
        if password is not None:
            create += [
                f"CREATE USER '{name}'@'%' IDENTIFIED BY '{literal}'",
                f"GRANT ALL ON `{name}`.* TO '{name}'@'%'",
                # the scratch databases of `db restore` (mysql.scratch_databases)
                f"GRANT ALL ON `{name}\\_restore\\_%`.* TO '{name}'@'%'",
            ]
            drop += [f"DROP USER IF EXISTS '{name}'@'%'"]
    sql(SERVERS[database], *create)
    try:
        yield f"{server.scheme}://{user}{server.hostname}:{server.port}/{name}"
    finally:
        sql(SERVERS[database], *drop)
