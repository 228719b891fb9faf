"""The how-to guides, run as written (tests/docs_runner.py): in a generated PostgreSQL
project, the database URLs, migrations, backup and restore, and deploy guides in that
order; in a project generated from a release, the update guide; in a clone of this
repository, the release guide."""

import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from docs_runner import Reader
from helpers import REPO, answer_args, project_env, run
from releases import (
    GIT_IDENTITY,
    changelog_releases,
    git,
    next_version,
    release,
    tagged_commit,
    template_with_releases,
    write_release_notes,
)

HOW_TO = REPO / "docs" / "how-to"
# As the guide shows it once "db.example.com" is replaced by the test server.
EXAMPLE_BACKUP = "backups/app@127.0.0.1-5432-20260131T140512.123Z-3f2a9c1b7d4e.dump"


@pytest.mark.slow
def test_the_project_how_tos_run_as_written(
    tmp_path: Path, server_url: Callable[[str], str | None]
) -> None:
    """One PostgreSQL project, as its owner would follow the guides: create the database and
    set DATABASE_URL, add a model and its revision and test it, back up and restore, check
    and deploy a pending revision."""
    server = server_url("postgresql")
    package = f"howto_{os.urandom(3).hex()}"
    project = tmp_path / "howto-service"
    args = ["copier", "copy", "--trust", "--defaults", "--vcs-ref=HEAD"]
    args += answer_args(database="postgresql", package_name=package)
    env = project_env(TEST_DATABASE_URL=server)
    run([*args, str(REPO), str(project)], tmp_path, env)
    password = re.search(r"^DB_PASSWORD=(.+)$", (project / ".env").read_text(), re.M).group(1)
    (initial,) = (project / "migrations" / "versions").glob("*_initial_schema.py")
    reader = Reader(
        project,
        {
            "demo_service": package,
            "db.example.com": "127.0.0.1",
            ":secret@": f":{password}@",
            "/srv/backups": str(tmp_path / "srv-backups"),
            "<from-rev>:<to-rev>": f"{initial.name.split('-')[1].split('_')[0]}:head",
        },
        ("PostgreSQL",),
        env,
    )
    try:
        reader.run(HOW_TO / "database-urls.md")
        reader.run(HOW_TO / "migrations.md")
        assert list((project / "migrations" / "versions").glob("*_add_orders.py"))
        reader.run(HOW_TO / "backup-restore.md", until="backed-up")
        (backup,) = (project / "backups").glob("*.dump")
        assert len(list((tmp_path / "srv-backups").glob("*.dump"))) == 1
        reader.substitutions[EXAMPLE_BACKUP] = str(backup.relative_to(project))
        reader.run(HOW_TO / "backup-restore.md")
        run(["uv", "run", "alembic", "downgrade", "-1"], project, env)  # the orders, pending
        reader.run(HOW_TO / "deploy.md")
        assert "CREATE TABLE orders" in (project / "pending.sql").read_text()
    finally:
        # One -c each: psql runs a single -c's statements in one transaction, which DROP
        # DATABASE refuses, and the database and role were left behind.
        drops = ["-c", f"DROP DATABASE IF EXISTS {package} WITH (FORCE)"]
        drops += ["-c", f"DROP ROLE IF EXISTS {package}"]
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", *drops], check=False)


@pytest.mark.slow
def test_the_update_how_to_runs_as_written(tmp_path: Path) -> None:
    """A project generated from the latest release, updated to the next one as the guide
    says: check, update on a branch, review, test, commit; then abort and recopy."""
    template = template_with_releases(tmp_path)
    (latest, *_) = changelog_releases(template)
    project = tmp_path / "service"
    args = ["copier", "copy", "--trust", "--defaults", f"--vcs-ref={latest.tag}"]
    run([*args, *answer_args(), str(template), str(project)], tmp_path, project_env(**GIT_IDENTITY))
    following = next_version(latest.version)
    release(template, following)
    substitutions = {"1.0.0": str(latest.version), "1.1.0": str(following)}
    reader = Reader(project, substitutions, env=project_env(**GIT_IDENTITY))

    reader.run(HOW_TO / "update.md")

    log = git(project, "log", "--format=%s", "-2").splitlines()
    assert log[0] == f"Update from the template to {following}", log
    assert f"_commit: v{following}" in (project / ".copier-answers.yml").read_text()


@pytest.mark.slow
def test_the_release_how_to_runs_as_written(tmp_path: Path) -> None:
    """The working tree released as the guide says, pushed to a remote: the tag and the
    commit recorded in CHANGELOG.md agree, here and on the remote."""
    template = template_with_releases(tmp_path)
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "--quiet", "--bare", str(remote))
    git(template, "remote", "set-url", "origin", str(remote))  # never this repository
    git(template, "push", "--quiet", "origin", "main")
    version = next_version(changelog_releases(template)[0].version)
    when = "2026-12-15"
    reader = Reader(template, {"0.2.0": str(version)}, env=project_env(**GIT_IDENTITY))

    reader.run(HOW_TO / "release.md", until="edited")
    write_release_notes(template, version, when)
    reader.run(HOW_TO / "release.md")

    (released, *_) = changelog_releases(template)
    assert released.version == version and released.date == when
    assert (
        released.commit
        == tagged_commit(template, f"v{version}")
        == tagged_commit(remote, f"v{version}")
    )
    assert git(remote, "rev-parse", "main") == git(template, "rev-parse", "main")
    assert not git(template, "status", "--porcelain")
