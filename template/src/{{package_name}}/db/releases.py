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
level, `phase = "contract"`: then it runs once no release older than it is serving
(db/phases.py).
"""

import json
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from alembic import command
from alembic.script import Script
from sqlalchemy.engine import URL

from . import ROOT, phases, seeds
from .checks import alembic_config, new_revisions
from .connection import environment_for

# The smoke test, run with the code under test first on sys.path: every table model, parents
# first, inserted with generated values, read back by key, updated, then deleted, all in one
# transaction that is rolled back. The values (db/seeds.py) and the connection
# (db/connection.py) are this project's, loaded by path, since an older release may not
# have them. Prints the problems as JSON: the first failure of
# each operation, naming the model.
SMOKE = """
import importlib, importlib.util, json, sys
import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlmodel import SQLModel

source, package, db_path, url = sys.argv[1:5]
sys.path.insert(0, source)


def load(name):  # this project's module, whatever the release has
    spec = importlib.util.spec_from_file_location("smoke_" + name, f"{db_path}/{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


seeds, connection_code = load("seeds"), load("connection")
models = importlib.import_module(package + ".models")
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
        if column is table.autoincrement_column or column.computed is not None \\
                or column.identity is not None:
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
                        if not (column.primary_key or column.foreign_keys or column.computed):
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


class NoRelease(Exception):
    """Why there is no release to check against (not a failure)."""


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise NoRelease(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def release_commit(new: list[Script]) -> str:
    """The last commit whose history ended at the baseline: the parent of the first commit
    that added a revision after it, or HEAD while none is committed."""
    try:
        git("rev-parse", "--is-inside-work-tree")
    except (NoRelease, OSError):
        raise NoRelease("the project is not a git repository") from None
    if git("rev-parse", "--is-shallow-repository") == "true":
        raise NoRelease(
            "the clone is shallow, without the release's commit: fetch the history "
            "(`git fetch --unshallow`; in GitHub Actions, actions/checkout with fetch-depth: 0)"
        )
    paths = [str(Path(r.path).resolve().relative_to(ROOT.resolve())) for r in new]
    added = git("log", "--diff-filter=A", "--format=%H", "--", *paths).splitlines()
    if not added:
        try:
            return git("rev-parse", "--verify", "HEAD")
        except NoRelease:
            raise NoRelease("the repository has no commit yet") from None
    first = added[-1]
    if not git("rev-list", "--parents", "-n", "1", first).split()[1:]:
        raise NoRelease(f"the first commit ({first[:12]}) already has revisions after the baseline")
    return git("rev-parse", f"{first}^")


def release_source(commit: str, directory: Path) -> Path:
    """The release's `src/`, copied out of git into `directory`."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit, "src"], cwd=ROOT, capture_output=True
    )
    if archive.returncode != 0:
        raise NoRelease(f"git archive {commit} src failed: {archive.stderr.decode().strip()}")
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        if hasattr(tarfile, "data_filter"):  # Python 3.11.4 and later
            tar.extractall(directory, filter="data")
        else:  # our own repository's archive
            tar.extractall(directory)
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
    db_path = Path(seeds.__file__).parent
    with tempfile.TemporaryDirectory() as empty:  # no .env: the URL comes from here only
        address = url.render_as_string(hide_password=False)
        done = subprocess.run(
            [sys.executable, "-c", SMOKE, str(source), package, str(db_path), address],
            capture_output=True,
            text=True,
            cwd=empty,
            env=environment_for(url),
        )
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or ["no output"]
        return [Smoke("(the models)", "-", "import", lines[-1])]
    return [Smoke(*found) for found in json.loads(done.stdout.splitlines()[-1])]


def release_problems(url: URL) -> list[str]:
    """On the empty database at `url`, brought to the new schema (every new revision up to
    the first contract one, which runs only once the release has stopped serving): this
    code's smoke test, then the release in production's. NoRelease when there is no
    release to check against."""
    new = new_revisions()
    if not new:
        return []  # no schema change after the release: nothing to check
    # An empty baseline stands for the first revision, as for the other checks.
    baseline = new[0].down_revision
    commit = release_commit(new)
    expand = phases.expand_part(new)
    before_contract = expand[-1].revision if expand else baseline
    problems = []
    command.upgrade(alembic_config(url), before_contract)
    for found in smoke(ROOT / "src", url):
        problems.append(
            f"this code's {found.model} ({found.table}) cannot {found.operation} on the schema "
            f"before the contract revisions (at {before_contract}): {found.error}. The fix: "
            f'{hint(found.error)}; only removals wait for phase = "contract"'
        )
    with tempfile.TemporaryDirectory() as directory:
        source = release_source(commit, Path(directory))
        for found in smoke(source, url):
            problems.append(
                f"the release still running (commit {commit[:12]}, at {baseline}) fails on "
                f"the new schema (at {before_contract}): its {found.model} ({found.table}) "
                f"cannot {found.operation}: {found.error}. The fix: {hint(found.error)} "
                "(expand/contract: docs/how-to/migrations.md)"
            )
    return problems
