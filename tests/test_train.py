"""Training: finite losses, checkpoints, bit-exact resume, the MLflow run, bad input -> exit 2 (gan/loop.py,
runs/train.py and the hooks that log each epoch, runs/tracking_hooks.py)."""

import dataclasses
import signal
import subprocess
import sys

import pytest
import torch
from mlflow.tracking import MlflowClient

from ganlab.config import TrainConfig
from ganlab.gan.checkpoint import load_checkpoint, make_checkpoint, save_atomic
from ganlab.gan.data import TensorBatcher, load_images
from ganlab.gan.loop import create_state, restore_state, train_gan

from conftest import TINY_TRAIN, all_runs, run_main

TINY = TrainConfig(dataset="fashion-mnist", image_size=32, ngf=8, ndf=8, batch_size=32, epochs=2, limit=96)




@pytest.fixture(scope="module")
def tiny_images():
    return load_images("fashion-mnist", 32, limit=96).images


def _train(cfg, images, state=None, until=None):
    state = state or create_state(cfg, torch.device("cpu"))
    reports = list(train_gan(state, TensorBatcher(images, cfg.batch_size, state.device, cfg.seed),
                             until or cfg.epochs, progress=False))
    return state, reports


def test_steps_give_finite_losses_and_a_loadable_checkpoint(tiny_images, tmp_path):
    cfg = TINY.resolved()
    state, reports = _train(cfg, tiny_images, until=1)
    r = reports[0]
    assert len(r.steps) == 3 and r.steps[0][0] == 1
    assert all(torch.isfinite(torch.tensor(list(m.values()))).all() for _, m in r.steps)
    assert 0 < r.metrics["d_x"] < 1 and r.metrics["images_per_sec"] > 0
    path = save_atomic(make_checkpoint(state), tmp_path / "c.pt")
    ckpt = load_checkpoint(path)
    assert ckpt["epoch"] == 1 and ckpt["config"] == cfg
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write left no temp file


class _InterruptedFile:
    """A file whose third write lands half its bytes and then gets Ctrl-C, as a signal would."""

    def __init__(self, f):
        self.f, self.writes = f, 0

    def write(self, data):
        self.writes += 1
        if self.writes == 3:
            self.f.write(bytes(data)[: len(data) // 2])
            raise KeyboardInterrupt
        return self.f.write(data)

    def flush(self):
        self.f.flush()


def test_an_interrupt_inside_torch_save_stays_an_interrupt_and_leaves_no_file(tmp_path):
    # torch's zip writer fails in __exit__ on the half-written record ("unexpected pos"); that
    # RuntimeError must not replace the KeyboardInterrupt, or Ctrl-C ends a run FAILED, exit 1
    from ganlab.files import write_atomic

    with pytest.raises(KeyboardInterrupt):
        write_atomic(lambda f: torch.save({"w": torch.randn(1000)}, _InterruptedFile(f)), tmp_path / "c.pt")
    assert list(tmp_path.iterdir()) == []


def test_same_seed_same_weights_on_cpu(tiny_images):
    cfg = TINY.resolved()
    a, _ = _train(cfg, tiny_images, until=1)
    b, _ = _train(cfg, tiny_images, until=1)
    assert all(torch.equal(x, y) for x, y in zip(a.generator.state_dict().values(), b.generator.state_dict().values()))


def test_resume_is_bit_exact_on_cpu(tiny_images, tmp_path):
    cfg = TINY.resolved()
    full, full_reports = _train(cfg, tiny_images)
    half, _ = _train(cfg, tiny_images, until=1)
    path = save_atomic(make_checkpoint(half), tmp_path / "half.pt")
    torch.manual_seed(12345)  # disturb the global RNG: resume must restore what it needs
    resumed, resumed_reports = _train(cfg, tiny_images, state=restore_state(load_checkpoint(path), torch.device("cpu")))
    for net in ("generator", "discriminator"):
        a, b = getattr(full, net).state_dict(), getattr(resumed, net).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), net
    assert full_reports[-1].steps == resumed_reports[-1].steps


def test_train_cli_logs_a_complete_mlflow_run(store, tmp_path):
    code, out, err = run_main(["train", *TINY_TRAIN])
    assert code == 0, err
    last = out.strip().splitlines()[-1]
    assert last.startswith("run_id: ")
    run = MlflowClient(store).get_run(last.split()[-1])
    p = run.data.params
    assert p["dataset"] == "fashion-mnist" and p["epochs"] == "1" and p["lr_d"] == "0.0001" and p["lr_g"] == "0.0003"
    assert p["limit"] == "256" and p["beta1"] == "0.5" and p["batch_size"] == "64"
    assert run.data.tags["ganlab.kind"] == "train" and run.data.tags["ganlab.status"] == "ok"
    client = MlflowClient(store)
    history = client.get_metric_history(run.info.run_id, "loss_d")
    assert [m.step for m in history] == [1, 2, 3, 4]  # one point per step (256 images / 64)
    for key in ("loss_g", "d_x", "d_g_z", "images_per_sec"):
        assert key in run.data.metrics
    files = {a.path for d in ("samples", "checkpoints") for a in client.list_artifacts(run.info.run_id, d)}
    assert files == {"samples/epoch_001.png", "checkpoints/last.pt"}
    local = client.download_artifacts(run.info.run_id, "checkpoints/last.pt", str(tmp_path))
    assert load_checkpoint(local)["epoch"] == 1


def test_resume_from_a_run_id_continues_the_epochs(store):
    code, out, _ = run_main(["train", *TINY_TRAIN])
    first = out.strip().split()[-1]
    code, out, err = run_main(["train", "--resume", first, "--epochs", "2", "--no-progress"])
    assert code == 0, err
    run = MlflowClient(store).get_run(out.strip().split()[-1])
    assert run.data.tags["ganlab.resumed_from"] == first
    assert [m.step for m in MlflowClient(store).get_metric_history(run.info.run_id, "loss_d")] == [5, 6, 7, 8]


@pytest.mark.parametrize("args, needle", [
    (["--dataset", "mnist"], "dataset='mnist'"),
    (["--image-size", "48"], "image_size=48"),
    (["--lr-d", "-0.1"], "lr_d=-0.1"),
    (["--epochs", "0"], "epochs=0"),
    (["--label-smoothing", "1.5"], "label_smoothing=1.5"),
    (["--bogus-flag"], "unrecognized arguments: --bogus-flag"),
    (["--eval-every", "1", "--eval-samples", "1"], "eval_samples=1 is out of range"),
    (["--device", "cuda"], "no CUDA GPU is visible"),
    (["--threads", "0"], "threads=0 is out of range"),
    (["--patience", "2"], "patience needs eval_every"),
    (["--rewind-epoch", "1"], "rewind_epoch=1 is out of range"),  # TINY_TRAIN trains 1 epoch
])
def test_bad_train_input_exits_2_with_one_line_and_no_run(store, args, needle):
    code, out, err = run_main(["train", *TINY_TRAIN, *args])
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err
    assert all_runs(store) == []


def test_missing_data_offline_exits_2_without_a_run(store, tmp_path, monkeypatch):
    monkeypatch.setenv("GANLAB_FASHION_MNIST_SYSTEM_DIR", str(tmp_path / "none"))
    code, _, err = run_main(["train", *TINY_TRAIN, "--data-dir", str(tmp_path / "empty")])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "fashion-mnist not found" in err
    assert not (tmp_path / "mlflow.db").exists()  # the store was not even created


@pytest.mark.parametrize("kind", ["corrupt", "foreign", "code"])
def test_bad_checkpoint_exits_2_without_a_run(store, tmp_path, kind):
    path = tmp_path / f"{kind}.pt"
    if kind == "corrupt":
        path.write_bytes(b"\x80\x04not a checkpoint at all")
    elif kind == "foreign":
        torch.save({"state_dict": {"w": torch.zeros(3)}}, path)
    else:  # a pickle that would run code if loaded without weights_only
        import pickle

        class Evil:
            def __reduce__(self):
                return (print, ("pwned",))

        path.write_bytes(pickle.dumps({"x": Evil()}))
    code, out, err = run_main(["train", "--resume", str(path), "--no-progress"])
    assert code == 2 and "pwned" not in out
    assert len(err.strip().splitlines()) == 1 and "checkpoint" in err
    assert all_runs(store) == []


def test_mismatched_checkpoint_architecture_exits_2(store, tmp_path, tiny_images):
    cfg = TINY.resolved()
    state, _ = _train(cfg, tiny_images, until=1)
    ckpt = make_checkpoint(state)
    ckpt["config"]["ngf"] = 16  # claims a wider generator than its weights
    del ckpt["widths"]  # as a checkpoint from before widths were stored: the config alone says ngf 16
    save_atomic(ckpt, tmp_path / "m.pt")
    code, _, err = run_main(["train", "--resume", str(tmp_path / "m.pt"), "--no-progress"])
    assert code == 2 and "does not match" in err and all_runs(store) == []


def test_real_process_exit_code_and_no_traceback(store):
    proc = subprocess.run([sys.executable, "-m", "ganlab.cli", "train", "--dataset", "svhn"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert "dataset='svhn' is not valid; choose one of: fashion-mnist, cifar10" in proc.stderr


def test_resume_with_eval_every_scores_with_the_runs_own_dataset_and_size(store, cifar_dir, tmp_path, monkeypatch):
    # a 32 px CIFAR-10 run resumed with --eval-every: the evaluator must be the CIFAR-10 32 px one (it
    # was built from the CLI defaults, Fashion-MNIST 64 px: a wrong FCD, or a crash for CIFAR-10)
    monkeypatch.setenv("GANLAB_CACHE_DIR", str(tmp_path / "cache"))  # the fixture's classifier stays here
    tiny = ["--dataset", "cifar10", "--image-size", "32", "--batch-size", "50", "--ngf", "8", "--ndf", "8",
            "--data-dir", str(cifar_dir), "--no-progress"]
    code, out, err = run_main(["train", *tiny, "--epochs", "1"])
    assert code == 0, err
    first = out.split()[-1]
    code, out, err = run_main(["train", "--resume", first, "--epochs", "2", "--eval-every", "1",
                               "--eval-samples", "150", "--data-dir", str(cifar_dir), "--no-progress"])
    assert code == 0, err
    client = MlflowClient(store)
    run_id = out.split()[-1]
    assert [m.step for m in client.get_metric_history(run_id, "fcd")] == [2]
    classifiers = sorted(p.name for p in (tmp_path / "cache" / "classifiers").iterdir())
    assert classifiers == ["cifar10-32px-v2.pt"]  # no Fashion-MNIST 64 px classifier was built
    # the logged fcd is the one the run's own evaluator gives its checkpoint
    from ganlab.metrics.distribution import Evaluator
    from ganlab.runs.source import state_from_source

    g = state_from_source(run_id, tmp_path / "dl", "cpu").generator
    evaluator = Evaluator.for_dataset("cifar10", 32, data_dir=cifar_dir, progress=False)
    assert client.get_run(run_id).data.metrics["fcd"] == pytest.approx(
        evaluator.evaluate_generator(g, 150, seed=0)["fcd"], rel=1e-6)


@pytest.mark.parametrize("args, needle", [
    (["--image-size", "64"], "image_size=64 conflicts with the checkpoint's image_size=32"),
    (["--dataset", "cifar10"], "dataset='cifar10' conflicts"),
    (["--epochs", "1"], "the checkpoint has 1 epoch(s) done"),
])
def test_resume_refuses_a_conflicting_config_without_a_run(store, args, needle):
    code, out, _ = run_main(["train", *TINY_TRAIN])
    first = out.split()[-1]
    before = len(all_runs(store))
    code, _, err = run_main(["train", "--resume", first, *args, "--no-progress"])
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
    assert len(all_runs(store)) == before


def _running_runs(db) -> int:
    import sqlite3

    if not db.exists():
        return 0
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
        try:
            return con.execute("select count(*) from runs where status = 'RUNNING'").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


@pytest.mark.parametrize("sig, code, word", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")])
def test_a_signal_ends_the_run_killed_removes_temp_files_and_exits_128_plus_n(tmp_path, sig, code, word):
    import os
    import time

    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "TMPDIR": str(tmp_path / "tmp")}
    proc = subprocess.Popen([sys.executable, "-m", "ganlab.cli", "train", *TINY_TRAIN, "--limit", "3072",
                             "--epochs", "50"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            # a shell's background job inherits SIGINT ignored (and so would ganlab, rightly)
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while _running_runs(tmp_path / "mlflow.db") == 0:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-2000:]
        time.sleep(0.3)
    time.sleep(1.0)  # into the training loop
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err[-2000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and word in lines[0] and "Traceback" not in err, err[-2000:]
    runs = all_runs(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert len(runs) == 1 and runs[0].info.status == "KILLED"
    assert not [p for p in (tmp_path / "tmp").iterdir() if p.name.startswith("ganlab-")]


def test_concurrent_first_use_of_a_store_creates_it_once(tmp_path):
    # several commands started together on a store that does not exist yet: one creates and
    # migrates it, the others wait (they crashed in MLflow's schema migration before)
    code = ("from ganlab.tracking.store import ganlab_run\n"
            "with ganlab_run('evaluate', params={'k': 1}) as run:\n    print(run.run_id)\n")
    env = {**__import__("os").environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [err[-800:] for _, err in results]
    assert len({out.strip() for out, _ in results}) == 4
    assert len(all_runs(env["MLFLOW_TRACKING_URI"])) == 4


def test_a_store_in_a_missing_directory_or_a_deleted_experiment_exits_2(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'nope' / 'mlflow.db'}")
    code, _, err = run_main(["train", *TINY_TRAIN])
    assert code == 2 and "does not exist" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "nope").exists()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(uri)
    client.delete_experiment(client.create_experiment("gone"))
    code, _, err = run_main(["train", *TINY_TRAIN, "--experiment", "gone"])
    assert code == 2 and "'gone' was deleted" in err and len(err.strip().splitlines()) == 1
    assert all_runs(uri, "gone") == []


def test_a_reopened_run_never_logs_a_step_or_an_epoch_twice(store, tmp_path):
    # A Tune trial restored from a checkpoint older than what its MLflow run holds (the driver died
    # between logging and Tune's snapshot) trains those epochs again: they must not be logged again.
    import shutil

    from ganlab.runs.source import resolve_checkpoint
    from ganlab.runs.train import train_run
    from ganlab.tracking.store import RunContext

    cfg = {"image_size": 32, "limit": 256, "epochs": 1, "batch_size": 64, "ngf": 8, "ndf": 8}
    first = train_run(cfg, RunContext.here(progress=False))
    stale = shutil.copy(resolve_checkpoint(first.run_id, tmp_path / "dl"), tmp_path / "epoch1.pt")
    train_run({"epochs": 2}, RunContext.here(progress=False), resume=str(stale), run_id=first.run_id)
    # epoch 2 again, then 3
    train_run({"epochs": 3}, RunContext.here(progress=False), resume=str(stale), run_id=first.run_id)
    client = MlflowClient(store)
    assert [m.step for m in client.get_metric_history(first.run_id, "loss_d")] == list(range(1, 13))
    assert [m.step for m in client.get_metric_history(first.run_id, "images_per_sec")] == [1, 2, 3]
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["ganlab.resumed_epoch"] == "1"


def test_bf16_autocast_and_channels_last_train_on_the_cpu_and_the_checkpoint_loads_anywhere(store, tmp_path):
    # the GPU paths run on the CPU too: bf16 autocast with the loss on logits, channels-last tensors
    from ganlab.gan.models import Generator

    code, out, err = run_main(["train", *TINY_TRAIN, "--amp", "--channels-last", "--threads", "1"])
    assert code == 0, err
    assert torch.get_num_threads() == 1  # --threads set torch's intra-op threads
    run = MlflowClient(store).get_run(out.split()[-1])
    assert run.data.params["amp"] == "True" and run.data.params["channels_last"] == "True"
    assert all(v == v and abs(v) < 50 for k, v in run.data.metrics.items() if k in ("loss_d", "loss_g"))
    history = MlflowClient(store).get_metric_history(run.info.run_id, "loss_d")
    assert len(history) == 4 and all(torch.isfinite(torch.tensor(m.value)) for m in history)
    path = MlflowClient(store).download_artifacts(run.info.run_id, "checkpoints/last.pt", str(tmp_path))
    ckpt = load_checkpoint(path)  # map_location=cpu, weights only: a CUDA checkpoint loads here the same way
    assert ckpt["config"].amp is True
    g = Generator(100, 16, 1, 32)
    g.load_state_dict(ckpt["generator"])  # channels-last tensors load into a contiguous model
    noise = torch.randn(4, 100, 1, 1)
    state = restore_state(ckpt, torch.device("cpu"))
    with torch.no_grad():
        assert torch.allclose(g.eval()(noise), state.generator.eval()(noise))
    # left to the default, they are decided by the device (off on the CPU) and logged as decided
    code, out, err = run_main(["train", *TINY_TRAIN])
    params = MlflowClient(store).get_run(out.split()[-1]).data.params
    assert params["amp"] == "False" and params["channels_last"] == "False" and params["compile"] == "False"


@pytest.mark.slow  # 17 s of compiling; --compile is opt-in and pays on GPUs
def test_torch_compile_trains_to_finite_losses_on_the_cpu(tiny_images):
    # inductor compiles the forward passes with the machine's C++ compiler (~25 s on 2 cores)
    import dataclasses

    cfg = dataclasses.replace(TINY, compile=True, amp=True).resolved()
    state, reports = _train(cfg, tiny_images, until=1)
    assert all(torch.isfinite(torch.tensor(list(m.values()))).all() for _, m in reports[0].steps)


def test_plateau_stops_at_the_patience_th_evaluation_without_an_improvement():
    from ganlab.gan.health import Plateau

    p = Plateau(patience=2)
    assert [p.update(v) for v in (5.0, 4.0, 4.5, 3.9, 3.9, float("nan"))] == [False, False, False, False, False, True]
    assert p.best == 3.9
    assert not any(Plateau(patience=0).update(v) for v in (1.0, 2.0, 3.0))


def test_patience_ends_the_run_where_the_plateau_says(store):
    # whatever fcd does, the run must end exactly at the first plateau before its last epoch, and say so
    from ganlab.gan.health import Plateau

    code, out, err = run_main(["train", *TINY_TRAIN, "--epochs", "8", "--eval-every", "1", "--eval-samples", "150",
                               "--patience", "1", "--lr-d", "2e-3", "--lr-g", "2e-3"])
    assert code == 0, err
    client = MlflowClient(store)
    run_id = out.split()[-1]
    fcd = [m.value for m in sorted(client.get_metric_history(run_id, "fcd"), key=lambda m: m.step)]
    rule = Plateau(patience=1)
    stopped_at = next((e for e, v in enumerate(fcd, 1) if rule.update(v) and e < 8), None)
    assert len(fcd) == (stopped_at or 8)
    assert ("ganlab.stopped_early" in client.get_run(run_id).data.tags) == (stopped_at is not None)


def test_a_run_names_its_dataset_and_its_experiment_opens_on_model_training(trained):
    import json

    from mlflow.tracking import MlflowClient

    from ganlab.gan.data import load_images

    uri, run_id = trained
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    (dataset_input,) = run.inputs.dataset_inputs  # the runs table's Dataset column
    dataset = dataset_input.dataset
    expected = load_images("fashion-mnist", 32, limit=3072, subset_seed=0)  # what TINY_TRAIN --limit 3072 trains on
    assert dataset.name == "fashion-mnist-train-32px-3072" and dataset.digest == expected.digest
    assert json.loads(dataset.profile) == {"split": "train", "image_size": 32, "channels": 1, "num_images": 3072,
                                           "subset": "3072 drawn with seed 0"}
    assert {t.key: t.value for t in dataset_input.tags} == {"mlflow.data.context": "train"}
    other = load_images("fashion-mnist", 32, limit=3072, subset_seed=1)
    assert other.digest != expected.digest  # the digest tells subsets apart
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_a_fractional_gpu_trial_is_held_to_its_share_of_the_gpu_memory():
    import subprocess
    import sys

    from ganlab.device import gpu_memory_share, limit_gpu_memory

    assert gpu_memory_share(0.25) == 0.25 and gpu_memory_share(0.5) == 0.5  # four / two trials per GPU
    assert gpu_memory_share(0.0) is None and gpu_memory_share(1.0) is None and gpu_memory_share(2.0) is None
    if not torch.cuda.is_available():
        assert limit_gpu_memory(0.25) is None  # no GPU: nothing to cap
        return
    # on a GPU: a process capped at a quarter cannot allocate a third of the GPU, an uncapped one can
    code = ("import sys, torch\nfrom ganlab.device import limit_gpu_memory\nshare = float(sys.argv[1])\n"
            "if share < 1: assert limit_gpu_memory(share) == share\n"
            "total = torch.cuda.get_device_properties(0).total_memory\n"
            "try:\n    torch.empty(int(total / 3), dtype=torch.uint8, device='cuda')\nexcept torch.OutOfMemoryError:\n"
            "    sys.exit(3)\n")
    assert subprocess.run([sys.executable, "-c", code, "0.25"], timeout=120).returncode == 3
    assert subprocess.run([sys.executable, "-c", code, "1"], timeout=120).returncode == 0


def test_a_resumed_run_continues_its_plateau_count_exactly(store, tmp_path):
    """The plateau's best and count live in the checkpoint (the evaluation hook's state): a run that had gone one
    evaluation without improving, resumed with patience 2, stops at its first evaluation without improving."""
    from ganlab.gan.health import Plateau

    code, out, err = run_main(["train", *TINY_TRAIN, "--epochs", "2", "--eval-every", "1", "--eval-samples", "150",
                               "--patience", "5"])
    assert code == 0, err
    client = MlflowClient(store)
    run_id = out.split()[-1]
    ckpt = load_checkpoint(client.download_artifacts(run_id, "checkpoints/last.pt", str(tmp_path)))
    fcd = [m.value for m in sorted(client.get_metric_history(run_id, "fcd"), key=lambda m: m.step)]
    rule = Plateau(patience=5)
    for value in fcd:
        rule.update(value)
    assert ckpt["hooks"]["evaluation"] == {"best": rule.best, "stale": rule.stale}
    ckpt["hooks"]["evaluation"] = {"best": 0.0, "stale": 1}  # no fcd beats 0: every evaluation is stale
    ckpt["config"] = dataclasses.asdict(ckpt["config"])
    path = save_atomic(ckpt, tmp_path / "stale.pt")
    code, out, err = run_main(["train", "--resume", str(path), "--epochs", "6", "--patience", "2", "--no-progress"])
    assert code == 0, err
    resumed = out.split()[-1]
    assert len(client.get_metric_history(resumed, "fcd")) == 1  # epoch 3 made it 2 stale evaluations: stop
    assert "stopped at epoch 3" in client.get_run(resumed).data.tags["ganlab.stopped_early"]


def test_a_train_runs_params_read_back_to_its_config():
    """A pruning sweep reads its sources' configs from their params (no checkpoint download)."""
    cfg = TrainConfig(dataset="fashion-mnist", image_size=32, ngf=16, limit=256, rewind_epoch=None, amp=True,
                      lr_d=3e-4, sparsity=0.5, mask_update="rigl").resolved()
    params = {k: str(v) for k, v in cfg.to_params().items()}  # MLflow keeps strings
    assert TrainConfig.from_params(params) == cfg
