"""Everything that talks to the database, apart from the models.

- `engine`: the app's engine and the per-request session;
- `connection`: connect, run, dispose, for everything else here;
- `migrations`: how env.py runs a migration (the lock, session settings, retries);
- `lock`: one migrator at a time;
- `status`: where the database stands against the revision files;
- `autogenerate`: how `alembic revision --autogenerate` writes revisions;
- `backups`: back up and restore the configured database;
- `scratch`: throwaway databases for the tests and the bootstrap;
- `checks`, `snapshots`: the migration suite's library (tests/test_migrations.py);
- `bootstrap`: what `copier copy` runs after rendering;
- `cli`: the `db` command (`uv run db --help`).
"""

from pathlib import Path

from .engine import SessionDep, create_db_engine, get_session

__all__ = ["ROOT", "SessionDep", "create_db_engine", "get_session"]

# The project's root, where alembic.ini and migrations/ are: uv installs the package in
# place (editable), so its files live in the project.
ROOT = Path(__file__).resolve().parents[3]
