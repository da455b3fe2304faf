"""The README stays a few screens and names every module; the docs site builds with warnings as errors."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO, run_main

MKDOCS = [sys.executable, "-m", "mkdocs"]


def _layout_table() -> str:
    text = (REPO / "README.md").read_text()
    return text.split("## Layout", 1)[1]


def test_the_readme_fits_on_a_few_screens_and_starts_with_the_two_commands():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    first_block = text.split("```", 2)[1]
    assert "make demo" in first_block and "make test" in first_block


PACKAGES = ("ganlab", "sweeps", "analysis", "studies")


def test_the_readme_layout_table_names_every_package_in_eight_rows_and_each_package_lists_its_modules():
    """The README's table is one row per room (at most 8); each package's docstring names its modules, so a
    newcomer finds a module from the table in two steps."""
    rows = re.findall(r"^\| `([^|]+) \|", _layout_table(), flags=re.M)
    assert 0 < len(rows) <= 8, rows
    named = set()
    for cell in rows:
        top = None  # `ganlab/gan/`, `pruning/`: the rest of a cell is in the first's package
        for path in re.findall(r"([\w/]+/)`", "`" + cell):
            if path.split("/")[0] in PACKAGES:
                top = path.split("/")[0]
                named.add(path.rstrip("/"))
            elif top:
                named.add(f"{top}/{path.rstrip('/')}")
    missing, unlisted = [], []
    for init in sorted(p for top in PACKAGES for p in (REPO / top).rglob("__init__.py")):
        package = init.parent.relative_to(REPO).as_posix()
        if package not in named:
            missing.append(package)
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        for module in sorted(init.parent.glob("*.py")):
            if module.name != "__init__.py" and f"``{module.stem}``" not in doc:
                unlisted.append(module.relative_to(REPO).as_posix())
    assert not missing, f"the README's layout table does not name {missing}"
    assert not unlisted, f"no package docstring names {unlisted}"


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


def test_the_resumable_settings_are_said_once_and_the_help_and_docs_follow():
    """`--resume`'s help and docs/usage.md name exactly the settings of group "resume" (config.RESUMABLE)."""
    from ganlab.config import RESUMABLE, flags

    _, out, _ = run_main(["train", "--help"])
    assert flags(RESUMABLE) in " ".join(out.split())
    usage = (REPO / "docs" / "usage.md").read_text()
    bullet = usage[usage.index("**Resuming a training run**"):].split("\n* ")[0]
    said = re.findall(r"`--([a-z-]+)`", bullet.split("may change")[0])
    assert said == [name.replace("_", "-") for name in RESUMABLE]
