"""Helpers the template's tests share: render the template, run commands in a project."""

import os
import subprocess
from pathlib import Path

import pytest
from copier import run_copy

REPO = Path(__file__).resolve().parents[1]

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


# Not passed on to a rendered project's commands. The outer `uv run` exports VIRTUAL_ENV;
# the project must use its own `.venv`. A machine that sets PYTHONDONTWRITEBYTECODE (CI
# sandboxes do) makes every process of a fresh project compile SQLAlchemy, Alembic and the
# rest from source again (2.1 s instead of 0.65 s for `db --help`), which users' machines
# do not: the project's commands run as they do for users.
NOT_FOR_PROJECTS = (
    "VIRTUAL_ENV",
    "TEST_DATABASE_URL",
    "PYTHONDONTWRITEBYTECODE",
    "MIGRATIONS_DATABASE_URL",
    "DATABASE_POOLER",
)


def project_env(**extra: str) -> dict[str, str]:
    """The environment for commands run inside a rendered project: this one without
    NOT_FOR_PROJECTS, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in NOT_FOR_PROJECTS}
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


def one_line_failure(done: subprocess.CompletedProcess[str], program: str) -> str:
    """The command failed with exactly one line on stderr, `<program>: ...`, and no
    traceback anywhere; that line."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0, done
    assert len(lines) == 1 and lines[0].startswith(f"{program}: "), done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    return lines[0]
