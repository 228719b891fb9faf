"""The live-traffic budget: how long a new revision keeps the app's requests waiting.

For each revision after the baseline, on a scratch database at its parent revision
(tests/test_migrations.py runs it, PostgreSQL and MySQL/MariaDB):

1. the tables its source names get `traffic_rows` rows each (their parents a thousand);
2. a canary starts, through the app's own engine (`create_db_engine`: its driver, pool and
   prepared-statement cache): an insert, a select by key and an update by key on each of
   those tables, every 20 ms;
3. a long reader opens a transaction that has read those tables and keeps it open
   `traffic_long_reader_seconds` into the revision, as a report or a slow request would: a
   statement that then waits for its table lock queues every request behind it;
4. the revision runs in a process of its own through migrations/env.py, as a deploy runs it
   (the migration lock, MIGRATION_LOCK_TIMEOUT and its retries, MariaDB's in-place rule);
5. the canary's slowest request while the revision ran must take at most
   `traffic_budget_ms`, and no request may fail (an asyncpg statement cache made stale by
   the revision included). What the machine added is not the revision's: a control insert
   into a table of the canary's own, which no revision touches, runs alongside, and a
   request's wait counts less what a control request waited at the same time (a busy disk
   or CPU slows every commit, a lock only those on the locked tables).

A revision that must stall its tables for longer, a lookup table of ten rows say, says so
at its top level: `allow_stall = {"ms": 2000, "why": "<why>"}`; the test run lists it.
Settings: `[tool.migration-safety]` in pyproject.toml.
"""

import asyncio
import itertools
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.script import Script
from pydantic import SecretStr
from sqlalchemy import Connection, Engine
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from ..core.config import Settings
from . import ROOT, seeds
from .connection import environment_for, run_with_connection
from .engine import create_db_engine

ROWS = 1_000_000  # traffic_rows: per table the revision names
BUDGET_MS = 250  # traffic_budget_ms: the slowest canary request allowed
LONG_READER_SECONDS = 2  # traffic_long_reader_seconds: 0 for none
PARENT_ROWS = 1_000  # rows in a table that one of those references
INTERVAL = 0.02  # between two requests of one kind
CHUNK = 5_000  # rows per insert statement batch while filling, each batch committed
SERIALS = itertools.count(10**8)  # the canary's unique values, above the filled rows'
RUN_LIMIT = 600  # seconds a revision may take under traffic before it is stopped
CONTROL = "migration_safety_control"  # the control requests' table: no revision names it

# ------------------------------------------------------------------ the revision's run

# `alembic upgrade <revision>` through migrations/env.py, in a process of its own, printing
# each statement as it ends: [started, ended, statement, error] with wall-clock times, on a
# line of its own that starts with MARK.
MARK = "traffic-statement: "
TIMED_MIGRATOR = """
import importlib, json, sys, time
from alembic import command
from sqlalchemy import Engine, event

revision, package, MARK = sys.argv[1], sys.argv[2], sys.argv[3]
checks = importlib.import_module(package + ".db.checks")


def say(started, statement, error=""):
    print(MARK + json.dumps([started, time.time(), statement[:400], error]), flush=True)


@event.listens_for(Engine, "before_cursor_execute")
def start(connection, cursor, statement, *args):
    connection.info["started"] = time.time()
    say(connection.info["started"], "")  # the revision is running: the reader holds on


@event.listens_for(Engine, "after_cursor_execute")
def end(connection, cursor, statement, *args):
    say(connection.info.pop("started", time.time()), statement)


@event.listens_for(Engine, "handle_error")
def failed(context):
    started = context.connection.info.pop("started", time.time()) if context.connection else 0
    say(started, context.statement or "", str(context.original_exception).splitlines()[0])


command.upgrade(checks.alembic_config(), revision)
"""


@dataclass
class Statement:
    started: float
    ended: float
    sql: str
    error: str


@dataclass
class Run:
    """What the migrator did: its statements, timed, and how it ended."""

    statements: list[Statement]
    returncode: int
    stderr: str


# ------------------------------------------------------------------ the canary


@dataclass
class Request:
    """One kind of canary request on one table: `run(connection)` in its own transaction."""

    table: str
    kind: str  # insert, select or update
    run: Callable[[Connection], None]


@dataclass
class Timing:
    request: Request
    started: float  # wall clock
    seconds: float
    error: str = ""


def canary_requests(connection: Connection, name: str, columns: set[str]) -> list[Request]:
    """An insert, a select and an update on `name`, naming only `columns` (those that exist
    both before and after the revision). The select and update go by the keys of rows the
    table holds."""
    table = seeds.reflect(sa.inspect(connection), name)
    core = table.core()
    kept = [c for c in table.columns if c.name in columns]
    keys = [
        tuple(row)
        for row in connection.execute(
            sa.select(*(core.c[k] for k in table.key)).limit(100) if table.key else sa.select(1)
        )
    ]
    parents = seeds.references(connection, table, 20)

    def insert(connection: Connection) -> None:
        row, why = seeds.row(table, parents, "ordinary", next(SERIALS), columns)
        if why:
            raise ValueError(why)
        connection.execute(core.insert(), row)

    found: list[Request] = [Request(name, "insert", insert)]
    if not (table.key and keys and set(table.key) <= columns):
        return found
    where = sa.and_(*(core.c[k] == sa.bindparam(f"key_{k}") for k in table.key))
    selected = sa.select(*(core.c[c.name] for c in kept)).where(where)
    changed = next((c.name for c in kept if c.name not in table.key), table.key[0])
    updated = sa.update(core).where(where).values({changed: core.c[changed]})
    turn = itertools.count()

    def by_key() -> dict[str, Any]:
        key = keys[next(turn) % len(keys)]
        return {f"key_{k}": v for k, v in zip(table.key, key, strict=True)}

    found.append(Request(name, "select", lambda c: c.execute(selected, by_key()).all()))
    found.append(Request(name, "update", lambda c: c.execute(updated, by_key())))
    return found


def control_request() -> Request:
    """The control: an insert into CONTROL, which the machine slows as much as any other
    request, and the revision's locks never."""
    table = control_table()
    return Request(CONTROL, "control", lambda c: c.execute(table.insert(), {"at": time.time()}))


def control_table() -> sa.Table:
    return sa.Table(
        CONTROL,
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", sa.Float, nullable=False),
    )


class Canary:
    """The canary's requests, through the app's engine, each kind every INTERVAL, until
    stopped; the long reader, whose transaction stays open until `release` is set; and the
    control request, through an engine of its own (the canary's pool stays as the app's).
    Threads for a sync engine, tasks on an event loop of their own for an async one."""

    def __init__(self, url: URL, requests: list[Request], read: list[str]) -> None:
        settings = Settings(database_url=SecretStr(url_text(url)))
        self.engine, self.control_engine = create_db_engine(settings), create_db_engine(settings)
        self.requests, self.read = requests, read
        self.timings: list[Timing] = []
        self.stop, self.release, self.holding = (threading.Event() for _ in range(3))
        self.threads: list[threading.Thread] = []

    @contextmanager
    def timed(self, request: Request, due: float | None = None) -> Iterator[None]:
        """Time the request run inside; an error it meets is recorded with it, not raised
        (what the app's request would have met). `due`: when a control request should have
        started; starting late (the machine kept its thread from running) counts as a wait
        of the machine's too."""
        started, clock, failed = time.time(), time.perf_counter(), ""
        late = max(started - due, 0.0) if due else 0.0
        try:
            yield
        except Exception as error:
            failed = f"{type(error).__name__}: {first_line(error)}"
        seconds = time.perf_counter() - clock + late
        self.timings.append(Timing(request, started - late, seconds, failed))

    def hold(self, connection: Connection) -> None:
        for name in self.read:
            connection.execute(sa.select(1).select_from(sa.table(name)).limit(1)).all()

    def start(self) -> None:
        if isinstance(self.engine, AsyncEngine):
            self.threads = [threading.Thread(target=asyncio.run, args=(self.tasks(),), daemon=True)]
        else:
            work = [(r, self.engine) for r in self.by_kind()]
            work.append(([control_request()], self.control_engine))
            self.threads = [threading.Thread(target=self.worker, args=w, daemon=True) for w in work]
            self.threads.append(threading.Thread(target=self.reader, daemon=True))
        for thread in self.threads:
            thread.start()
        if not self.holding.wait(30):
            raise RuntimeError("the long reader could not open its transaction in 30 s")

    def by_kind(self) -> list[list[Request]]:
        kinds: dict[str, list[Request]] = {}
        for request in self.requests:
            kinds.setdefault(request.kind, []).append(request)
        return list(kinds.values())

    def worker(self, requests: list[Request], engine: Engine) -> None:
        """One kind of request, on each table in turn, INTERVAL apart, until stopped."""
        due = None
        for request in itertools.cycle(requests):
            if self.stop.is_set():
                return
            with self.timed(request, due), engine.begin() as connection:
                request.run(connection)
            due = time.time() + INTERVAL if request.kind == "control" else None
            time.sleep(INTERVAL)

    def reader(self) -> None:
        with self.engine.connect() as connection:
            self.hold(connection)
            self.holding.set()
            self.release.wait(RUN_LIMIT)
            connection.rollback()

    async def tasks(self) -> None:
        async def worker(requests: list[Request], engine: AsyncEngine) -> None:  # as above
            due = None
            for request in itertools.cycle(requests):
                if self.stop.is_set():
                    return
                with self.timed(request, due):
                    async with engine.begin() as connection:
                        await connection.run_sync(request.run)
                due = time.time() + INTERVAL if request.kind == "control" else None
                await asyncio.sleep(INTERVAL)

        async def reader() -> None:
            async with self.engine.connect() as connection:
                await connection.run_sync(self.hold)
                self.holding.set()
                while not self.release.is_set():
                    await asyncio.sleep(0.01)
                await connection.rollback()

        work = [worker(r, self.engine) for r in self.by_kind()]
        work.append(worker([control_request()], self.control_engine))
        try:
            await asyncio.gather(reader(), *work)
        finally:
            await self.engine.dispose()
            await self.control_engine.dispose()

    def finish(self) -> None:
        self.release.set()
        self.stop.set()
        for thread in self.threads:
            thread.join()
        if not isinstance(self.engine, AsyncEngine):
            self.engine.dispose()
            self.control_engine.dispose()


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else ""


def url_text(url: URL) -> str:
    return url.render_as_string(hide_password=False)


@contextmanager
def canary(url: URL, requests: list[Request], read: list[str]) -> Iterator[Canary]:
    running = Canary(url, requests, read)
    try:
        running.start()
        yield running
    finally:
        running.finish()


# ------------------------------------------------------------------ filling the tables


def fill(connection: Connection, names: set[str], rows: int) -> dict[str, str]:
    """Top the tables up to `rows` rows each and their parents to PARENT_ROWS, parents
    first, each chunk committed. Tables it cannot fill, with why."""
    inspector = sa.inspect(connection)
    wanted = dict.fromkeys(names, rows)
    pending = list(names)
    while pending:  # the tables they reference, and those these reference
        for parent, _ in seeds.reflect(inspector, pending.pop()).parents.values():
            if parent not in wanted:
                wanted[parent] = PARENT_ROWS
                pending.append(parent)
    skipped = {}
    seeder = seeds.Seeder(0)
    for table in seeder.in_parent_order(inspector, sorted(wanted)):
        count = connection.execute(sa.select(sa.func.count()).select_from(sa.table(table.name)))
        held = count.scalar_one()
        connection.commit()
        if held < wanted[table.name] and (
            why := fill_table(connection, table, held, wanted[table.name])
        ):
            skipped[table.name] = why
    return skipped


def fill_table(connection: Connection, table: seeds.Table, held: int, wanted: int) -> str:
    """Insert ordinary generated rows (db/seeds.py's values), numbered on from the `held`
    rows the fills before gave it, up to `wanted`; why not, if it cannot."""
    parents = seeds.references(connection, table, 1000)
    core = table.core()
    for first in range(held, wanted, CHUNK):
        batch = []
        for serial in range(first + 1, min(wanted, first + CHUNK) + 1):
            generated, why = seeds.row(table, parents, "ordinary", serial)
            if why:
                return why
            batch.append(generated)
        try:
            connection.execute(core.insert(), batch)
        except sa.exc.DBAPIError as error:
            connection.rollback()
            return f"the database rejected its rows: {seeds.short(str(error.orig))}"
        connection.commit()
    return ""


def analyze(url: URL, names: list[str]) -> None:
    """Statistics and, on PostgreSQL, a vacuumed table: autovacuum would otherwise start on
    the freshly filled tables in the middle of the measurement."""

    def run(connection: Connection) -> None:
        for name in names:
            quoted = connection.dialect.identifier_preparer.quote(name)
            if connection.dialect.name == "postgresql":
                connection.exec_driver_sql(f"VACUUM ANALYZE {quoted}")
            else:
                connection.exec_driver_sql(f"ANALYZE TABLE {quoted}").all()

    run_with_connection(url, run, isolation_level="AUTOCOMMIT")


# ------------------------------------------------------------------ the budget

# What to do instead, by the statement the canary waited for (its SQL, upper-cased).
ADVICE = [
    (
        r"CREATE (UNIQUE )?INDEX (?!CONCURRENTLY)",
        "build the index with create_index_concurrently() from db/online.py, which lets "
        "writes go on (PostgreSQL: CONCURRENTLY; MySQL/MariaDB: in place, LOCK=NONE)",
    ),
    (
        r"ADD (COLUMN )?.*DEFAULT",
        "add the column without a default, or with a constant one, and fill it with "
        "backfill() from db/backfill.py: a volatile default (random(), uuid, a clock) makes "
        "the database write every row under the table's lock",
    ),
    (
        r" TYPE |MODIFY |CHANGE (COLUMN )?",
        "change the type in steps: a new column, backfill(), then a contract revision that "
        "drops the old one (docs: how-to/migrations.md, Change a column's type)",
    ),
    (r"SET NOT NULL", "set_not_null_online() from db/online.py: a validated CHECK first"),
    (
        r"FOREIGN KEY|CHECK",
        "add_foreign_key_online() or add_check_online() from db/online.py: NOT VALID, then "
        "VALIDATE, which lets reads and writes go on",
    ),
]
QUEUE = (
    "a statement that waits for its table lock keeps every request behind it waiting: keep "
    "MIGRATION_LOCK_TIMEOUT below the budget ({timeout}) and do not turn lock_timeout off in "
    "a revision; the deploy tries the revision again (MIGRATION_LOCK_RETRIES)"
)


@dataclass
class Budget:
    ms: float
    why: str = ""  # set when the revision allows itself more than the project's budget


def budget(revision: Script, default_ms: float) -> Budget:
    """The revision's `allow_stall = {"ms": <ms>, "why": "<why>"}`, or the project's
    budget. ValueError when it is spelled otherwise."""
    allowed = getattr(revision.module, "allow_stall", None)
    if allowed is None:
        return Budget(default_ms)
    if not (
        isinstance(allowed, dict)
        and set(allowed) == {"ms", "why"}
        and isinstance(allowed["ms"], int | float)
        and isinstance(allowed["why"], str)
        and allowed["why"].strip()
    ):
        raise ValueError(
            f"revision {revision.revision}: allow_stall must give the longest wait in "
            'milliseconds and the reason, e.g. allow_stall = {"ms": 2000, "why": "ten rows, '
            'read once a day"}'
        )
    return Budget(float(allowed["ms"]), allowed["why"])


@dataclass
class Options:
    """`[tool.migration-safety]`'s traffic settings."""

    rows: int = ROWS
    budget_ms: float = BUDGET_MS
    long_reader_seconds: float = LONG_READER_SECONDS

    @classmethod
    def from_settings(cls, found: dict[str, Any]) -> "Options":
        return cls(
            found.get("traffic_rows", ROWS),
            found.get("traffic_budget_ms", BUDGET_MS),
            found.get("traffic_long_reader_seconds", LONG_READER_SECONDS),
        )


@dataclass
class Measured:
    """One revision under traffic."""

    revision: Script
    tables: list[str]
    run: Run
    timings: list[Timing]
    released: float  # when the long reader let go (wall clock)
    notes: list[str] = field(default_factory=list)


def migrate(url: URL, revision: Script, running: Canary, hold: float) -> tuple[Run, float]:
    """Run the revision through migrations/env.py in a process of its own while the canary
    runs; the long reader lets go `hold` seconds after the migrator's first statement."""
    from .checks import PACKAGE

    env = environment_for(url)
    process = subprocess.Popen(
        [sys.executable, "-c", TIMED_MIGRATOR, revision.revision, PACKAGE, MARK],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    began = time.monotonic()
    timer = threading.Timer(RUN_LIMIT, process.kill)
    timer.start()
    errors: list[str] = []
    drain = threading.Thread(target=lambda: errors.append(process.stderr.read()))
    drain.start()
    statements, released = [], time.time() + RUN_LIMIT
    release = None
    for line in process.stdout:
        if not line.startswith(MARK):  # the revision's own output
            continue
        started, ended, sql, error = json.loads(line.removeprefix(MARK))
        if release is None:
            release = threading.Timer(hold, running.release.set)
            release.start()
            released = time.time() + hold
        if sql or error:
            statements.append(Statement(started, ended, sql, error))
    returncode = process.wait()
    timer.cancel()
    drain.join()
    if time.monotonic() - began >= RUN_LIMIT:
        errors.append(f"\nTimeoutError: stopped after {RUN_LIMIT} s under traffic")
    if release is not None:
        release.cancel()
    running.release.set()
    return Run(statements, returncode, "".join(errors)), min(released, time.time())


def measure(
    url: URL,
    revision: Script,
    after: dict[str, set[str]] | None,
    tables: list[str],
    options: Options,
) -> Measured:
    """Fill the revision's tables, then run it under the canary and the long reader. `after`:
    the columns of each table after the revision (the walk's snapshot; None where the walk
    did not get that far): the canary names only those it has before and after."""
    from .checks import alembic_config

    notes = []
    skipped = run_with_connection(url, lambda c: fill(c, set(tables), options.rows))
    analyze(url, tables)
    for table, why in skipped.items():
        notes.append(f"{table} could not be filled ({why}): it was measured with fewer rows")
    kept = kept_columns(url, after, tables)
    found: list[Request] = []
    for request in run_with_connection(
        url, lambda c: [r for t, columns in kept.items() for r in canary_requests(c, t, columns)]
    ):
        try:
            run_with_connection(url, request.run)  # rolled back: a rehearsal
        except (sa.exc.DBAPIError, ValueError) as error:
            notes.append(
                f"the canary cannot {request.kind} on {request.table} "
                f"({seeds.short(first_line(getattr(error, 'orig', error)))}): not measured"
            )
            continue
        found.append(request)
    if not found:
        command.upgrade(alembic_config(url), revision.revision)
        return Measured(revision, tables, Run([], 0, ""), [], 0.0, notes)
    read = tables if options.long_reader_seconds > 0 else []
    control = control_table()
    run_with_connection(url, lambda c: control.create(c, checkfirst=True))
    try:
        with canary(url, found, read) as running:
            run, released = migrate(url, revision, running, options.long_reader_seconds)
    finally:
        run_with_connection(url, lambda c: control.drop(c, checkfirst=True))
    return Measured(revision, tables, run, running.timings, released if read else 0.0, notes)


def kept_columns(
    url: URL, after: dict[str, set[str]] | None, tables: list[str]
) -> dict[str, set[str]]:
    """Each table's columns now that it still has after the revision (all of them when that
    is not known); a table the revision drops gets no requests."""

    def now(connection: Connection) -> dict[str, set[str]]:
        inspector = sa.inspect(connection)
        return {t: {c["name"] for c in inspector.get_columns(t)} for t in tables}

    found = run_with_connection(url, now)
    if after is None:
        return found
    return {table: columns & after[table] for table, columns in found.items() if table in after}


def machine_wait(timing: Timing, control: list[Timing]) -> float:
    """The longest a control request that ran at the same time as `timing` waited: a busy
    disk or CPU, which would have slowed `timing` as much with no revision running."""
    return max((c.seconds for c in control if overlap(timing, c) > 0), default=0.0)


def short_sql(sql: str) -> str:
    sql = " ".join(sql.split())
    return sql if len(sql) <= 160 else sql[:157] + "..."


def queued(statement: Statement, released: float) -> bool:
    """Whether the statement waited for the long reader: it ran until the reader let go."""
    return statement.started < released <= statement.ended + 0.05


def overlap(timing: Timing, other: Statement | Timing) -> float:
    """How long, in seconds, the two ran at the same time (negative: they did not)."""
    ended = timing.started + timing.seconds
    other_ended = other.ended if isinstance(other, Statement) else other.started + other.seconds
    return min(ended, other_ended) - max(timing.started, other.started)


def error_line(stderr: str) -> str:
    """The exception a migrator's traceback ends with (SQLAlchemy adds lines after it)."""
    lines = [line for line in stderr.splitlines() if line and not line[0].isspace()]
    errors = [line for line in lines if re.match(r"[\w.]+(Error|Exception)\b", line)]
    return (errors or lines or ["(no output)"])[-1]


def judge(measured: Measured, allowed: Budget, options: Options) -> list[str]:
    """The problems of one measured revision: it failed, a request failed, or the slowest
    request while it ran took longer than its budget."""
    from .checks import describe
    from .migrations import COPY_ADVICE, COPY_REFUSED, settings

    name, run = describe(measured.revision), measured.run
    if run.returncode != 0:
        last = error_line(run.stderr)
        refused = any(f"({code}," in last for code in COPY_REFUSED)  # MariaDB's refusal
        return [
            f"{name} fails to upgrade under traffic: {last}"
            + (f". {COPY_ADVICE}" if refused else "")
        ]
    problems = []
    failures: dict[tuple[str, str], str] = {}
    control = [t for t in measured.timings if t.request.kind == "control"]
    app = [t for t in measured.timings if t.request.kind != "control"]
    for timing in app:
        if timing.error:
            failures.setdefault((timing.request.kind, timing.request.table), timing.error)
    for (kind, table), error in sorted(failures.items()):
        hint = ""
        if "InvalidCachedStatement" in error or "cached plan must not change" in error:
            hint = (
                " (the driver's prepared statements went stale when the revision changed a "
                "column the app reads: psycopg prepares a statement run five times, asyncpg "
                "every one; change a type in steps, a new column and backfill())"
            )
        problems.append(f"{name}: the app's {kind} on {table} failed while it ran: {error}{hint}")
    if not run.statements:
        return problems
    begin, end = min(s.started for s in run.statements), max(s.ended for s in run.statements)
    during = [t for t in app if t.started <= end and t.started + t.seconds >= begin]
    if not during:
        return problems
    # What a control request waited at the same time was the machine's, not the revision's.
    machine = {id(t): machine_wait(t, control) for t in during}
    worst = max(during, key=lambda t: t.seconds - machine[id(t)])
    if (worst.seconds - machine[id(worst)]) * 1000 <= allowed.ms:
        return problems
    culprit = max(run.statements, key=lambda s: overlap(worst, s))
    advice = [text for pattern, text in ADVICE if re.search(pattern, culprit.sql.upper())]
    if queued(culprit, measured.released) or culprit.error:
        timeout = settings().migration_lock_timeout
        advice.append(QUEUE.format(timeout=f"now {timeout * 1000:.0f} ms"))
    advice = advice or [
        "make the change in steps that take no long lock (docs: how-to/migrations.md)"
    ]
    request = worst.request
    reader = (
        f", a reader keeping them open {options.long_reader_seconds:g} s into the revision"
        if measured.released
        else ""
    )
    busy = machine[id(worst)] * 1000
    problems.append(
        f"{name} kept the app's {request.kind} on {request.table} waiting "
        f"{worst.seconds * 1000:.0f} ms"
        + (f" ({busy:.0f} ms of it the machine's: a control insert's wait)" if busy >= 10 else "")
        + f", over the budget of {allowed.ms:.0f} ms, while it ran "
        f"`{short_sql(culprit.sql)}` ({', '.join(measured.tables)} held {options.rows} rows"
        f"{reader}): {'; '.join(advice)}. If production's table is small enough for the "
        'wait, say so at the revision\'s top level: allow_stall = {"ms": <ms>, "why": "<why>"}'
    )
    return problems


def stall_problems(
    url: URL, columns: dict[str, dict[str, set[str]]]
) -> tuple[list[str], list[str]]:
    """Run every new revision under traffic on the empty scratch database at `url`, oldest
    first; `columns`: each revision's tables and their columns after it (the walk's). The
    problems, and notes on what could not be measured."""
    from .checks import alembic_config, describe, new_revisions, settings

    options = Options.from_settings(settings())
    revisions = new_revisions()
    if not revisions:
        return [], []
    parent = revisions[0].down_revision
    command.upgrade(alembic_config(url), parent if isinstance(parent, str) else "base")
    problems, notes = [], []
    for revision in revisions:
        try:
            allowed = budget(revision, options.budget_ms)
        except ValueError as error:
            problems.append(str(error))
            allowed = Budget(options.budget_ms)
        existing = run_with_connection(url, lambda c: set(sa.inspect(c).get_table_names()))
        tables = sorted(seeds.revision_tables(revision, existing - {"alembic_version"}))
        if not tables:  # it names no table that has rows: nothing to stall
            command.upgrade(alembic_config(url), revision.revision)
            continue
        measured = measure(url, revision, columns.get(revision.revision), tables, options)
        notes += [f"{describe(revision)}: {note}" for note in measured.notes]
        problems += judge(measured, allowed, options)
        if measured.run.returncode != 0:
            break
    return problems, notes
