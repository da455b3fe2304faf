"""Hostile and absurd inputs (issue 24): a small file must not take the machine down or steer writes, and bad input
is one line with exit 2, found before any work starts. Peak memory is measured in the refusing process itself."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import torch

from ganlab.config import TrainConfig
from ganlab.gan.models import build_models
from ganlab.pruning.compress import MAGIC, compress_generator

MEMORY_BOUND_MIB = 1536

_BATCH = """
import contextlib, io, json, os, sys
from ganlab.cli import main
results = []
for cwd, args in json.loads(sys.argv[1]):
    os.chdir(cwd)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{cwd}/mlflow.db"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(args)
        except SystemExit as exc:
            code = exc.code
    # VmHWM: this process image's own peak (ru_maxrss would carry the forking pytest process's over exec)
    peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")) // 1024
    results.append([code, out.getvalue(), err.getvalue().rstrip("\\n"), peak])
print(json.dumps(results))
"""


def ganlab_batch(cases: list[tuple[Path, list[str]]], timeout: int = 600) -> list[tuple[int, str, str, int]]:
    """``ganlab ARGS`` for each (working directory, ARGS), one after another in one child process (one torch
    import for them all): (exit code, stdout, stderr, the child's peak MiB so far) each. The peak only grows, so
    a bound that holds after the last case held for every one before it."""
    out = subprocess.run([sys.executable, "-c", _BATCH, json.dumps([[str(c), a] for c, a in cases])],
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return [tuple(r) for r in json.loads(out.stdout.strip().splitlines()[-1])]


def _one_line_exit_2(result, *needles: str) -> None:
    code, _, err, peak = result
    assert code == 2, err[-2000:]
    assert err.count("\n") == 0 and err.strip(), err[-2000:]  # one line
    for needle in needles:
        assert needle in err, err
    assert 0 < peak < MEMORY_BOUND_MIB, f"peak {peak} MiB"


def _glz(tmp_path: Path, edit) -> Path:
    """A real compressed generator whose header ``edit`` rewrites (in place)."""
    torch.manual_seed(0)
    config = TrainConfig(image_size=32, ngf=8).resolved()
    data, _ = compress_generator(build_models(config)[0], config, bits=4)
    (size,) = struct.unpack("<I", data[len(MAGIC):len(MAGIC) + 4])
    header = json.loads(data[len(MAGIC) + 4:len(MAGIC) + 4 + size])
    payload = data[len(MAGIC) + 4 + size:]
    payload = edit(header, payload) or payload
    head = json.dumps(header).encode()
    path = tmp_path / "hostile.glz"
    path.write_bytes(MAGIC + struct.pack("<I", len(head)) + head + payload)
    return path


def _wide(header, payload):
    header["widths"] = [300000, 1, 1]


def _wide_ngf(header, payload):
    header["widths"], header["config"]["ngf"] = None, 50000


def _same_payload_many_times(header, payload):
    first = header["raw"][0]
    header["raw"] += [dict(first) for _ in range(3000)]


def _foreign_scheme(header, payload):
    header["scheme"] = "__import__('os')"


def _unknown_field(header, payload):
    header["exec"] = "print(1)"


def _newer_version(header, payload):
    header["format"] = 99


HOSTILE_FILES = [(_wide, "parameters"), (_wide_ngf, "parameters"), (_same_payload_many_times, "twice"),
                 (_foreign_scheme, "scheme"), (_unknown_field, "not ganlab's"), (_newer_version, "format 99")]


def test_hostile_compressed_files_and_checkpoints_are_refused_in_bounded_memory(tmp_path):
    """Each case alone took 2-2.7 GB before (header widths [300000,1,1], ngf 50000, 3,000 raw entries on one
    payload range); all of them together now stay under the bound, each in one line."""
    from ganlab.gan.checkpoint import make_checkpoint
    from ganlab.gan.loop import create_state

    cases = []
    for i, (edit, _) in enumerate(HOSTILE_FILES):
        folder = tmp_path / f"case{i}"
        folder.mkdir()
        cases.append((folder, ["generate", "--model", str(_glz(folder, edit)), "--out", str(folder / "g.png")]))
    ckpt = make_checkpoint(create_state(TrainConfig(image_size=32, ngf=8, ndf=8).resolved(), torch.device("cpu")))
    ckpt["widths"]["generator"] = [300000, 1, 1]
    torch.save(ckpt, tmp_path / "hostile.pt")
    cases.append((tmp_path, ["evaluate", "--checkpoint", str(tmp_path / "hostile.pt")]))
    needles = [n for _, n in HOSTILE_FILES] + ["parameters"]
    for (folder, args), result, needle in zip(cases, ganlab_batch(cases), needles):
        _one_line_exit_2(result, needle, *(["hostile.pt"] if args[0] == "evaluate" else []))
        assert not (folder / "g.png").exists()


BILLION_LAUGHS = "kind: train\nname: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"l{i}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(9))
ANCHORED_CHOICES = ("kind: train\nname: t\nbase: {dataset: fashion-mnist}\nx: &a [1.0e-4, 2.0e-4, 3.0e-4, 4.0e-4]\n"
                    + "".join(f"y{i}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
                              f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(9))
                    + "search: {lr_d: {choice: *j}}\n")


HOSTILE_SPECS = [
    (BILLION_LAUGHS, "alias"), (ANCHORED_CHOICES, "alias"),
    (b"kind: train\nname: caf\xe9\n", "not UTF-8"),
    ("kind: train\nname: t\nresources: 5\n", "resources must be a mapping"),
    ("kind: train\nname: t\nsearch: 7\n", "search must be a mapping"),
    ("kind: train\nname: t\ninitial_points: [5]\n", "initial_points must be a list of mappings"),
    ("kind: prune\nname: p\ngrid: {sensitivity: {s: [abc]}}\n", "list of numbers"),
    ("kind: prune\nname: p\ngrid: {percentage: {q: [50]}, target: 3}\n", "grid.target"),
    ("kind: train\nname: t\nstorage_path: 5\n", "storage_path must be a string"),
    ("!!python/object/apply:os.system [echo pwned]\n", "not valid YAML"),
]
BROKEN_STUDY_SPECS = [
    ("cpu_sparse.yaml", "", "empty"),  # the last step's spec: read before the first step starts
    ("cpu_frontier.yaml", "kind: prune\nname: p\nsearch: frontier\ngrid: {percentage: {q: [5, 500]}}\n", "q"),
    ("cpu_recipe_ft.yaml", "kind: prune\nname: r\nsearch: {seed: {choice: [1]}}\n"
                           "grid: {percentage: {q: [80]}, finetune_epochs: [1]}\n", "seed"),
    ("cpu_train.yaml", "[1, 2]\n", "mapping")]


def test_hostile_or_mistyped_specs_are_one_line_in_bounded_memory_and_a_study_checks_all_before_its_first_sweep(
        tmp_path):
    cases = []
    for i, (text, _) in enumerate(HOSTILE_SPECS):
        folder = tmp_path / f"spec{i}"
        folder.mkdir()
        (folder / "spec.yaml").write_bytes(text if isinstance(text, bytes) else text.encode())
        cases.append((folder, ["sweep", "train", str(folder / "spec.yaml")]))
    for i, (broken, content, _) in enumerate(BROKEN_STUDY_SPECS):
        folder = tmp_path / f"study{i}"
        _study_specs(folder / "specs", broken, content)
        cases.append((folder, ["study", "--scale", "cpu", "--specs", str(folder / "specs"), "--out",
                               str(folder / "o")]))
    needles = [n for _, n in HOSTILE_SPECS] + [n for _, _, n in BROKEN_STUDY_SPECS]
    for (folder, args), result, needle in zip(cases, ganlab_batch(cases), needles):
        _one_line_exit_2(result, needle, *([BROKEN_STUDY_SPECS[int(folder.name[5:])][0]]
                                           if args[0] == "study" else []))
        assert "1/8" not in result[1]  # a study started no sweep
        assert not (folder / "mlflow.db").exists() and not (folder / "ray_results").exists()


def _study_specs(specs: Path, broken: str, content: str) -> None:
    specs.mkdir(parents=True)
    recipe = "kind: prune\nname: {}\nsearch: {{lr_scale: {{loguniform: [0.1, 1.0]}}}}\n" \
             "grid: {{percentage: {{q: [80]}}, finetune_epochs: [1]}}\n"
    frontier = "kind: prune\nname: {}\nsearch: frontier\ngrid: {{percentage: {{q: [20, 90]}}}}\n"
    good = {"cpu_train.yaml": "kind: train\nname: t\nbase: {dataset: fashion-mnist, epochs: 1}\nnum_samples: 1\n",
            **{f"cpu_{k}.yaml": recipe.format(k.replace("_", "-")) for k in ("recipe_ft", "recipe_distill",
                                                                           "recipe_agp")},
            **{f"cpu_{k}.yaml": frontier.format(k.replace("_", "-")) for k in ("frontier", "frontier_recovery",
                                                                             "frontier_lth")},
            "cpu_sparse.yaml": "kind: prune\nname: s\ngrid: {sparse: {sparsity: [0.5]}}\n"}
    for name, text in {**good, broken: content}.items():
        (specs / name).write_text(text)


def _checkpoint(tmp_path: Path, edit=None, name: str = "model.pt") -> Path:
    """A real (untrained, 32 px) ganlab checkpoint, optionally edited."""
    from ganlab.gan.checkpoint import make_checkpoint
    from ganlab.gan.loop import create_state

    state = create_state(TrainConfig(image_size=32, ngf=8, ndf=8).resolved(), torch.device("cpu"))
    if edit is not None:
        edit(state)
    path = tmp_path / name
    torch.save(make_checkpoint(state), path)
    return path


ABSURD = [
    (["train", "--ngf", "100000000"], "parameters"),
    (["train", "--nz", "2000000000"], "parameters"),
    (["train", "--seed", "99999999999999999999999"], "seed"),
    (["evaluate", "--checkpoint", "CKPT", "--samples", "2000000000"], "samples"),
    (["generate", "--model", "GLZ", "--seed", "99999999999999999999999", "--out", "g.png"], "seed"),
    (["generate", "--model", "GLZ", "--out", "adir.png"], "is a directory"),
    (["export", "--run-id", "0123abcd", "--out", "adir.png"], "is a directory"),
    (["compress", "--checkpoint", "CKPT", "--out", "adir.png"], "is a directory"),
    (["analyze", "--sweep", "0123abcd", "--out", "afile"], "is a file"),
    (["train", "--data-dir", "afile"], "is a file"),
    (["train", "--image-size", "32", "--limit", "64", "--epochs", "1", "--data-dir", "ZEROED"], "corrupt"),
    (["evaluate", "--checkpoint", "NAN", "--samples", "200"], "NaN or infinite"),
    (["evaluate", "--checkpoint", "/dev/zero"], "is not a regular file"),  # said "does not exist"
    (["prune", "--checkpoint", "CKPT", "--method", "percentage", "--q", "50", "--eval-draws", "100000000"],
     "eval_draws"),  # was accepted: 10^8 paired evaluations  # was exit 139 in LAPACK (FCD)
    (["prune", "--checkpoint", "NAN", "--method", "percentage", "--q", "50", "--samples", "200"], "NaN or infinite"),
]


def _zeroed_idx(data: Path) -> Path:
    """Fashion-MNIST's idx files (Debian's copy) with the training images' magic number zeroed."""
    import gzip
    import shutil

    raw = data / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        with gzip.open(f"/usr/share/datasets/fashion-mnist/{name}.gz") as f, open(raw / name, "wb") as o:
            shutil.copyfileobj(f, o)
    images = bytearray((raw / "train-images-idx3-ubyte").read_bytes())
    images[:4] = b"\0\0\0\0"
    (raw / "train-images-idx3-ubyte").write_bytes(bytes(images))
    return data


def test_absurd_sizes_bad_files_and_misplaced_outputs_are_one_line_before_any_work(tmp_path):
    """Allocator tracebacks, outputs found wrong only after the work, an assert in torchvision's idx reader, a
    segfault on a diverged generator: each is one line now, and leaves no run (but the prune run that found the
    NaN images: FAILED, saying why)."""
    from mlflow.tracking import MlflowClient

    def nan_weights(state):
        with torch.no_grad():
            for p in state.generator.parameters():
                p.fill_(float("nan"))

    files = {"CKPT": _checkpoint(tmp_path), "GLZ": _glz(tmp_path, lambda h, p: None),
             "NAN": _checkpoint(tmp_path, nan_weights, "nan.pt"), "ZEROED": _zeroed_idx(tmp_path / "zeroed")}
    cases = []
    for i, (args, _) in enumerate(ABSURD):
        folder = tmp_path / f"case{i}"
        folder.mkdir()
        (folder / "adir.png").mkdir()
        (folder / "afile").write_text("not a folder")
        cases.append((folder, [str(files[a]) if a in files else a for a in args]))
    for (folder, args), result, (_, needle) in zip(cases, ganlab_batch(cases), ABSURD):
        _one_line_exit_2(result, needle)
        runs = []
        if (folder / "mlflow.db").exists():
            client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
            runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        if args[0] == "prune" and any(a.endswith("nan.pt") for a in args):  # NaN images: FAILED, why
            assert [r.info.status for r in runs] == ["FAILED"] and "NaN" in runs[0].data.tags["ganlab.failure"]
        else:
            assert not runs, args


def test_threads_beyond_the_cores_and_a_percent_sign_in_the_working_directory(tmp_path):
    """--threads 100000 crashed OpenMP (exit 139); a folder named runs%20q2 made MLflow retry opening
    'runs q2/mlflow.db' until killed (SQLAlchemy decodes %XX in a sqlite URI)."""
    folder = tmp_path / "runs%20q2"
    folder.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # the default store
    out = subprocess.run([sys.executable, "-m", "ganlab.cli", "evaluate", "--checkpoint", str(_checkpoint(tmp_path)),
                          "--samples", "150", "--threads", "100000"], cwd=folder, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "--threads 100000" in out.stderr and "cores" in out.stderr
    assert (folder / "mlflow.db").is_file() and not (tmp_path / "runs q2").exists()


def test_a_full_disk_is_one_line_and_leaves_no_partial_file(tmp_path):
    """A file size limit (RLIMIT_FSIZE, SIGXFSZ ignored) stands in for a full disk: writes fail with EFBIG as they
    would with ENOSPC, at the same places."""
    import resource
    import signal

    glz = _glz(tmp_path, lambda h, p: None)

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    out = subprocess.run([sys.executable, "-m", "ganlab.cli", "export", "--model", str(glz), "--out",
                          str(tmp_path / "g.onnx")], preexec_fn=limited, capture_output=True, text=True, cwd=tmp_path,
                         timeout=300)
    assert out.returncode == 1 and out.stderr.count("\n") == 1 and "file too large" in out.stderr, out.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hostile.glz"]  # no g.onnx, no temp file


def test_training_into_a_full_artifact_store_exits_1_in_one_line_and_leaves_its_run_failed(tmp_path):
    """A full disk is not bad input (shared/DESIGN.md: 2 is for usage, config, missing data, a bad checkpoint):
    `ganlab train` whose checkpoint does not fit exits 1, says so in one line, ends its run FAILED and keeps no
    partial checkpoint. The file size limit lets the store's database grow but not a 64-wide checkpoint."""
    import resource
    import signal

    from conftest import all_runs

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (3_000_000, 3_000_000))

    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    out = subprocess.run([sys.executable, "-m", "ganlab.cli", "train", "--dataset", "fashion-mnist", "--image-size",
                          "32", "--limit", "128", "--epochs", "1", "--ngf", "64", "--ndf", "64", "--no-progress",
                          "--no-system-metrics"], preexec_fn=limited, capture_output=True, text=True, cwd=tmp_path,
                         env=env, timeout=300)
    assert out.returncode == 1 and out.stderr.count("\n") == 1 and "file too large" in out.stderr, out.stderr[-2000:]
    [run] = all_runs(env["MLFLOW_TRACKING_URI"])
    assert run.info.status == "FAILED"
    kept = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix in (".pt", ".tmp") or ".tmp" in p.name]
    assert kept == []
