"""Catalog snapshots for the migration suite: every object of the database's schema as rows
of (kind, name, definition), so that two snapshots compare equal when, and only when, the
schemas are the same. One module per database, the project's own: `take` picks it by the
connection's dialect.
"""

import importlib

from sqlalchemy import Connection

# (kind, name, definition): one row per schema object.
Snapshot = frozenset[tuple[str, str, str]]


def take(connection: Connection) -> Snapshot:
    """A snapshot of the schema that `connection` sees (inside its transaction, if any)."""
    module = importlib.import_module(f"{__package__}.{connection.dialect.name}")
    rows = module.snapshot(connection)
    return frozenset((kind, name, str(definition)) for kind, name, definition in rows)


def difference(
    expected: Snapshot, actual: Snapshot, more: str = "left behind", less: str = "missing"
) -> str:
    """What `actual` has that `expected` lacks (`more`), and the reverse (`less`), in one
    readable line."""
    parts = []
    if extra := sorted(actual - expected):
        parts.append(f"{more}: " + "; ".join(" ".join(row).strip() for row in extra))
    if missing := sorted(expected - actual):
        parts.append(f"{less}: " + "; ".join(" ".join(row).strip() for row in missing))
    return ", ".join(parts)
