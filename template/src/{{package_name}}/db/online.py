"""Schema changes for revisions to import, written so that they never block the app's writes
on a live table and can run again after a crash (a killed deploy, a lost connection, a lock
timeout retried): `db deploy` then converges.

    from <package>.db.online import create_index_concurrently

    def upgrade() -> None:
        op.add_column("users", sa.Column("nickname", sa.String(50)), if_not_exists=True)
        create_index_concurrently("ix_users_nickname", "users", ["nickname"])

| Helper | PostgreSQL | MySQL, MariaDB | SQLite |
| --- | --- | --- | --- |
| `create_index_concurrently` | `CREATE INDEX CONCURRENTLY` | in place, `LOCK=NONE` | plain |
| `add_foreign_key_online` | `NOT VALID`, then `VALIDATE` | plain (guarded) | batch mode |
| `add_check_online` | `NOT VALID`, then `VALIDATE` | copies the table (MariaDB) | batch mode |
| `set_not_null_online` | a validated CHECK first | `MODIFY ... NOT NULL` | batch mode |
| `add_unique_online` | unique index built concurrently | in place, `LOCK=NONE` | plain |

`VALIDATE CONSTRAINT` reads the whole table under a lock that lets reads and writes go on
(SHARE UPDATE EXCLUSIVE); the statement before it, which takes the short, strong lock, is
committed first, so the strong lock is never held during the scan.

On PostgreSQL a concurrent build runs outside the revision's transaction, which it commits
first: what the revision did before it is then applied even if the build fails, so it must
be safe to run again (`if_not_exists=True`), or live in a revision of its own. MySQL and
MariaDB commit every DDL statement, so there each statement of a revision must be safe to
run again: `if_not_exists=True` / `if_exists=True` on tables, columns and indexes (what
autogenerate writes there), and the constraint helpers below, for which Alembic writes no
such guard there. Downgrades too: a rollback runs them, and a lock timeout runs them
again. The migration suite proves it: `test_new_revisions_converge_after_a_crash` kills
the migrator before each statement of every new revision, up and down, and runs it again.
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
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
    if context.dialect.name == "mysql":
        create_index_in_place(name, table, columns, unique=unique, **options)
        return
    if context.dialect.name != "postgresql":
        guard = {"if_not_exists": True} if takes_index_guards(context.dialect) else {}
        op.create_index(name, table, columns, unique=unique, **guard, **options)
        return
    with context.autocommit_block(), waiting_allowed():
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
    without failing when a crashed run dropped it already. It commits what the revision
    did before it: call it first in a downgrade."""
    context = op.get_context()
    if context.dialect.name != "postgresql":
        guard = {"if_exists": True} if takes_index_guards(context.dialect) else {}
        op.drop_index(name, table_name=table, **guard)
        return
    with context.autocommit_block(), waiting_allowed():
        op.drop_index(name, table_name=table, postgresql_concurrently=True, if_exists=True)


@contextmanager
def waiting_allowed() -> Iterator[None]:
    """PostgreSQL: let the statements inside wait for locks as long as they need (within
    MIGRATION_STATEMENT_TIMEOUT). Only for those whose wait holds up no request of the app:
    a concurrent index build or drop and VALIDATE CONSTRAINT take a lock that reads and
    writes pass (SHARE UPDATE EXCLUSIVE), then wait for the transactions already running,
    a report's included, which MIGRATION_LOCK_TIMEOUT would otherwise cut short."""
    context = op.get_context()
    if context.as_sql or context.dialect.name != "postgresql":
        yield
        return
    bind = op.get_bind()
    before = bind.exec_driver_sql("SHOW lock_timeout").scalar()
    bind.exec_driver_sql("SET lock_timeout = 0")
    try:
        yield
    finally:
        bind.exec_driver_sql(f"SET lock_timeout = '{before}'")


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
    earlier run that was killed (MySQL/MariaDB commit each statement) created it already.
    MariaDB adds it in place with foreign_key_checks off, having counted the rows that
    reference nothing (none may), and counts them again afterwards."""
    if foreign_key_exists(name, source_table):
        return
    bind = None if op.get_context().as_sql else op.get_bind()
    if bind is None or not getattr(bind.dialect, "is_mariadb", False):
        op.create_foreign_key(
            name, source_table, referent_table, local_cols, remote_cols, **options
        )
        return
    # MariaDB adds a foreign key in place only with foreign_key_checks off, which skips the
    # check of the rows there: they are checked here before, and again after.
    check = orphans(source_table, referent_table, local_cols, remote_cols)

    def refuse_orphans() -> None:
        if found := bind.execute(check).scalar():
            raise ValueError(
                f"{found} rows of {source_table} reference no row of {referent_table}: give "
                f"them a key that exists (or NULL) before adding {name}"
            )

    refuse_orphans()
    op.execute("SET SESSION foreign_key_checks = 0")
    op.create_foreign_key(name, source_table, referent_table, local_cols, remote_cols, **options)
    op.execute("SET SESSION foreign_key_checks = 1")
    refuse_orphans()  # rows written while the key was being added


def orphans(
    source_table: str, referent_table: str, local_cols: list[str], remote_cols: list[str]
) -> sa.Select:
    """How many rows of `source_table` have a key that `referent_table` does not hold."""
    source = sa.table(source_table, *[sa.column(c) for c in local_cols])
    referent = sa.table(referent_table, *[sa.column(c) for c in remote_cols])
    match = sa.and_(
        *[source.c[a] == referent.c[b] for a, b in zip(local_cols, remote_cols, strict=True)]
    )
    present = sa.and_(*[source.c[c].is_not(None) for c in local_cols])
    return sa.select(sa.func.count()).select_from(source).where(present, ~sa.exists().where(match))


@contextmanager
def table_copy_allowed(reason: str) -> Iterator[None]:
    """MariaDB: let the statements inside copy their table (ALGORITHM=COPY), which the
    migration session otherwise refuses (db/migrations.py): for a change with no in-place
    algorithm (a type change, a CHECK) on a table small enough that the app's writes can
    wait for the copy. `reason` says why; the migration suite lists it. Elsewhere it does
    nothing."""
    if not reason.strip():
        raise ValueError("table_copy_allowed needs the reason the copy is acceptable")
    context = op.get_context()
    mariadb = not context.as_sql and getattr(context.dialect, "is_mariadb", False)
    if mariadb:
        op.execute("SET SESSION alter_algorithm = 'DEFAULT'")
    try:
        yield
    finally:
        if mariadb:
            op.execute("SET SESSION alter_algorithm = 'INPLACE'")


def drop_constraint_if_exists(name: str, table: str, type_: str) -> None:
    """`op.drop_constraint(name, table, type_=type_)` ("foreignkey", "unique" or "check"),
    skipped when an earlier run that was killed, or gave up waiting for a lock, dropped it
    already: Alembic's `if_exists=True` is not written on MySQL/MariaDB. `name` is the whole
    name, which the naming convention keeps as it is."""
    if op.get_context().as_sql or constraint_exists(name, table):
        op.drop_constraint(op.f(name), table, type_=type_)


def drop_foreign_key_if_exists(name: str, table: str) -> None:
    """`drop_constraint_if_exists(name, table, "foreignkey")`, as autogenerate writes it on
    MySQL/MariaDB."""
    drop_constraint_if_exists(name, table, "foreignkey")


def create_index_in_place(
    name: str, table: str, columns: Sequence[str], *, unique: bool = False, **options: Any
) -> None:
    """MySQL/MariaDB: build the index in place while writes go on (`ALGORITHM=INPLACE
    LOCK=NONE`): the server refuses at once, rather than copy the table, when it cannot.
    An index of that name already there (a crashed run built it) is kept. `columns` are
    column names; `options` as `sa.Index` takes them (`mysql_length`, ...)."""
    if not op.get_context().as_sql and index_exists(name, table):
        return
    core = sa.Table(table, sa.MetaData(), *[sa.Column(column, sa.Integer) for column in columns])
    index = sa.Index(name, *[core.c[column] for column in columns], unique=unique, **options)
    statement = sa.schema.CreateIndex(index).compile(dialect=op.get_context().dialect)
    op.execute(f"{statement} ALGORITHM=INPLACE LOCK=NONE")


def index_exists(name: str, table: str) -> bool:
    return any(index["name"] == name for index in inspect(op.get_bind()).get_indexes(table))


def constraint_exists(name: str, table: str) -> bool:
    """Whether `table` has a CHECK, UNIQUE or foreign-key constraint called `name`; False
    when writing SQL offline."""
    if op.get_context().as_sql:
        return False
    inspector = inspect(op.get_bind())
    found = inspector.get_check_constraints(table) + inspector.get_unique_constraints(table)
    found += inspector.get_foreign_keys(table)
    return any(constraint["name"] == name for constraint in found)


def validate(name: str, table: str) -> None:
    """PostgreSQL: check the rows against a NOT VALID constraint in a transaction of its
    own (the revision's work so far is committed first), so the scan holds only a lock
    that lets writes through."""
    context = op.get_context()
    quote = context.dialect.identifier_preparer.quote
    with context.autocommit_block(), waiting_allowed():
        op.execute(f"ALTER TABLE {quote(table)} VALIDATE CONSTRAINT {quote(name)}")


def add_foreign_key_online(
    name: str,
    source_table: str,
    referent_table: str,
    local_cols: list[str],
    remote_cols: list[str],
    **options: Any,
) -> None:
    """A foreign key on a table with rows. PostgreSQL adds it NOT VALID (new rows are
    checked at once, no scan under the strong lock), then validates the existing rows.
    Elsewhere `create_foreign_key_if_not_exists`."""
    if op.get_context().dialect.name != "postgresql":
        create_foreign_key_if_not_exists(
            name, source_table, referent_table, local_cols, remote_cols, **options
        )
        return
    if not constraint_exists(name, source_table):
        op.create_foreign_key(
            name,
            source_table,
            referent_table,
            local_cols,
            remote_cols,
            postgresql_not_valid=True,
            **options,
        )
    validate(name, source_table)


def add_check_online(name: str, table: str, condition: str) -> None:
    """A CHECK constraint on a table with rows: on PostgreSQL NOT VALID, then validated, as
    `add_foreign_key_online`. `name` is the whole name (`ck_users_age_positive`), which
    the naming convention keeps as it is."""
    postgresql = op.get_context().dialect.name == "postgresql"
    if not constraint_exists(name, table):  # a crashed run of MySQL's DDL may have added it
        options = {"postgresql_not_valid": True} if postgresql else {}
        # MariaDB has no in-place algorithm for it: it copies the table.
        with table_copy_allowed("MariaDB adds a CHECK constraint only by copying the table"):
            op.create_check_constraint(op.f(name), table, condition, **options)
    if postgresql:
        validate(name, table)


def set_not_null_online(table: str, column: str, existing_type: Any) -> None:
    """SET NOT NULL on a column with rows, once every row has a value (fill them first, or
    the validation fails and names the constraint). PostgreSQL 12+ skips its own scan when
    a validated CHECK (column IS NOT NULL) exists: that CHECK is added NOT VALID, validated
    while writes go on, then NOT NULL is set and the CHECK dropped (squawk's
    ban-drop-constraint flags that drop: accept it in the revision with `allow_squawk =
    {"ban-drop-constraint": "the CHECK set_not_null_online adds"}`). Elsewhere the plain
    `alter_column` (batch mode on SQLite)."""
    context = op.get_context()
    if context.dialect.name != "postgresql":
        with op.batch_alter_table(table) as batch_op:
            batch_op.alter_column(column, existing_type=existing_type, nullable=False)
        return
    name = f"ck_{table}_{column}_not_null"[:63]
    quoted = context.dialect.identifier_preparer.quote(column)
    add_check_online(name, table, f"{quoted} IS NOT NULL")
    op.alter_column(table, column, existing_type=existing_type, nullable=False)
    op.drop_constraint(op.f(name), table, type_="check")


def add_unique_online(name: str, table: str, columns: list[str]) -> None:
    """A unique constraint on a table with rows. PostgreSQL builds its index CONCURRENTLY,
    then makes it the constraint (`ADD CONSTRAINT ... UNIQUE USING INDEX`, a catalog
    change); MySQL/MariaDB build it in place. Fails, naming the index, when rows repeat."""
    context = op.get_context()
    if context.dialect.name == "mysql":
        create_index_in_place(name, table, columns, unique=True)
        return
    if context.dialect.name != "postgresql":
        op.create_unique_constraint(op.f(name), table, columns)
        return
    if constraint_exists(name, table):
        return
    create_index_concurrently(name, table, columns, unique=True)
    quote = context.dialect.identifier_preparer.quote
    op.execute(
        f"ALTER TABLE {quote(table)} ADD CONSTRAINT {quote(name)} UNIQUE USING INDEX {quote(name)}"
    )
