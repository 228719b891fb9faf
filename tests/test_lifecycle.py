"""The template's lifecycle: `copier update` from one release to the next, the files a project
owns, files a release moves, organisation forks, and the release history itself.

The tests build throwaway releases of the template in a temporary git repository: `v1.0.0` is
the working tree (HEAD plus uncommitted changes) with one small extra script, `v2.0.0` makes
the kind of changes a release makes: `migrations/env.py`, `alembic.ini`, the README and the
CI workflow improve, the extra script is renamed (with a `_migrations` entry that runs
`hooks/move_file.py`), and the example models and routes change, which projects must not get.
"""

import re
import shutil
import subprocess
from datetime import date
from pathlib import Path

import pytest
import yaml
from copier import run_copy
from packaging.version import Version

from docs_runner import Reader
from helpers import ANSWERS, REPO, answer_args, project_env, run
from releases import (
    CHANGELOG_VERSION,
    GIT_IDENTITY,
    changelog_releases,
    clone_as_next_release,
    git,
    next_version,
    release,
    release_tags,
    tagged_commit,
    template_with_releases,
)

PACKAGE = "demo_service"
# What `copier update` must never render (copier.yml `_exclude` on update).
USER_OWNED = (
    f"src/{PACKAGE}/models/",
    f"src/{PACKAGE}/api/routes/users.py",
    f"src/{PACKAGE}/api/routes/posts.py",
    "tests/test_users.py",
    "tests/test_posts.py",
    "tests/data_migration_example.py",
    "tests/data_migration_example_schema.py",
    "tests/test_data_migration_example.py",
    "migrations/versions/",
)

# ---------------------------------------------------------------- the throwaway releases
ENV_PY = "template/migrations/env.py.jinja"
ALEMBIC_INI = "template/alembic.ini"
README = "template/README.md.jinja"
CI = "template/{% if github_actions %}.github{% endif %}/workflows/ci.yml.jinja"
USER_MODEL = "template/src/{{package_name}}/models/{% if example_models %}user.py{% endif %}"
POSTS_ROUTE = (
    "template/src/{{package_name}}/api/routes/{% if example_models %}posts.py{% endif %}.jinja"
)
SHOW_HEAD, PRINT_HEAD = "template/scripts/show_head.py", "template/scripts/print_head.py"

SHOW_HEAD_V1 = '''"""Print the head revision of the migration history."""

from alembic.config import Config
from alembic.script import ScriptDirectory

CONFIG = "alembic.ini"


def main() -> None:
    print(ScriptDirectory.from_config(Config(CONFIG)).get_current_head())


if __name__ == "__main__":
    main()
'''
PRINT_HEAD_V2 = SHOW_HEAD_V1.replace("history.", "history (scripts/show_head.py before 2.0.0).")
ENV_PY_V2 = "# Template 2.0.0: an improvement to migrations/env.py.\n"
ALEMBIC_INI_V2 = "# Template 2.0.0: an improvement to alembic.ini.\n"
README_V2 = "\n## Template updates\n\nTemplate 2.0.0 added this section.\n"
CI_STEP_V2 = (
    "      - name: Migration SQL compiles\n        run: uv run alembic upgrade head --sql\n"
)
USER_MODEL_V2 = '''

class Nickname(SQLModel, table=True):
    """Template 2.0.0 adds a table; projects must not get it without a revision."""

    __tablename__ = "nicknames"

    id: int | None = Field(default=None, primary_key=True)
'''
POSTS_ROUTE_V2 = "# Template 2.0.0 changed the example posts routes.\n"
MOVE_MIGRATION = """
_migrations:
  - version: "2.0.0"
    command: ["{{ _copier_python }}", "{{ _copier_conf.src_path }}/hooks/move_file.py",
              "--answers-file={{ _copier_conf.answers_file }}",
              scripts/show_head.py, scripts/print_head.py]
"""


def append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def build_releases(root: Path) -> Path:
    """A git repository with the template at `v1.0.0` (the working tree) and `v2.0.0`."""
    template = root / "template-repository"
    parts = ("copier.yml", "hooks", "includes", "template")
    listed = git(REPO, "ls-files", "-z", "-co", "--exclude-standard", *parts)
    for relative in filter(None, listed.split("\0")):
        if (REPO / relative).is_file():  # tracked files deleted in the working tree are listed
            (template / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / relative, template / relative)
    (template / SHOW_HEAD).parent.mkdir(parents=True, exist_ok=True)
    (template / SHOW_HEAD).write_text(SHOW_HEAD_V1)
    git(template, "init", "--quiet", "--initial-branch=main")
    git(template, "add", "--all")
    git(template, "commit", "--quiet", "--message", "Release 1.0.0")
    git(template, "tag", "v1.0.0")

    git(template, "mv", SHOW_HEAD, PRINT_HEAD)
    (template / PRINT_HEAD).write_text(PRINT_HEAD_V2)
    for path, text in (
        (ENV_PY, ENV_PY_V2),
        (ALEMBIC_INI, ALEMBIC_INI_V2),
        (README, README_V2),
        (CI, CI_STEP_V2),
        (USER_MODEL, USER_MODEL_V2),
        (POSTS_ROUTE, POSTS_ROUTE_V2),
        ("copier.yml", MOVE_MIGRATION),
    ):
        append(template / path, text)
    git(template, "commit", "--quiet", "--all", "--message", "Release 2.0.0")
    git(template, "tag", "v2.0.0")
    return template


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_releases(tmp_path_factory.mktemp("releases"))


# ---------------------------------------------------------------- projects
# The oldest Copier that copier.yml allows, and the release before it.
MIN_COPIER = yaml.safe_load((REPO / "copier.yml").read_text())["_min_copier_version"]
COPIER = {
    "installed": ["copier"],
    "minimum": ["uvx", "--quiet", "--from", f"copier=={MIN_COPIER}", "copier"],
    "older": ["uvx", "--quiet", "--from", f"copier<{MIN_COPIER}", "copier"],
}


def copy(
    template: Path, ref: str | None, project: Path, hook: bool = True, copier: str = "installed"
) -> str:
    """`copier copy` as a user runs it; without the hook, commit as the hook would."""
    args = [*COPIER[copier], "copy", "--trust", "--defaults", *answer_args()]
    args += [f"--vcs-ref={ref}"] if ref else []
    args += [] if hook else ["--skip-tasks"]
    done = run([*args, str(template), str(project)], project.parent, project_env(**GIT_IDENTITY))
    if hook:
        assert "bootstrap: created a git repository" in done.stdout, done.stdout
    else:
        git(project, "init", "--quiet", "--initial-branch=main")
        commit(project, "Initial commit from the template")
    return done.stdout


def update(project: Path, ref: str | None, copier: str = "installed") -> str:
    args = [*COPIER[copier], "update", "--trust", "--defaults"]
    args += [f"--vcs-ref={ref}"] if ref else []
    done = run(args, project, project_env(**GIT_IDENTITY))
    return done.stdout + done.stderr


def render(template: Path, ref: str | None, into: Path) -> Path:
    """The files a fresh `copier copy` of `ref` renders (no hook)."""
    run_copy(
        str(template),
        into,
        data=ANSWERS,
        vcs_ref=ref,
        defaults=True,
        skip_tasks=True,
        quiet=True,
    )
    return into


def commit(project: Path, message: str) -> None:
    git(project, "add", "--all")
    git(project, "commit", "--quiet", "--message", message)


def answers(project: Path) -> dict:
    return yaml.safe_load((project / ".copier-answers.yml").read_text())


def files(root: Path) -> set[str]:
    """Every file git would see: tracked or new, not ignored (a rendered tree: every file)."""
    if not (root / ".git").exists():
        return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    listed = git(root, "ls-files", "-z", "-co", "--exclude-standard").split("\0")
    return {path for path in listed if path and (root / path).is_file()}


def changes(project: Path) -> dict[str, str]:
    """`git status`, as {path: status}, untracked files one by one."""
    status = git(project, "status", "--porcelain", "--untracked-files=all", "-z")
    return {entry[3:]: entry[:2].strip() for entry in status.split("\0") if entry}


def leftovers(project: Path) -> list[str]:
    """Conflict markers and .rej files: what an update leaves when it cannot merge."""
    rejects = [
        p.relative_to(project).as_posix()
        for p in project.rglob("*.rej")
        if ".venv" not in p.relative_to(project).parts
    ]
    marked = [
        path
        for path in sorted(files(project))
        if re.search(rb"^(<<<<<<<|>>>>>>>)( |$)", (project / path).read_bytes(), re.MULTILINE)
    ]
    return rejects + marked


def is_user_owned(path: str) -> bool:
    return any(path == owned or path.startswith(owned) for owned in USER_OWNED)


def hook_outputs(project: Path) -> dict[str, bytes]:
    """What the post-copy hook wrote: `.env`, `uv.lock`, the initial revision."""
    revisions = sorted((project / "migrations" / "versions").glob("*.py"))
    paths = [project / ".env", project / "uv.lock", *revisions]
    return {p.relative_to(project).as_posix(): p.read_bytes() for p in paths}


def run_suite(project: Path) -> str:
    """The project's CI: lint, format, then its whole test suite with nothing skipped."""
    env = project_env(CI="true")
    run(["uv", "run", "ruff", "check", "."], project, env)
    run(["uv", "run", "ruff", "format", "--check", "."], project, env)
    last = run(["uv", "run", "pytest", "-q", "-p", "no:cacheprovider"], project, env).stdout
    last = last.strip().splitlines()[-1]
    assert "passed" in last and not re.search("skipped|failed|error", last), last
    return last


# ---------------------------------------------------------------- what users do
TAG_MODEL = '''"""Tags: short labels."""

from sqlmodel import Field, SQLModel


class Tag(SQLModel, table=True):
    __tablename__ = "tags"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=50, unique=True)
'''
README_EDIT = "Invoices and refunds for the shop; owned by the billing team."


def add_a_model_with_its_revision(project: Path) -> Path:
    models = project / "src" / PACKAGE / "models"
    (models / "tag.py").write_text(TAG_MODEL)
    init = (models / "__init__.py").read_text()
    for anchor, added in (
        ("from .user import", "from .tag import Tag\n"),
        ('    "User",', '    "Tag",\n'),
    ):
        assert anchor in init, "models/__init__.py changed: update this test's edit"
        init = init.replace(anchor, added + anchor, 1)
    (models / "__init__.py").write_text(init)
    before = set((project / "migrations" / "versions").glob("*.py"))
    run(["uv", "run", "alembic", "revision", "--autogenerate", "-m", "add tags"], project)
    (revision,) = set((project / "migrations" / "versions").glob("*.py")) - before
    assert 'op.create_table(\n        "tags"' in revision.read_text()
    return revision


def edit_readme_and_a_setting(project: Path) -> None:
    readme = project / "README.md"
    description = "A FastAPI + SQLModel service"
    assert description in readme.read_text()
    readme.write_text(readme.read_text().replace(description, README_EDIT, 1))
    ini = project / "alembic.ini"
    assert "truncate_slug_length = 40" in ini.read_text()
    ini.write_text(
        ini.read_text().replace("truncate_slug_length = 40", "truncate_slug_length = 60")
    )


def remove_the_posts_api(project: Path) -> str:
    """Delete the example posts routes and their tests, and unplug the router."""
    (project / "src" / PACKAGE / "api" / "routes" / "posts.py").unlink()
    (project / "tests" / "test_posts.py").unlink()
    main = project / "src" / PACKAGE / "main.py"
    text = main.read_text()
    for old, new in (
        ("import health, posts, users", "import health, users"),
        ("    app.include_router(posts.router)\n", ""),
    ):
        assert old in text, "main.py changed: update this test's edit"
        text = text.replace(old, new)
    main.write_text(text)
    return text


# ---------------------------------------------------------------- the tests
@pytest.mark.slow
@pytest.mark.parametrize("copier", ["installed", "minimum"])
def test_update_keeps_the_users_work_and_brings_the_release(
    releases: Path, tmp_path: Path, copier: str
) -> None:
    """With the Copier a user has, and with the oldest one `_min_copier_version` allows:
    the hook runs on copy, and the update brings the release but leaves what the project
    owns (`_exclude` on update needs `_copier_operation`, Copier 9.6)."""
    project = tmp_path / "service"
    copy(releases, "v1.0.0", project, copier=copier)
    assert answers(project)["_commit"] == "v1.0.0"
    revision = add_a_model_with_its_revision(project)
    edit_readme_and_a_setting(project)
    main_py = remove_the_posts_api(project)
    commit(project, "Tags, a README of our own, longer slugs, no posts API")
    before = hook_outputs(project)
    env_mtime = (project / ".env").stat().st_mtime_ns
    user_model = (project / "src" / PACKAGE / "models" / "user.py").read_bytes()

    output = update(project, "v2.0.0", copier=copier)

    # The update changed only what the release changed, and merged everything cleanly.
    assert leftovers(project) == []
    assert changes(project) == {
        ".copier-answers.yml": "M",
        ".github/workflows/ci.yml": "M",
        "README.md": "M",
        "alembic.ini": "M",
        "migrations/env.py": "M",
        "scripts/show_head.py": "D",
        "scripts/print_head.py": "??",
    }
    assert answers(project)["_commit"] == "v2.0.0"
    # The release's improvements arrived.
    assert (project / "migrations" / "env.py").read_text().endswith(ENV_PY_V2)
    assert CI_STEP_V2 in (project / ".github" / "workflows" / "ci.yml").read_text()
    assert (project / "scripts" / "print_head.py").read_text() == PRINT_HEAD_V2
    # The user's edits are intact, next to the release's changes to the same files.
    readme = (project / "README.md").read_text()
    assert README_EDIT in readme and readme.endswith(README_V2)
    ini = (project / "alembic.ini").read_text()
    assert "truncate_slug_length = 60" in ini and ini.endswith(ALEMBIC_INI_V2)
    assert (project / "src" / PACKAGE / "main.py").read_text() == main_py
    # User-owned files: not overwritten though untouched, not brought back once deleted.
    assert (project / "src" / PACKAGE / "models" / "user.py").read_bytes() == user_model
    assert not (project / "src" / PACKAGE / "api" / "routes" / "posts.py").exists()
    assert not (project / "tests" / "test_posts.py").exists()
    # No task ran: no new revision, `.env` not rewritten, the lock file as it was.
    assert "bootstrap:" not in output
    assert hook_outputs(project) == before and revision.relative_to(project).as_posix() in before
    assert (project / ".env").stat().st_mtime_ns == env_mtime
    assert (project / "migrations" / "versions" / ".gitkeep").exists()

    run_suite(project)


@pytest.mark.slow
def test_copier_older_than_the_minimum_refuses_rather_than_merge_owned_files(
    releases: Path, tmp_path: Path
) -> None:
    """The Copier release before `_min_copier_version` stops with Copier's own message. The
    same Copier without the version floor would update a project and merge the files the
    project owns: it does not evaluate `_exclude` with `_copier_operation`."""
    done = run(
        [*COPIER["older"], "copy", "--trust", "--defaults", *answer_args()]
        + ["--vcs-ref=v1.0.0", str(releases), str(tmp_path / "refused")],
        tmp_path,
        check=False,
    )
    assert f"This template requires Copier version >= {MIN_COPIER}" in done.stderr, done.stderr
    assert not (tmp_path / "refused" / "pyproject.toml").exists()

    floorless = tmp_path / "floorless"
    git(tmp_path, "clone", "--quiet", str(releases), str(floorless))
    floor = f'_min_copier_version: "{MIN_COPIER}"\n'
    for tag in ("v1.0.0", "v2.0.0"):
        git(floorless, "checkout", "--quiet", tag)
        config = (floorless / "copier.yml").read_text()
        assert floor in config
        (floorless / "copier.yml").write_text(config.replace(floor, ""))
        commit(floorless, f"{tag} without a version floor")
        git(floorless, "tag", "--force", tag)
    project = tmp_path / "service"
    copy(floorless, "v1.0.0", project, hook=False, copier="older")
    update(project, "v2.0.0", copier="older")
    assert changes(project)[f"src/{PACKAGE}/models/user.py"] == "M", "the floor is too high"


@pytest.mark.slow
def test_untouched_project_updated_equals_a_fresh_copy(releases: Path, tmp_path: Path):
    """Updated from v1 to v2, a project nobody touched is v2 as `copier copy` renders it, but
    for the files the project owns (still v1's) and what the hook wrote (unchanged)."""
    project = tmp_path / "service"
    copy(releases, "v1.0.0", project)
    written = hook_outputs(project)

    update(project, "v2.0.0")

    fresh = {ref: render(releases, ref, tmp_path / ref) for ref in ("v1.0.0", "v2.0.0")}
    hook_files = {path for path in written if path != ".env"}  # .env is ignored by git
    assert files(project) == files(fresh["v2.0.0"]) | hook_files
    differ = []
    for path in sorted(files(fresh["v2.0.0"])):
        expected = fresh["v1.0.0" if is_user_owned(path) else "v2.0.0"] / path
        if (project / path).read_bytes() != expected.read_bytes():
            differ.append(path)
    assert differ == []
    # The release did change user-owned files: the project kept its own.
    for path in (f"src/{PACKAGE}/models/user.py", f"src/{PACKAGE}/api/routes/posts.py"):
        assert (fresh["v1.0.0"] / path).read_bytes() != (fresh["v2.0.0"] / path).read_bytes()
    assert hook_outputs(project) == written
    assert leftovers(project) == []


@pytest.mark.slow
@pytest.mark.parametrize("edit", ["edited", "deleted", "edited-where-the-release-did"])
def test_a_moved_file_carries_the_projects_version_over(
    releases: Path, tmp_path: Path, edit: str
) -> None:
    project = tmp_path / "service"
    copy(releases, "v1.0.0", project, hook=False)
    old, new = project / "scripts" / "show_head.py", project / "scripts" / "print_head.py"
    ours = {
        "edited": SHOW_HEAD_V1.replace('"alembic.ini"', '"deploy/alembic.ini"'),
        "edited-where-the-release-did": SHOW_HEAD_V1.replace("history.", "history, for CI."),
    }
    if edit == "deleted":
        old.unlink()
    else:
        old.write_text(ours[edit])
    commit(project, f"show_head.py {edit}")

    output = update(project, "v2.0.0")

    assert not old.exists()
    if edit == "deleted":
        assert not new.exists()
        assert "show_head.py was deleted in this project: not adding" in output
    elif edit == "edited":
        assert new.read_text() == PRINT_HEAD_V2.replace('"alembic.ini"', '"deploy/alembic.ini"')
        assert "carried scripts/show_head.py over to scripts/print_head.py" in output
        assert leftovers(project) == []
    else:
        assert leftovers(project) == ["scripts/print_head.py"]
        merged = new.read_text()
        conflict = (
            '<<<<<<< before updating\n"""Print the head revision of the migration history, for'
            ' CI."""\n=======\n"""Print the head revision of the migration history (scripts/'
            'show_head.py before 2.0.0)."""\n>>>>>>> after updating\n'
        )
        assert merged.startswith(conflict), merged
        assert merged.endswith(SHOW_HEAD_V1.split("\n", 1)[1])
        assert "resolve the markers in scripts/print_head.py" in output
    assert answers(project)["_commit"] == "v2.0.0"


@pytest.mark.slow
def test_recopy_renders_everything_again_but_runs_no_hook(releases: Path, tmp_path: Path):
    """`copier recopy` is a copy to Copier: it renders every file again, the project's own
    included, and runs the tasks. The hook sees a committed project and does nothing."""
    project = tmp_path / "service"
    copy(releases, "v1.0.0", project, hook=False)

    args = ["copier", "recopy", "--trust", "--defaults", "--overwrite", "--vcs-ref=v2.0.0"]
    output = run(args, project, project_env(**GIT_IDENTITY)).stdout

    assert "already committed, so this is a recopy" in output
    assert "bootstrap:" not in output
    assert not (project / ".env").exists()
    assert not list((project / "migrations" / "versions").glob("*.py"))
    assert changes(project)[f"src/{PACKAGE}/models/user.py"] == "M"
    assert answers(project)["_commit"] == "v2.0.0"


# ---------------------------------------------------------------- an organisation's fork
FORK_PAGE = REPO / "docs" / "how-to" / "fork.md"
UPSTREAM_URL = "https://github.com/copier-fastapi-sqlmodel/copier-fastapi-sqlmodel.git"
FORK_URL = "git@git.acme.example:platform/acme-template.git"
FORK_QUESTION = """team:
  type: str
  help: Team that owns the service (CODEOWNERS)
  default: platform

"""
OPTIONS = "# ---------------------------------------------------------------- options"
CODEOWNERS = "# Who reviews changes to this service.\n* @acme/platform\n"


def change_what_the_fork_needs(fork: Path) -> None:
    """Step 2 of the page, as its examples show: defaults and a question (the page writes
    its file, CODEOWNERS, itself)."""
    config = (fork / "copier.yml").read_text()
    for old, new in (
        ('  default: "Your Name"', '  default: "Acme Platform Team"'),
        ('  default: "you@example.com"', '  default: "platform@acme.example"'),
        (
            "  help: Database the service runs on\n  default: sqlite",
            "  help: Database the service runs on\n  default: postgresql",
        ),
        (OPTIONS, FORK_QUESTION + OPTIONS),
    ):
        assert old in config, "copier.yml changed: update this test's fork"
        config = config.replace(old, new, 1)
    (fork / "copier.yml").write_text(config)
    (fork / "CHANGELOG-acme.md").write_text("# Acme template\n\n- Acme defaults, CODEOWNERS\n")


def upstream_releases(upstream: Path, version: Version) -> None:
    """Upstream's next release changes the line next to the fork's default (a conflict in
    the fork's merge) and improves env.py (which projects must get)."""
    config = upstream / "copier.yml"
    old = "  help: Author or team name (pyproject.toml)\n"
    assert old in config.read_text()
    config.write_text(
        config.read_text().replace(old, "  help: Author or team, as in pyproject.toml\n")
    )
    append(upstream / ENV_PY, ENV_PY_V2)
    git(upstream, "commit", "--quiet", "--all", "--message", "Clearer help, a better env.py")
    release(upstream, version)


def resolve_the_conflict(fork: Path) -> None:
    """What the reader does in an editor: the fork's default, upstream's help."""
    config = (fork / "copier.yml").read_text()
    conflict = re.search(r"<<<<<<< HEAD\n(.*?)=======\n(.*?)>>>>>>> upstream/main\n", config, re.S)
    assert conflict, config
    ours, theirs = conflict.group(1), conflict.group(2)
    assert '"Acme Platform Team"' in ours and "Author or team, as in pyproject.toml" in theirs
    resolved = theirs.replace('default: "Your Name"', 'default: "Acme Platform Team"')
    (fork / "copier.yml").write_text(config.replace(conflict.group(0), resolved))


@pytest.mark.slow
def test_the_fork_how_to_works_as_written(tmp_path: Path) -> None:
    """docs/how-to/fork.md, every command as written: clone and push with tags, the fork's
    defaults, question and file, its tests, its tag, a service generated from it; then
    upstream's next release merged with a conflict, the fork's next tag, and the service
    updated to it. The template's own tests (the fast ones, here) pass in the fork."""
    upstream = clone_as_next_release(tmp_path / "upstream")
    forked_at = changelog_releases(upstream)[0].version
    upstream_next = next_version(forked_at)
    host = tmp_path / "git-host" / "acme-template.git"
    git(tmp_path, "init", "--quiet", "--bare", str(host))
    work = tmp_path / "work"
    work.mkdir()
    reader = Reader(
        work,
        {
            UPSTREAM_URL: str(upstream),
            FORK_URL: str(host),
            "0.2.0": str(forked_at),
            "0.3.0": str(upstream_next),
            # The tests that read the template's answers, questions, files and docs: the whole
            # suite inside this one would take its time twice.
            "uv run pytest": "uv run pytest -m 'not slow' -p no:cacheprovider -q "
            "tests/test_render.py tests/test_validation.py tests/test_lifecycle.py "
            "tests/test_docs.py",
        },
        env=project_env(**GIT_IDENTITY, TEMPLATE_ANSWER_EXAMPLES="3"),
    )
    fork, project = work / "acme-template", work / "billing-service"

    reader.run(FORK_PAGE, until="changes")
    assert tagged_commit(host, f"v{forked_at}"), "upstream's tags were pushed with the fork"
    change_what_the_fork_needs(fork)
    reader.run(FORK_PAGE, until="upstream-release")

    assert answers(project)["_commit"] == f"v{forked_at}.1"
    assert answers(project)["_src_path"] == str(host)
    assert answers(project)["database"] == "postgresql"
    assert (project / "CODEOWNERS").read_text() == CODEOWNERS
    pyproject = (project / "pyproject.toml").read_text()
    assert 'name = "Acme Platform Team", email = "platform@acme.example"' in pyproject

    upstream_releases(upstream, upstream_next)
    reader.run(FORK_PAGE, until="conflict")
    assert "CONFLICT (content): Merge conflict in copier.yml" in reader.output + reader.errors
    resolve_the_conflict(fork)
    reader.run(FORK_PAGE)

    checked = reader.output + reader.errors
    assert f"Current version is {forked_at}.1, latest version is {upstream_next}.1." in checked
    assert answers(project)["_commit"] == f"v{upstream_next}.1"
    assert answers(project)["team"] == "platform"
    assert (project / "CODEOWNERS").read_text() == CODEOWNERS
    assert (project / "migrations" / "env.py").read_text().endswith(ENV_PY_V2)
    assert leftovers(project) == []
    assert not tagged_commit(fork, f"v{upstream_next}"), "upstream's new tag must stay out"
    config = (fork / "copier.yml").read_text()
    assert '"Acme Platform Team"' in config and "Author or team, as in pyproject.toml" in config


# ---------------------------------------------------------------- real releases
def test_changelog_lists_every_release_newest_first() -> None:
    """Keep a Changelog: `## [Unreleased]` first, then `## [X.Y.Z] - YYYY-MM-DD` sections,
    newest first; pyproject's version is a release. Every release is real: it has a tag,
    or a recorded commit (`Commit: <sha>` under its heading) that this clone holds, and a
    tag and a recorded commit agree."""
    lines = (REPO / "CHANGELOG.md").read_text().splitlines()
    assert lines[0] == "# Changelog"
    sections = [m for line in lines if (m := CHANGELOG_VERSION.match(line))]
    assert sections and sections[0]["version"] == "Unreleased" and not sections[0]["date"]
    releases = changelog_releases()
    assert releases, "no released version"
    for section in releases:
        date.fromisoformat(section.date)
    versions = [section.version for section in releases]
    assert versions == sorted(versions, reverse=True) and len(set(versions)) == len(versions)
    pyproject = (REPO / "pyproject.toml").read_text()
    project_version = re.search(r'^version = "([^"]+)"$', pyproject, re.MULTILINE).group(1)
    assert Version(project_version) in versions

    for section in releases:
        tagged = tagged_commit(REPO, section.tag)
        assert tagged or section.commit, (
            f"release {section.version} has neither a tag {section.tag} nor a recorded "
            f"commit: tag it (docs/how-to/release.md) and add `Commit: <sha>` under its heading"
        )
        if tagged and section.commit:
            assert tagged == section.commit, f"{section.tag} is {tagged}, recorded {section.commit}"
        if not tagged:
            found = subprocess.run(
                ["git", "cat-file", "-e", f"{section.commit}^{{commit}}"], cwd=REPO
            )
            assert found.returncode == 0, f"{section.version}'s commit is not in this clone"
    for tag in release_tags():
        if len(Version(tag).release) > 3:  # an organisation fork's own release, v1.2.0.1:
            continue  # its notes go in the fork's own changelog (docs/how-to/fork.md)
        assert Version(tag) in versions, f"tag {tag} has no section in CHANGELOG.md"


@pytest.mark.slow
def test_update_from_the_latest_release_to_the_working_tree(tmp_path: Path) -> None:
    """A project generated from the latest real release (Copier's default, no --vcs-ref)
    sees the next release with `copier check-update` once it is tagged, and updates to it
    with its user's work intact and its suite green."""
    (latest, *_) = changelog_releases()
    template = template_with_releases(tmp_path)
    project = tmp_path / "service"
    copy(template, None, project)  # no --vcs-ref: Copier takes the latest release
    assert answers(project)["_commit"] == latest.tag
    revision = add_a_model_with_its_revision(project)
    edit_readme_and_a_setting(project)
    commit(project, "Tags, a README of our own, longer slugs")
    before = hook_outputs(project)

    following = next_version(latest.version)
    check = run(["copier", "check-update"], project, check=False)
    assert "Project is up-to-date!" in check.stdout + check.stderr, check.stdout + check.stderr
    release(template, following)
    check = run(["copier", "check-update"], project, check=False)
    expected = f"Current version is {latest.version}, latest version is {following}."
    assert expected in check.stdout + check.stderr, check.stdout + check.stderr

    update(project, None)  # no --vcs-ref: the latest release

    assert answers(project)["_commit"] == f"v{following}"
    assert leftovers(project) == []
    assert README_EDIT in (project / "README.md").read_text()
    assert "truncate_slug_length = 60" in (project / "alembic.ini").read_text()
    assert hook_outputs(project) == before and revision.relative_to(project).as_posix() in before
    run_suite(project)
