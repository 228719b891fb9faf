"""Everything that talks to the database, apart from the models.

- `engine`: the app's engine (the per-request session is `api/deps.py`);
- `connection`: connect, run, dispose, for everything else here;
- `migrations`: how env.py runs a migration (the lock, session settings, retries);
- `lock`: one migrator at a time;
- `status`: where the database stands against the revision files;
- `autogenerate`: how `alembic revision --autogenerate` writes revisions;
- `backups`: back up and restore the configured database;
- `destructive`: what a revision drops or renames, and the tables it puts at risk;
- `phases`: expand and contract revisions, and what each may do;
- `online`: schema changes for revisions that never block the app's writes;
- `backfill`: fill a column of a large table in committed, resumable batches;
- `traffic`: how long a new revision keeps the app's requests waiting (the migration suite);
- `scratch`: throwaway databases for the tests and the bootstrap;
- `checks`, `snapshots`, `seeds`, `releases`: the migration suite's library
  (tests/test_migrations.py): the walk, its catalog snapshots, the rows it migrates, the
  release still running;
- `bootstrap`: what `copier copy` runs after rendering;
- `cli`: the `db` command (`uv run db --help`).
"""

from importlib import import_module
from typing import Any

from sqlalchemy import Engine, event

from ..core.config import ROOT
from .engine import create_db_engine

__all__ = ["ROOT", "create_db_engine"]


@event.listens_for(Engine, "do_connect")
def send_passwords_as_utf8(dialect: Any, record: Any, args: Any, params: dict[str, Any]) -> None:
    """PyMySQL and aiomysql encode a password as latin-1, whatever the connection's character
    set: `ü` reaches the server as a byte it never hashed (access denied) and `€` cannot be
    encoded at all. The server compares the UTF-8 bytes the password was set with, so the
    drivers get those bytes, spelled as the latin-1 string that encodes back to them. Every
    engine of the project, the app's included, connects through here (SQLAlchemy's
    documented `do_connect` hook); other databases' drivers send UTF-8 already."""
    password = params.get("password")
    if dialect.name == "mysql" and isinstance(password, str) and not password.isascii():
        params["password"] = password.encode("utf-8").decode("latin-1")


def __getattr__(name: str) -> Any:
    """`from <package>.db import SessionDep` (routes written before 0.3.0) keeps working.

    The session dependency moved to `api/deps.py`: the migrations and the `db` command import
    this package, and need neither FastAPI nor the app. Python calls this function only for
    names the module does not define (PEP 562).
    """
    if name in ("SessionDep", "get_session"):
        return getattr(import_module("..api.deps", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
