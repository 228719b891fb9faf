"""Backups of the configured database, and their restore (`db backup`, `db restore`).

A backup is written under a temporary dot-name, readable by its owner only, and renamed once
complete: a file with a final name is always a whole backup, named
`<database>@<host>-<port>-<UTC time>-<revision>.<ext>` (SQLite: `<file name>-...`) after
the server and the revision it holds. How a database is
dumped, checked and restored is the business of this package's module for it, the
project's own (`postgresql`, `mysql` or `sqlite`), picked by the URL's dialect. Every
failure is a `BackupError` whose message is one line without the password.
"""

import fcntl
import importlib
import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

from alembic.runtime.migration import MigrationContext
from alembic.util import CommandError
from sqlalchemy import Connection
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError

from ..connection import run_with_connection
from ..lock import migration_lock

TIMESTAMP = r"\d{8}T\d{6}\.\d{3}Z"
PROGRESS_SECONDS = 5.0
PARTIAL = "partial"  # in the name of a backup being written: .<database>-<time>-partial.<ext>
# Where progress goes: one line at a time (the CLI prints it on stderr).
Progress = Callable[[str], None]
# A table's rows, as a backup check compares them: how many, and a checksum of their values
# that does not depend on their order.
Checksum = tuple[int, str]


class BackupError(Exception):
    """A backup or restore failed; the message is one line and holds no password."""


def backend(url: URL) -> ModuleType:
    """The module that backs up and restores `url`'s kind of database."""
    return importlib.import_module(f"{__package__}.{url.get_backend_name()}")


def scrub(message: str, url: URL) -> str:
    """The first line of `message`, without the password."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    line = lines[0] if lines else "unknown error"
    if url.password:
        line = line.replace(str(url.password), "***")
    return line


def where(url: URL) -> str:
    """The database, for messages: host:port/name, or the SQLite file."""
    return backend(url).where(url)


def server_prefix(url: URL, database: str, default_port: int) -> str:
    """`<database>@<host>-<port>`, in characters any file system takes."""
    host = re.sub(r"[^A-Za-z0-9._-]", "_", url.host or "localhost")
    return f"{database}@{host}-{url.port or default_port}"


def current_revision(url: URL) -> str:
    """The Alembic revision the database is at: `base` when none, heads joined by `+`."""
    backend(url).check_reachable(url)

    def read(connection: Connection) -> list[str]:
        return sorted(MigrationContext.configure(connection).get_current_heads())

    try:
        return "+".join(run_with_connection(url, read)) or "base"
    except (SQLAlchemyError, OSError) as error:
        reason = scrub(str(getattr(error, "orig", None) or error), url)
        raise BackupError(f"cannot connect to the database at {where(url)}: {reason}") from None


def backup_name(url: URL, revision: str) -> str:
    now = datetime.now(UTC)
    stamp = now.strftime("%Y%m%dT%H%M%S") + f".{now.microsecond // 1000:03d}Z"
    safe_revision = re.sub(r"[^A-Za-z0-9_+]", "_", revision)
    module = backend(url)
    return f"{module.backup_prefix(url)}-{stamp}-{safe_revision}.{module.EXTENSION}"


def create_private(path: Path) -> int:
    """Create `path` readable by its owner only, from the first moment; an open fd."""
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as error:
        raise BackupError(f"cannot create {path}: {error.strerror}") from None


def prune(directory: Path, url: URL, keep: int) -> list[Path]:
    """Delete all but the newest `keep` backups of this database in `directory`: the ones
    whose name starts with its `backup_prefix`, which names the server too, so that the
    same-named database of another server keeps its backups."""
    module = backend(url)
    name = re.escape(module.backup_prefix(url))
    pattern = re.compile(rf"{name}-({TIMESTAMP})-.+\.{module.EXTENSION}")
    backups = sorted(
        (match.group(1), path)
        for path in directory.iterdir()
        if (match := pattern.fullmatch(path.name)) and path.is_file()
    )
    removed = [path for _, path in backups[: max(len(backups) - keep, 0)]]
    for path in removed:
        path.unlink()
    return removed


def remove_abandoned(directory: Path) -> list[Path]:
    """Delete the partial backups in `directory` that no running backup is writing: their
    writer was killed, and its lock went with it. One being written is left alone."""
    removed = []
    for path in directory.glob(f".*-{PARTIAL}.*"):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:  # finished meanwhile
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue
        else:
            path.unlink(missing_ok=True)
            removed.append(path)
        finally:
            os.close(fd)
    return removed


def megabytes(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"


@contextmanager
def ticker(progress: Progress, report: Callable[[], str]) -> Iterator[None]:
    """Report `report()` every few seconds while the block runs."""
    done = threading.Event()

    def tick() -> None:
        while not done.wait(PROGRESS_SECONDS):
            progress(report())

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def back_up(
    url: URL,
    directory: Path,
    progress: Progress,
    keep: int | None = None,
    verify: set[str] | bool = False,
    lock_timeout: float = 30.0,
) -> Path:
    """Back up the database at `url` into `directory` (created 0700); the backup's path.
    With `keep`, then delete all but the newest `keep` backups of this database there.

    With `verify` (table names, or True for every table), the backup is restored into a
    scratch database before it counts, and those tables must hold there the rows they held
    when it was taken: same count, same checksum (see `verified`). `lock_timeout` bounds
    the wait for the app's writers where taking the backup's snapshot needs one (MySQL)."""
    module = backend(url)
    module.check_reachable(url)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise BackupError(f"cannot create {directory}: {error.strerror}") from None
    # Written under a temporary name, renamed once complete and its revision known. The
    # lock on it lasts as long as this process: a later backup tells a partial file that
    # is being written from one whose writer was killed.
    partial = directory / f".{backup_name(url, PARTIAL)}"
    fd = create_private(partial)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        for abandoned in remove_abandoned(directory):
            progress(f"removed {abandoned.name}, left by a backup that did not finish")
        report = lambda: f"{megabytes(partial.stat().st_size)} written"  # noqa: E731
        try:
            with ticker(progress, report):
                live = module.dump(url, partial, progress, verify, lock_timeout)
            if verify is not False:
                verified(url, partial, progress, live)
        except SQLAlchemyError as error:  # the check's own sessions
            reason = scrub(str(getattr(error, "orig", None) or error), url)
            raise BackupError(f"checking the backup failed: {reason}") from None
        revision = module.backup_revision(partial)
        path = directory / backup_name(url, revision)
        partial.rename(path)
    finally:
        partial.unlink(missing_ok=True)
        os.close(fd)
    progress(f"wrote {megabytes(path.stat().st_size)} of {where(url)} at revision {revision}")
    for old in prune(directory, url, keep) if keep else ():
        progress(f"removed the old backup {old.name}")
    return path


def verified(url: URL, path: Path, progress: Progress, live: dict[str, Checksum]) -> None:
    """Restore the backup at `path` into a scratch database and compare its tables with
    `live`, the checksums taken from the same snapshot as the backup: any difference (a
    dump tool that skips rows, mangles characters, rounds numbers) refuses the backup."""
    module = backend(url)
    progress(f"checking that the backup restores {', '.join(live) or 'every table'}")
    restored = module.restored_checksums(url, path, progress, set(live))
    differences = []
    for table, (rows, digest) in live.items():
        if table not in restored:
            differences.append(f"table {table} is missing")
        elif restored[table][0] != rows:
            differences.append(f"table {table}: {rows} rows live, {restored[table][0]} restored")
        elif restored[table][1] != digest:
            differences.append(f"table {table}: the same {rows} rows, with different values")
    if differences:
        raise BackupError(
            f"the backup does not restore what {where(url)} holds ({'; '.join(differences)})"
        )
    rows = sum(count for count, _ in live.values())
    progress(f"the backup restores {len(live)} table(s), {rows} rows, checksums equal")


def check(url: URL, path: Path) -> None:
    """Refuse a file that is not a complete backup of this kind, before touching anything."""
    if not path.is_file():
        raise BackupError(f"there is no file {path}")
    backend(url).check(path, url)


def restore(url: URL, path: Path, progress: Progress, lock_timeout: float) -> str:
    """Restore the checked backup at `path` into the database; the revision it is at after.

    It holds the migration lock meanwhile, so that no migrator runs half-way through it. The
    database ends up holding what the backup holds, nothing else (objects created since are
    dropped), or, on any failure, stays as it was. Waiting for the app's locks on its tables
    gives up after `lock_timeout` seconds."""
    module = backend(url)
    module.check_reachable(url)

    connected = False

    def work(connection: Connection) -> None:
        nonlocal connected
        connected = True
        with migration_lock(connection, None):
            module.restore(url, path, progress, connection, lock_timeout)

    try:
        run_with_connection(url, work)
    except CommandError as error:  # the migration lock: another migrator kept it
        raise BackupError(f"{error}; nothing was restored") from None
    except (SQLAlchemyError, OSError) as error:
        reason = scrub(str(getattr(error, "orig", None) or error), url)
        if not connected:
            raise BackupError(f"cannot connect to the database at {where(url)}: {reason}") from None
        raise BackupError(f"restoring into {where(url)} failed: {reason}") from None
    return current_revision(url)
