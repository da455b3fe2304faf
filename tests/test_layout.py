"""The code base's own contracts: the core never imports Ray, no import cycles, small modules, and
a CLI whose flags come from the config dataclasses and whose --help reads cleanly."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys

import pytest

from conftest import REPO, run_main

PACKAGES = ("ganlab", "sweeps", "analysis", "studies")


def _modules() -> dict[str, object]:
    """module name -> path of every module of the project's packages."""
    out = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def test_the_core_imports_no_ray_analysis_or_sweeps():
    names = [m for m in _modules() if m.split(".")[0] == "ganlab"]
    assert "ganlab.cli" in names and "ganlab.runs.prune" in names
    code = ("import importlib, sys\n"
            f"for name in {names!r}:\n    importlib.import_module(name)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'sweeps', 'analysis', 'studies'))\n"
            "print(bad)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def _imports(path) -> set[str]:
    """Project modules ``path`` imports, at any depth of its code (function-level imports included)."""
    return _imports_of(path.read_text())


def _imports_of(source: str) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def test_no_import_cycles_between_the_projects_modules():
    modules = _modules()
    graph = {name: sorted(m for m in _imports(path) if m in modules and m != name) for name, path in modules.items()}
    for name in graph:  # a package's __init__ importing nothing, edges to packages stay edges to their __init__
        graph[name] = [m for m in graph[name] if not name.startswith(m + ".")]
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join([*stack[stack.index(nxt):], nxt]))
            if nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [node])


def test_sweeps_hold_only_the_sweep_engine_and_studies_use_only_public_functions():
    """sweeps/ (the engine) imports neither analysis nor studies (the step after a sweep is analysis.best, called by
    studies.sweep_cli; the MLflow server and `ganlab server` live in the core);
    studies/ reach ganlab, sweeps and analysis through public names only, and nothing imports studies."""
    modules = _modules()
    for name, path in modules.items():
        imported = _imports(path)
        top = name.split(".")[0]
        if top == "sweeps":
            assert not {m for m in imported if m.split(".")[0] in ("studies", "analysis")}, name
            assert not {m for m in imported if m.startswith("sweeps.mlflow_server") or m.startswith("sweeps.server")}
        if top != "studies":
            assert not {m for m in imported if m.split(".")[0] == "studies"}, name
        else:
            private = {m for m in imported if m.split(".")[0] in PACKAGES and m.split(".")[-1].startswith("_")
                       and m.split(".")[-1] != "__future__"}
            assert not private, f"{name} imports private names {private}"


def test_no_module_is_over_400_lines():
    long = {name: n for name, path in _modules().items() if (n := len(path.read_text().splitlines())) > 400}
    assert long == {}


def test_train_and_prune_flags_are_the_config_fields():
    from ganlab.cli import build_parser
    from ganlab.config import TrainConfig
    from ganlab.pruning.magnitude import PruneConfig

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices
    for command, cls in (("train", TrainConfig), ("prune", PruneConfig)):
        flags = {a.dest for a in sub[command]._actions}
        assert {f.name for f in dataclasses.fields(cls)} <= flags, command


@pytest.mark.parametrize("command", [[], ["train"], ["evaluate"], ["prune"], ["demo"], ["analyze"], ["sweep"],
                                     ["sweep", "train"], ["sweep", "prune"], ["sweep", "resume"]])
def test_help_reads_cleanly(command):
    code, out, _ = run_main([*command, "--help"])
    assert code == 0
    assert "(default: None)" not in out and "%%" not in out and ") (default:" not in out.replace("\n", " ")
    if command in (["train"], ["prune"]):
        for choices in ("{fashion-mnist,cifar10}", "{32,64}", "{sensitivity,percentage,channel,sparse}",
                        "{generator,discriminator,both}"):
            if (choices in ("{fashion-mnist,cifar10}", "{32,64}")) == (command == ["train"]):
                assert choices in out, choices


# ganlab's sub-packages, lowest first: a module may import its own layer and the layers it names, nothing above
LAYERS = {
    "base": set(),  # ganlab/__init__, config, errors, files, device
    "gan": {"base"},
    "pruning": {"base", "gan"},
    "metrics": {"base", "gan"},
    "tracking": {"base"},  # MLflow, and no model code
    "runs": {"base", "gan", "pruning", "metrics", "tracking"},
    "top": {"base", "gan", "pruning", "metrics", "tracking", "runs"},  # cli, __main__
}
PURE_TORCH = ("gan", "pruning", "metrics")


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "ganlab" or module == "ganlab":
        return None
    if parts[1] in LAYERS:
        return parts[1]
    return "top" if parts[1] in ("cli", "__main__") else "base"


def _all_imports(path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            if node.module == "ganlab":
                found.update(f"ganlab.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def layering_problems(modules: dict) -> list[str]:
    problems = []
    for name, path in modules.items():
        layer = _layer(name)
        if layer is None:
            continue
        for imported in sorted(_all_imports(path)):
            if layer in PURE_TORCH and imported.split(".")[0] in ("mlflow", "ray"):
                problems.append(f"{name} imports {imported} (ganlab.{layer} is pure torch)")
            other = _layer(imported)
            if other is not None and other != layer and other not in LAYERS[layer]:
                problems.append(f"{name} ({layer}) imports {imported} ({other})")
    return problems


def test_ganlab_sub_packages_import_only_downwards_and_the_pure_torch_ones_no_mlflow_or_ray():
    modules = _modules()
    assert {_layer(m) for m in modules} >= set(LAYERS)
    assert layering_problems(modules) == []


def test_the_layering_rule_catches_an_upward_import_and_mlflow_in_the_gan_core(tmp_path):
    bad_gan = tmp_path / "models.py"
    bad_gan.write_text("import mlflow\nfrom ganlab.runs.source import state_from_source\n")
    bad_tracking = tmp_path / "store.py"
    bad_tracking.write_text("def f():\n    from ganlab.gan.models import Generator\n")
    problems = layering_problems({"ganlab.gan.models": bad_gan, "ganlab.tracking.store": bad_tracking})
    assert len(problems) == 3, problems



def _test_modules() -> dict[str, str]:
    """tests/*.py -> its source."""
    return {p.stem: p.read_text() for p in sorted((REPO / "tests").glob("*.py"))}


def test_no_test_module_imports_another():
    """Shared helpers live in conftest.py, stack.py and processes.py, never in a test module."""
    tests = _test_modules()
    for name, source in tests.items():
        imported = {m.split(".")[0] for m in _imports_of(source)}
        assert not {m for m in imported if m.startswith("test_") and m in tests}, name


def test_every_module_has_a_test_module_a_reader_finds_by_name():
    """Each module of the project is imported by a test module or named (its path) in a test module's docstring,
    so that `grep -l runs/prune.py tests/` finds where it is tested."""
    named = set()
    for source in _test_modules().values():
        named |= _imports_of(source)
        named |= {word.strip("`,.;:()") for word in (ast.get_docstring(ast.parse(source)) or "").split()}
    missing = []
    for name, path in _modules().items():
        if path.name in ("__init__.py", "__main__.py"):
            continue
        relative = str(path.relative_to(REPO))
        if name not in named and relative not in named and relative.split("/", 1)[1] not in named:
            missing.append(relative)
    assert missing == []



SIGNPOSTED = {"ganlab/gan/loop.py:_epochs"}  # the training loop, read top to bottom in one place


def test_no_function_is_over_50_lines_or_6_parameters():
    """A function a reader can hold: at most 50 lines and 6 parameters (self and cls not counted), in ganlab/,
    sweeps/, analysis/ and studies/; the training loop is the one signposted exception."""
    long = []
    for _, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            a = node.args
            params = [x for x in (*a.posonlyargs, *a.args, *a.kwonlyargs) if x.arg not in ("self", "cls")]
            params += [x for x in (a.vararg, a.kwarg) if x is not None]
            where = f"{path.relative_to(REPO)}:{node.name}"
            if where not in SIGNPOSTED and (node.end_lineno - node.lineno + 1 > 50 or len(params) > 6):
                long.append(f"{where} ({node.end_lineno - node.lineno + 1} lines, {len(params)} parameters)")
    assert long == []


def _returns_to_a_file_left(chain: list[str]) -> list[str]:
    """The files a call chain (outermost first) leaves and then enters again: cli -> runs -> tracking -> runs."""
    collapsed = [f for i, f in enumerate(chain) if i == 0 or chain[i - 1] != f]
    return sorted({f for i, f in enumerate(collapsed) if f in collapsed[:i]})


def _call_chains(command: list[str], start: str) -> set[tuple[str, ...]]:
    """Every chain of the project's own function calls below ``start`` while ``ganlab COMMAND`` runs in this
    process (class bodies, comprehensions and module bodies left out), each as the files it passes through."""
    root = f"{REPO}/"
    chains = set()

    def chain_of(frame):
        out = []
        while frame is not None:
            code = frame.f_code
            ours = code.co_filename.startswith(root) and code.co_filename[len(root):].split("/")[0] in PACKAGES
            if ours and code.co_flags & 0x1 and not code.co_name.startswith("<"):
                out.append(code.co_filename[len(root):])
                if code.co_name == start:
                    return tuple(reversed(out))
            frame = frame.f_back
        return None

    def profile(frame, event, arg):
        if event == "call" and (found := chain_of(frame)):
            chains.add(found)

    sys.setprofile(profile)
    try:
        code, _, err = run_main(command)
    finally:
        sys.setprofile(None)
    assert code == 0, err
    return chains


def test_the_chain_check_sees_a_file_entered_again():
    assert _returns_to_a_file_left(["cli.py", "runs/prune.py", "runs/prune.py", "runs/source.py"]) == []
    assert _returns_to_a_file_left(["cli.py", "runs/train.py", "gan/checkpoint.py", "runs/train.py"]) == \
        ["runs/train.py"]


def test_a_walk_of_ganlab_prune_from_its_cli_never_comes_back_to_a_file_it_left(trained):
    """Issue 30's walk: follow `ganlab prune` (fine-tuning with distillation: the loop and its hooks too) from
    cli.py's _cmd_prune down every call; no chain of calls leaves a file and comes back to it (the source-loading
    chain was train <-> checkpoint <-> tracking)."""
    _, run_id = trained
    chains = _call_chains(["prune", "--run-id", run_id, "--method", "percentage", "--q", "50", "--samples", "256",
                           "--eval-draws", "2", "--finetune-epochs", "1", "--distill-out", "10", "--no-progress"],
                          "_cmd_prune")
    files = {f for c in chains for f in c}
    assert {"ganlab/runs/prune.py", "ganlab/runs/source.py", "ganlab/gan/loop.py", "ganlab/pruning/recovery.py"} \
        <= files
    assert {c: r for c in chains if (r := _returns_to_a_file_left(list(c)))} == {}
