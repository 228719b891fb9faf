"""What migrations/env.py needs beyond Alembic's defaults: the database from the settings,
where a run goes, the migration session's settings, and retries when a table lock cannot be
had in time. Each decided by the connection's dialect, at run time.
"""

import sys
import time
from collections.abc import Callable

from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError
from sqlalchemy import URL, Connection, event
from sqlalchemy.exc import DBAPIError

from ..core.config import DATABASE, Settings, SettingsError, get_settings
from .lock import autocommit

if DATABASE == "postgresql":
    # Autogenerate then compares enum types' values with the models' (a value added in
    # Python becomes `op.sync_enum_values`, which ALTER TYPE ... ADD VALUE), creates and
    # drops the types themselves, and revisions can run that operation.
    import alembic_postgresql_enum  # noqa: F401


def settings() -> Settings:
    try:
        return get_settings()
    except SettingsError as error:  # Alembic prints a CommandError as one line
        raise CommandError(str(error)) from None


def database_url() -> URL:
    return settings().migrations_url


def destination(config: Config) -> set[str] | None:
    """The revisions this run goes to, when the command names them: `alembic upgrade head`
    on the command line, or `config.attributes["destination"]` from Python (`db deploy`).
    Empty for base; None for commands without one, or relative ones (`+1`)."""
    argument = config.attributes.get("destination") or getattr(config.cmd_opts, "revision", None)
    if argument is None or argument.startswith(("+", "-")) or any(c in argument for c in ":@"):
        return None  # relative: where it goes depends on where the database is
    if argument == "base":
        return set()
    try:
        revisions = ScriptDirectory.from_config(config).get_revisions(argument)
    except (CommandError, RevisionError):  # no such revision: Alembic will say so
        return None
    return {revision.revision for revision in revisions if revision is not None}


def session_statements(dialect: str) -> list[str]:
    """What every migration session runs first, so that a migration never queues the app's
    queries behind it for long (MIGRATION_LOCK_TIMEOUT) nor runs for ever."""
    timeouts = settings()
    if dialect == "postgresql":
        return [
            f"SET lock_timeout = '{timeouts.migration_lock_timeout * 1000:.0f}ms'",
            f"SET statement_timeout = '{timeouts.migration_statement_timeout * 1000:.0f}ms'",
        ]
    if dialect == "mysql":  # whole seconds; under one, MariaDB does not wait (MySQL: 1 s)
        return [f"SET SESSION lock_wait_timeout = {int(timeouts.migration_lock_timeout)}"]
    return []


def prepare_session(connection: Connection) -> None:
    """The migration session's settings, by dialect (see `session_statements`). PostgreSQL
    14+ also checks that the client is alive, so a killed migrator's statement stops within a
    second and its revision rolls back. MariaDB alters tables in place or not at all
    (`alter_algorithm`): a change that would copy the table, writes waiting for the whole
    copy, fails at once with the server's error 1845/1846 instead
    (`online.table_copy_allowed` lets one statement copy). SQLite gets transactional DDL."""
    statements = session_statements(connection.dialect.name)
    if connection.dialect.name == "postgresql" and connection.dialect.server_version_info >= (14,):
        statements.append("SET client_connection_check_interval = '1s'")
    if getattr(connection.dialect, "is_mariadb", False):
        statements.append(IN_PLACE)
    with autocommit(connection):
        for statement in statements:
            connection.exec_driver_sql(statement)
    if connection.dialect.name == "sqlite":
        transactional_ddl(connection)


IN_PLACE = "SET SESSION alter_algorithm = 'INPLACE'"  # or faster: NOCOPY, INSTANT
COPY_REFUSED = (1845, 1846)  # MariaDB: the operation cannot run with the algorithm asked


COPY_ADVICE = (
    "MariaDB would copy the whole table for this statement, the app's writes waiting "
    "until the copy is done: change it in steps that run in place (a new column, "
    "backfill(), then a contract revision; docs: how-to/migrations.md), or, for a table "
    'small enough, let that statement copy: `with table_copy_allowed("<why>"):` from '
    "db/online.py"
)


def copy_refused(error: BaseException) -> str | None:
    """What to do when MariaDB refused to alter a table in place; None for other errors."""
    orig = getattr(error, "orig", None)
    if not (orig is not None and getattr(orig, "args", None) and orig.args[0] in COPY_REFUSED):
        return None
    return COPY_ADVICE


def transactional_ddl(connection: Connection) -> None:
    """Make a failed revision roll back whole on SQLite, its CREATE/ALTER/DROP included:
    Python's sqlite3 driver would commit each of those at once (SQLAlchemy's documented
    recipe, applied to this connection)."""
    connection.connection.dbapi_connection.isolation_level = None  # the driver stays out
    if not event.contains(connection, "begin", begin):
        event.listen(connection, "begin", begin)


def begin(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN")


def lock_timed_out(error: DBAPIError) -> bool:
    """A statement gave up waiting for a table lock: PostgreSQL's lock_timeout (55P03), whose
    revision rolled back whole, or MySQL's lock_wait_timeout (1205), whose revision keeps the
    statements before that one. Either can simply run again: on MySQL/MariaDB every new
    revision's statements are safe to run again, which the migration suite's crash test
    proves (`if_not_exists=True`, db/online.py's helpers)."""
    orig = error.orig
    return getattr(orig, "sqlstate", None) == "55P03" or (
        getattr(orig, "args", None) is not None and orig.args[:1] == (1205,)
    )


QUICK_TRIES = 10  # MariaDB without a lock wait: tries, 50 ms apart, before each pause
QUICK_PAUSE = 0.05
WAIT_FROM_ROUND = 3  # MariaDB without a lock wait: from this round on, wait 1 s after all


def without_lock_wait(connection: Connection) -> bool:
    """MariaDB's lock waits are whole seconds: under one, its statements do not wait at all
    (`session_statements`), and give up whenever one of the app's statements is running on
    their table, even one that ends a millisecond later."""
    return getattr(connection.dialect, "is_mariadb", False) and (
        settings().migration_lock_timeout < 1
    )


def ran(run: Callable[[], None]) -> bool:
    """Whether the migrations ran; False when a revision gave up waiting for a table lock."""
    try:
        run()
    except DBAPIError as error:
        if not lock_timed_out(error):
            raise
        return False
    return True


def retry_on_lock_timeout(run: Callable[[], None], connection: Connection) -> None:
    """Run the migrations; when a revision gave up waiting for a table lock, run again from
    there, up to MIGRATION_LOCK_RETRIES times, 1s, 2s, 4s, ... later.

    On MariaDB without a lock wait, each round is up to QUICK_TRIES tries 50 ms apart,
    which hold nothing up: a table the app writes to now and then is free between two of
    its statements. A table the app writes to without pause may never be, so from round
    WAIT_FROM_ROUND on (some 8 s after the first) the statements wait 1 s, MariaDB's least:
    they get the lock as soon as the app's statements running then are done, and the app
    waits behind them only if a long transaction holds the table."""
    retries = settings().migration_lock_retries
    quick = without_lock_wait(connection)
    for attempt in range(retries + 1):
        if quick and attempt == WAIT_FROM_ROUND:
            with autocommit(connection):
                connection.exec_driver_sql("SET SESSION lock_wait_timeout = 1")
        tries = QUICK_TRIES if quick and attempt < WAIT_FROM_ROUND else 1
        for _ in range(tries - 1):
            if ran(run):
                return
            time.sleep(QUICK_PAUSE)
        if attempt == retries:
            run()  # the last try: if it gives up too, its error is the run's
            return
        if ran(run):
            return
        print(
            "migrations: a revision could not get a table lock in time "
            f"(MIGRATION_LOCK_TIMEOUT); trying again in {2**attempt}s "
            f"({attempt + 1} of {retries})",
            file=sys.stderr,
            flush=True,
        )
        time.sleep(2**attempt)
