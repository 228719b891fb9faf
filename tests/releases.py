"""The template's real releases: CHANGELOG.md's sections, their tags or recorded commits, and
a clone of this repository in which they are all tagged."""

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from packaging.version import InvalidVersion, Version

from helpers import REPO, project_env, run

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Template Tests",
    "GIT_AUTHOR_EMAIL": "tests@example.com",
    "GIT_COMMITTER_NAME": "Template Tests",
    "GIT_COMMITTER_EMAIL": "tests@example.com",
}


def git(repo: Path, *args: str) -> str:
    return run(["git", *args], repo, project_env(**GIT_IDENTITY)).stdout


CHANGELOG_VERSION = re.compile(r"^## \[(?P<version>[^\]]+)\](?: - (?P<date>\d{4}-\d{2}-\d{2}))?$")
RECORDED_COMMIT = re.compile(r"^Commit: (?P<commit>[0-9a-f]{40})\b")


@dataclass
class Release:
    """A section of CHANGELOG.md: its version, date and, if recorded, its commit."""

    version: Version
    date: str
    commit: str | None

    @property
    def tag(self) -> str:
        return f"v{self.version}"


def changelog_releases(repository: Path = REPO) -> list[Release]:
    """The released sections of CHANGELOG.md, in the file's order (newest first)."""
    releases: list[Release] = []
    for line in (repository / "CHANGELOG.md").read_text().splitlines():
        if (heading := CHANGELOG_VERSION.match(line)) and heading["version"] != "Unreleased":
            releases.append(Release(Version(heading["version"]), heading["date"], None))
        elif (recorded := RECORDED_COMMIT.match(line)) and releases:
            releases[-1].commit = recorded["commit"]
    return releases


def tagged_commit(repository: Path, tag: str) -> str | None:
    done = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"refs/tags/{tag}^{{commit}}"],
        cwd=repository,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip() if done.returncode == 0 else None


def release_tags() -> list[str]:
    """This repository's release tags, newest first: the tags Copier takes for releases
    (PEP 440 versions, no pre-releases)."""
    tags = git(REPO, "tag", "--list").split()
    releases = []
    for tag in tags:
        try:
            version = Version(tag)
        except InvalidVersion:
            continue
        if not version.is_prerelease:
            releases.append((version, tag))
    return [tag for _, tag in sorted(releases, reverse=True)]


def template_with_releases(root: Path) -> Path:
    """A clone of this repository with every CHANGELOG release tagged (recreated from its
    recorded commit where this clone lacks the tag, as a fresh CI clone may) and, on top,
    one commit with the working tree as it is: what the next release would be."""
    clone = root / "template"
    root.mkdir(parents=True, exist_ok=True)
    git(root, "clone", "--quiet", "--no-local", str(REPO), str(clone))
    for release in changelog_releases():
        if tagged_commit(clone, release.tag) is None:
            message = f"Release {release.version} (recreated from CHANGELOG.md)"
            git(clone, "tag", "--annotate", "--message", message, release.tag, release.commit)
    git(clone, "rm", "-r", "--quiet", "--cached", ".")
    for path in clone.iterdir():
        if path.name != ".git":
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    listed = git(REPO, "ls-files", "-z", "-co", "--exclude-standard")
    for relative in filter(None, listed.split("\0")):
        if (REPO / relative).is_file():
            (clone / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / relative, clone / relative)
    git(clone, "add", "--all")
    if git(clone, "status", "--porcelain"):
        git(clone, "commit", "--quiet", "--message", "The working tree")
    return clone


def next_version(version: Version) -> Version:
    return Version(f"{version.major}.{version.minor}.{version.micro + 1}")


def write_release_notes(repository: Path, version: Version, when: str) -> str:
    """Steps 2 and 3 of docs/how-to/release.md: the Unreleased section becomes the
    release's, pyproject.toml takes the version, uv.lock follows. Returns the new heading."""
    changelog = repository / "CHANGELOG.md"
    text = changelog.read_text()
    assert "## [Unreleased]\n" in text
    heading = f"## [{version}] - {when}"
    changelog.write_text(text.replace("## [Unreleased]\n", f"## [Unreleased]\n\n{heading}\n", 1))
    pyproject = repository / "pyproject.toml"
    versioned = re.sub(
        r'^version = "[^"]+"$', f'version = "{version}"', pyproject.read_text(), count=1, flags=re.M
    )
    pyproject.write_text(versioned)
    run(["uv", "lock", "--quiet"], repository, project_env())
    return heading


def release(repository: Path, version: Version, when: str = "2026-12-01") -> str:
    """Release `version` as docs/how-to/release.md says (without pushing): notes, commit,
    annotated tag, then the release's commit recorded under its heading in a commit of its
    own. Returns the release's commit."""
    heading = write_release_notes(repository, version, when)
    git(repository, "commit", "--quiet", "--all", "--message", f"Release {version}")
    git(repository, "tag", "--annotate", "--message", f"Release {version}", f"v{version}")
    commit = git(repository, "rev-parse", "HEAD").strip()
    changelog = repository / "CHANGELOG.md"
    text = changelog.read_text()
    changelog.write_text(text.replace(f"{heading}\n", f"{heading}\n\nCommit: {commit}\n", 1))
    git(repository, "commit", "--quiet", "--all", "--message", f"Record the commit of {version}")
    return commit


def clone_as_next_release(root: Path) -> Path:
    """A fresh clone whose newest release is the working tree, as right after the next
    release: what a new user gets who clones and runs the README's command."""
    clone = template_with_releases(root)
    (latest, *_) = changelog_releases(clone)
    release(clone, next_version(latest.version))
    return clone
