"""The README stays a few screens and names every module; the docs site builds with warnings as errors."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MKDOCS = [sys.executable, "-m", "mkdocs"]


def _layout_table() -> str:
    text = (REPO / "README.md").read_text()
    return text.split("## Layout", 1)[1]


def test_the_readme_fits_on_a_few_screens_and_starts_with_the_two_commands():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    first_block = text.split("```", 2)[1]
    assert "make demo" in first_block and "make test" in first_block


def test_the_readme_layout_table_names_every_module():
    table = _layout_table()
    named = set()
    for cell in re.findall(r"^\| ([^|]+) \|", table, flags=re.M):
        package = None  # `ganlab/train.py`, `hooks.py`, `runs/prune.py`: the rest of a cell is in the first's package
        for path in re.findall(r"`([^`]+)`", cell):
            if path.split("/")[0] in ("ganlab", "sweeps", "analysis", "studies"):
                package = path.split("/")[0]
                named.add(path)
            elif package:
                named.add(f"{package}/{path}")
    missing = []
    for package in ("ganlab", "sweeps", "analysis", "studies"):
        for module in sorted((REPO / package).rglob("*.py")):
            rel = module.relative_to(REPO).as_posix()
            if module.name == "__init__.py":
                continue
            short = f"{package}/{module.relative_to(REPO / package).as_posix()}"
            if rel not in named and short not in named:
                missing.append(rel)
    assert not missing, f"the README's layout table does not name {missing}"


def _build(docs_root: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*MKDOCS, "build", "--strict", "--site-dir", str(site)], cwd=docs_root,
                          capture_output=True, text=True, timeout=120)


def test_the_docs_site_builds_with_warnings_as_errors_and_a_broken_link_fails(tmp_path):
    done = _build(REPO, tmp_path / "site")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "site" / "recovery" / "index.html").is_file()
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(REPO / "mkdocs.yml", copy / "mkdocs.yml")
    shutil.copytree(REPO / "docs", copy / "docs")
    page = copy / "docs" / "usage.md"
    page.write_text(page.read_text() + "\nSee [a page that is gone](gone.md).\n")
    broken = _build(copy, tmp_path / "site2")
    assert broken.returncode != 0 and "gone.md" in broken.stderr
