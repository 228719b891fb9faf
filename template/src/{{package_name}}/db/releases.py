"""The release still running: during a rolling deploy the previous release's code serves on
the new schema, and before the contract revisions run the new code serves on the old one.
The migration suite (tests/test_migrations.py) checks both with a smoke test of every model:
insert a row of generated values, read it back, update it, delete it, through the models
and the connection code of the release under test, in a process of its own.

The release in production is the project's code at the last commit whose history ended at
`[tool.migration-safety] baseline`: the parent of the commit that added the first revision
after it (or HEAD, while that revision is not committed). `git archive` copies its `src/`
into a temporary directory: the repository and its worktrees are left as they are.

A revision runs before the new code is rolled out (expand) unless it says, at its top
level, `phase = "contract"`: then it runs once no release older than it is serving.
"""

import json
import os
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from io import BytesIO
from itertools import takewhile
from pathlib import Path

from alembic import command
from alembic.script import Script
from sqlalchemy.engine import URL

from . import ROOT, seeds
from .checks import alembic_config, new_revisions, settings

# The smoke test, run with the code under test first on sys.path: every table model, parents
# first, inserted with generated values (db/seeds.py's, loaded from this project by path,
# since an older release may not have it), read back by key, updated, then deleted, all in
# one transaction that is rolled back. Prints the problems as JSON: the first failure of
# each operation, naming the model.
SMOKE = """
import importlib, importlib.util, json, sys
import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlmodel import SQLModel

source, package, seeds_path, url = sys.argv[1:5]
sys.path.insert(0, source)
spec = importlib.util.spec_from_file_location("release_seeds", seeds_path)
seeds = importlib.util.module_from_spec(spec)
spec.loader.exec_module(seeds)
models = importlib.import_module(package + ".models")
connection_code = importlib.import_module(package + ".db.connection")
sa.orm.configure_mappers()


def table_models():
    found, pending = {}, list(SQLModel.__subclasses__())
    while pending:
        cls = pending.pop()
        pending += cls.__subclasses__()
        table = getattr(cls, "__table__", None)
        if isinstance(table, sa.Table) and table.metadata is models.metadata:
            found[table.name] = cls
    order = [t.name for t in models.metadata.sorted_tables]
    return [found[name] for name in order if name in found]


def first_line(error):
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def values(table, serial, keys):
    row = {}
    for column in table.columns:
        if column.primary_key and column.autoincrement is not False and not column.foreign_keys \\
                and isinstance(column.type, sa.Integer):
            continue
        foreign = next(iter(column.foreign_keys), None)
        if foreign is not None:
            parent = keys.get(foreign.column.table.name, {})
            row[column.key] = parent.get(foreign.column.key)
            continue
        described = seeds.Column(column.name, column.type, column.nullable, False,
                                 bool(column.unique or column.primary_key))
        try:
            row[column.key] = seeds.value(described, "high", serial)
        except seeds.Unknown:
            pass
    return row


def smoke(connection):
    problems, done, keys = [], [], {}
    session = Session(bind=connection)
    for serial, cls in enumerate(table_models(), start=1):
        table = cls.__table__
        try:
            row = values(table, serial, keys)
            item = cls()
            for key, value in row.items():
                setattr(item, key, value)
            session.add(item)
            session.flush()
        except Exception as error:
            session.rollback()
            problems.append([cls.__name__, table.name, "insert", first_line(error)])
            break
        keys[table.name] = {c.key: getattr(item, c.key) for c in table.columns}
        done.append((cls, sa.inspect(item).identity))
        session.expunge_all()
    for operation in ("select", "update", "delete"):
        if problems:
            break
        for cls, identity in (reversed(done) if operation == "delete" else done):
            try:
                item = session.get(cls, identity)
                if operation == "update":
                    for column in cls.__table__.columns:
                        if not column.primary_key and not column.foreign_keys:
                            setattr(item, column.key, getattr(item, column.key))
                            sa.orm.attributes.flag_modified(item, column.key)
                elif operation == "delete":
                    session.delete(item)
                session.flush()
                session.expunge_all()
            except Exception as error:
                session.rollback()
                problems.append([cls.__name__, cls.__table__.name, operation, first_line(error)])
                break
    session.close()
    connection.rollback()
    return problems


print(json.dumps(connection_code.run_with_connection(sa.engine.make_url(url), smoke)))
"""

HINTS = (  # what the database says -> what to do about it
    (
        ("does not exist", "unknown column", "no such column", "has no column", "no such table"),
        "the schema lacks a column or table this code uses (renamed or dropped): keep it "
        "until no release that uses it is serving; rename or drop in two releases, the drop "
        'in a revision with phase = "contract"',
    ),
    (
        ("null value in column", "doesn't have a default", "not null constraint failed"),
        "a NOT NULL column this code does not write: give it a server default (or make it "
        'nullable) until every release writes it, and drop the default with phase = "contract"',
    ),
    (
        ("too long", "data truncated", "out of range", "incorrect"),
        "a type narrower than what this code writes: narrow it in a contract revision, once "
        "every serving release writes values that fit",
    ),
)


def hint(error: str) -> str:
    lowered = error.lower()
    for needles, advice in HINTS:
        if any(needle in lowered for needle in needles):
            return advice
    return "change the schema in steps that every serving release works with"


def is_contract(revision: Script) -> bool:
    return getattr(revision.module, "phase", "expand") == "contract"


class NoRelease(Exception):
    """Why there is no release to check against (not a failure)."""


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise NoRelease(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def release_commit(first_new: Script) -> str:
    """The last commit whose history ended at the baseline: the parent of the commit that
    added the first revision after it, or HEAD while that revision is not committed."""
    try:
        git("rev-parse", "--is-inside-work-tree")
    except (NoRelease, OSError):
        raise NoRelease("the project is not a git repository") from None
    path = Path(first_new.path).resolve().relative_to(ROOT.resolve())
    added = git("log", "--diff-filter=A", "--format=%H", "--", str(path)).splitlines()
    return git("rev-parse", f"{added[-1]}^") if added else git("rev-parse", "HEAD")


def release_source(commit: str, directory: Path) -> Path:
    """The release's `src/`, copied out of git into `directory`."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit, "src"], cwd=ROOT, capture_output=True
    )
    if archive.returncode != 0:
        raise NoRelease(f"git archive {commit} src failed: {archive.stderr.decode().strip()}")
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(directory, filter="data")
    return directory / "src"


@dataclass
class Smoke:
    """What failed for one model: the operation and the database's words."""

    model: str
    table: str
    operation: str
    error: str


def smoke(source: Path, url: URL) -> list[Smoke]:
    """The smoke test of the code in `source` (a `src/` directory) on `url`."""
    package = __package__.rsplit(".", 1)[0]
    seeds_path = Path(seeds.__file__)
    with tempfile.TemporaryDirectory() as empty:  # no .env: the URL comes from here only
        address = url.render_as_string(hide_password=False)
        done = subprocess.run(
            [sys.executable, "-c", SMOKE, str(source), package, str(seeds_path), address],
            capture_output=True,
            text=True,
            cwd=empty,
            env={**os.environ, "DATABASE_URL": address},
        )
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or ["no output"]
        return [Smoke("(the models)", "-", "import", lines[-1])]
    return [Smoke(*found) for found in json.loads(done.stdout.splitlines()[-1])]


def release_problems(url: URL) -> list[str]:
    """Both directions, on the empty database at `url`: this code on the schema before the
    contract revisions, then the release in production on the schema at head. NoRelease
    when there is nothing to check against."""
    new = new_revisions()
    if not new:
        return []  # no schema change after the release: nothing to check
    baseline = settings().get("baseline", "")
    if not baseline:
        raise NoRelease(
            "no baseline in [tool.migration-safety] (pyproject.toml): set it to the revision "
            "in production"
        )
    commit = release_commit(new[0])
    expand = list(takewhile(lambda revision: not is_contract(revision), new))
    before_contract = expand[-1].revision if expand else baseline
    problems = []
    command.upgrade(alembic_config(url), before_contract)
    for found in smoke(ROOT / "src", url):
        problems.append(
            f"this code's {found.model} ({found.table}) fails to {found.operation} on the "
            f"schema before the contract revisions (at {before_contract}): {found.error}. "
            'Only what the release still running no longer needs waits for phase = "contract": '
            f"{hint(found.error)}"
        )
    command.upgrade(alembic_config(url), "heads")
    with tempfile.TemporaryDirectory() as directory:
        source = release_source(commit, Path(directory))
        for found in smoke(source, url):
            problems.append(
                f"the release still running (commit {commit[:12]}, at {baseline}) fails on "
                f"the schema at head: its {found.model} ({found.table}) cannot "
                f"{found.operation}: {found.error}. The fix: {hint(found.error)} "
                "(expand/contract: docs/how-to/migrations.md)"
            )
    return problems
