"""The app through a real PgBouncer in transaction mode, while a migration runs straight to
the server (MIGRATIONS_DATABASE_URL); and a migration URL that points at the pooler, refused.

PgBouncer hands each transaction whichever of its server connections is free: a statement
that a driver prepared on one is not on the next (`prepared statement ... does not exist`),
and a session's advisory lock stays on a server connection that other clients then use.
"""

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from databases import SERVERS, scratch_database, sql
from helpers import project_env, run
from poolers import HOW_TO_INSTALL, free_port, pgbouncer, pgbouncer_installed
from projects import combinations, initial_revision, package_of, reset

pytestmark = pytest.mark.slow
SYNC_AND_ASYNC = combinations(("postgresql", False), ("postgresql", True))

# 1,000 requests of the example API at 20 at once, and on until the deploy is over: each
# unit makes a user and a post, reads, updates and lists posts. Prints what it saw, as JSON.
LOAD = r"""
import json, sys, time, uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import httpx

base, wanted, workers, stop = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
errors, made = [], []

def unit(n):
    with httpx.Client(base_url=base, timeout=60) as client:
        def call(method, path, **options):
            response = client.request(method, path, **options)
            made.append(1)
            if response.status_code >= 300:
                errors.append(f"{method} {path}: {response.status_code} {response.text[:300]}")
                return None
            return response.json() if response.content else {}
        email = f"u{n}-{uuid.uuid4().hex[:8]}@example.com"
        user = call("POST", "/users", json={"email": email})
        post = user and call("POST", "/posts", json={"title": f"t{n}", "author_id": user["id"]})
        if post:
            call("GET", f"/posts/{post['id']}")
            call("PATCH", f"/posts/{post['id']}", json={"title": f"t{n} again"})
        call("GET", "/posts", params={"limit": 5})

def worker(first):
    n = first
    while len(made) < wanted or not stop.exists():
        unit(n)
        n += workers

start = time.monotonic()
with ThreadPoolExecutor(workers) as pool:
    list(pool.map(worker, range(workers)))
print(json.dumps({"requests": len(made), "errors": errors, "seconds": time.monotonic() - start}))
"""

# The same SELECT from 20 threads (sync) or tasks (async) through the project's own
# create_db_engine, with DATABASE_POOLER or without: each client checks out a connection,
# runs it eight times, commits, and eight times again in the next transaction, which
# PgBouncer may give another server connection. (A checkout of one transaction hides the
# problem from psycopg: SQLAlchemy's pool rolls back at check-in, and psycopg forgets its
# prepared statements on a rollback. A session that commits and goes on does not.)
ENGINE_LOAD = r"""
import asyncio, json, sys
from concurrent.futures import ThreadPoolExecutor
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from {package}.core.config import Settings
from {package}.db.engine import create_db_engine

settings = Settings(database_url=SecretStr(sys.argv[1]), database_pooler=sys.argv[2])
engine, errors = create_db_engine(settings), []
QUERY = text("SELECT count(*) FROM alembic_version WHERE version_num <> :n")

def sync_client(n):
    for _ in range(5):
        try:
            with engine.connect() as connection:
                for transaction in range(2):
                    for i in range(8):
                        connection.execute(QUERY, {{"n": str(i)}}).scalar()
                    connection.commit()
        except Exception as error:
            errors.append(str(error).splitlines()[0])

async def async_client(n):
    for _ in range(5):
        try:
            async with asyncio.timeout(20), engine.connect() as connection:
                for transaction in range(2):
                    for i in range(8):
                        (await connection.execute(QUERY, {{"n": str(i)}})).scalar()
                    await connection.commit()
        except Exception as error:
            errors.append((str(error).splitlines() or [repr(error)])[0])

async def run_async():
    await asyncio.gather(*(async_client(n) for n in range(20)))
    await engine.dispose()

if isinstance(engine, AsyncEngine):
    asyncio.run(run_async())
else:
    with ThreadPoolExecutor(20) as pool:
        list(pool.map(sync_client, range(20)))
print(json.dumps(errors))
"""

CONCURRENT_INDEX = """
from {package}.db.online import create_index_concurrently
"""


@pytest.fixture
def bouncer() -> Iterator[str]:
    """PgBouncer in transaction mode in front of the test server; skipped (under CI:
    failed) when it is not installed."""
    if not pgbouncer_installed():
        if os.environ.get("CI"):
            pytest.fail(HOW_TO_INSTALL)
        pytest.skip(HOW_TO_INSTALL)
    with pgbouncer(SERVERS["postgresql"]) as url:
        yield url


@pytest.fixture
def postgresql_project(
    shared: Callable[[str, bool], Path], server_url: Callable[[str], str | None]
) -> Iterator[Callable[[bool], Path]]:
    """The shared PostgreSQL project of a mode; revisions a test adds are removed after."""
    used = []

    def make(async_mode: bool) -> Path:
        server_url("postgresql")
        project = shared("postgresql", async_mode)
        used.append(project)
        return project

    yield make
    for project in used:
        reset(project)


@contextmanager
def serving(project: Path, env: dict[str, str], log: Path) -> Iterator[str]:
    """The project's app under uvicorn on a free port, its errors written to `log` (a pipe
    nobody reads fills up, and then every request that logs hangs); its base URL once
    /health answers."""
    port = free_port()
    with log.open("w") as errors:
        server = subprocess.Popen(
            [".venv/bin/uvicorn", f"{package_of(project)}.main:app", "--port", str(port)],
            cwd=project,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:  # not listening yet, or 503 while the database is not there
                pass
            time.sleep(0.2)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:  # a graceful shutdown that hangs is not the test's
            server.kill()
            server.wait()


@pytest.mark.parametrize(("database", "async_mode"), SYNC_AND_ASYNC)
def test_the_app_through_pgbouncer_while_a_migration_runs_straight_to_the_server(
    postgresql_project: Callable[[bool], Path],
    bouncer: str,
    tmp_path: Path,
    database: str,
    async_mode: bool,
) -> None:
    """1,000 requests and more at 20 at once through PgBouncer (transaction mode, ten
    server connections), DATABASE_POOLER=transaction, while `db deploy` builds an index
    concurrently through MIGRATIONS_DATABASE_URL under the migration lock: no request fails."""
    project = postgresql_project(async_mode)
    package = package_of(project)
    (project / "migrations" / "versions" / "2099_01_01_0000-pool01_test.py").write_text(
        '"""pool01 message"""\n\nfrom alembic import op\n'
        + CONCURRENT_INDEX.format(package=package)
        + f'\nrevision = "pool01"\ndown_revision = "{initial_revision(project)}"\n'
        "branch_labels = None\ndepends_on = None\n\n\n"
        "def upgrade() -> None:\n"
        '    create_index_concurrently("ix_posts_title_pool", "posts", ["title"])\n\n\n'
        "def downgrade() -> None:\n"
        '    op.drop_index("ix_posts_title_pool", table_name="posts")\n'
    )
    with ExitStack() as stack:
        direct = stack.enter_context(scratch_database("postgresql", tmp_path))
        name = direct.rsplit("/", 1)[1]
        base_env = project_env(DATABASE_URL=direct)
        run(["uv", "run", "alembic", "upgrade", initial_revision(project)], project, base_env)
        env = project_env(
            DATABASE_URL=f"{bouncer}/{name}",
            DATABASE_POOLER="transaction",
            MIGRATIONS_DATABASE_URL=direct,
        )
        app_log = tmp_path / "uvicorn.log"
        base = stack.enter_context(serving(project, env, app_log))
        stop = tmp_path / "deployed"
        load = subprocess.Popen(
            [".venv/bin/python", "-c", LOAD, base, "1000", "20", str(stop)],
            cwd=project,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(0.5)  # the requests are under way
        deployed = run(["uv", "run", "db", "deploy", "--no-backup"], project, env, check=False)
        stop.touch()
        out, err = load.communicate(timeout=600)
        index = sql(direct, "SELECT indexname FROM pg_indexes WHERE tablename = 'posts'")[0]
    assert deployed.returncode == 0, deployed.stderr
    assert load.returncode == 0, f"{err[-3000:]}\nthe app's log:\n{app_log.read_text()[-3000:]}"
    seen = json.loads(out.splitlines()[-1])
    print(f"\n{seen['requests']} requests in {seen['seconds']:.1f}s, {len(seen['errors'])} failed")
    assert seen["errors"] == [] and seen["requests"] >= 1000, (
        f"{seen['errors'][:5]}\nthe app's log:\n{app_log.read_text()[-3000:]}"
    )
    assert ["ix_posts_title_pool"] in index


@pytest.mark.parametrize(("database", "async_mode"), SYNC_AND_ASYNC)
def test_the_engine_needs_database_pooler_behind_pgbouncer(
    postgresql_project: Callable[[bool], Path],
    bouncer: str,
    tmp_path: Path,
    database: str,
    async_mode: bool,
) -> None:
    """The same query from 20 clients through PgBouncer, two transactions per checkout:
    without DATABASE_POOLER a driver's prepared statement meets a server connection where
    another client prepared one of the same name, or none; with it, none fails."""
    project = postgresql_project(async_mode)
    script = ENGINE_LOAD.format(package=package_of(project))
    with scratch_database("postgresql", tmp_path) as direct:
        run(["uv", "run", "alembic", "upgrade", "head"], project, project_env(DATABASE_URL=direct))
        pooled = f"{bouncer}/{direct.rsplit('/', 1)[1]}"
        failures = {}
        for setting in ("", "transaction"):
            done = subprocess.run(
                [".venv/bin/python", "-c", script, pooled, setting],
                cwd=project,
                env=project_env(),
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert done.returncode == 0, done.stderr
            failures[setting] = json.loads(done.stdout.splitlines()[-1])
    assert failures["transaction"] == [], failures["transaction"][:3]
    assert failures[""] and all("prepared statement" in e for e in failures[""]), failures[""][:3]


@pytest.mark.parametrize(("database", "async_mode"), SYNC_AND_ASYNC)
def test_a_migration_url_through_the_pooler_is_refused(
    postgresql_project: Callable[[bool], Path],
    bouncer: str,
    tmp_path: Path,
    database: str,
    async_mode: bool,
) -> None:
    """MIGRATIONS_DATABASE_URL at PgBouncer: the migration lock would hold on nobody's
    session, so `alembic upgrade` and `db deploy` refuse in one line and change nothing; the
    same URL straight to the server migrates."""
    project = postgresql_project(async_mode)
    with scratch_database("postgresql", tmp_path) as direct:
        pooled = f"{bouncer}/{direct.rsplit('/', 1)[1]}"
        env = project_env(DATABASE_URL=direct, MIGRATIONS_DATABASE_URL=pooled)
        upgraded = run(["uv", "run", "alembic", "upgrade", "head"], project, env, check=False)
        deployed = run(["uv", "run", "db", "deploy", "--no-backup"], project, env, check=False)
        tables = sql(direct, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")[0]
        env["MIGRATIONS_DATABASE_URL"] = direct
        straight = run(["uv", "run", "alembic", "upgrade", "head"], project, env, check=False)
    assert tables == [], tables
    for done in (upgraded, deployed):
        assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
        assert "goes through a connection pooler" in done.stderr, done.stderr
        assert "point MIGRATIONS_DATABASE_URL straight at the database server" in done.stderr
    line = deployed.stderr.strip().splitlines()[-1]
    assert line.startswith("db deploy: ") and "connection pooler" in line, deployed.stderr
    assert straight.returncode == 0, straight.stderr
