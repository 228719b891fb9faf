"""How `alembic revision --autogenerate` writes revisions (migrations/env.py uses it)."""

import sys
from typing import Any

from alembic.autogenerate.api import AutogenContext
from alembic.operations import ops
from alembic.runtime.migration import MigrationContext
from sqlmodel.sql.sqltypes import AutoString

from ..core.config import DATABASE
from ..models.base import UTCDateTime


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | bool:
    """Write column types as plain SQLAlchemy, so that revisions import neither the app nor
    SQLModel: a revision keeps working whatever later happens to either."""
    if type_ != "type":
        return False
    if isinstance(obj, UTCDateTime):
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
    """Write no empty revision, and no index drop that a table drop already does.

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
