"""Issue 21 at tiny scale: a fair baseline, the recovery methods on the training loop's hooks, sparse-to-sparse
training, and the paired, noise-aware verdict."""

from __future__ import annotations

import copy

import pytest
import torch
from mlflow.tracking import MlflowClient

from ganlab.config import TrainConfig
from ganlab.gan.checkpoint import load_checkpoint, make_checkpoint, save_atomic
from ganlab.gan.data import TensorBatcher, load_images
from ganlab.gan.loop import create_state, restore_state, train_gan
from ganlab.gan.models import evaluation_noise, generate, prunable_layers
from ganlab.metrics.verdict import WITHIN, WORSE, judge
from ganlab.pruning.magnitude import make_permanent, percentage_prune, total_sparsity
from ganlab.pruning.recovery import Distillation, GradualPruning, SparseMasks, agp_sparsity, layer_fractions
from ganlab.runs.prune import paired_draws

from conftest import all_runs, run_main

CFG = dict(dataset="fashion-mnist", image_size=32, ngf=16, ndf=16, batch_size=64, limit=512, epochs=2, lr_d=4e-4,
           lr_g=8e-4)


@pytest.fixture(scope="module")
def images():
    return load_images("fashion-mnist", 32, limit=512, subset_seed=0).images


def _state(**changes):
    return create_state(TrainConfig(**{**CFG, **changes}).resolved(), torch.device("cpu"))


def _batcher(state, images):
    return TensorBatcher(images, state.config.batch_size, state.device, state.config.seed)


def _run_id(out: str) -> str:
    return out.strip().splitlines()[-1].split("run_id: ")[1]


@pytest.mark.parametrize("flags", [["--method", "sensitivity", "--s", "0"], ["--method", "percentage", "--q", "0"],
                                   ["--method", "channel", "--ratio", "0"]])
def test_a_null_prune_reproduces_the_dense_model(trained, flags):
    """BN recalibration runs on the dense reference too (same noise, same batches): pruning nothing scores 1."""
    uri, source = trained
    code, out, err = run_main(["prune", "--run-id", source, *flags, "--samples", "150", "--eval-draws", "2",
                               "--no-progress"])
    assert code == 0, err
    m = MlflowClient(uri).get_run(_run_id(out)).data.metrics
    for metric in ("uqi_mean", "ssim_mean", "msssim_mean"):
        assert m[metric] == pytest.approx(1.0, abs=1e-9)
    assert m["fcd"] == pytest.approx(m["dense_fcd"], rel=1e-9) and m["fcd_ratio"] == pytest.approx(1.0, rel=1e-9)
    history = MlflowClient(uri).get_metric_history(_run_id(out), "fcd_draw")
    assert sorted(h.step for h in history) == [0, 1] and history[0].value != history[1].value  # two real draws


def test_evaluation_draws_are_independent_and_draw_0_is_the_usual_noise():
    assert torch.equal(evaluation_noise(8, 4, 3), evaluation_noise(8, 4, 3, draw=0))
    a, b = evaluation_noise(8, 4, 3, draw=1), evaluation_noise(8, 4, 3, draw=2)
    assert not torch.equal(a, b) and not torch.equal(a, evaluation_noise(8, 4, 3))


def test_distillation_lowers_the_distance_to_the_dense_outputs(images):
    """The same pruned net fine-tuned for the same steps, with and without the L1 term to the dense outputs."""
    base = _state()
    list(train_gan(base, _batcher(base, images), 1, progress=False))
    dense = copy.deepcopy(base.generator).eval()
    noise = evaluation_noise(64, 100, 0)
    distances = {}
    for lam in (0.0, 100.0):
        state = restore_state(make_checkpoint(base) | {"config": base.config}, torch.device("cpu"))
        percentage_prune(state.generator, 80)
        state.make_optimizers()
        hooks = [Distillation(dense, lam)] if lam else []
        list(train_gan(state, _batcher(state, images), 2, hooks=hooks, progress=False))
        distances[lam] = float((generate(state.generator, noise) - generate(dense, noise)).abs().mean())
    assert distances[100.0] < 0.8 * distances[0.0], distances


def test_feature_distillation_refuses_other_widths(images):
    from ganlab.errors import ConfigError
    from ganlab.pruning.channel import channel_prune

    state = _state()
    teacher = copy.deepcopy(state.generator)
    channel_prune(state.generator, 0.5)
    state.make_optimizers()
    with pytest.raises(ConfigError, match="widths"):
        list(train_gan(state, _batcher(state, images), 1, hooks=[Distillation(teacher, 1.0, 1.0)], progress=False))


def test_agp_follows_the_cubic_schedule_and_reaches_its_final_sparsity_on_time(images):
    state = _state()
    steps, every = 4, 3
    finals = {"generator": layer_fractions(state.generator, "percentage", 80)}
    hook = GradualPruning({"generator": state.generator}, finals, steps, every)
    seen = []

    class Watch(GradualPruning.__mro__[1]):  # a plain Hook that records the sparsity after each step
        def after_step(self, st):
            seen.append((st.step, total_sparsity(st.generator)))

    list(train_gan(state, _batcher(state, images), 2, hooks=[hook, Watch()], progress=False))  # 16 steps
    for step, sparsity in seen:  # cuts at steps 0, 3, 6, 9: s_f (1 - (1 - k/n)^3) after the k-th
        k = min(step // every + 1, steps)
        assert sparsity == pytest.approx(0.8 * (1 - (1 - k / steps) ** 3), abs=2e-3), step
        assert agp_sparsity(step, 0.8, steps, every) == pytest.approx(0.8 * (1 - (1 - k / steps) ** 3))
    final_step = (steps - 1) * every  # the last cut: t0 + (n - 1) dt
    assert [s for step, s in seen if step >= final_step] == pytest.approx([0.8] * (len(seen) - final_step + 1),
                                                                         abs=1e-3)
    assert all(s < 0.8 - 1e-3 for step, s in seen if step < final_step)


def _masked_zero_counts(hook: SparseMasks, state) -> list[tuple[int, int]]:
    return [(int((m == 0).sum()), round(hook.sparsity * m.numel())) for m in hook.masks["generator"]]


def test_sparse_to_sparse_training_keeps_its_sparsity_exactly_and_resumes_bit_exact(images, tmp_path):
    def sparse(state, rule="rigl"):
        return SparseMasks({"generator": state.generator}, 0.8, rule, every=2, total_steps=12, seed=0)

    checks = []

    class Check(SparseMasks.__mro__[1]):
        def __init__(self, hook):
            self.hook = hook

        def after_step(self, st):
            for zeros, want in _masked_zero_counts(self.hook, st):
                checks.append(zeros == want)
            for m, (_, layer) in zip(self.hook.masks["generator"], prunable_layers(st.generator)):
                checks.append(bool((layer.weight.detach()[m == 0] == 0).all()))

    straight = _state()
    hook = sparse(straight)
    list(train_gan(straight, _batcher(straight, images), 2, hooks=[hook, Check(hook)], progress=False))
    assert checks and all(checks) and hook.updates >= 4
    assert total_sparsity(straight.generator) >= 0.8

    half = _state()
    list(train_gan(half, _batcher(half, images), 1, hooks=[sparse(half)], progress=False))
    path = save_atomic(make_checkpoint(half), tmp_path / "half.pt")
    resumed = restore_state(load_checkpoint(path), torch.device("cpu"))
    list(train_gan(resumed, _batcher(resumed, images), 2, hooks=[sparse(resumed)], progress=False))
    for a, b in zip(straight.generator.state_dict().values(), resumed.generator.state_dict().values()):
        assert torch.equal(a, b)


def test_set_and_rigl_regrow_differently(images):
    grown = {}
    for rule in ("set", "rigl"):
        state = _state()
        hook = SparseMasks({"generator": state.generator}, 0.8, rule, every=2, total_steps=12, seed=0)
        list(train_gan(state, _batcher(state, images), 1, hooks=[hook], progress=False))
        grown[rule] = torch.cat([m.flatten() for m in hook.masks["generator"]])
    assert not torch.equal(grown["set"], grown["rigl"])


def test_train_sparsity_from_the_cli_logs_a_sparse_generator(store, tmp_path):
    code, out, err = run_main(["train", "--dataset", "fashion-mnist", "--image-size", "32", "--limit", "256",
                               "--epochs", "1", "--batch-size", "64", "--ngf", "16", "--ndf", "16", "--sparsity",
                               "0.9", "--mask-update", "set", "--update-every", "1", "--no-progress"])
    assert code == 0, err
    client = MlflowClient(store)
    run_id = _run_id(out)
    assert client.get_run(run_id).data.params["sparsity"] == "0.9"
    ckpt = load_checkpoint(client.download_artifacts(run_id, "checkpoints/last.pt", str(tmp_path)))
    weights = [w for k, w in ckpt["generator"].items() if k.endswith("weight") and w.dim() == 4]
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert zeros >= round(0.9 * sum(w.numel() for w in weights)) - len(weights)
    assert set(ckpt["hooks"]["sparse"]) == {"masks", "rng", "updates"}


# ------------------------------------------------------------------------------------------- the verdict

def test_the_verdict_on_real_generators_itself_within_untrained_worse(trained_run, evaluator_32):
    from ganlab.runs.source import state_from_source

    uri, run_id, workdir = trained_run
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        state = state_from_source(run_id, workdir, "cpu", uri, with_optimizers=False)
    g = state.generator
    _, _, itself = paired_draws(g, copy.deepcopy(g), evaluator_32, 150, 3, seed=0)
    v = judge([itself["fcd"]], [itself["dense_fcd"]], [itself["coverage"]], [itself["dense_coverage"]])
    assert v.verdict == WITHIN and v.ratio == pytest.approx(1.0) and v.high == pytest.approx(1.0)
    untrained = _state(ngf=state.config.ngf).generator
    _, _, far = paired_draws(g, untrained, evaluator_32, 150, 3, seed=0)
    assert judge([far["fcd"]], [far["dense_fcd"]]).verdict == WORSE


# ------------------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("flags, message", [
    (["--method", "percentage", "--q", "50", "--finetune-epochs", "1", "--distill-out", "-1"], "distill_out"),
    (["--method", "percentage", "--q", "50", "--finetune-epochs", "1", "--schedule", "agp", "--prune-every", "100"],
     "schedule agp"),
    (["--method", "percentage", "--q", "50", "--eval-draws", "1"], "eval_draws"),
    (["--method", "channel", "--ratio", "0.5", "--finetune-epochs", "1", "--distill-feat", "1"], "widths"),
    (["--method", "percentage", "--q", "0", "--control"], "control needs finetune_epochs"),
    (["--method", "percentage", "--q", "50", "--distill-out", "10"], "fine-tuning settings"),
    (["--method", "sparse", "--sparsity", "1.0"], "sparsity"),
])
def test_bad_recovery_input_exits_2_without_a_run(trained, flags, message):
    uri, source = trained
    before = len(all_runs(uri))
    code, out, err = run_main(["prune", "--run-id", source, *flags, "--samples", "150", "--no-progress"])
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert len(all_runs(uri)) == before


@pytest.mark.parametrize("flags, message", [(["--sparsity", "1.0"], "sparsity"), (["--sparsity", "-0.1"], "sparsity"),
                                            (["--sparsity", "0.5", "--mask-update", "magic"], "mask_update"),
                                            (["--sparsity", "0.5", "--update-every", "0"], "update_every")])
def test_bad_sparse_training_input_exits_2_without_a_run(store, flags, message):
    code, out, err = run_main(["train", "--dataset", "fashion-mnist", "--image-size", "32", "--limit", "64",
                               "--epochs", "1", "--no-progress", *flags])
    assert code == 2 and message in err, err
    assert all_runs(store) == [] or len(all_runs(store)) == 0


def test_make_permanent_after_agp_keeps_the_zeros(images):
    state = _state()
    finals = {"generator": layer_fractions(state.generator, "percentage", 60)}
    list(train_gan(state, _batcher(state, images), 1,
                   hooks=[GradualPruning({"generator": state.generator}, finals, 2, 2)], progress=False))
    make_permanent(state.generator)
    assert total_sparsity(state.generator) == pytest.approx(0.6, abs=2e-3)


def test_agp_passes_are_logged_at_the_sparsity_they_were_scored_at(trained):
    """Issue 31: the study labelled AGP's early passes with the final sparsity. Each fine-tuning pass now logs
    finetune_sparsity beside finetune_fcd: below the target while AGP still cuts, the target at the end."""
    from mlflow.tracking import MlflowClient

    from conftest import run_main

    uri, source = trained
    code, out, err = run_main(["prune", "--run-id", source, "--method", "percentage", "--q", "80",
                               "--finetune-epochs", "3", "--schedule", "agp", "--samples", "150", "--eval-draws", "2",
                               "--no-progress"])
    assert code == 0, err
    run_id = out.split()[-1]
    at = [m.value for m in sorted(MlflowClient(uri).get_metric_history(run_id, "finetune_sparsity"),
                                  key=lambda m: m.step)]
    assert len(at) == 3 and at[0] < at[1] <= at[2] and at[0] < 0.75
    assert at[-1] == pytest.approx(0.8, abs=0.01)
