"""What a revision destroys: the calls in its `upgrade()` that drop or rename a table, a
column or a type, and the tables whose rows they put at risk.

Read from the revision's source, never by running it. The migration suite refuses such a
revision unless it says why it is safe (`allow_destructive = "<why>"`); `db deploy` checks
that its fresh backup restores those tables' rows before it runs one (see
`backups.back_up`).
"""

import ast
import re
from dataclasses import dataclass
from pathlib import Path

from alembic.script import Script

CALLS = {"drop_table", "drop_column", "rename_table"}
SQL = re.compile(
    r"\b(drop\s+(table|column|schema|database|type|domain)|truncate|rename\s+(to|column))\b",
    re.IGNORECASE,
)
NAME = r"[`\"]?([\w$]+)[`\"]?(?:\s*\.\s*[`\"]?([\w$]+)[`\"]?)?"
SQL_TABLES = (  # the table a destructive statement names, when it names one
    re.compile(rf"\bdrop\s+table\s+(?:if\s+exists\s+)?{NAME}", re.IGNORECASE),
    re.compile(rf"\btruncate\s+(?:table\s+)?{NAME}", re.IGNORECASE),
    re.compile(rf"\balter\s+table\s+(?:if\s+exists\s+)?(?:only\s+)?{NAME}", re.IGNORECASE),
)


@dataclass
class Destruction:
    """A revision's destructive calls (as written), and the tables they touch: None when
    one of them does not say which (then every table is at risk)."""

    revision: Script
    operations: list[str]
    tables: set[str] | None

    @property
    def opted_in(self) -> bool:
        reason = getattr(self.revision.module, "allow_destructive", None)
        return isinstance(reason, str) and bool(reason.strip())


def literal(node: ast.expr | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def table_of(call: ast.Call, batches: dict[str, str | None]) -> str | None:
    """The table a call works on: its first argument (`op.drop_column("users", ...)`), or
    the table of the `with op.batch_alter_table("users") as batch_op:` it is made in."""
    owner = call.func.value if isinstance(call.func, ast.Attribute) else None
    if isinstance(owner, ast.Name) and owner.id in batches:
        return batches[owner.id]
    keywords = {keyword.arg: keyword.value for keyword in call.keywords}
    table = literal(call.args[0] if call.args else keywords.get("table_name"))
    schema = literal(keywords.get("schema"))
    return f"{schema}.{table}" if table and schema else table


def sql_tables(sql: str) -> set[str] | None:
    """The tables a destructive SQL statement names; None when it names none we can read
    (DROP TYPE, DROP SCHEMA: the rows at risk are wherever the type or schema is used)."""
    tables = set()
    for pattern in SQL_TABLES:
        for match in pattern.finditer(sql):
            schema, table = match.groups() if match.group(2) else (None, match.group(1))
            tables.add(f"{schema}.{table}" if schema else table)
    if re.search(r"\bdrop\s+(type|domain|schema|database)\b", sql, re.IGNORECASE):
        return None
    return tables or None


def destruction(revision: Script) -> Destruction:
    """What `revision`'s upgrade() drops or renames."""
    tree = ast.parse(Path(revision.path).read_text())
    functions = [node for node in tree.body if isinstance(node, ast.FunctionDef)]
    upgrade = next((node for node in functions if node.name == "upgrade"), None)
    batches: dict[str, str | None] = {}  # `as` name -> table, of batch_alter_table blocks
    operations: list[str] = []
    tables: set[str] | None = set()
    for node in ast.walk(upgrade) if upgrade else ():
        if isinstance(node, ast.With):
            for item in node.items:
                call, name = item.context_expr, item.optional_vars
                batch = getattr(getattr(call, "func", None), "attr", None) == "batch_alter_table"
                if batch and isinstance(call, ast.Call) and isinstance(name, ast.Name):
                    batches[name.id] = table_of(call, {})
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        name = node.func.attr
        renames_column = name == "alter_column" and any(
            keyword.arg == "new_column_name" for keyword in node.keywords
        )
        sql = " ".join(
            argument.value
            for argument in ast.walk(node)
            if isinstance(argument, ast.Constant) and isinstance(argument.value, str)
        )
        if name in CALLS or renames_column:
            touched = {table} if (table := table_of(node, batches)) else None
        elif name == "execute" and SQL.search(sql):
            touched = sql_tables(sql)
        else:
            continue
        operations.append(ast.unparse(node))
        tables = None if tables is None or touched is None else tables | touched
    return Destruction(revision, operations, tables)


def at_risk(revisions: list[Script]) -> tuple[list[Destruction], set[str] | None]:
    """The revisions among `revisions` that destroy, or carry `allow_destructive`, and the
    tables whose rows they put at risk: None for every table."""
    found = [d for d in map(destruction, revisions) if d.operations or d.opted_in]
    tables: set[str] | None = set()
    for each in found:
        if tables is not None and each.tables is not None and each.operations:
            tables |= each.tables
        else:  # it says nothing we can read, or opts in without a call we recognise
            tables = None
    return found, tables
