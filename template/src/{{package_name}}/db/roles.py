"""Least-privilege roles (`db roles`): who may change the schema, and who may only read and
write rows. The SQL is decided by the database's dialect at run time; `--apply` runs it as
the (administrator's) user of MIGRATIONS_DATABASE_URL, or prints it for a DBA to run.

PostgreSQL, three roles (docs: how-to/topology.md):

- the owner (NOLOGIN, CREATEDB) owns the database, the schema `public` and everything in
  it. Nobody logs in as it.
- the migrator (LOGIN) is a member of the owner and becomes it at every login
  (`ALTER ROLE ... SET role`): migrations, the migration lock and the `db` commands connect
  as it (MIGRATIONS_DATABASE_URL, straight to the server), and what a revision creates
  belongs to the owner. CREATEDB is the backup check's scratch database.
- the app (LOGIN) may SELECT, INSERT, UPDATE and DELETE rows of every table and use every
  sequence, today's and those the owner creates later (`ALTER DEFAULT PRIVILEGES`): a new
  revision's table needs no GRANT. The migrations' bookkeeping (the version table, the
  backfills' progress) is the exception: the app has no rights there. Its statement_timeout and
  idle_in_transaction_session_timeout are role settings, which hold through PgBouncer's
  transaction pooling (a `SET` would stay behind on one server connection).

MySQL and MariaDB have no owners: the migrator gets every privilege on the database and on
the restore's scratch databases, the app SELECT, INSERT, UPDATE and DELETE on the database's
tables, today's and later ones; on MariaDB its statements stop after MAX_STATEMENT_TIME.

Passwords come from DB_MIGRATOR_PASSWORD and DB_APP_PASSWORD (environment or `.env`) and are
never printed: the printed SQL has placeholders in their place.
"""

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import Column, Connection, MetaData, PrimaryKeyConstraint, String, Table, literal
from sqlalchemy.engine import URL, Dialect
from sqlalchemy.schema import CreateTable

from . import ROOT, backfill
from .connection import run_with_connection

# What the password placeholders are in printed SQL: psql variables on PostgreSQL
# (`psql -v migrator_password=...`), markers to replace on MySQL, whose client has none.
PLACEHOLDERS = {
    "postgresql": {"migrator": ":'migrator_password'", "app": ":'app_password'"},
    "mysql": {"migrator": "'<DB_MIGRATOR_PASSWORD>'", "app": "'<DB_APP_PASSWORD>'"},
}


class RolesError(ValueError):
    """Roles cannot be set up as asked; the message says what to do."""


class Passwords(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=ROOT / ".env", env_file_encoding="utf-8", extra="ignore"
    )

    db_migrator_password: SecretStr | None = None
    db_app_password: SecretStr | None = None


@dataclass(frozen=True)
class Roles:
    """The roles' names and the app's timeouts (seconds)."""

    database: str
    owner: str
    migrator: str
    app: str
    statement_timeout: float = 30
    idle_timeout: float = 60

    @classmethod
    def named_after(cls, database: str, **options: float) -> "Roles":
        return cls(
            database, f"{database}_owner", f"{database}_migrator", f"{database}_app", **options
        )


# One statement, with the comment printed above it ("" for none).
Statement = tuple[str, str]


def statements(
    roles: Roles, dialect: Dialect, password: Callable[[str], str], mariadb: bool | None
) -> list[Statement]:
    """The SQL for `dialect`; `password("migrator" | "app")` gives each password's literal
    (or placeholder); `mariadb` None when it cannot be told (printing, without a connection)."""
    if dialect.name == "postgresql":
        return postgresql(roles, dialect, password)
    if dialect.name == "mysql":
        return mysql(roles, dialect, password, mariadb)
    raise RolesError(f"{dialect.name} has no roles: the app and migrations share its file")


def postgresql(roles: Roles, dialect: Dialect, password: Callable[[str], str]) -> list[Statement]:
    # PostgreSQL cuts a longer name short without an error: the roles would exist under
    # other names than the ones printed, and `ALTER ROLE ... SET role` would name one that
    # does not.
    for role in (roles.owner, roles.migrator, roles.app):
        if len(role.encode()) > dialect.max_identifier_length:
            raise RolesError(
                f"the role name {role} is {len(role.encode())} bytes, and PostgreSQL keeps "
                f"{dialect.max_identifier_length}: choose shorter names with --owner, "
                "--migrator and --app"
            )
    name = dialect.identifier_preparer.quote
    owner, migrator, app, database = (
        name(roles.owner),
        name(roles.migrator),
        name(roles.app),
        name(roles.database),
    )

    def create(role: str, options: str) -> str:  # PostgreSQL has no CREATE ROLE IF NOT EXISTS
        return (
            f"DO $$ BEGIN CREATE ROLE {role} {options}; "
            "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
        )

    return [
        ("The owner of the schema and of every table: nobody logs in as it.", ""),
        ("", create(owner, "NOLOGIN CREATEDB")),
        ("", f"ALTER ROLE {owner} NOLOGIN CREATEDB"),
        ("The migrator: MIGRATIONS_DATABASE_URL; it becomes the owner at every login.", ""),
        ("", create(migrator, "LOGIN")),
        ("", f"ALTER ROLE {migrator} LOGIN PASSWORD {password('migrator')}"),
        ("", f"GRANT {owner} TO {migrator}"),
        ("", f"ALTER ROLE {migrator} SET role = {text(dialect, roles.owner)}"),
        ("The app: DATABASE_URL; rows only, with timeouts that hold through a pooler.", ""),
        ("", create(app, "LOGIN")),
        ("", f"ALTER ROLE {app} LOGIN NOCREATEDB NOCREATEROLE PASSWORD {password('app')}"),
        ("", f"ALTER ROLE {app} SET statement_timeout = '{roles.statement_timeout:g}s'"),
        (
            "",
            f"ALTER ROLE {app} SET idle_in_transaction_session_timeout = '{roles.idle_timeout:g}s'",
        ),
        ("The database and its schema belong to the owner; only it creates there.", ""),
        ("", f"ALTER DATABASE {database} OWNER TO {owner}"),
        ("", f"GRANT CONNECT ON DATABASE {database} TO {migrator}, {app}"),
        ("", f"ALTER SCHEMA public OWNER TO {owner}"),
        ("", "REVOKE CREATE ON SCHEMA public FROM PUBLIC"),
        ("The migrations' bookkeeping: the version table and the backfills' progress.", ""),
        *(("", bookkeeping(table, dialect)) for table in BOOKKEEPING),
        ("Tables, views, sequences and types made before the roles go to the owner.", ""),
        ("", take_over(roles, dialect)),
        ("The app's rights on today's tables and sequences, and on those to come.", ""),
        ("", f"GRANT USAGE ON SCHEMA public TO {app}"),
        ("", f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {app}"),
        ("", f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {app}"),
        (
            "",
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public "
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {app}",
        ),
        (
            "",
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public "
            f"GRANT USAGE, SELECT ON SEQUENCES TO {app}",
        ),
        ("Except the bookkeeping: a write there would make a deploy skip revisions.", ""),
        ("", f"REVOKE ALL ON {', '.join(name(t.name) for t in BOOKKEEPING)} FROM {app}"),
    ]


# The tables the migrations keep for themselves. Made here when they are not there yet (a
# new database), so that the app gets no rights on them: one the migrator made later would
# get the app's rights from the default privileges above. The version table is Alembic's
# own default (alembic.ddl.impl.DefaultImpl.version_table_impl).
BOOKKEEPING = (
    Table(
        "alembic_version",
        MetaData(),
        Column("version_num", String(32), nullable=False),
        PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
    ),
    backfill.PROGRESS,
)


def bookkeeping(table: Table, dialect: Dialect) -> str:
    return " ".join(str(CreateTable(table, if_not_exists=True).compile(dialect=dialect)).split())


def take_over(roles: Roles, dialect: Dialect) -> str:
    """Give the owner what the schema holds already (a project that adopts the roles): its
    tables, views and free-standing sequences (a serial column's goes with its table) and
    its types (enums). REASSIGN OWNED would also try the administrator's own objects."""
    owner = text(dialect, roles.owner)
    return f"""DO $$
DECLARE object record;
BEGIN
  FOR object IN
    SELECT CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'
             WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END AS kind,
           quote_ident(c.relname) AS name
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
      AND pg_get_userbyid(c.relowner) <> {owner}
      AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                      AND d.objid = c.oid AND d.deptype IN ('a', 'i'))
    UNION ALL
    SELECT 'TYPE', quote_ident(t.typname)
    FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
    WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd', 'c')
      AND NOT EXISTS (SELECT FROM pg_class c WHERE c.reltype = t.oid)
      AND pg_get_userbyid(t.typowner) <> {owner}
  LOOP
    EXECUTE 'ALTER ' || object.kind || ' public.' || object.name
            || ' OWNER TO ' || quote_ident({owner});
  END LOOP;
END $$"""


def mysql(
    roles: Roles, dialect: Dialect, password: Callable[[str], str], mariadb: bool | None
) -> list[Statement]:
    migrator, app = f"{text(dialect, roles.migrator)}@'%'", f"{text(dialect, roles.app)}@'%'"
    database = dialect.identifier_preparer.quote(roles.database)
    # `_` in a grant's database name matches any character: escaped, it is itself.
    restores = dialect.identifier_preparer.quote(
        roles.database.replace("_", "\\_") + "\\_restore\\_%"
    )
    found = [
        ("MySQL has no owners: the migrator (MIGRATIONS_DATABASE_URL) may do anything in", ""),
        ("the database and in the restore's scratch databases.", ""),
        ("", f"CREATE USER IF NOT EXISTS {migrator} IDENTIFIED BY {password('migrator')}"),
        ("", f"ALTER USER {migrator} IDENTIFIED BY {password('migrator')}"),
        ("", f"GRANT ALL PRIVILEGES ON {database}.* TO {migrator}"),
        ("", f"GRANT ALL PRIVILEGES ON {restores}.* TO {migrator}"),
        ("The app (DATABASE_URL): rows only, in today's tables and in later ones.", ""),
        ("", f"CREATE USER IF NOT EXISTS {app} IDENTIFIED BY {password('app')}"),
        ("", f"ALTER USER {app} IDENTIFIED BY {password('app')}"),
        ("", f"GRANT SELECT, INSERT, UPDATE, DELETE ON {database}.* TO {app}"),
    ]
    if mariadb is not False:
        found += [
            ("MariaDB only (MySQL has no per-user statement time): the app's timeout.", ""),
            ("", f"ALTER USER {app} WITH MAX_STATEMENT_TIME {roles.statement_timeout:g}"),
        ]
    return found


def sql_dialect(dialect: Dialect | type[Dialect]) -> Dialect:
    """The dialect that quotes names and strings as plain SQL: a driver that reads `%s` as a
    parameter would have every % doubled."""
    kind = dialect if isinstance(dialect, type) else type(dialect)
    return kind(paramstyle="named")


def text(dialect: Dialect, value: str) -> str:
    """A string literal for the dialect, quoted and escaped as its compiler does."""
    return str(literal(value).compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


def script(roles: Roles, url: URL) -> str:
    """The SQL to print: passwords as placeholders, with how to run it."""
    dialect = sql_dialect(url.get_dialect())
    found = statements(roles, dialect, PLACEHOLDERS.get(dialect.name, {}).__getitem__, None)
    if dialect.name == "postgresql":
        how = (
            'psql -v migrator_password="$DB_MIGRATOR_PASSWORD" -v app_password="$DB_APP_PASSWORD"'
            f" -v ON_ERROR_STOP=1 -d {roles.database} -f roles.sql  (as an administrator)"
        )
    else:
        how = "replace the <...> passwords, then run it as an administrator"
    lines = [f"-- Roles for {roles.database}: {how}; or `uv run db roles --apply`."]
    for comment, statement in found:
        lines.append(f"-- {comment}" if comment else f"{statement};")
    return "\n".join(lines) + "\n"


def apply(roles: Roles, url: URL) -> list[str]:
    """Run the SQL as the URL's user, with the passwords from the environment or `.env`;
    what was done, one line per role, never a password."""
    secrets = Passwords()
    given = {"migrator": secrets.db_migrator_password, "app": secrets.db_app_password}
    missing = [f"DB_{kind.upper()}_PASSWORD" for kind, value in given.items() if not value]
    if missing:
        raise RolesError(
            f"set {' and '.join(missing)} (environment or .env): the passwords of the roles "
            "it creates; or leave out --apply to print the SQL"
        )

    def run(connection: Connection) -> None:
        dialect = sql_dialect(connection.dialect)

        def password(kind: str) -> str:
            return text(dialect, given[kind].get_secret_value())

        mariadb = getattr(connection.dialect, "is_mariadb", False)
        # Passwords are literals in the SQL (CREATE ROLE takes no parameters); the drivers
        # that read %s as a parameter get each % doubled.
        style = connection.dialect.paramstyle
        percent = "%%" if style in ("format", "pyformat") else "%"
        for _, statement in statements(roles, dialect, password, mariadb):
            if statement:
                connection.exec_driver_sql(statement.replace("%", percent))

    run_with_connection(url, run, isolation_level="AUTOCOMMIT")
    done = [f"the app: {roles.app} (DATABASE_URL), rows only"]
    if url.get_backend_name() == "postgresql":
        done.insert(0, f"the owner: {roles.owner} (no login), owns the schema and its tables")
    done.insert(-1, f"the migrator: {roles.migrator} (MIGRATIONS_DATABASE_URL)")
    return done
