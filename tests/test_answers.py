"""Answers, property-tested: whatever a user types, `copier copy` either renders a project
that is green on day one (no template syntax left, ruff-clean, its package installs and
imports, every answer arrives intact) or the question's validator refuses the answer with
one line.

Hypothesis generates the answers: short and long names, unicode, quotes, backslashes, `\"\"\"`,
control characters, template syntax, every choice of every other question. The number of
examples is bounded and the run is seeded (derandomized), so CI sees the same examples every
time; TEMPLATE_ANSWER_EXAMPLES raises the bound for a longer local hunt.
"""

import json
import os
import re
import string
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, Phase, event, example, given, settings
from hypothesis import strategies as st

from helpers import ANSWERS, REPO, project_env, render

EXAMPLES = int(os.environ.get("TEMPLATE_ANSWER_EXAMPLES", "12"))
LEFTOVER = re.compile(r"\{\{|\}\}|\{%|%\}|\{#|#\}")

# ---------------------------------------------------------------- the rules, written again
# An independent statement of what copier.yml's validators accept. The property is that the
# two agree: every answer this refuses, Copier refuses with the same question's message.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
TEMPLATE_SYNTAX = re.compile(r"\{[{%#]|[}%#]\}")
SLUG = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")
PACKAGE = re.compile(r"[a-z][a-z0-9_]*")
EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")
KEYWORDS = {k for k in __import__("keyword").kwlist if k.islower()}
RESERVED = set(
    yaml.safe_load((REPO / "copier.yml").read_text())["reserved_package_names"]["default"]
)


def default_slug(name: str) -> str:
    slug = re.sub("[^a-z0-9]+", "-", name.lower())
    return re.sub("^[^a-z]+|-+$", "", slug)


def default_package(slug: str) -> str:
    return re.sub("_+$", "", slug.replace("-", "_")[:32])


def one_printable_line(value: str) -> bool:
    return not CONTROL.search(value) and not TEMPLATE_SYNTAX.search(value)


def refused_question(answers: dict) -> str | None:
    """The first question whose validator must refuse these answers (None: all accepted)."""
    name = answers["project_name"]
    if not name.strip() or len(name) > 40 or not one_printable_line(name):
        return "project_name"
    slug = answers.get("project_slug", default_slug(name))
    if not SLUG.fullmatch(slug) or len(slug) > 64:
        return "project_slug"
    package = answers.get("package_name", default_package(slug))
    if not PACKAGE.fullmatch(package) or len(package) > 32:
        return "package_name"
    if package in KEYWORDS or package in RESERVED:
        return "package_name"
    description = answers["description"]
    if len(description) > 200 or not one_printable_line(description):
        return "description"
    author = answers["author_name"]
    if not author.strip() or len(author) > 100 or not one_printable_line(author):
        return "author_name"
    if re.search("[,<>@]", author):
        return "author_name"
    email = answers["author_email"]
    if not EMAIL.fullmatch(email) or len(email) > 254:
        return "author_email"
    return None


# ---------------------------------------------------------------- the answers
WORDS = ["Shop", "Billing", "Notes", "Service", "API", "Acme", "inventory", "x", "Q9"]
SPECIAL = [
    *"\"'\\&<>#%{}@,.:;!?/()-_ ",
    '"""',
    "'''",
    "{{",
    "{%",
    "}}",
    "R&D",
    "O'Brien",
    "C:\\new\\table",
    'ends with "',
    "é",
    "ü",
    "ß",
    "€",
    "日本語",
    "서비스",
    "🚀",
    "שלום",
    "e\u0301",
    "\u00a0",
    "\u200b",
    "\ufeff",
    "\t",
    "\n",
    "\r\n",
    "\x00",
    "\x7f",
    "\x85",
    "\u2028",
]
PRINTABLE = [s for s in SPECIAL if one_printable_line(s)]
any_fragment = st.one_of(
    st.sampled_from(WORDS),
    st.sampled_from(SPECIAL),
    st.text(string.ascii_letters + string.digits + " -", min_size=1, max_size=16),
    st.characters(exclude_categories=["Cs"]),
)
printable_fragment = st.one_of(
    st.sampled_from(WORDS),
    st.sampled_from(PRINTABLE),
    st.text(string.ascii_letters + string.digits + " -", min_size=1, max_size=16),
    st.characters(exclude_categories=["Cs", "Cc", "Zl", "Zp"]),
)


def text(max_length: int, max_fragments: int, *, refused: str = "") -> st.SearchStrategy[str]:
    """Mostly answers that a validator accepts (starting with a word, so that a slug can be
    made from them), one in six anything at all."""
    acceptable = (
        st.tuples(st.sampled_from(WORDS), st.lists(printable_fragment, max_size=max_fragments))
        .map(lambda parts: parts[0] + "".join(parts[1]))
        .filter(lambda value: len(value) <= max_length and one_printable_line(value))
        .filter(lambda value: not re.search(f"[{re.escape(refused)}]", value) if refused else True)
    )
    anything = st.lists(any_fragment, max_size=max_fragments + 4).map("".join)
    return st.one_of(*[acceptable] * 5, anything)


answers = st.fixed_dictionaries(
    {
        "project_name": text(40, 8),
        "description": text(200, 40),
        "author_name": text(100, 8, refused=",<>@"),
        "author_email": st.one_of(
            st.sampled_from(["you@example.com", "o'brien+ops@acme.example", "ops@x.example"]),
            st.sampled_from(["a@b", "x y@z.io", "", "@example.com"]),
            st.emails(),
        ),
        "python_version": st.sampled_from(["3.11", "3.12", "3.13"]),
        "database": st.sampled_from(["sqlite", "postgresql", "mysql"]),
        "async_mode": st.booleans(),
        "example_models": st.booleans(),
        "github_actions": st.booleans(),
    },
    optional={
        "project_slug": st.one_of(
            st.from_regex(r"[a-z][a-z0-9]{0,20}(-[a-z0-9]{1,20}){0,2}", fullmatch=True),
            st.sampled_from(["billing-service", "a" * 65, "Billing", "-x", "a--b", ""]),
        ),
        "package_name": st.one_of(
            st.from_regex(r"[a-z][a-z0-9_]{0,31}", fullmatch=True),
            st.sampled_from(["json", "class", "fastapi", "a" * 33, "_private", "9lives", "a-b"]),
        ),
    },
)


def given_answers(**overrides: object) -> dict:
    """A complete, valid set of answers for an explicit example."""
    return {**ANSWERS, "project_name": "Shop", **overrides}


# ---------------------------------------------------------------- where projects import
def interpreter(version: str) -> str | None:
    """A Python of this minor version: one uv knows, or one pyenv installed."""
    found = subprocess.run(["uv", "python", "find", version], capture_output=True, text=True)
    if found.returncode == 0:
        return found.stdout.strip()
    pyenv = sorted(Path.home().glob(f".pyenv/versions/{version}.*/bin/python{version}"))
    return str(pyenv[-1]) if pyenv else None


@pytest.fixture(scope="module")
def environment(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Path, str]]:
    """A virtual environment per Python version, in which each rendered project is installed,
    imported and uninstalled; the dependencies stay, so after the first project of a version,
    installs are quick. Without an interpreter of that version, the running one imports the
    project (told to install it as for that version)."""
    root = tmp_path_factory.mktemp("answers")
    made: dict[str, tuple[Path, str]] = {}

    def for_version(version: str) -> tuple[Path, str]:
        if version not in made:
            python = interpreter(version)
            venv = root / f"venv-{version}"
            command = ["uv", "venv", "--quiet", "--python", python or sys.executable, str(venv)]
            subprocess.run(command, check=True)
            made[version] = (venv / "bin" / "python", "" if python else version)
        return made[version]

    return for_version


IMPORT_EVERYTHING = """
import importlib, json, pkgutil, sys
package = importlib.import_module(sys.argv[1])
names = [m.name for m in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]
for name in names:
    importlib.import_module(name)
app = importlib.import_module(sys.argv[1] + ".main").app
print(json.dumps({"modules": names, "title": app.title, "description": app.description}))
"""


def install_and_import(
    python: Path, as_version: str, project: Path, package: str, slug: str
) -> dict:
    """Install the project (a built wheel, as in the Docker image) and import every module."""
    env = project_env()
    env.pop("DATABASE_URL", None)

    def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout}{done.stderr}"
        return done

    uv = ["uv", "pip", "--quiet"]
    install = [*uv, "install", "--compile-bytecode", "--python", str(python)]
    if as_version:  # no interpreter of that version here: this one stands in
        install += ["--python-version", as_version]
    run(*install, str(project))
    try:  # in the project, which has no .env: the settings' defaults
        return json.loads(run(str(python), "-c", IMPORT_EVERYTHING, package, cwd=project).stdout)
    finally:
        run(*uv, "uninstall", "--python", str(python), slug)


# ---------------------------------------------------------------- the property
def check_rendered(project: Path, answers: dict, python: tuple[Path, str]) -> None:
    slug = answers.get("project_slug", default_slug(answers["project_name"]))
    package = answers.get("package_name", default_package(slug))

    leftovers = [
        f"{path.relative_to(project)}:{number}: {line.strip()}"
        for path in sorted(project.rglob("*"))
        if path.is_file()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if LEFTOVER.search(line)
    ]
    assert not leftovers, "template syntax left:\n" + "\n".join(leftovers)

    for command in (["check", "."], ["format", "--check", "."]):
        done = subprocess.run(
            [sys.executable, "-m", "ruff", *command], cwd=project, capture_output=True, text=True
        )
        assert done.returncode == 0, f"ruff {' '.join(command)}:\n{done.stdout}{done.stderr}"

    pyproject = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["name"] == slug
    assert pyproject["project"]["description"] == answers["description"]
    assert pyproject["project"]["authors"] == [
        {"name": answers["author_name"], "email": answers["author_email"]}
    ]
    recorded = yaml.safe_load((project / ".copier-answers.yml").read_text(encoding="utf-8"))
    assert {key: recorded[key] for key in answers} == answers
    readme = (project / "README.md").read_text(encoding="utf-8")
    assert readme.startswith(f"# {answers['project_name']}\n\n{answers['description']}\n")

    imported = install_and_import(*python, project, package, slug)
    assert imported["title"] == answers["project_name"]
    assert imported["description"] == answers["description"]
    assert f"{package}.models" in imported["modules"]


@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],  # explaining takes minutes
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@example(given_answers(project_name="Shop"))
@example(given_answers(project_name="Notes", database="postgresql", async_mode=True))
@example(given_answers(project_name="R&D", description='The "R&D" team\'s API \\ tools'))
@example(given_answers(project_name='He said """hi"""', description='ends with a quote"'))
@example(given_answers(project_name="C:\\path\\", description="back\\slash\\"))
@example(given_answers(project_name="A" * 40, description="é" * 200, database="mysql"))
@example(
    given_answers(project_name="日本語のサービス", project_slug="nihongo", description="🚀" * 200)
)
@example(given_answers(project_name="x" * 40, package_name="p" * 32, example_models=False))
@given(answers=answers)
def test_any_answers_render_a_green_project_or_are_refused_in_one_line(
    tmp_path_factory: pytest.TempPathFactory,
    environment: Callable[[str], tuple[Path, str]],
    answers: dict,
) -> None:
    project = tmp_path_factory.mktemp("project") / "out"
    expected_refusal = refused_question(answers)
    try:
        render(project, **answers)
    except ValueError as error:
        event(f"refused by the {expected_refusal} validator")
        message = str(error)
        assert expected_refusal is not None, f"refused valid answers {answers!r}: {message}"
        assert message.startswith(f"Validation error for question '{expected_refusal}': ")
        assert len(message.splitlines()) == 1, message
        assert not project.exists() or not (project / "pyproject.toml").exists()
        return
    assert expected_refusal is None, f"{expected_refusal} {answers[expected_refusal]!r} accepted"
    event("rendered")
    check_rendered(project, answers, environment(answers["python_version"]))


def test_reserved_package_names_cover_the_projects_modules(
    environment: Callable[[str], tuple[Path, str]],
) -> None:
    """A package named after a module the project imports (a dependency, any driver, the
    standard library) would shadow it: copier.yml's list must name every one of them."""
    python, _ = environment("3.11")
    for database in ("sqlite", "postgresql", "mysql"):
        for async_mode in (False, True):
            project = python.parents[2] / f"deps-{database}-{async_mode}"
            render(project, database=database, async_mode=async_mode)
            install = ["uv", "pip", "install", "--quiet", "--python", str(python)]
            requirements = tomllib.loads((project / "pyproject.toml").read_text())
            dev = requirements["dependency-groups"]["dev"]
            subprocess.run([*install, *requirements["project"]["dependencies"], *dev], check=True)
    listed = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.metadata as m, sys; "
            "print('\\n'.join([*m.packages_distributions(), *sys.stdlib_module_names]))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    modules = {name.lower() for name in listed if not name.startswith("_")}
    missing = sorted(modules - RESERVED)
    assert not missing, f"add to reserved_package_names in copier.yml: {', '.join(missing)}"
