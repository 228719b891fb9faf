"""What the benchmark scripts share: the servers, the environment users run with, and a
timed command that stops the benchmark with one line when it fails."""

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import NoReturn

REPO = Path(__file__).resolve().parents[1]
SERVERS = {
    "postgresql": os.environ.get(
        "TEMPLATE_TEST_POSTGRESQL_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    ),
    "mysql": os.environ.get("TEMPLATE_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/"),
    "sqlite": None,
}
# As users run it: the project's own .venv, and Python caches compiled modules unless told
# not to (the sandbox tells it not to).
DROPPED = ("VIRTUAL_ENV", "TEST_DATABASE_URL", "PYTHONDONTWRITEBYTECODE")


def user_env(**extra: str) -> dict[str, str]:
    """This process's environment without DROPPED, plus `extra`."""
    return {**{k: v for k, v in os.environ.items() if k not in DROPPED}, **extra}


def fail(message: str) -> NoReturn:
    sys.exit(f"{Path(sys.argv[0]).stem}: {message}")


def run(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    """Seconds the command took, and its stdout."""
    start = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
        fail(f"`{' '.join(args)}` exited {done.returncode} in {cwd}:\n{tail}")
    return elapsed, done.stdout


def admin(database: str, statements: list[str]) -> None:
    """Run statements (CREATE DATABASE, DROP DATABASE) with the server's own client, as its
    superuser."""
    for statement in statements:
        if database == "postgresql":
            client = ["psql", "-q", "-h", "127.0.0.1", "-U", "postgres", "-c"]
        else:
            client = ["mariadb", "-h", "127.0.0.1", "-u", "root", "-e"]
        subprocess.run([*client, statement], check=True)
