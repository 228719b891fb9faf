"""Render every value of every question: no template syntax left, lint-clean, right files."""

import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from helpers import REPO, render

# Every value of every question appears at least once; every database x mode x models
# combination is rendered.
CASES = [
    {
        "database": database,
        "async_mode": async_mode,
        "example_models": example_models,
        "python_version": ("3.11", "3.12", "3.13")[index % 3],
        "github_actions": index % 2 == 0,
    }
    for index, (database, async_mode, example_models) in enumerate(
        (d, a, e)
        for d in ("sqlite", "postgresql", "mysql")
        for a in (False, True)
        for e in (True, False)
    )
]
LEFTOVER = re.compile(r"\{\{|\}\}|\{%|%\}")


def case_id(case: dict) -> str:
    return "-".join(f"{key}={value}" for key, value in case.items())


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("rendered")
    return {case_id(case): render(root / case_id(case), **case) for case in CASES}


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_no_template_syntax_is_left(rendered: dict[str, Path], case: dict) -> None:
    project = rendered[case_id(case)]
    leftovers = [
        f"{path.relative_to(project)}:{number}: {line.strip()}"
        for path in project.rglob("*")
        if path.is_file()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if LEFTOVER.search(line)
    ]
    assert not leftovers, "template syntax left in the rendered project:\n" + "\n".join(leftovers)
    assert not [p for p in project.rglob("*") if LEFTOVER.search(p.name)], "template file names"


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_rendered_project_is_ruff_clean(rendered: dict[str, Path], case: dict) -> None:
    project = rendered[case_id(case)]
    for command in (["ruff", "check", "."], ["ruff", "format", "--check", "."]):
        done = subprocess.run(command, cwd=project, capture_output=True, text=True)
        assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout}{done.stderr}"


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_answers_shape_the_project(rendered: dict[str, Path], case: dict) -> None:
    project = rendered[case_id(case)]
    package = project / "src" / "demo_service"
    pyproject = (project / "pyproject.toml").read_text()

    assert f'requires-python = ">={case["python_version"]}"' in pyproject
    assert (package / "models" / "user.py").exists() == case["example_models"]
    assert (package / "api" / "routes" / "posts.py").exists() == case["example_models"]
    assert (project / ".github" / "workflows" / "ci.yml").exists() == case["github_actions"]
    assert (project / ".github").exists() == case["github_actions"], "no empty .github folder"

    drivers = {
        ("sqlite", False): None,
        ("sqlite", True): "aiosqlite",
        ("postgresql", False): "psycopg[binary]",
        ("postgresql", True): "asyncpg",
        ("mysql", False): "pymysql[rsa]",
        ("mysql", True): "aiomysql[rsa]",
    }
    driver = drivers[(case["database"], case["async_mode"])]
    if driver:
        assert f'"{driver}>=' in pyproject
    connection = (package / "db" / "connection.py").read_text()  # the one async switch
    assert ("asyncio.run" in connection) == case["async_mode"]
    assert "asyncio" not in (project / "migrations" / "env.py").read_text()

    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    for key, value in case.items():
        assert answers[key] == value
    assert "_commit" in answers and answers["_src_path"]


def test_no_database_url_or_secret_in_tracked_configuration(rendered: dict[str, Path]) -> None:
    for project in rendered.values():
        assert "sqlalchemy.url" not in (project / "alembic.ini").read_text()
        assert not (project / ".env").exists(), ".env is written by the hook, never rendered"
        ignored = (project / ".gitignore").read_text().splitlines()
        assert ".env" in ignored and "!.env.example" in ignored


SERVICE_IMAGES = {"postgresql": "postgres:", "mysql": "mariadb:"}


@pytest.mark.parametrize("database", ["sqlite", "postgresql", "mysql"])
def test_ci_workflow_runs_the_suite_against_the_projects_database(
    tmp_path: Path, database: str
) -> None:
    """The generated CI runs `uv run pytest` (the migration suite with the rest) with a
    service container of the project's own database, which TEST_DATABASE_URL names."""
    project = render(tmp_path / "project", database=database, github_actions=True)
    workflow = yaml.safe_load((project / ".github" / "workflows" / "ci.yml").read_text())
    job = workflow["jobs"]["test"]
    assert "uv run pytest" in [step.get("run") for step in job["steps"]]
    if database == "sqlite":
        assert "services" not in job and "TEST_DATABASE_URL" not in job.get("env", {})
        return
    (service,) = job["services"].values()
    assert service["image"].startswith(SERVICE_IMAGES[database]), service
    url = urlsplit(job["env"]["TEST_DATABASE_URL"])
    assert url.scheme == database and url.hostname == "127.0.0.1"
    assert f"{url.port}:{url.port}" in service["ports"], service
    assert url.password in service["env"].values(), (url, service)


DUMP_CLIENTS = {"postgresql": "postgresql-client", "mysql": "mariadb-client"}


@pytest.mark.parametrize("database", ["sqlite", "postgresql", "mysql"])
def test_compose_migrates_once_before_the_app_starts(tmp_path: Path, database: str) -> None:
    """compose.yaml: a one-shot `migrate` service runs the deploy script on the app's
    database (after the database is healthy), and the app starts only once it succeeded.
    The image carries the dump tools the deploy script's backup needs. (No Docker engine
    here: the same commands run directly in test_deploy.py and test_backup_restore.py.)"""
    project = render(tmp_path / "project", database=database)
    services = yaml.safe_load((project / "compose.yaml").read_text())["services"]
    migrate, app = services["migrate"], services["app"]
    assert migrate["command"][-2:] == ["db", "deploy"]
    assert migrate["restart"] == "no"
    assert app["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert migrate["environment"]["DATABASE_URL"] == app["environment"]["DATABASE_URL"]
    dockerfile = (project / "Dockerfile").read_text()
    if database == "sqlite":
        assert "db" not in services and migrate["volumes"][-1] == app["volumes"][0]
        assert "-client" not in dockerfile
    else:
        assert migrate["depends_on"]["db"]["condition"] == "service_healthy"
        url = re.sub(r"\$\{DB_PASSWORD:[^}]*\}", "secret", migrate["environment"]["DATABASE_URL"])
        assert urlsplit(url).hostname == "db" and urlsplit(url).password == "secret", url
        assert DUMP_CLIENTS[database] in dockerfile


def lint(tool: str, path: Path) -> subprocess.CompletedProcess[str]:
    """actionlint (with shellcheck for `run:` steps) or hadolint, from the dev environment."""
    tools = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{tools}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([str(tools / tool), str(path)], capture_output=True, text=True, env=env)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_ci_workflow_and_dockerfile_pass_their_linters(rendered: dict[str, Path], case: dict):
    """The generated workflow passes actionlint and reads the repository only; the
    Dockerfile passes hadolint (any finding, info included, fails)."""
    project = rendered[case_id(case)]
    done = lint("hadolint", project / "Dockerfile")
    assert done.returncode == 0, done.stdout + done.stderr
    if not case["github_actions"]:
        return
    workflow = project / ".github" / "workflows" / "ci.yml"
    done = lint("actionlint", workflow)
    assert done.returncode == 0, done.stdout + done.stderr
    assert yaml.safe_load(workflow.read_text())["permissions"] == {"contents": "read"}


def test_the_linters_catch_what_they_are_here_for(tmp_path: Path) -> None:
    """The mistakes these linters exist for fail them: an action on a retired runtime, a
    `run:` step with an unquoted expansion (shellcheck), a root-named user in the image."""
    project = render(tmp_path / "project", database="postgresql", github_actions=True)
    workflow = project / ".github" / "workflows" / "ci.yml"
    text = workflow.read_text()
    for old, new in (
        ("actions/checkout@v6", "actions/checkout@v4"),
        ("      - run: uv sync --locked", "      - run: cd $HOME/some dir && uv sync --locked"),
    ):
        assert old in text
        workflow.write_text(text.replace(old, new))
        assert lint("actionlint", workflow).returncode == 1, new
    dockerfile = project / "Dockerfile"
    text = dockerfile.read_text()
    assert "USER 10001:10001" in text
    dockerfile.write_text(text.replace("USER 10001:10001", "USER app"))
    assert "DL3066" in lint("hadolint", dockerfile).stdout


JINJA_IF = re.compile(r"\{%-?\s*(?:el)?if\b")
INLINE_IF = re.compile(r"\{\{[^}]*\bif\b[^}]*\}\}")
CONDITIONALS_BEFORE = 186  # when the database package replaced per-answer code (issue 10)


def test_answers_decide_little_of_the_template() -> None:
    """Jinja decides what must be rendered (the driver, sync or async, the files a project
    gets); the rest is decided at run time. Count every `if`/`elif` tag, inline `... if ...`
    and conditional file name in template/ and includes/: at most a third of what there was."""
    count = 0
    for root in ("template", "includes"):
        for path in (REPO / root).rglob("*"):
            count += len(JINJA_IF.findall(path.name))
            if path.is_file():
                text = path.read_text()
                count += len(JINJA_IF.findall(text)) + len(INLINE_IF.findall(text))
    print(f"Jinja conditionals in template/ and includes/: {count} (was {CONDITIONALS_BEFORE})")
    assert count <= CONDITIONALS_BEFORE // 3, count


FORBIDDEN = ("_upgrade_revs", "_downgrade_revs", "experimental", "__qualname__", "gc.freeze")


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_public_apis_only_and_an_alembic_sized_env_py(rendered: dict[str, Path], case: dict):
    """No private Alembic attribute, no pytest-alembic experimental module, no name
    sniffing, no speed tricks (`gc.freeze`, imports hidden behind TYPE_CHECKING) anywhere in
    a project; its env.py is no longer than about Alembic's own templates."""
    project = rendered[case_id(case)]
    found = [
        f"{path.relative_to(project)}: {word}"
        for path in project.rglob("*.py")
        for word in (*FORBIDDEN, "TYPE_CHECKING")
        if word in path.read_text()
    ]
    assert not found, found
    env_py = (project / "migrations" / "env.py").read_text()
    assert len(env_py.splitlines()) <= 90, len(env_py.splitlines())
