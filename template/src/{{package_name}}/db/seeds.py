"""Rows for the migration suite's walk: before each revision's upgrade, the tables hold rows
generated from their schema at that point, so that a revision meets what production holds
(db/checks.py runs it).

Each batch has a row of low values (NULL where allowed, empty strings, the smallest numbers
and dates, the first enum label), a row of high ones (strings of the maximum length, the
largest numbers, the latest dates, the last label), a row of unicode, and ordinary rows;
foreign keys point at rows of the parent tables; unique columns never repeat. A table gets
a batch when it appears and whenever its columns change, up to `seed_rows_per_table` rows
(`[tool.migration-safety]` in pyproject.toml). A revision adds its own rows for a business
rule with `seed_rows = {"<table>": [{"<column>": <value>, ...}]}` at its top level.

After a revision's downgrade, the rows it did not mean to change must still be there: in
the tables its source names, the row count, and a checksum of every column that the
revision's DDL left as it was. Then the rows seeded before it are deleted again,
so the walk down finds each table as it was.
"""

import ast
import datetime as dt
import functools
import hashlib
import json
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic.script import Script
from sqlalchemy import Connection

UNICODE = "Zoë Ångström – ß 漢字 ✓"
INTEGER_RANGES = {  # MySQL's own integer types, by name: (smallest, largest)
    "TINYINT": (-(2**7), 2**7 - 1),
    "MEDIUMINT": (-(2**23), 2**23 - 1),
}
# The dates every database stores (MySQL's TIMESTAMP: 1970 to 2038); the last day of 9999
# is left out, since in a time zone east of UTC it reads back as the year 10000.
DATES = (dt.datetime(1000, 1, 1), dt.datetime(9999, 12, 30, 23, 59, 59))
TIMESTAMPS = (dt.datetime(1970, 1, 2), dt.datetime(2038, 1, 18))
ORDINARY = 5  # rows per batch besides the low, high and unicode ones
ROWS_PER_TABLE = 200  # the default of seed_rows_per_table


class Unknown(Exception):
    """A NOT NULL column without a default whose type the generator does not know."""


@dataclass
class Column:
    name: str
    type: Any
    nullable: bool
    defaulted: bool  # a server default or an identity: the database can fill it
    unique: bool
    generated: bool = False  # computed: the database always fills it
    json: bool = False  # text that must hold JSON (MariaDB's JSON is LONGTEXT ... _bin)


@dataclass
class Table:
    name: str
    columns: list[Column]
    key: list[str]  # primary key columns
    generated_key: bool  # a single integer key the database numbers
    parents: dict[str, tuple[str, str]]  # column -> (table, column) it references

    def core(self) -> sa.Table:
        columns = [sa.Column(c.name, c.type) for c in self.columns]
        return sa.Table(self.name, sa.MetaData(), *columns)


def reflect(inspector: sa.Inspector, name: str) -> Table:
    """The table as the database has it now (an inspector caches what it read: one per
    schema state)."""
    key = inspector.get_pk_constraint(name).get("constrained_columns") or []
    unique = {tuple(u["column_names"]) for u in inspector.get_unique_constraints(name)}
    unique |= {tuple(i["column_names"]) for i in inspector.get_indexes(name) if i.get("unique")}
    single = {names[0] for names in unique if len(names) == 1} | set(
        key[:1] if len(key) == 1 else []
    )
    in_unique = {column for names in unique if len(names) > 1 for column in names}
    parents = {}
    for foreign in inspector.get_foreign_keys(name):
        for local, remote in zip(
            foreign["constrained_columns"], foreign["referred_columns"], strict=True
        ):
            parents[local] = (foreign["referred_table"], remote)
    columns, numbered = [], {}
    for found in inspector.get_columns(name):
        numbered[found["name"]] = found.get("autoincrement")
        columns.append(
            Column(
                found["name"],
                found["type"],
                found["nullable"],
                defaulted=bool(found.get("default") or found.get("identity")),
                unique=found["name"] in single or found["name"] in in_unique,
                generated=bool(found.get("computed")),
                json=type(found["type"]).__name__ == "LONGTEXT"
                and str(getattr(found["type"], "collation", "")).endswith("_bin"),
            )
        )
    generated = False
    if len(key) == 1 and key[0] not in parents:
        column = next(c for c in columns if c.name == key[0])
        generated = isinstance(column.type, sa.Integer) and (
            numbered[key[0]] is True or column.defaulted or inspector.dialect.name == "sqlite"
        )
    return Table(name, columns, key, generated, parents)


def plain(type_: Any) -> Any:
    """The SQLAlchemy type under a TypeDecorator (SQLModel's AutoString, a model's own)."""
    return type_.impl_instance if isinstance(type_, sa.TypeDecorator) else type_


@functools.cache  # by the type object: the walk and the traffic fill ask for each often
def low_high(type_: Any) -> tuple[Any, Any] | None:
    """The smallest and largest value a column of this type holds; None for a type the
    generator does not know."""
    type_ = plain(type_)
    if isinstance(type_, sa.Boolean):
        return False, True
    if isinstance(type_, sa.Enum) and type_.enums:
        return type_.enums[0], type_.enums[-1]
    if isinstance(type_, sa.Integer):
        bits = (
            16
            if isinstance(type_, sa.SmallInteger)
            else 64
            if isinstance(type_, sa.BigInteger)
            else 32
        )
        low, high = INTEGER_RANGES.get(
            type(type_).__name__.upper(), (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        )
        return (0, high * 2 + 1) if getattr(type_, "unsigned", False) else (low, high)
    if isinstance(type_, sa.Numeric) and not isinstance(type_, sa.Float):
        if type_.precision is None:
            return Decimal("-123456789.123456"), Decimal("123456789.123456")
        scale = type_.scale or 0
        digits = "9" * (type_.precision - scale) or "0"
        largest = f"{digits}.{'9' * scale}" if scale else digits
        return Decimal(f"-{largest}"), Decimal(largest)  # not -Decimal(): it rounds to 28 digits
    if isinstance(type_, sa.Float):
        return -1.5e30, 1.5e30
    if isinstance(type_, sa.DateTime):
        low, high = (
            TIMESTAMPS if type(type_).__name__ == "TIMESTAMP" and not type_.timezone else DATES
        )
        if type_.timezone:
            low, high = low.replace(tzinfo=dt.UTC), high.replace(tzinfo=dt.UTC)
        return low, high
    if isinstance(type_, sa.Date):
        return DATES[0].date(), DATES[1].date()
    if isinstance(type_, sa.Time):
        return dt.time(0, 0), dt.time(23, 59, 59)
    if isinstance(type_, sa.JSON):
        return {}, {"nested": {"n": 1.5}, "list": [1, UNICODE, None, True]}
    if isinstance(type_, sa.Uuid):
        return uuid.UUID(int=0), uuid.UUID(int=2**128 - 1)
    if isinstance(type_, sa.LargeBinary):
        return b"", bytes(range(256)) * 4
    if isinstance(type_, sa.String):  # no length: TEXT, or VARCHAR(255) where one is needed
        length = type_.length or (4000 if isinstance(type_, sa.Text) else 255)
        return "", "x" * length
    return None


def value(column: Column, row: str, serial: int) -> Any:
    """The column's value in a row of kind `row` (low, high, unicode or ordinary); `serial`
    makes unique values unique."""
    bounds = low_high(column.type)
    if bounds is None:
        raise Unknown(f"{type(column.type).__name__}")
    low, high = bounds
    type_ = plain(column.type)
    if row == "low" and column.nullable:
        return None
    if column.json:
        documents = dict(low={}, high=dict(text="x" * 1000), unicode=dict(text=UNICODE))
        return json.dumps(documents.get(row, dict(row=serial)))
    if column.unique:  # distinct in every row ever seeded
        if isinstance(type_, sa.Integer):
            return serial if row != "high" else high - serial
        if isinstance(type_, sa.String) and not isinstance(type_, sa.Enum):
            text = f"{serial}"
            return text.ljust(type_.length or 32, "x") if row == "high" else text
        if isinstance(type_, sa.Uuid):
            return uuid.UUID(int=serial)
    if isinstance(type_, sa.Enum):
        labels = type_.enums
        return {"low": low, "high": high}.get(row, labels[serial % len(labels)])
    if row in ("low", "high"):
        return low if row == "low" else high
    if isinstance(type_, sa.String):
        text = UNICODE if row == "unicode" else f"row {serial}"
        return text[: type_.length] if type_.length else text
    if isinstance(type_, sa.Boolean):
        return serial % 2 == 0
    if isinstance(type_, sa.Integer | sa.Numeric):
        return type(low)(serial % 100)
    if isinstance(type_, sa.DateTime):
        moment = dt.datetime(2024, 1, 1) + dt.timedelta(hours=serial % 100_000)
        return moment.replace(tzinfo=dt.UTC) if type_.timezone else moment
    if isinstance(type_, sa.Date):
        return dt.date(2024, 1, 1) + dt.timedelta(days=serial % 3000)
    if isinstance(type_, sa.JSON):
        return {"row": serial, "text": UNICODE} if row == "unicode" else {"row": serial}
    if isinstance(type_, sa.LargeBinary):
        return UNICODE.encode() if row == "unicode" else serial.to_bytes(4, "big")
    return high if row == "unicode" else low


def revision_tables(revision: Script, tables: Iterable[str]) -> set[str]:
    """The existing tables that a revision's source names: string constants in its code
    and words of its SQL."""
    known = set(tables)
    source = Path(revision.path).read_text()
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value in known:
                found.add(node.value)
            else:
                found |= known & set(re.findall(r"[\w$]+", node.value))
    return found


def checksum(values: Iterable[Any]) -> str:
    """Order-free: the same values in any order give the same checksum."""
    return hashlib.sha256("\x00".join(sorted(map(repr, values))).encode()).hexdigest()[:16]


@dataclass
class Fingerprint:
    counts: dict[str, int]
    columns: dict[tuple[str, str], str]  # (table, column) -> checksum


def fingerprint(connection: Connection, tables: Iterable[str]) -> Fingerprint:
    """Row counts and column checksums of the tables, one query each."""
    counts, columns = {}, {}
    for name in sorted(tables):
        result = connection.execute(sa.select(sa.text("*")).select_from(sa.table(name)))
        keys, rows = list(result.keys()), result.all()
        counts[name] = len(rows)
        for index, column in enumerate(keys):
            columns[(name, column)] = checksum(row[index] for row in rows)
    return Fingerprint(counts, columns)


COLUMN_KINDS = ("column", "not null", "default", "primary key")  # rows of db/snapshots


def shape(snapshot: Iterable[tuple[str, str, str]]) -> dict[str, frozenset]:
    """Each table's columns, as a catalog snapshot (db/snapshots) describes them: (column,
    kind, definition) for its type, NOT NULL and default."""
    found: dict[str, set] = {}
    for kind, name, definition in snapshot:
        if kind in COLUMN_KINDS:
            table, _, column = name.partition(".")
            found.setdefault(table, set()).add((column, kind, definition))
    return {table: frozenset(columns) for table, columns in found.items() if columns}


def untouched(before: frozenset, after: frozenset) -> set[str]:
    """The columns of a table's two shapes that are the same in both."""
    changed = {column for column, *_ in before ^ after}
    return {column for column, *_ in before} - changed


def references(connection: Connection, table: Table, limit: int) -> dict[str, list[Any]]:
    """Keys of up to `limit` rows of each parent table, by the column that references it."""
    found = {}
    for column, (parent, remote) in table.parents.items():
        query = sa.select(sa.column(remote)).select_from(sa.table(parent)).limit(limit)
        found[column] = [key for (key,) in connection.execute(query)]
    return found


def row(
    table: Table,
    parents: dict[str, list[Any]],
    kind: str,
    serial: int,
    columns: set[str] | None = None,
) -> tuple[dict[str, Any], str]:
    """A generated row of `kind` (low, high, unicode, ordinary) for the table, its foreign
    keys taken from `parents` (`references`), only `columns` if given; or no row and why."""
    values: dict[str, Any] = {}
    for column in table.columns:
        if columns is not None and column.name not in columns:
            continue
        if column.generated or (table.generated_key and column.name == table.key[0]):
            continue  # the database fills it
        if column.name in parents:
            choices = parents[column.name]
            if (kind == "low" and column.nullable) or not choices:
                if not column.nullable:
                    return {}, f"its column {column.name} references an empty table"
                values[column.name] = None
            else:
                values[column.name] = choices[serial % len(choices)]
            continue
        if kind == "low" and column.defaulted and column.name not in table.key:
            continue  # the server default fills it
        try:
            values[column.name] = value(column, kind, serial)
        except Unknown as unknown:
            if column.nullable:
                values[column.name] = None
            elif not column.defaulted:
                why = f"the generator has no values for its NOT NULL {unknown} column"
                return {}, f"{why} {column.name}"
    return values, ""


@dataclass
class Batch:
    """The rows seeded into one table before one revision, to delete after its downgrade."""

    table: Table
    keys: list[tuple[Any, ...]]  # the primary keys of the rows it added
    rows: list[dict[str, Any]]


def keys_of(connection: Connection, table: Table) -> set[tuple[Any, ...]]:
    query = sa.select(*[sa.column(name) for name in table.key]).select_from(sa.table(table.name))
    return {tuple(row) for row in connection.execute(query)}


@dataclass
class Seeder:
    """Fills the tables before each revision (see the module's docstring)."""

    limit: int  # rows per table at most; 0: no rows at all
    serial: int = 0
    seeded: dict[str, int] = field(default_factory=dict)  # table -> rows seeded so far
    shapes: dict[str, frozenset] = field(default_factory=dict)  # table -> columns as seeded
    batches: dict[str, list[Batch]] = field(default_factory=dict)  # revision -> its seeds
    unfilled: dict[str, str] = field(default_factory=dict)  # table -> why it got no rows

    def seed(self, connection: Connection, revision: Script, shapes: dict[str, frozenset]) -> None:
        """Before `revision`'s upgrade: a batch for each table that is new or changed, by
        the tables' `shape` now."""
        batches = self.batches.setdefault(revision.revision, [])
        changed = [name for name in sorted(shapes) if shapes[name] != self.shapes.get(name)]
        if not self.limit or not changed:
            return
        self.shapes.update((name, shapes[name]) for name in changed)
        inspector = sa.inspect(connection)
        tables = set(inspector.get_table_names()) - {"alembic_version"}  # views have no rows
        for table in self.in_parent_order(inspector, [n for n in changed if n in tables]):
            if self.seeded.get(table.name, 0) >= self.limit:
                continue
            why = "it has no primary key, by which its rows would be removed again"
            if table.key:
                rows, why = self.generate(connection, table)
            if table.key and rows:
                batch, why = self.insert(connection, table, rows)
                if batch.rows:
                    batches.append(batch)
                    self.unfilled.pop(table.name, None)
                    continue
            self.unfilled[table.name] = f"{why} (before revision {revision.revision})"

    def seed_own(self, connection: Connection, revision: Script) -> None:
        """The revision's own `seed_rows = {"<table>": [{...}]}`, after the generated rows.
        A row that does not fit raises."""
        own = getattr(revision.module, "seed_rows", None) or {}
        batches = self.batches.setdefault(revision.revision, [])
        for name, rows in own.items():
            table = reflect(sa.inspect(connection), name)
            batches.append(self.insert(connection, table, rows, own=True)[0])

    def in_parent_order(self, inspector: sa.Inspector, names: list[str]) -> list[Table]:
        """The tables, each after the tables it references."""
        pending = {name: reflect(inspector, name) for name in names}
        ordered = []
        while pending:
            ready = [
                t
                for t in pending.values()
                if not any(p in pending and p != t.name for p, _ in t.parents.values())
            ] or list(pending.values())  # a cycle: break it anywhere
            for table in ready:
                ordered.append(pending.pop(table.name))
        return ordered

    def generate(self, connection: Connection, table: Table) -> tuple[list[dict[str, Any]], str]:
        """A batch of rows for the table as it is now, or none and why."""
        parents = references(connection, table, 20)
        rows = []
        kinds = ["low", "high", "unicode"] + ["ordinary"] * ORDINARY
        for kind in kinds[: self.limit - self.seeded.get(table.name, 0)]:
            self.serial += 1
            generated, why = row(table, parents, kind, self.serial)
            if why:
                return [], why
            rows.append(generated)
        return rows, ""

    def insert(
        self, connection: Connection, table: Table, rows: list[dict[str, Any]], own: bool = False
    ) -> tuple[Batch, str]:
        """Insert the rows: all at once in a savepoint, else each in its own, leaving out a
        row the schema rejects (a CHECK constraint, a charset) unless it is the revision's
        own. The batch keeps the keys the rows got, and the first rejection.

        Keys come from the rows themselves; keys the database picks come back through
        RETURNING, or, where a driver cannot return them from a multi-row insert (MySQL), as
        the keys the table holds after the insert and did not before."""
        core = table.core()
        given = all(key in row for row in rows for key in table.key)
        returning = not given and connection.dialect.insert_executemany_returning
        statement = core.insert()
        if returning:
            statement = statement.returning(*(core.c[name] for name in table.key))
        before = keys_of(connection, table) if not given and not returning else set()
        inserted, returned, rejected = list(rows), [], ""
        try:
            with connection.begin_nested():
                for columns in {frozenset(row) for row in rows}:  # a statement per shape
                    result = connection.execute(statement, [r for r in rows if set(r) == columns])
                    returned += result.all() if returning else []
        except sa.exc.DBAPIError as error:
            if own:
                raise
            inserted, returned, rejected = [], [], f"the database rejected its rows: {error.orig}"
            for row in rows:
                try:
                    with connection.begin_nested():
                        result = connection.execute(statement, [row])
                        returned += result.all() if returning else []
                except sa.exc.DBAPIError:
                    continue
                inserted.append(row)
        if given:
            keys = {tuple(row[name] for name in table.key) for row in inserted}
        elif returning:
            keys = {tuple(row) for row in returned}
        else:
            keys = keys_of(connection, table) - before
        self.seeded[table.name] = self.seeded.get(table.name, 0) + len(inserted)
        return Batch(table, sorted(keys, key=repr), inserted), rejected

    def remove(self, connection: Connection, revision: Script, tables: Iterable[str]) -> None:
        """After `revision`'s downgrade: delete the rows seeded before its upgrade, newest
        first, so that the walk down finds each table as it was. `tables`: the tables
        there are now (a table the downgrade dropped has taken its rows with it)."""
        batches = self.batches.pop(revision.revision, [])
        tables = set(tables)
        for batch in reversed(batches):
            table = batch.table
            self.seeded[table.name] -= len(batch.rows)
            if table.name not in tables or not batch.keys:
                continue
            core = sa.table(table.name, *[sa.column(name) for name in table.key])
            if len(table.key) == 1:
                where = core.c[table.key[0]].in_([key for (key,) in batch.keys])
            else:
                where = sa.tuple_(*core.c).in_(batch.keys)
            connection.execute(sa.delete(core).where(where))

    def described(self, text: str) -> list[str]:
        """What the tables (and columns) that an error message names held."""
        words = set(re.findall(r"[\w$]+", text))
        counts: dict[str, int] = {}
        values: dict[tuple[str, str], set[str]] = {}
        for batch in (batch for batches in self.batches.values() for batch in batches):
            if batch.table.name not in words:
                continue
            counts[batch.table.name] = counts.get(batch.table.name, 0) + len(batch.rows)
            for column in (c.name for c in batch.table.columns if c.name in words):
                found = values.setdefault((batch.table.name, column), set())
                found |= {short(row[column]) for row in batch.rows if column in row}
        held = [f"{table} held {count} generated rows" for table, count in sorted(counts.items())]
        held += [f"{t}.{c} held {', '.join(sorted(v))}" for (t, c), v in sorted(values.items())]
        return held


def short(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, str) and len(value) > 24:
        return f"a {len(value)}-character string"
    return repr(value) if isinstance(value, str) else str(value)
