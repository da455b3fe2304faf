"""Sensitivity and percentage pruning: the seed's reference points, masks, tables, sizes."""

import math

import pytest
import torch

from ganlab.config import TrainConfig
from ganlab.errors import ConfigError
from ganlab.gan.models import Generator, build_models, prunable_layers
from ganlab.pruning.magnitude import (
    PruneConfig,
    dense_size_bytes,
    make_permanent,
    percentage_prune,
    sensitivity_prune,
    sparse_size_bytes,
    sparsity_table,
    total_sparsity,
)


def fresh_generator(size=64, seed=0):
    torch.manual_seed(seed)
    return build_models(TrainConfig(image_size=size).resolved())[0]


@pytest.mark.parametrize("s", [0.25, 0.5, 0.75, 1.0, 1.25])
def test_sensitivity_follows_erf_on_gaussian_weights(s):
    g = sensitivity_prune(fresh_generator(), s)
    assert total_sparsity(g) == pytest.approx(math.erf(s / math.sqrt(2)), abs=0.005)
    for _, layer in prunable_layers(g):  # and per layer: |w| < s * sigma of that layer
        w = layer.weight_orig.detach()
        expected = float((w.abs() < s * w.std(correction=0)).float().mean())
        assert float((layer.weight == 0).float().mean()) == pytest.approx(expected, abs=1e-9)


def test_sensitivity_on_a_trained_generator_is_close_to_the_seed(trained_run, tmp_path, monkeypatch):
    # The seed's trained nets gave 0.208/0.401/0.566/0.698/0.798; trained weights stay near-Gaussian.
    from ganlab.runs.source import state_from_source

    uri, run_id, _ = trained_run
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    trained = state_from_source(run_id, tmp_path, "cpu").generator
    fresh = build_models(trained_config := TrainConfig(image_size=32, ngf=16).resolved())[0]
    assert trained_config.seed == 0
    for (_, a), (_, b) in zip(prunable_layers(trained), prunable_layers(fresh)):
        # trained: weights moved well away from the N(0, 0.02) initialisation they started from
        assert float((a.weight - b.weight).detach().norm() / b.weight.detach().norm()) > 0.3
    for s, seed_value in zip([0.25, 0.5, 0.75, 1.0, 1.25], [0.208, 0.401, 0.566, 0.698, 0.798]):
        g = Generator(trained.nz, 16, 1, 32)
        g.load_state_dict(trained.state_dict())
        assert total_sparsity(sensitivity_prune(g, s)) == pytest.approx(seed_value, abs=0.04)


@pytest.mark.parametrize("q", [20, 40, 50, 60, 80])
def test_percentage_prunes_q_percent_of_every_layer(q):
    g = percentage_prune(fresh_generator(), q)
    for _, layer in prunable_layers(g):
        n = layer.weight.numel()
        assert int((layer.weight == 0).sum()) == round(q / 100 * n)
        kept = layer.weight_orig.detach().abs()[layer.weight_mask.bool()]
        dropped = layer.weight_orig.detach().abs()[~layer.weight_mask.bool()]
        assert dropped.max() <= kept.min()  # the smallest |w| went
    assert total_sparsity(g) == pytest.approx(q / 100, abs=1e-4)


def test_iterative_percentage_reaches_the_target_in_total():
    g = percentage_prune(fresh_generator(32), 30)
    g = percentage_prune(g, 60)
    for _, layer in prunable_layers(g):
        assert int((layer.weight == 0).sum()) == round(0.6 * layer.weight.numel())


def test_masks_hold_through_optimizer_steps_and_become_permanent():
    g = percentage_prune(fresh_generator(32), 50)
    zeros = [(layer.weight == 0).clone() for _, layer in prunable_layers(g)]
    opt = torch.optim.Adam(g.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        g(torch.randn(8, 100, 1, 1)).square().mean().backward()
        opt.step()
    make_permanent(g)
    assert all(k.endswith(("weight", "bias", "running_mean", "running_var", "num_batches_tracked"))
               for k in g.state_dict())
    for z, (_, layer) in zip(zeros, prunable_layers(g)):
        assert (layer.weight[z] == 0).all()


def test_sparsity_table_matches_the_seeds_layout():
    t = sparsity_table(percentage_prune(fresh_generator(), 50))
    assert list(t.columns) == ["layer", "type", "parameters", "nonzero", "sparsity"]
    assert t["parameters"].tolist() == [819200, 2097152, 524288, 131072, 1024, 3572736]
    assert t.iloc[-1]["nonzero"] == 1786368 and t.iloc[-1]["sparsity"] == pytest.approx(0.5)


def test_sparse_size_counts_values_indices_and_fillers():
    g = Generator(nz=4, ngf=4, nc=1, image_size=32)  # first layer: 4*16*4*4 = 1024 weights
    for _, layer in prunable_layers(g):
        torch.nn.init.zeros_(layer.weight)
    layer = prunable_layers(g)[0][1]
    flat = layer.weight.data.view(-1)
    flat[0], flat[10] = 1.0, 2.0  # gap 10 fits 8 bits: 2 entries
    bn = dense_size_bytes(g) - sum(conv.weight.numel() * 4 for _, conv in prunable_layers(g))
    assert sparse_size_bytes(g) == bn + (2 * 40 + 7) // 8
    flat[10] = 0.0
    flat[600] = 2.0  # gap 600 needs two 256-wide fillers: 4 entries
    assert sparse_size_bytes(g) == bn + (4 * 40 + 7) // 8
    assert dense_size_bytes(fresh_generator()) > sparse_size_bytes(percentage_prune(fresh_generator(), 80))


@pytest.mark.parametrize("kwargs, needle", [
    (dict(method="sensitivity", s=-0.5), "s=-0.5"),
    (dict(method="percentage", q=100), "q=100"),
    (dict(method="percentage", q=-1), "q=-1"),
    (dict(method="sensitivity", s=0.5, q=20), "exactly one"),
    (dict(method="sensitivity"), "exactly one"),
    (dict(method="magnitude", s=0.5), "method='magnitude'"),
    (dict(method="sensitivity", s=0.5, target="encoder"), "target='encoder'"),
    (dict(method="percentage", s=0.5), "takes q"),
])
def test_bad_prune_config(kwargs, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        PruneConfig(**kwargs).validate()


def test_bn_recalibration_changes_only_running_statistics_and_is_deterministic():
    from ganlab.pruning.magnitude import recalibrate_batchnorm

    g = make_permanent(percentage_prune(fresh_generator(32), 80)).eval()
    weights = {k: v.clone() for k, v in g.state_dict().items() if "running" not in k and "num_batches" not in k}
    before = g.main[1].running_mean.clone()
    recalibrate_batchnorm(g, seed=3, batch_size=32, batches=4)
    assert not g.training  # the mode it was in
    assert all(torch.equal(v, g.state_dict()[k]) for k, v in weights.items())
    assert not torch.allclose(before, g.main[1].running_mean)
    # the running mean is the average of the batch means over the fresh noise, recomputed the same way
    again = make_permanent(percentage_prune(fresh_generator(32), 80))
    recalibrate_batchnorm(again, seed=3, batch_size=32, batches=4)
    assert torch.allclose(again.main[1].running_mean, g.main[1].running_mean)
    rng = torch.Generator().manual_seed(3 + 15485863)
    noise = torch.cat([torch.randn(32, 100, 1, 1, generator=rng) for _ in range(4)])
    with torch.no_grad():
        first = g.main[0](noise)  # the first BatchNorm's input
    assert torch.allclose(g.main[1].running_mean, first.mean(dim=(0, 2, 3)), atol=1e-5)


def test_a_channels_last_layer_prunes_like_a_contiguous_one():
    """CUDA training leaves weights channels-last (for_device); torch's l1_unstructured .view()s them and failed
    (found on the GPU: the second step of iterative pruning after fine-tuning, or pruning a trained state)."""
    import torch
    from torch import nn

    from ganlab.pruning.magnitude import prune_layer_to

    torch.manual_seed(0)
    plain = nn.ConvTranspose2d(8, 4, 4)
    last = nn.ConvTranspose2d(8, 4, 4)
    last.load_state_dict(plain.state_dict())
    last.to(memory_format=torch.channels_last)
    assert not last.weight.is_contiguous()
    for fraction in (0.5, 0.8):
        prune_layer_to(plain, fraction)
        prune_layer_to(last, fraction)
        assert torch.equal(plain.weight == 0, last.weight == 0)
        assert int((last.weight == 0).sum()) == round(fraction * last.weight.numel())
