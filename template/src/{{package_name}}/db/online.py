"""Schema changes for revisions to import, written so that they never block the app's writes
on a live PostgreSQL table and can run again after a crash (a killed deploy, a lost
connection, a lock timeout retried): `db deploy` then converges. On other databases the
index helpers are the plain operation.

    from <package>.db.online import create_index_concurrently

    def upgrade() -> None:
        op.add_column("users", sa.Column("nickname", sa.String(50)), if_not_exists=True)
        create_index_concurrently("ix_users_nickname", "users", ["nickname"])

On PostgreSQL a concurrent build runs outside the revision's transaction, which it commits
first: what the revision did before it is then applied even if the build fails, so it must
be safe to run again (`if_not_exists=True`), or live in a revision of its own. MySQL and
MariaDB commit every DDL statement, so there each statement of a revision must be safe to
run again: `if_not_exists=True` / `if_exists=True` on tables, columns and indexes (what
autogenerate writes there), and the foreign-key helpers below, which Alembic has no such
option for. The migration suite proves it: `test_new_revisions_converge_after_a_crash`
kills the migrator before each statement of every new revision and deploys again.
"""

from collections.abc import Sequence
from typing import Any

from alembic import op
from sqlalchemy import inspect, text
from sqlalchemy.engine import Dialect

INVALID_INDEX = text(
    "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
    "WHERE c.relname = :name AND c.relnamespace = current_schema()::regnamespace "
    "AND NOT i.indisvalid"
)


def takes_index_guards(dialect: Dialect) -> bool:
    """Whether CREATE INDEX IF NOT EXISTS / DROP INDEX IF EXISTS exist (not on MySQL)."""
    return dialect.name == "sqlite" or getattr(dialect, "is_mariadb", False)


def create_index_concurrently(
    name: str, table: str, columns: Sequence[Any], *, unique: bool = False, **options: Any
) -> None:
    """Create an index without blocking writes: PostgreSQL's CREATE INDEX CONCURRENTLY.

    A build that did not finish (killed, timed out, a duplicate for a unique index) leaves
    an INVALID index of that name, which PostgreSQL keeps updating but never uses: it is
    dropped first, and the build starts again. A valid index of that name is kept
    (IF NOT EXISTS), so a revision that crashed after the build converges. Elsewhere it is
    `op.create_index`, with IF NOT EXISTS where the database has it (SQLite, MariaDB)."""
    context = op.get_context()
    if context.dialect.name != "postgresql":
        guard = {"if_not_exists": True} if takes_index_guards(context.dialect) else {}
        op.create_index(name, table, columns, unique=unique, **guard, **options)
        return
    with context.autocommit_block():
        if not context.as_sql and op.get_bind().execute(INVALID_INDEX, {"name": name}).first():
            op.drop_index(name, table_name=table, postgresql_concurrently=True, if_exists=True)
        op.create_index(
            name,
            table,
            columns,
            unique=unique,
            postgresql_concurrently=True,
            if_not_exists=True,
            **options,
        )


def drop_index_concurrently(name: str, table: str) -> None:
    """Drop an index without blocking writes (PostgreSQL: DROP INDEX CONCURRENTLY), and
    without failing when a crashed run dropped it already."""
    context = op.get_context()
    if context.dialect.name != "postgresql":
        guard = {"if_exists": True} if takes_index_guards(context.dialect) else {}
        op.drop_index(name, table_name=table, **guard)
        return
    with context.autocommit_block():
        op.drop_index(name, table_name=table, postgresql_concurrently=True, if_exists=True)


def foreign_key_exists(name: str, table: str) -> bool:
    """Whether `table` has a foreign key called `name`; False when writing SQL offline."""
    if op.get_context().as_sql:
        return False
    return any(fk["name"] == name for fk in inspect(op.get_bind()).get_foreign_keys(table))


def create_foreign_key_if_not_exists(
    name: str,
    source_table: str,
    referent_table: str,
    local_cols: list[str],
    remote_cols: list[str],
    **options: Any,
) -> None:
    """`op.create_foreign_key`, skipped when the table has a foreign key of that name: an
    earlier run that was killed (MySQL/MariaDB commit each statement) created it already."""
    if not foreign_key_exists(name, source_table):
        op.create_foreign_key(
            name, source_table, referent_table, local_cols, remote_cols, **options
        )


def drop_foreign_key_if_exists(name: str, table: str) -> None:
    """`op.drop_constraint(name, table, type_="foreignkey")`, skipped when an earlier run
    that was killed dropped it already."""
    if op.get_context().as_sql or foreign_key_exists(name, table):
        op.drop_constraint(name, table, type_="foreignkey")
