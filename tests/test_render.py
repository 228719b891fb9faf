"""Render every value of every question: no template syntax left, lint-clean, right files."""

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import render

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
    env_py = (project / "migrations" / "env.py").read_text()
    assert ("asyncio.run" in env_py) == case["async_mode"]

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
