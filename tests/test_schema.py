"""ganlab's MLflow names are written once, in ganlab/tracking/schema.py: every tag key, artifact name and
child-run query elsewhere comes from there, and docs/mlflow.md names every one of them."""

from __future__ import annotations

import ast
import re

import pytest

from ganlab.tracking import schema

from conftest import REPO

CHECKED = ("ganlab", "sweeps", "analysis", "studies", "benchmarks")
MODULE_NAMES = {p.stem for p in (REPO / "ganlab").rglob("*.py")} | {p.name for p in (REPO / "ganlab").iterdir()
                                                                      if p.is_dir()} | {"commands"}


def stray_literals(source: str) -> list[str]:
    """The schema's names written as string literals (f-strings' text included) in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
            continue
        text = node.value
        for key in re.findall(r"ganlab\.(\w+)", text):
            if key not in MODULE_NAMES:
                found.append(f"ganlab.{key}")
        if schema.PARENT_RUN in text:
            found.append(schema.PARENT_RUN)
        found.extend(name for name in schema.ARTIFACTS if name in text)
        if text == schema.CHECKPOINTS:
            found.append(text)
    return found


def _code_strings(path) -> str:
    """The module without its docstrings (they may name a tag in words)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            body[0].value.value = ""
    return ast.unparse(tree)


def test_no_tag_key_artifact_name_or_parent_run_key_is_written_outside_the_schema():
    stray = {}
    for top in CHECKED:
        for path in sorted((REPO / top).rglob("*.py")):
            if path == REPO / "ganlab" / "tracking" / "schema.py":
                continue
            found = stray_literals(_code_strings(path))
            if found:
                stray[path.relative_to(REPO).as_posix()] = found
    assert stray == {}


@pytest.mark.parametrize("code", ['tags = {"ganlab.status": "ok"}', 'f = f"tags.`ganlab.trial_id` = \'{x}\'"',
                                  'p = run.data.tags.get("mlflow.parentRunId")', 'log_text(t, "verdicts.csv")',
                                  'log_file(p, "checkpoints")'])
def test_the_literal_check_catches_each_kind_of_stray_name(code):
    assert stray_literals(code)


def test_module_paths_and_prose_are_not_stray():
    assert stray_literals('run([sys.executable, "-m", "ganlab.cli"])\nx = "ganlab.gan.loop"') == []


def test_every_schema_constant_is_used_and_every_tag_is_documented():
    code = "\n".join(p.read_text() for top in CHECKED for p in (REPO / top).rglob("*.py")
                     if p != REPO / "ganlab" / "tracking" / "schema.py")
    constants = [n for n in vars(schema) if n.isupper() and isinstance(getattr(schema, n), str)
                 and (getattr(schema, n) in schema.TAGS or getattr(schema, n) in schema.ARTIFACTS)]
    unused = [n for n in constants if not re.search(rf"\bschema\.{n}\b|\b{n}\b", code)]
    assert unused == []
    doc = (REPO / "docs" / "mlflow.md").read_text()
    undocumented = [t for t in (*schema.TAGS, *schema.ARTIFACTS) if f"`{t}`" not in doc]
    assert undocumented == []


def test_tag_filter_and_column_agree_with_what_mlflow_and_analysis_use():
    assert schema.tag_filter(schema.KIND, "sweep") == "tags.`ganlab.kind` = 'sweep'"
    assert schema.child_filter("abc") == "tags.`mlflow.parentRunId` = 'abc'"
    assert schema.column(schema.STATUS) == "ganlab_status" and schema.column(schema.PARENT_RUN) == "parent_run_id"


def test_docs_mlflow_md_holds_the_table_generated_from_the_schema():
    doc = (REPO / "docs" / "mlflow.md").read_text()
    section = doc[doc.index(schema.DOC_BEGIN) + len(schema.DOC_BEGIN):doc.index(schema.DOC_END)].strip()
    assert section == schema.names_table()
    assert schema.names_table().count("\n| tag |") == len(schema.TAGS)


ARTIFACT_CALLS = {"log_artifact", "log_artifacts", "log_text", "log_file", "log_dict", "log_image", "list_artifacts",
                  "download_artifacts", "download_artifact"}


def artifact_literals(source: str) -> list[str]:
    """String literals handed to MLflow's artifact calls (a path or folder inside a run) in ``source``: each should
    be a schema name, never spelled in place."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) in ARTIFACT_CALLS:
            found += [a.value for a in [*node.args, *(k.value for k in node.keywords)]
                      if isinstance(a, ast.Constant) and isinstance(a.value, str) and a.value]
    return found


def test_every_artifact_path_handed_to_mlflow_goes_through_the_schema():
    stray = {}
    for folder in CHECKED:
        for path in (REPO / folder).rglob("*.py"):
            if path.name != "schema.py" and (found := artifact_literals(path.read_text())):
                stray[str(path.relative_to(REPO))] = found
    assert stray == {}


def test_the_artifact_check_catches_the_report_folder_spelled_in_place():
    """What analysis/report.py did until this check existed (the report logged into a literal "analysis")."""
    assert artifact_literals('client.log_artifact(run_id, str(f), "analysis")') == ["analysis"]
    assert artifact_literals("client.log_artifact(run_id, str(f), schema.ANALYSIS)") == []
