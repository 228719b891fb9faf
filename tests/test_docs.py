"""The documentation site builds with no warnings (MkDocs strict mode)."""

import subprocess
import sys
from pathlib import Path

from conftest import REPO


def test_docs_build_strictly(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )

    assert done.returncode == 0, done.stderr
    assert (tmp_path / "index.html").exists()
