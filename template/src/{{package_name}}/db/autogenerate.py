"""How `alembic revision --autogenerate` writes revisions (migrations/env.py uses it)."""

import sys
from typing import Any

from alembic.autogenerate import renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations import ops
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Dialect
from sqlmodel.sql import sqltypes
from sqlmodel.sql.sqltypes import AutoString

from ..core.config import DATABASE
from ..models.base import UTCDateTime
from . import backfill

PACKAGE = __package__.rsplit(".", 1)[0]
# The models' aware datetimes: the project's UTCDateTime, and the one SQLModel (0.0.50 and
# later) gives a plain `datetime` field. Both are TIMESTAMP WITH TIME ZONE in the database.
AWARE_DATETIMES = tuple(
    kind for kind in (UTCDateTime, getattr(sqltypes, "UTCDateTime", None)) if kind is not None
)


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Autogenerate and `alembic check` leave out the backfills' progress table, which no
    model declares (db/backfill.py creates it when a backfill first runs)."""
    return not (type_ == "table" and name == backfill.TABLE)


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | bool:
    """Write column types as plain SQLAlchemy, so that revisions import neither the app nor
    SQLModel: a revision keeps working whatever later happens to either."""
    if type_ != "type":
        return False
    if isinstance(obj, AWARE_DATETIMES):
        return "sa.DateTime(timezone=True)"
    if isinstance(obj, AutoString):  # SQLModel's `str`; without a length, VARCHAR(255) on MySQL
        length = obj.impl.length
        if length is None and DATABASE == "mysql":  # the database the revision is for
            length = AutoString.mysql_default_length
        return "sa.String()" if length is None else f"sa.String(length={length})"
    if type(obj).__module__.startswith("sqlmodel."):  # another SQLModel type: import it
        autogen_context.imports.add("import sqlmodel")
    return False


def process_revision_directives(
    migration_context: MigrationContext, revision: Any, directives: list[ops.MigrationScript]
) -> None:
    """Write no empty revision, no index drop that a table drop already does, and on
    MySQL/MariaDB statements that can run again (`_guard_for_a_rerun`).

    For `alembic revision --autogenerate` only: migrations/env.py installs it for that
    command, and Python callers pass it to `command.revision` themselves. (`alembic check`
    must see the empty script to report "no changes".)
    """
    if not directives:
        return
    script = directives[0]
    if all(upgrade_ops.is_empty() for upgrade_ops in script.upgrade_ops_list):
        directives[:] = []
        print("No model changes: no revision written.", file=sys.stderr)
        return
    for container in (*script.upgrade_ops_list, *script.downgrade_ops_list):
        _drop_index_drops_of_dropped_tables(container)
        _guard_for_a_rerun(container, migration_context.dialect)


# The IF [NOT] EXISTS each operation takes, and whether MySQL (not only MariaDB) has it.
GUARDS: dict[type, tuple[str, bool]] = {
    ops.CreateTableOp: ("if_not_exists", True),
    ops.DropTableOp: ("if_exists", True),
    ops.AddColumnOp: ("if_not_exists", False),
    ops.DropColumnOp: ("if_exists", False),
    ops.CreateIndexOp: ("if_not_exists", False),
    ops.DropIndexOp: ("if_exists", False),
}


def _guard_for_a_rerun(container: ops.OpContainer, dialect: Dialect) -> None:
    """MySQL and MariaDB commit each DDL statement: a migrator killed half-way through a
    revision leaves its first statements applied, and the next deploy runs the revision
    again from its start. Written `IF [NOT] EXISTS`, those statements find their work done
    and the deploy goes on (tests/test_migrations.py kills the migrator before each one).
    MariaDB takes it on tables, columns and indexes; MySQL on tables only. Foreign keys,
    which Alembic has no such option for, go through db/online.py's helpers. Other
    databases roll a failed revision back whole and need none."""
    if dialect.name != "mysql":
        return
    for index, op in enumerate(container.ops):
        if isinstance(op, ops.OpContainer):
            _guard_for_a_rerun(op, dialect)
        guard, on_mysql = GUARDS.get(type(op), ("", False))
        if guard and (on_mysql or dialect.is_mariadb):
            setattr(op, guard, True)
        elif type(op) is ops.CreateForeignKeyOp:
            container.ops[index] = CreateForeignKeyIfNotExistsOp(
                op.constraint_name,
                op.source_table,
                op.referent_table,
                op.local_cols,
                op.remote_cols,
                **op.kw,
            )
        elif type(op) is ops.DropConstraintOp and op.constraint_type == "foreignkey":
            container.ops[index] = DropForeignKeyIfExistsOp(
                op.constraint_name, op.table_name, type_="foreignkey", schema=op.schema
            )


class CreateForeignKeyIfNotExistsOp(ops.CreateForeignKeyOp):
    """Written as db/online.py's `create_foreign_key_if_not_exists(...)`."""


class DropForeignKeyIfExistsOp(ops.DropConstraintOp):
    """Written as db/online.py's `drop_foreign_key_if_exists(...)`."""


def _import_helper(autogen_context: AutogenContext, name: str) -> None:
    autogen_context.imports.add(f"from {PACKAGE}.db.online import {name}")


@renderers.dispatch_for(CreateForeignKeyIfNotExistsOp)
def _render_create_foreign_key(
    autogen_context: AutogenContext, op: CreateForeignKeyIfNotExistsOp
) -> str:
    """What Alembic writes for `op.create_foreign_key(...)`, calling the helper instead:
    it takes the same arguments."""
    _import_helper(autogen_context, "create_foreign_key_if_not_exists")
    written = renderers.dispatch(ops.CreateForeignKeyOp)(autogen_context, op)
    return written.replace("op.create_foreign_key(", "create_foreign_key_if_not_exists(", 1)


@renderers.dispatch_for(DropForeignKeyIfExistsOp)
def _render_drop_foreign_key(autogen_context: AutogenContext, op: DropForeignKeyIfExistsOp) -> str:
    _import_helper(autogen_context, "drop_foreign_key_if_exists")
    return f"drop_foreign_key_if_exists({str(op.constraint_name)!r}, {op.table_name!r})"


def _drop_index_drops_of_dropped_tables(container: ops.OpContainer) -> None:
    """Dropping a table drops its indexes. Dropping them first fails on MySQL when an index
    backs a foreign key ("needed in a foreign key constraint"), as autogenerate would."""
    dropped = {
        (op.schema, op.table_name) for op in container.ops if isinstance(op, ops.DropTableOp)
    }
    kept: list[ops.MigrateOperation] = []
    for op in container.ops:
        if isinstance(op, ops.DropIndexOp) and (op.schema, op.table_name) in dropped:
            continue
        if isinstance(op, ops.ModifyTableOps) and (op.schema, op.table_name) in dropped:
            op.ops = [inner for inner in op.ops if not isinstance(inner, ops.DropIndexOp)]
            if not op.ops:
                continue
        kept.append(op)
    container.ops = kept
