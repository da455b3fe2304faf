"""Hostile and absurd inputs (issue 24): a small file must not take the machine down or steer writes, and bad input
is one line with exit 2, found before any work starts. Peak memory is measured in the refusing process itself."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ganlab.compress import MAGIC, compress_generator
from ganlab.config import TrainConfig
from ganlab.models import build_models

# Run the CLI in a child that reports its own peak resident memory on the way out (MiB, on stderr's last line).
_PEAK = ("import atexit, resource, sys; atexit.register(lambda: print('peak_mib', "
         "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, file=sys.stderr)); "
         "from ganlab.cli import main; sys.exit(main(sys.argv[1:]))")
MEMORY_BOUND_MIB = 1536


def ganlab(*args: str, cwd: Path, env: dict | None = None, timeout: int = 300) -> tuple[int, str, str, int]:
    """(exit code, stdout, stderr without the peak line, peak MiB) of ``ganlab ARGS``."""
    out = subprocess.run([sys.executable, "-c", _PEAK, *args], cwd=cwd, capture_output=True, text=True,
                         timeout=timeout, env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{cwd}/mlflow.db",
                                               **(env or {})})
    lines = out.stderr.rstrip("\n").split("\n")
    peak = int(lines[-1].split()[1]) if lines and lines[-1].startswith("peak_mib") else -1
    return out.returncode, out.stdout, "\n".join(lines[:-1]), peak


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


@pytest.mark.parametrize("edit, needle", [
    (_wide, "parameters"), (_wide_ngf, "parameters"), (_same_payload_many_times, "twice"),
    (_foreign_scheme, "scheme"), (_unknown_field, "not ganlab's"), (_newer_version, "format 99")])
def test_a_hostile_compressed_file_is_refused_in_bounded_memory(tmp_path, edit, needle):
    path = _glz(tmp_path, edit)
    _one_line_exit_2(ganlab("generate", "--model", str(path), "--out", str(tmp_path / "g.png"), cwd=tmp_path),
                     needle)
    assert not (tmp_path / "g.png").exists()


def test_a_checkpoint_declaring_huge_widths_is_refused_before_the_net_is_built(tmp_path):
    from ganlab.checkpoint import make_checkpoint
    from ganlab.train import create_state

    ckpt = make_checkpoint(create_state(TrainConfig(image_size=32, ngf=8, ndf=8).resolved(), torch.device("cpu")))
    ckpt["widths"]["generator"] = [300000, 1, 1]
    torch.save(ckpt, tmp_path / "hostile.pt")
    _one_line_exit_2(ganlab("evaluate", "--checkpoint", str(tmp_path / "hostile.pt"), cwd=tmp_path), "parameters")


BILLION_LAUGHS = "kind: train\nname: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"l{i}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(9))
ANCHORED_CHOICES = ("kind: train\nname: t\nbase: {dataset: fashion-mnist}\nx: &a [1.0e-4, 2.0e-4, 3.0e-4, 4.0e-4]\n"
                    + "".join(f"y{i}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
                              f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(9))
                    + "search: {lr_d: {choice: *j}}\n")


@pytest.mark.parametrize("text, needle", [
    (BILLION_LAUGHS, "alias"), (ANCHORED_CHOICES, "alias"),
    (b"kind: train\nname: caf\xe9\n", "not UTF-8"),
    ("kind: train\nname: t\nresources: 5\n", "resources must be a mapping"),
    ("kind: train\nname: t\nsearch: 7\n", "search must be a mapping"),
    ("kind: train\nname: t\ninitial_points: [5]\n", "initial_points must be a list of mappings"),
    ("kind: prune\nname: p\ngrid: {sensitivity: {s: [abc]}}\n", "list of numbers"),
    ("kind: prune\nname: p\ngrid: {percentage: {q: [50]}, target: 3}\n", "grid.target"),
    ("kind: train\nname: t\nstorage_path: 5\n", "storage_path must be a string"),
    ("!!python/object/apply:os.system [echo pwned]\n", "not valid YAML"),
])
def test_a_hostile_or_mistyped_sweep_spec_is_one_line_in_bounded_memory(tmp_path, text, needle):
    spec = tmp_path / "spec.yaml"
    spec.write_bytes(text if isinstance(text, bytes) else text.encode())
    _one_line_exit_2(ganlab("sweep", "train", str(spec), cwd=tmp_path), needle)
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray_results").exists()


@pytest.mark.parametrize("broken, content, needle", [
    ("cpu_prune_finetune.yaml", "", "empty"),
    ("cpu_prune.yaml", "kind: prune\nname: p\ngrid: {percentage: {q: [500]}}\n", "q"),
    ("cpu_train.yaml", "[1, 2]\n", "mapping")])
def test_a_study_checks_every_spec_before_its_first_sweep(tmp_path, broken, content, needle):
    specs = tmp_path / "specs"
    specs.mkdir()
    good = {"cpu_train.yaml": "kind: train\nname: t\nbase: {dataset: fashion-mnist, epochs: 1}\nnum_samples: 1\n",
            "cpu_prune.yaml": "kind: prune\nname: p\ngrid: {percentage: {q: [50]}}\n",
            "cpu_prune_finetune.yaml": "kind: prune\nname: f\ngrid: {percentage: {q: [90]}, finetune_epochs: [1]}\n"}
    for name, text in {**good, broken: content}.items():
        (specs / name).write_text(text)
    code, out, err, _ = ganlab("study", "--scale", "cpu", "--specs", str(specs), "--out", str(tmp_path / "o"),
                               cwd=tmp_path, timeout=120)
    assert code == 2 and err.count("\n") == 0 and needle in err and broken in err, err[-2000:]
    assert "1/4" not in out and not (tmp_path / "mlflow.db").exists()  # no sweep started


def _checkpoint(tmp_path: Path, edit=None) -> Path:
    """A real (untrained, 32 px) ganlab checkpoint, optionally edited."""
    from ganlab.checkpoint import make_checkpoint
    from ganlab.train import create_state

    state = create_state(TrainConfig(image_size=32, ngf=8, ndf=8).resolved(), torch.device("cpu"))
    if edit is not None:
        edit(state)
    path = tmp_path / "model.pt"
    torch.save(make_checkpoint(state), path)
    return path


def test_a_diverged_generator_is_one_line_not_a_crash_and_its_prune_run_ends_failed_saying_why(tmp_path):
    def nan_weights(state):
        with torch.no_grad():
            for p in state.generator.parameters():
                p.fill_(float("nan"))

    ckpt = _checkpoint(tmp_path, nan_weights)
    _one_line_exit_2(ganlab("evaluate", "--checkpoint", str(ckpt), "--samples", "200", cwd=tmp_path),
                     "NaN or infinite")  # was exit 139 inside LAPACK during FCD
    code, _, err, _ = ganlab("prune", "--checkpoint", str(ckpt), "--method", "percentage", "--q", "50",
                             "--samples", "200", cwd=tmp_path)
    assert code == 2 and "NaN or infinite" in err and err.count("\n") == 0, err[-2000:]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.info.status for r in runs] == ["FAILED"] and "NaN" in runs[0].data.tags["ganlab.failure"]


@pytest.mark.parametrize("args, needle", [
    (["train", "--ngf", "100000000"], "parameters"),
    (["train", "--nz", "2000000000"], "parameters"),
    (["train", "--seed", "99999999999999999999999"], "seed"),
    (["evaluate", "--checkpoint", "CKPT", "--samples", "2000000000"], "samples"),
    (["generate", "--model", "CKPT", "--seed", "99999999999999999999999", "--out", "g.png"], "seed"),
    (["generate", "--model", "CKPT", "--out", "adir.png"], "is a directory"),
    (["export", "--run-id", "0123abcd", "--out", "adir.png"], "is a directory"),
    (["compress", "--checkpoint", "CKPT", "--out", "adir.png"], "is a directory"),
    (["analyze", "--sweep", "0123abcd", "--out", "afile"], "is a file"),
    (["train", "--data-dir", "afile"], "is a file"),
])
def test_absurd_sizes_and_misplaced_outputs_are_one_line_before_any_work(tmp_path, args, needle):
    (tmp_path / "adir.png").mkdir()
    (tmp_path / "afile").write_text("not a folder")
    ckpt = _checkpoint(tmp_path) if "CKPT" in args else None
    args = [str(ckpt) if a == "CKPT" else a for a in args]
    if args[0] == "generate":  # generate reads compressed files: make one from the checkpoint
        glz = _glz(tmp_path, lambda h, p: None)
        args[args.index("--model") + 1] = str(glz)
    _one_line_exit_2(ganlab(*args, cwd=tmp_path, timeout=120), needle)
    from mlflow.tracking import MlflowClient

    if (tmp_path / "mlflow.db").exists():  # no run was left behind, FAILED or otherwise
        client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
        assert not client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_threads_beyond_the_cores_are_bounded_by_them(tmp_path):
    code, _, err, _ = ganlab("evaluate", "--checkpoint", str(_checkpoint(tmp_path)), "--samples", "150",
                             "--threads", "100000", cwd=tmp_path)  # was exit 139 (OpenMP)
    assert code == 0 and "--threads 100000" in err and "cores" in err, err[-2000:]


def test_a_working_directory_with_a_percent_sign_holds_its_default_store(tmp_path):
    folder = tmp_path / "runs%20q2"
    folder.mkdir()
    env = {**os.environ}
    env.pop("MLFLOW_TRACKING_URI", None)
    out = subprocess.run([sys.executable, "-m", "ganlab.cli", "evaluate", "--checkpoint", str(_checkpoint(tmp_path)),
                          "--samples", "150"], cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]  # was: MLflow retried opening 'runs q2/mlflow.db' until killed
    assert (folder / "mlflow.db").is_file() and not (tmp_path / "runs q2").exists()


def test_an_idx_file_with_a_zeroed_magic_number_is_one_line(tmp_path):
    import gzip
    import shutil

    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        with gzip.open(f"/usr/share/datasets/fashion-mnist/{name}.gz") as f, open(raw / name, "wb") as o:
            shutil.copyfileobj(f, o)
    data = bytearray((raw / "train-images-idx3-ubyte").read_bytes())
    data[:4] = b"\0\0\0\0"
    (raw / "train-images-idx3-ubyte").write_bytes(bytes(data))
    _one_line_exit_2(ganlab("train", "--image-size", "32", "--limit", "64", "--epochs", "1", "--data-dir",
                            str(tmp_path / "data"), cwd=tmp_path), "corrupt")



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
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "file too large" in out.stderr, out.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hostile.glz"]  # no g.onnx, no temp file
