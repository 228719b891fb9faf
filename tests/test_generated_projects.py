"""Generate real projects (the post-copy hook included) and run their own test suites
against real databases: SQLite files, PostgreSQL and MariaDB/MySQL servers."""

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from helpers import REPO, answer_args, project_env, render, run
from projects import NAMES, combinations, generate, package_of

SUMMARY = re.compile(r"(\d+) passed")


def run_suite(project: Path, test_server: str | None, *pytest_args: str) -> str:
    env = project_env(CI="true", **({"TEST_DATABASE_URL": test_server} if test_server else {}))
    done = run(["uv", "run", "pytest", "-p", "no:cacheprovider", *pytest_args], project, env)
    assert "skipped" not in done.stdout.splitlines()[-1], done.stdout
    return done.stdout


def run_ci_workflow(project: Path, test_server: str | None) -> str:
    """The steps of the project's own .github/workflows/ci.yml, run here as GitHub would run
    them (the service container is this machine's server: TEST_DATABASE_URL)."""
    workflow = yaml.safe_load((project / ".github" / "workflows" / "ci.yml").read_text())
    (job,) = workflow["jobs"].values()
    env = project_env(CI="true", **({"TEST_DATABASE_URL": test_server} if test_server else {}))
    steps = [step["run"] for step in job["steps"] if "run" in step]
    assert steps[:3] == ["uv sync --locked", "uv run ruff check .", "uv run ruff format --check ."]
    output = ""
    for step in steps:
        output = run(["bash", "-e", "-c", step], project, env).stdout
    last = output.strip().splitlines()[-1]
    assert "passed" in last and not re.search("skipped|failed|error", last), output
    return output


@pytest.mark.slow
@pytest.mark.parametrize(("database", "async_mode"), combinations())
def test_generated_project_passes_its_own_ci(
    shared: Callable[[str, bool], Path],
    server_url: Callable[[str], str | None],
    database: str,
    async_mode: bool,
) -> None:
    test_server = server_url(database)
    project = shared(database, async_mode)
    name, description = NAMES[database, async_mode]
    assert f"# {name}\n\n{description}\n" in (project / "README.md").read_text()

    revisions = sorted((project / "migrations" / "versions").glob("*.py"))
    assert len(revisions) == 1, "one initial revision"
    initial = revisions[0].read_text()
    for expected in ('"users"', '"posts"', "uq_users_email", "ix_posts_author_id_created_at"):
        assert expected in initial
    assert 'ondelete="CASCADE"' in initial

    output = run_ci_workflow(project, test_server)
    passed = int(SUMMARY.search(output.splitlines()[-1]).group(1))
    assert passed >= 17, output
    for test in ("upgrades_downgrades_cleanly", "test_create_and_read_a_user", "test_deleting"):
        assert test in run_suite(project, test_server, "-q", "--co")

    commands = run(["uv", "run", "db", "--help"], project).stdout
    for command in ("check", "deploy", "backup", "restore", "bootstrap"):
        assert re.search(rf"^│ {command} ", commands, re.M), commands

    # The hook left a clean git repository whose first commit holds everything but secrets.
    status = run(["git", "status", "--porcelain"], project).stdout
    assert status == "", status
    tracked = run(["git", "ls-files"], project).stdout.splitlines()
    assert ".env" not in tracked and "uv.lock" in tracked


@pytest.mark.slow
@pytest.mark.parametrize("database", ["postgresql", "mysql"])
def test_revision_written_without_a_server_is_right_for_the_server(
    tmp_path: Path, server_url: Callable[[str], str | None], database: str
) -> None:
    """No TEST_DATABASE_URL at copy time: the hook proves on SQLite and compiles the SQL for
    the dialect; the revision must then pass the whole suite on the real server."""
    test_server = server_url(database)
    project = generate(tmp_path, database, False, None)

    run_suite(project, test_server)


@pytest.mark.slow
@pytest.mark.parametrize(("database", "async_mode"), combinations(("postgresql", False)))
def test_secret_stays_in_the_untracked_env_file(
    shared: Callable[[str, bool], Path], database: str, async_mode: bool
) -> None:
    project = shared(database, async_mode)

    env_file = project / ".env"
    user = package_of(project)
    password = re.search(rf"postgresql://{user}:([^@]+)@", env_file.read_text()).group(1)
    assert len(password) >= 24 and password != "change-me"
    assert f"DB_PASSWORD={password}\n" in env_file.read_text(), "compose.yaml's db gets the same"
    assert env_file.stat().st_mode & 0o777 == 0o600
    for tracked in run(["git", "ls-files"], project).stdout.splitlines():
        assert password not in (project / tracked).read_text(errors="ignore"), tracked
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    assert password not in json.dumps(answers)


@pytest.mark.slow
@pytest.mark.parametrize(("database", "async_mode"), combinations(("sqlite", False)))
def test_default_project_serves_health_and_crud(
    shared: Callable[[str, bool], Path], database: str, async_mode: bool
) -> None:
    """The README's promise: no server, and the app serves at once on the SQLite file that
    the hook migrated."""
    project = shared(database, async_mode)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        ["uv", "run", "fastapi", "run", "--port", str(port)],
        cwd=project,
        env=project_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        health = wait_for(f"{base}/health")
        assert health == {"status": "ok", "database": "ok"}
        user = request("POST", f"{base}/users", {"email": "ada@example.com"})
        post = request("POST", f"{base}/posts", {"author_id": user["id"], "title": "Hi"})
        assert request("GET", f"{base}/posts/{post['id']}")["title"] == "Hi"
        assert request("GET", f"{base}/users")[0]["email"] == "ada@example.com"
    finally:
        server.terminate()
        server.wait(timeout=30)


def request(method: str, url: str, body: dict | None = None) -> dict | list:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    with urllib.request.urlopen(urllib.request.Request(url, data, headers, method=method)) as r:
        return json.load(r)


def wait_for(url: str, seconds: float = 60) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        try:
            return request("GET", url)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


@pytest.mark.slow
def test_skip_tasks_then_the_readme_command_does_what_the_hook_does(tmp_path: Path) -> None:
    project = render(tmp_path / "manual")
    assert not list((project / "migrations" / "versions").glob("*.py"))
    readme = (project / "README.md").read_text()
    assert "uv run db bootstrap" in readme

    first = run(["uv", "run", "db", "bootstrap"], project)
    again = run(["uv", "run", "db", "bootstrap"], project)

    assert "wrote the initial revision" in first.stdout
    assert "created a git repository" in first.stdout
    assert ".env exists: left as it is" in again.stdout
    assert "wrote the initial revision" not in again.stdout
    assert len(list((project / "migrations" / "versions").glob("*.py"))) == 1
    run_suite(project, None)


@pytest.mark.slow
@pytest.mark.parametrize(("database", "async_mode"), combinations(("sqlite", False)))
def test_new_revisions_autogenerated_or_written_by_hand(
    shared: Callable[[str, bool], Path], database: str, async_mode: bool
) -> None:
    """Autogenerate writes no empty revision. A plain `alembic revision` (data migrations,
    steps written by hand) keeps `op` and `sa`, ruff-clean, so its first `op.execute` runs."""
    project = shared(database, async_mode)
    versions = project / "migrations" / "versions"

    done = run(["uv", "run", "alembic", "revision", "--autogenerate", "-m", "nothing"], project)

    assert "No model changes: no revision written." in done.stderr
    assert len(list(versions.glob("*.py"))) == 1
    offline = run(["uv", "run", "alembic", "upgrade", "head", "--sql"], project).stdout
    assert "CREATE TABLE users" in offline

    before = set(versions.glob("*.py"))
    run(["uv", "run", "alembic", "revision", "-m", "fill in names"], project)
    (plain,) = set(versions.glob("*.py")) - before
    text = plain.read_text()
    assert "\nfrom alembic import op\n" in text and "\nimport sqlalchemy as sa\n" in text, text
    run(["uv", "run", "ruff", "check", "."], project)  # unused until the user writes the step
    step = "op.execute(sa.text(\"UPDATE users SET full_name = 'Ada' WHERE full_name IS NULL\"))"
    empty_upgrade = "def upgrade() -> None:\n    pass\n"
    assert empty_upgrade in text, text
    plain.write_text(text.replace(empty_upgrade, f"def upgrade() -> None:\n    {step}\n"))
    run(["uv", "run", "ruff", "check", "."], project)
    run(["uv", "run", "ruff", "format", "--check", "."], project)
    run(["uv", "run", "alembic", "upgrade", "head"], project)
    run(["uv", "run", "alembic", "downgrade", "-1"], project)


def test_hook_without_uv_says_what_to_do(tmp_path: Path) -> None:
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "git").symlink_to(subprocess.check_output(["which", "git"], text=True).strip())
    env = {**os.environ, "PATH": str(tools)}

    done = subprocess.run(
        [sys.executable, str(REPO / "hooks" / "post_copy.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )

    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "uv is not installed" in lines[0], done.stderr
    assert "uv run db bootstrap" in lines[0]


# The message after `copier copy`, followed as written: each server project with a package
# name of its own, so that the role and database it creates are this test's to drop.
FOLLOWED = {
    "sqlite": {"example_models": False},
    "postgresql": {"project_name": 'Café "Ops"', "description": "Le café's API"},
    "mysql": {"project_name": "Shop", "async_mode": True},
}
DROP = {
    "postgresql": 'psql -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS {0} WITH (FORCE)" '
    '-c "DROP ROLE IF EXISTS {0}"',
    "mysql": 'mariadb -h 127.0.0.1 -u root -e "DROP DATABASE IF EXISTS {0}; DROP USER IF EXISTS '
    "'{0}'@'%'\"",
}


@pytest.mark.slow
@pytest.mark.parametrize("database", FOLLOWED)
def test_the_message_after_copy_gets_the_project_running(
    tmp_path: Path, server_url: Callable[[str], str | None], database: str
) -> None:
    """Every command the message prints, run as printed from where `copier copy` ran: `cd`,
    for a server the database and its user, `alembic upgrade head`, `pytest`."""
    server_url(database)  # fails under CI when the server does not answer
    package = f"msg_{os.urandom(4).hex()}"
    answers = {"project_name": "Msg", "database": database, "package_name": package}
    args = ["copier", "copy", "--trust", "--defaults", "--vcs-ref=HEAD"]
    args += answer_args(**{**answers, **FOLLOWED[database]})
    destination = "my services/new one"  # a relative path with spaces, as users type them
    (tmp_path / "my services").mkdir()
    done = run([*args, str(REPO), destination], tmp_path)
    output = done.stdout + done.stderr  # Copier prints the message on stderr
    message = output[output.index(" is ready in ") :]
    commands = [line.strip() for line in message.splitlines() if line.startswith("  ")]

    assert commands[0] == "cd 'my services/new one'", message
    assert "uv run fastapi dev            # serves http://127.0.0.1:8000/docs" in commands
    if database != "sqlite":
        assert any(package in command and "CREATE" in command for command in commands)
    else:
        assert "No models yet: the history starts with an empty root revision." in message
    script = "\n".join(c for c in commands if not c.startswith("uv run fastapi dev"))
    try:
        followed = run(["bash", "-e", "-c", script], tmp_path, project_env(CI="true"))
    finally:
        if database != "sqlite":
            run(["bash", "-c", DROP[database].format(package)], tmp_path)
    last = followed.stdout.strip().splitlines()[-1]
    assert "passed" in last and not re.search("skipped|failed|error", last), followed.stdout
