"""The recovery recipe's knobs (issue 31): each changes what it says. The adversarial weight (0: distillation
alone, D untouched), D's own learning-rate scale, a cosine learning-rate decay, ERK layer densities for sparse
training; and each is a flag, a grid key, a param and part of the run name."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from scipy.optimize import brentq

from ganlab.config import TrainConfig
from ganlab.errors import ConfigError
from ganlab.gan.data import TensorBatcher, load_images
from ganlab.gan.loop import Hook, create_state, train_gan
from ganlab.gan.models import prunable_layers
from ganlab.pruning.config import FINETUNE, PruneConfig
from ganlab.pruning.magnitude import percentage_prune
from ganlab.pruning.recovery import AdversarialWeight, CosineDecay, Distillation, SparseMasks, erk_densities
from ganlab.runs.finetune import Recovery
from ganlab.runs.prune import run_label

CFG = dict(dataset="fashion-mnist", image_size=32, ngf=16, ndf=16, batch_size=64, limit=256, epochs=1, lr_d=4e-4,
           lr_g=8e-4)


@pytest.fixture(scope="module")
def images():
    return load_images("fashion-mnist", 32, limit=256, subset_seed=0).images


def _state():
    return create_state(TrainConfig(**CFG).resolved(), torch.device("cpu"))


class Recorder(Hook):
    """Records each step's noise and G's output, to recompute the loss the loop reports."""

    name = "recorder"

    def __init__(self):
        self.seen = []

    def generator_loss(self, state, noise, fake):
        self.seen.append((noise.detach().clone(), fake.detach().clone()))


def test_adv_weight_0_leaves_d_untouched_and_the_loss_is_the_distillation_term_alone(images):
    state = _state()
    teacher = copy.deepcopy(state.generator).eval()
    percentage_prune(state.generator, 50)
    state.make_optimizers()
    d_before = {k: v.clone() for k, v in state.discriminator.state_dict().items()}  # weights and BN statistics
    g_before = [p.detach().clone() for p in state.generator.parameters()]
    recorder = Recorder()
    report = next(train_gan(state, TensorBatcher(images, 64, state.device, 0), 1, progress=False,
                            hooks=[Distillation(teacher, 10.0), AdversarialWeight(0.0), recorder]))
    for k, v in state.discriminator.state_dict().items():
        assert torch.equal(v, d_before[k]), k
    assert any(not torch.equal(p, q) for p, q in zip(state.generator.parameters(), g_before))
    assert math.isnan(report.metrics["loss_d"]) and not report.nonfinite
    # the first step's logged loss is 10 * |G(z) - G_dense(z)|_1 on that step's noise, nothing else
    noise, fake = recorder.seen[0]
    with torch.no_grad():
        want = 10.0 * (fake - teacher(noise)).abs().mean()
    assert report.steps[0][1]["loss_g"] == pytest.approx(float(want), rel=1e-5)


def test_adv_weight_scales_the_adversarial_term(images):
    losses = {}
    for weight in (1.0, 0.25):
        state = _state()
        hooks = [AdversarialWeight(weight)] if weight != 1.0 else []
        report = next(train_gan(state, TensorBatcher(images, 64, state.device, 0), 1, progress=False, hooks=hooks))
        losses[weight] = report.steps[0][1]["loss_g"]  # same seed, same first step: only the factor differs
    assert losses[0.25] == pytest.approx(0.25 * losses[1.0], rel=1e-5)


def test_cosine_decay_follows_torchs_schedule_to_zero(images):
    state = _state()
    steps = len(TensorBatcher(images, 64, state.device, 0))
    hook = CosineDecay(steps)
    list(train_gan(state, TensorBatcher(images, 64, state.device, 0), 1, progress=False, hooks=[hook]))
    assert state.opt_g.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    half = CosineDecay(2 * steps)
    state = _state()
    list(train_gan(state, TensorBatcher(images, 64, state.device, 0), 1, progress=False, hooks=[half]))
    assert state.opt_g.param_groups[0]["lr"] == pytest.approx(8e-4 / 2, rel=1e-6)
    assert state.opt_d.param_groups[0]["lr"] == pytest.approx(4e-4 / 2, rel=1e-6)


def _reference_erk(shapes, sparsity):
    """ERK by its definition: eps solved numerically (scipy) with densities capped at 1."""
    sizes = np.array([math.prod(s) for s in shapes], float)
    raw = np.array([sum(s) / math.prod(s) for s in shapes])
    eps = brentq(lambda e: np.minimum(e * raw, 1).dot(sizes) - (1 - sparsity) * sizes.sum(), 1e-12, 1e12)
    return np.minimum(eps * raw, 1)


@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.98])
def test_erk_densities_match_the_definition_and_keep_the_total(sparsity):
    g = _state().generator
    shapes = [tuple(layer.weight.shape) for _, layer in prunable_layers(g)]
    got = np.array(erk_densities(shapes, sparsity))
    assert got == pytest.approx(_reference_erk(shapes, sparsity), rel=1e-9)
    sizes = np.array([math.prod(s) for s in shapes])
    assert got.dot(sizes) / sizes.sum() == pytest.approx(1 - sparsity, rel=1e-9)
    assert got.max() <= 1 and len(set(np.round(got, 6))) > 1  # not uniform


def test_sparse_masks_with_erk_give_each_layer_its_density(images):
    state = _state()
    nets = {"generator": state.generator}
    hook = SparseMasks(nets, 0.9, "rigl", 10, 100, seed=0, density="erk")
    hook.before_train(state)
    shapes = [tuple(layer.weight.shape) for _, layer in prunable_layers(state.generator)]
    want = erk_densities(shapes, 0.9)
    got = hook.densities()["generator"]
    sizes = [math.prod(s) for s in shapes]
    for g_, w, n in zip(got, want, sizes):
        assert abs(g_ - w) <= 1 / n + 1e-12  # rounded to whole weights
    other = _state()
    uniform = SparseMasks({"generator": other.generator}, 0.9, "rigl", 10, 100, seed=0)
    uniform.before_train(other)
    assert max(uniform.densities()["generator"]) - min(uniform.densities()["generator"]) < 0.005  # whole weights
    assert max(got) - min(got) > 0.1


def test_the_new_fields_are_params_run_names_and_recipe_keys():
    p = PruneConfig(method="percentage", q=90, finetune_epochs=1, distill_out=100, adv_weight=0.0, d_lr_scale=0.1,
                    lr_schedule="cosine").validate()
    params = p.to_params()
    assert params["adv_weight"] == 0.0 and params["d_lr_scale"] == 0.1 and params["lr_schedule"] == "cosine"
    label = run_label(p, "abcd1234")
    assert "adv×0" in label and "D lr×0.1" in label and "cosine" in label
    assert {"adv_weight", "d_lr_scale", "lr_schedule"} <= set(FINETUNE)
    sparse = PruneConfig(method="sparse", sparsity=0.9, density="erk").validate()
    assert sparse.to_params()["density"] == "erk" and "erk" in run_label(sparse, "abcd")
    from sweeps.spec import spec_from_dict

    spec = spec_from_dict({"kind": "prune", "name": "r", "grid": {
        "percentage": {"q": [80]}, "finetune_epochs": [1],
        "recovery": [{"distill_out": 100, "adv_weight": 0}, {"d_lr_scale": 0.5, "lr_schedule": "cosine"}],
        "sparse": {"sparsity": [0.9]}, "density": ["uniform", "erk"]}})
    points = spec.prune_points()
    assert {(q.adv_weight, q.d_lr_scale, q.lr_schedule) for q in points if q.method == "percentage"} == \
        {(0.0, 1.0, "constant"), (1.0, 0.5, "cosine")}
    assert {q.density for q in points if q.method == "sparse"} == {"uniform", "erk"}


def test_recovery_hooks_slow_d_alone(images):
    state = _state()
    p = PruneConfig(method="percentage", q=50, finetune_epochs=1, lr_schedule="cosine", adv_weight=0.5).validate()
    recovery = Recovery(state, p, TensorBatcher(images, 64, state.device, 0), None, state.generator, None)
    kinds = [type(h).__name__ for h in recovery.hooks({}, 1)]
    assert kinds == ["AdversarialWeight", "CosineDecay"]  # nothing else: no run to log to, no distillation


@pytest.mark.parametrize("fields, message", [
    (dict(finetune_epochs=1, adv_weight=0.0), "adv_weight 0 leaves the generator no loss"),
    (dict(adv_weight=0.5), "fine-tuning settings"),
    (dict(finetune_epochs=1, d_lr_scale=0.0), "d_lr_scale"),
    (dict(finetune_epochs=1, lr_schedule="step"), "lr_schedule"),
    (dict(density="erk"), "density"),
])
def test_bad_recipe_settings_name_the_problem(fields, message):
    with pytest.raises(ConfigError, match=message):
        PruneConfig(method="percentage", q=50, **fields).validate()


def test_sparse_training_reads_the_dense_sources_own_images_whatever_a_sweep_fine_tunes_on(trained, evaluator_32):
    """Method sparse is judged against its dense source: it trains on the same images (the source's 3,072-image
    subset), not on the smaller fine-tuning subset a sweep hands every trial."""
    from mlflow.tracking import MlflowClient

    from ganlab.runs.prune import PruneInputs, prune_run
    from ganlab.tracking.store import RunContext

    uri, source = trained
    subset = load_images("fashion-mnist", 32, limit=256, subset_seed=0)  # a sweep's finetune_images
    pcfg = PruneConfig(method="sparse", sparsity=0.5, samples=129, eval_draws=2)
    result = prune_run(source, pcfg, RunContext.here(progress=False), PruneInputs(evaluator_32, subset))
    client = MlflowClient(uri)
    [dense_images] = client.get_run(source).inputs.dataset_inputs
    [sparse_images] = client.get_run(result.run_id).inputs.dataset_inputs
    assert sparse_images.dataset.digest == dense_images.dataset.digest != subset.digest
    assert client.get_run(result.run_id).data.params["sparse_steps"] == "96"  # the source's steps
