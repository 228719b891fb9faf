"""A real PgBouncer in transaction mode in front of the local PostgreSQL server, for the
tests of the app behind a pooler. Debian's `pgbouncer` package; `.ci/run` installs it."""

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
HOW_TO_INSTALL = "PgBouncer is not installed: apt-get install pgbouncer (Debian, Ubuntu)"
POOL_SIZE = 10  # server connections per database and user: fewer than the app's clients


def pgbouncer_installed() -> bool:
    return Path(PGBOUNCER).exists()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def pgbouncer(server: str) -> Iterator[str]:
    """PgBouncer on a free loopback port in front of the server of `server` (a URL whose
    user needs no password), `pool_mode = transaction`; yields the URL of that user through
    it, without a database (append one: any database on the server is served)."""
    parts = urlsplit(server)
    user = parts.username or "postgres"
    port = free_port()
    directory = Path(tempfile.mkdtemp(prefix="pgbouncer_"))
    directory.chmod(0o777)  # PgBouncer refuses to run as root: it drops to `postgres`
    config = directory / "pgbouncer.ini"
    (directory / "users.txt").write_text(f'"{user}" ""\n')
    config.write_text(
        "[databases]\n"
        f"* = host={parts.hostname} port={parts.port}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {directory / 'users.txt'}\n"
        f"pool_mode = transaction\ndefault_pool_size = {POOL_SIZE}\nmax_client_conn = 500\n"
        f"logfile = {directory / 'pgbouncer.log'}\n"
    )
    for path in directory.iterdir():
        path.chmod(0o666)
    args = [PGBOUNCER, str(config)]
    if os.geteuid() == 0:
        args[1:1] = ["-u", pwd.getpwnam("postgres").pw_name]
    # Not a pipe: PgBouncer also logs every login and close to its output, and once a pipe
    # nobody reads is full it stops serving (the app then waits on it with transactions
    # open, and its pool times out).
    output = directory / "pgbouncer.out"
    with output.open("w") as written:
        process = subprocess.Popen(args, stdout=written, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not answers(port):
            if process.poll() is not None or time.monotonic() > deadline:
                log = directory / "pgbouncer.log"
                shown = log.read_text() if log.exists() else output.read_text()
                raise RuntimeError(f"PgBouncer did not start:\n{shown}")
            time.sleep(0.1)
        yield f"postgresql://{user}@127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # still waiting for a client to let go
            process.kill()
            process.wait()
        shutil.rmtree(directory, ignore_errors=True)


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False
