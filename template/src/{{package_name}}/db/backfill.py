"""Fill a column of a large table from a revision without holding its rows for long: the
table is updated in primary-key ranges, each committed on its own together with the
position reached, so the app's writes wait at most one batch, and a backfill killed
half-way (a deploy that died, a lost connection) goes on where it stopped when the deploy
runs again, never updating a row twice.

    from <package>.db.backfill import backfill

    data_migration = True  # it changes rows, not the schema


    def upgrade() -> None:
        backfill(
            "users",
            {"display_name": sa.text("coalesce(full_name, email)")},
            where=sa.text("display_name IS NULL"),
        )

- A batch is a range of the primary key (one column, of any type the database orders):
  `UPDATE ... WHERE key > <last> AND key <= <bound>` runs and the bound is written to the
  table `migration_backfills`, in one transaction. An integer key's bound is the last one
  plus the batch size, up to the largest key when the backfill started (the last batch has
  no upper bound, so rows added meanwhile are filled too); any other key's is read from its
  index (`ORDER BY key LIMIT 1 OFFSET n`).
- The batch size follows a target time per batch (`batch_seconds`): it is scaled by how
  far the last batch was from it. `pause` sleeps between batches.
- Before each batch it waits while the server is busy: PostgreSQL vacuuming the table or a
  replica behind by more than `max_replica_lag` seconds; MySQL/MariaDB with more than
  `max_threads_running` threads running.
- Progress goes to stderr (rows, rows/s, time left): a bar in a terminal, a line every few
  seconds in a log.
- With `alembic upgrade --sql` it writes one set-based UPDATE, headed by a comment.

It runs outside the revision's transaction (Alembic's autocommit block commits what the
revision did before), on a connection of its own with the migration session's timeouts:
give it a revision of its own (`data_migration = True`), after the one that added the
column. Its position is deleted when it finishes, so a revision downgraded and upgraded
again backfills again; a deploy killed between the last batch and Alembic's record of the
revision runs it again whole, so keep the update idempotent (a `where` that skips rows done).
"""

import datetime as dt
import hashlib
import json
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from alembic import op
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from sqlalchemy import Connection

from .migrations import session_statements

TABLE = "migration_backfills"  # left out of autogenerate and of the suite's snapshots
PROGRESS = sa.Table(
    TABLE,
    sa.MetaData(),
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("last_key", sa.String(500), nullable=False),  # JSON: the last key done
    sa.Column("rows_done", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)
PG_VACUUMING = sa.text("SELECT 1 FROM pg_stat_progress_vacuum WHERE relid = to_regclass(:table)")
PG_REPLICA_LAG = sa.text(
    "SELECT coalesce(max(extract(epoch FROM replay_lag)), 0) FROM pg_stat_replication"
)


class BackfillError(Exception):
    """The backfill cannot run as asked; the message says why and what to do."""


def backfill(
    table: str,
    values: dict[str, Any],
    where: Any = None,
    *,
    name: str | None = None,
    batch_size: int = 1000,
    batch_seconds: float = 0.07,
    largest_batch: int = 100_000,
    pause: float = 0.0,
    max_replica_lag: float = 1.0,
    max_threads_running: int = 25,
) -> int:
    """UPDATE `table` SET `values` (column -> value or SQL expression) for its rows that
    match `where` (an SQL expression), in committed primary-key ranges; returns how many
    rows it updated. `name` keys the stored position (by default the table and a hash of
    the statement)."""
    context = op.get_context()
    statement = sa.update(sa.table(table, *[sa.column(column) for column in values]))
    statement = statement.values(values)
    if context.as_sql:  # the SQL for a reviewer, or for a deploy run by hand
        op.execute(f"-- db/backfill.py runs this UPDATE of {table} in primary-key batches")
        op.execute(statement.where(where) if where is not None else statement)
        return 0
    text = str(statement.where(where) if where is not None else statement)
    name = name or f"{table}:{hashlib.sha256(text.encode()).hexdigest()[:12]}"
    with context.autocommit_block(), own_connection(op.get_bind()) as connection:
        run = Run(connection, table, values, where, name)
        return run.go(
            Batches(batch_size, batch_seconds, largest=largest_batch),
            pause,
            Health(connection, table, max_replica_lag, max_threads_running),
        )


@contextmanager
def own_connection(bind: Connection) -> Iterator[Connection]:
    """A second connection to the migration's database, with the migration session's
    timeouts, and the progress table."""
    with bind.engine.connect() as connection:
        for setting in session_statements(connection.dialect.name):
            connection.exec_driver_sql(setting)
        # One statement whether the table is there or not: the same statements every run.
        connection.execute(sa.schema.CreateTable(PROGRESS, if_not_exists=True))
        connection.commit()
        yield connection


@dataclass
class Batches:
    """The batch size, adapted so that a batch takes about `seconds`."""

    size: int
    seconds: float
    smallest: int = 100
    largest: int = 100_000

    def adapt(self, took: float) -> None:
        """Scale the size by how far the last batch was from the target, at most doubling
        or halving it at once."""
        factor = min(max(self.seconds / max(took, 1e-6), 0.5), 2.0)
        self.size = min(max(int(self.size * factor), self.smallest), self.largest)


@dataclass
class Health:
    """Whether the server is too busy for the next batch, and why."""

    connection: Connection
    table: str
    max_replica_lag: float
    max_threads_running: int
    every: float = 1.0  # seconds between checks
    checked: float = float("-inf")

    def busy(self) -> str | None:
        dialect = self.connection.dialect.name
        if dialect == "postgresql":
            if self.connection.execute(PG_VACUUMING, {"table": self.table}).first():
                return f"autovacuum is working on {self.table}"
            lag = float(self.connection.execute(PG_REPLICA_LAG).scalar() or 0)
            if lag > self.max_replica_lag:
                return f"a replica is {lag:.1f}s behind"
        elif dialect == "mysql":
            row = self.connection.exec_driver_sql(
                "SHOW GLOBAL STATUS LIKE 'Threads_running'"
            ).first()
            running = int(row[1]) if row else 0
            if running > self.max_threads_running:
                return f"{running} threads running (more than {self.max_threads_running})"
        self.connection.commit()  # end the transaction the checks began
        return None

    def wait(self, say: Any) -> None:
        """Sleep while the server is busy, saying so every 10 seconds. Checked once a
        second at most, not before every batch."""
        if time.monotonic() - self.checked < self.every:
            return
        self.checked = time.monotonic()
        said = 0.0
        while reason := self.busy():
            self.connection.commit()
            if time.monotonic() - said > 10:
                say(f"paused: {reason}")
                said = time.monotonic()
            time.sleep(1)


def encode(value: Any) -> str:
    return json.dumps(value if isinstance(value, int | float) else str(value))


def decode(text: str, type_: Any) -> Any:
    """A key stored by `encode`, as the key column's Python type."""
    value = json.loads(text)
    if isinstance(type_, sa.Uuid):
        return uuid.UUID(value)
    if isinstance(type_, sa.DateTime):
        return dt.datetime.fromisoformat(value)
    if isinstance(type_, sa.Date):
        return dt.date.fromisoformat(value)
    return value


@dataclass
class Run:
    """One backfill on its own connection."""

    connection: Connection
    table: str
    values: dict[str, Any]
    where: Any
    name: str

    def key(self) -> sa.ColumnClause:
        inspector = sa.inspect(self.connection)
        keys = inspector.get_pk_constraint(self.table).get("constrained_columns") or []
        if len(keys) != 1:
            raise BackfillError(
                f"{self.table} has {'no' if not keys else 'a composite'} primary key: backfill "
                "needs a single-column key to split the table in ranges"
            )
        (found,) = [c for c in inspector.get_columns(self.table) if c["name"] == keys[0]]
        return sa.column(keys[0], found["type"])

    def resume(self, key: sa.ColumnClause) -> tuple[Any, int]:
        """The last key done and the rows updated so far, by an earlier run."""
        row = self.connection.execute(
            sa.select(PROGRESS.c.last_key, PROGRESS.c.rows_done).where(PROGRESS.c.name == self.name)
        ).first()
        self.connection.commit()
        return (decode(row.last_key, key.type), row.rows_done) if row else (None, 0)

    def go(self, batches: Batches, pause: float, health: Health) -> int:
        key = self.key()
        columns = [sa.column(column) for column in self.values if column != key.name]
        source = sa.table(self.table, key, *columns)
        statement = sa.update(source).values(self.values)
        last, done = self.resume(key)
        resumed = last
        numbered = isinstance(key.type, sa.Integer)  # ranges by arithmetic, no lookup
        if numbered:
            lowest, highest = self.connection.execute(
                sa.select(sa.func.min(key), sa.func.max(key)).select_from(source)
            ).one()
            if last is None and lowest is not None:
                last = lowest - 1  # the bound below the first batch, left out of it
            total = max(highest - last, 0) if highest is not None else 0
        else:
            remaining = sa.select(sa.func.count()).select_from(source)
            if last is not None:
                remaining = remaining.where(key > last)
            total = self.connection.execute(remaining).scalar() or 0
        self.connection.commit()
        with reporter(self.table, total) as report:
            if resumed is not None:
                report.say(f"resuming after key {resumed} ({done} rows updated before)")
            while True:
                health.wait(report.say)
                if numbered:  # the last batch has no upper bound: it takes rows added since
                    bound = (
                        None
                        if highest is None or last + batches.size >= highest
                        else (last + batches.size)
                    )
                else:
                    bound = self.bound(source, key, last, batches.size)
                started = time.monotonic()
                with self.connection.begin():
                    done += self.batch(statement, key, last, bound)
                    self.record(bound, done)
                batches.adapt(time.monotonic() - started)
                report.advance(batches.size if bound is not None else None, done)
                if bound is None:
                    return done
                last = bound
                time.sleep(pause)

    def bound(self, source: sa.TableClause, key: sa.ColumnClause, last: Any, size: int) -> Any:
        """The key `size` rows after `last`; None when fewer rows are left."""
        query = sa.select(key).select_from(source).order_by(key).offset(size - 1).limit(1)
        if last is not None:
            query = query.where(key > last)
        bound = self.connection.execute(query).scalar()
        self.connection.commit()
        return bound

    def batch(self, statement: sa.Update, key: sa.ColumnClause, last: Any, bound: Any) -> int:
        if last is not None:
            statement = statement.where(key > last)
        if bound is not None:
            statement = statement.where(key <= bound)
        if self.where is not None:
            statement = statement.where(self.where)
        return self.connection.execute(statement).rowcount

    def record(self, bound: Any, done: int) -> None:
        """Store the position, in the batch's transaction; forget it after the last one."""
        mine = PROGRESS.c.name == self.name
        if bound is None:
            self.connection.execute(PROGRESS.delete().where(mine))
            return
        position = dict(
            last_key=encode(bound),
            rows_done=done,
            updated_at=dt.datetime.now(dt.UTC).replace(tzinfo=None),
        )
        if not self.connection.execute(PROGRESS.update().where(mine).values(position)).rowcount:
            self.connection.execute(PROGRESS.insert().values(name=self.name, **position))


@dataclass
class Report:
    """Progress on stderr: a rich bar in a terminal, else a line every `every` seconds."""

    table: str
    total: int
    progress: Progress | None
    task: Any = None
    seen: int = 0
    started: float = 0.0
    said: float = 0.0
    every: float = 5.0

    def say(self, text: str) -> None:
        line = f"backfill {self.table}: {text}"
        if self.progress is not None:
            self.progress.console.print(line)
        else:
            print(line, file=sys.stderr, flush=True)

    def advance(self, keys: int | None, done: int) -> None:
        self.seen = self.total if keys is None else min(self.seen + keys, self.total)
        now = time.monotonic()
        rate = self.seen / max(now - self.started, 1e-6)
        if self.progress is not None:
            self.progress.update(self.task, completed=self.seen, rate=f"{rate:,.0f}")
            return
        if keys is None or now - self.said >= self.every:
            self.said = now
            left = (self.total - self.seen) / rate if rate else 0
            self.say(
                f"{self.seen}/{self.total} rows ({self.seen * 100 // max(self.total, 1)}%), "
                f"{done} updated, {rate:,.0f} rows/s, {left:.0f}s left"
            )


@contextmanager
def reporter(table: str, total: int) -> Iterator[Report]:
    console = Console(stderr=True)
    now = time.monotonic()
    if not console.is_terminal:
        yield Report(table, total, None, started=now, said=now)
        return
    columns = (
        TextColumn(f"backfill {table}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} rows/s"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(table, total=total, rate="0")
        yield Report(table, total, progress, task, started=now)
