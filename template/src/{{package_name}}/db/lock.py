"""One migrator at a time: the lock that migrations/env.py holds while it migrates, whoever
started it (`alembic upgrade head`, `uv run db deploy`, an app that migrates at start-up).

The lock is taken on the connection that runs the migrations, so the server holds it exactly
as long as that session lives: a migrator killed in the middle of a statement keeps it until
the server is done with the statement. By the connection's dialect:

- PostgreSQL: a session advisory lock (advisory locks belong to one database);
- MySQL / MariaDB: `GET_LOCK`, named after the database (user locks are server-wide);
- SQLite: an exclusive transaction on a lock file next to the database (`<db>-lock`),
  which the operating system frees when the process ends, however it ends.

The lock needs a session of its own on the server: through a connection pooler (PgBouncer in
transaction mode, say) the next statement may run on another server connection, and the lock
would be held by nobody's session, or never freed. A connection whose server process is not
the one the driver was told of when it connected goes through a pooler: it is refused, with
one line saying to point MIGRATIONS_DATABASE_URL straight at the server.

A waiting migrator says so on stderr and waits up to MIGRATION_LOCK_WAIT seconds. While it
waits it reads the database's revision: once another migrator has brought the database
where this one goes (head, say), it stops waiting and does nothing. The lock is re-entrant
within a thread, so a caller that holds it already (`db deploy`) never waits for itself.
"""

import hashlib
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator, Set
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from alembic.runtime.migration import MigrationContext
from alembic.util import CommandError
from rich.console import Console
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from ..core.config import SettingsError, get_settings

POLL_SECONDS = 0.05  # between two attempts while another migrator holds the lock
# PostgreSQL's advisory lock key for migrations: any 64-bit number, the same in every process.
ADVISORY_KEY = int.from_bytes(hashlib.sha256(b"alembic migrations").digest()[:8], "big") >> 1

_held = threading.local()  # what this thread holds the lock on


class LockNotAcquired(CommandError):
    """Another migrator kept the lock for all of MIGRATION_LOCK_WAIT: nothing was done."""


class ThroughPooler(CommandError):
    """The migration connection goes through a connection pooler: nothing was done."""


def say(message: str) -> None:
    print(f"migration lock: {message}", file=sys.stderr, flush=True)


@contextmanager
def autocommit(connection: Connection) -> Iterator[None]:
    """Run statements that must not stay in a transaction (taking and freeing the lock, reading
    the revision while waiting) with the driver committing each one, then switch back."""
    if connection.in_transaction():  # the caller's own transaction: stay inside it
        yield
        return
    connection.execution_options(isolation_level="AUTOCOMMIT")
    try:
        with connection.begin():  # SQLAlchemy's bookkeeping only: the server commits each
            yield
    finally:
        connection.execution_options(isolation_level=connection.default_isolation_level)


class MigrationLock:
    """The lock on the database behind `connection`; `acquire` waits for it."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.database = connection.engine.url.set(password=None)
        self.taken = False

    def acquire(self, destination: Set[str] | None) -> bool:
        """Take the lock, waiting for it if need be; True once it is held. A migrator that
        goes to `destination` (revision ids; empty for base; None when it cannot tell) stops
        waiting and returns False when the database gets there meanwhile."""
        held: set[str] = _held.__dict__.setdefault("databases", set())
        key = self.database.render_as_string()
        if key in held:
            return True  # this thread holds it already
        with autocommit(self.connection):
            self.refuse_a_pooler()
            if not self.try_lock(waiting=False) and not self.wait(destination):
                return False
        held.add(key)
        self.taken = True
        return True

    def release(self) -> None:
        if not self.taken:
            return
        self.taken = False
        _held.databases.discard(self.database.render_as_string())
        try:
            if self.connection.in_transaction():  # a failed migration left it open
                self.connection.rollback()
            with autocommit(self.connection):
                self.unlock()
        except DBAPIError:  # the connection broke: the server freed the lock with it
            pass

    def wait(self, destination: Set[str] | None) -> bool:
        try:
            limit = get_settings().migration_lock_wait
        except SettingsError as error:
            raise CommandError(str(error)) from None
        where = self.where()
        say(f"another migrator holds the lock on {where}; waiting up to {limit:g}s")
        start = time.monotonic()
        console = Console(stderr=True)
        spinner = console.status("waiting for the migration lock")
        with spinner if console.is_terminal else nullcontext():
            while not self.try_lock(waiting=True):
                if destination is not None and self.revisions() == destination:
                    at = ", ".join(sorted(destination)) or "base"
                    say(f"another migrator brought the database to {at}: nothing to do")
                    return False
                waited = time.monotonic() - start
                if waited >= limit:
                    raise LockNotAcquired(
                        f"another migrator still holds the lock on {where} after "
                        f"{waited:.0f}s: let it finish, or raise MIGRATION_LOCK_WAIT"
                    )
        say(f"got the lock after {time.monotonic() - start:.1f}s")
        return True

    def refuse_a_pooler(self) -> None:
        """Refuse a connection through a pooler, where the lock would not hold (above)."""
        if self.SESSION_ID is None:
            return
        told = handshake_id(self.connection.connection.driver_connection)
        actual = self.connection.exec_driver_sql(self.SESSION_ID).scalar()
        if told is not None and told != actual:
            raise ThroughPooler(
                f"migration lock: {self.where()} goes through a connection pooler, where the "
                "migration lock and the migration session's timeouts do not hold: point "
                "MIGRATIONS_DATABASE_URL straight at the database server (docs: "
                "how-to/topology.md)"
            )

    def revisions(self) -> set[str]:
        """The revisions in the database's version table, as another migrator left them."""
        return set(MigrationContext.configure(self.connection).get_current_heads())

    def where(self) -> str:
        return self.database.render_as_string(hide_password=True)

    # The query for the server's id of this session, which a pooler's client never learns.
    SESSION_ID: str | None = None

    def try_lock(self, waiting: bool) -> bool:
        raise NotImplementedError

    def unlock(self) -> None:
        raise NotImplementedError


class PostgreSQLLock(MigrationLock):
    SESSION_ID = "SELECT pg_backend_pid()"

    def try_lock(self, waiting: bool) -> bool:
        if waiting:
            time.sleep(POLL_SECONDS)
        query = f"SELECT pg_try_advisory_lock({ADVISORY_KEY})"
        return bool(self.connection.exec_driver_sql(query).scalar())

    def unlock(self) -> None:
        self.connection.exec_driver_sql(f"SELECT pg_advisory_unlock({ADVISORY_KEY})")


class MySQLLock(MigrationLock):
    SESSION_ID = "SELECT CONNECTION_ID()"

    @property
    def name(self) -> str:
        database = (self.database.database or "").encode()
        return f"migrations:{hashlib.sha256(database).hexdigest()[:40]}"

    def try_lock(self, waiting: bool) -> bool:
        # While waiting, GET_LOCK waits in the server for up to a second: the lock passes on
        # the moment its holder lets it go, with no polling.
        query = f"SELECT GET_LOCK('{self.name}', {int(waiting)})"
        return self.connection.exec_driver_sql(query).scalar() == 1

    def unlock(self) -> None:
        self.connection.exec_driver_sql(f"SELECT RELEASE_LOCK('{self.name}')")


class SQLiteLock(MigrationLock):
    def __init__(self, connection: Connection) -> None:
        super().__init__(connection)
        self.lock_file: sqlite3.Connection | None = None

    def where(self) -> str:
        return str(Path(self.database.database or "").resolve())

    def try_lock(self, waiting: bool) -> bool:
        if waiting:
            time.sleep(POLL_SECONDS)
        if self.lock_file is None:
            path = f"{self.where()}-lock"
            self.lock_file = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            self.lock_file.execute("BEGIN EXCLUSIVE")
        except sqlite3.OperationalError as error:
            if "locked" not in str(error):
                raise
            return False
        return True

    def unlock(self) -> None:
        if self.lock_file is not None:
            self.lock_file.close()  # ends the transaction: the next migrator may go
            self.lock_file = None


class NoLock(MigrationLock):
    """An in-memory SQLite database: no other process can migrate it."""

    def try_lock(self, waiting: bool) -> bool:
        return True

    def unlock(self) -> None:
        pass


def handshake_id(driver_connection: Any) -> int | None:
    """The server process (PostgreSQL) or thread (MySQL) that the driver was told of when
    it connected: psycopg, asyncpg, PyMySQL and aiomysql each keep it."""
    if hasattr(driver_connection, "get_server_pid"):  # asyncpg
        return driver_connection.get_server_pid()
    if hasattr(driver_connection, "thread_id"):  # PyMySQL, aiomysql
        return driver_connection.thread_id()
    info = getattr(driver_connection, "info", None)  # psycopg
    return getattr(info, "backend_pid", None)


def lock_for(connection: Connection) -> MigrationLock:
    dialect, database = connection.dialect.name, connection.engine.url.database
    if dialect == "sqlite" and database in (None, "", ":memory:"):
        return NoLock(connection)
    kinds = {"postgresql": PostgreSQLLock, "mysql": MySQLLock, "sqlite": SQLiteLock}
    return kinds[dialect](connection)


@contextmanager
def migration_lock(connection: Connection, destination: Set[str] | None) -> Iterator[bool]:
    """Hold the lock on `connection`'s database while the block runs. Yields whether to go
    on: False when another migrator has brought the database to `destination` meanwhile."""
    lock = lock_for(connection)
    try:
        yield lock.acquire(destination)
    finally:
        lock.release()
