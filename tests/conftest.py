"""Shared helpers for the template's tests: render projects, run their commands, find servers."""

import os
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from copier import run_copy

REPO = Path(__file__).resolve().parents[1]

# Servers on which rendered projects create their scratch databases (TEST_DATABASE_URL).
SERVERS = {
    "postgresql": os.environ.get(
        "TEMPLATE_TEST_POSTGRESQL_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    ),
    "mysql": os.environ.get("TEMPLATE_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/"),
}
HOW_TO_RUN = (
    "start PostgreSQL on 127.0.0.1:5432 and MariaDB/MySQL on 127.0.0.1:3306, or point "
    "TEMPLATE_TEST_POSTGRESQL_URL / TEMPLATE_TEST_MYSQL_URL at servers whose user may create "
    "databases"
)


# Every answer the tests depend on, given explicitly rather than taken from copier.yml's
# defaults: an organisation's fork changes the defaults (docs/how-to/fork.md), and the
# template's tests must still pass in it.
ANSWERS: dict[str, object] = {
    "project_name": "Demo Service",
    "description": "A FastAPI + SQLModel service",
    "author_name": "Your Name",
    "author_email": "you@example.com",
    "python_version": "3.11",
    "database": "sqlite",
    "async_mode": False,
    "example_models": True,
    "github_actions": True,
}


def answer_args(**overrides: object) -> list[str]:
    """`-d key=value` for every pinned answer, with `overrides`, as Copier's CLI takes them."""
    args = []
    for key, value in {**ANSWERS, **overrides}.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        args += ["-d", f"{key}={text}"]
    return args


def project_env(**extra: str) -> dict[str, str]:
    """The environment for commands run inside a rendered project.

    The outer `uv run` exports VIRTUAL_ENV; the rendered project must use its own.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "TEST_DATABASE_URL")}
    env.update(extra)
    return env


def run(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        args, cwd=cwd, env=env or project_env(), capture_output=True, text=True, timeout=900
    )
    if check and done.returncode != 0:
        pytest.fail(
            f"`{' '.join(args)}` exited {done.returncode} in {cwd}\n"
            f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
        )
    return done


def render(dst: Path, skip_tasks: bool = True, **answers: object) -> Path:
    """Render the template's working tree (HEAD plus uncommitted changes) into `dst`."""
    data = {**ANSWERS, **answers}
    run_copy(
        str(REPO),
        dst,
        data=data,
        defaults=True,
        unsafe=True,
        skip_tasks=skip_tasks,
        vcs_ref="HEAD",
        quiet=True,
    )
    return dst


def server_reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=3):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def server_url() -> Callable[[str], str | None]:
    """TEST_DATABASE_URL for a database: None for SQLite; skip (or, under CI, fail) if the
    server does not answer."""

    def for_database(database: str) -> str | None:
        if database == "sqlite":
            return None
        url = SERVERS[database]
        if not server_reachable(url):
            message = f"{database} server at {urlsplit(url).netloc} does not answer: {HOW_TO_RUN}"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
        return url

    return for_database


@pytest.fixture(scope="session")
def shared(
    tmp_path_factory: pytest.TempPathFactory, server_url: Callable[[str], str | None]
) -> Callable[[str, bool], Path]:
    """The combination's generated project (tests/projects.py), as the hook left it."""
    from projects import shared_project

    root = tmp_path_factory.getbasetemp() / "shared"
    return lambda database, async_mode: shared_project(
        root, database, async_mode, server_url(database)
    )
