"""The seed's DCGAN: parameter counts layer by layer, output shapes, initialisation."""

import pytest
import torch

from ganlab.config import TrainConfig
from ganlab.gan.models import Discriminator, Generator, build_models, prunable_layers

# The seed's "Before Pruning" tables (nc=1, 64x64): conv weights per layer.
SEED_G = [819_200, 2_097_152, 524_288, 131_072, 1_024]
SEED_D = [1_024, 131_072, 524_288, 2_097_152, 8_192]


def test_seed_parameter_counts_layer_by_layer():
    g, d = Generator(nc=1, image_size=64), Discriminator(nc=1, image_size=64)
    assert [m.weight.numel() for _, m in prunable_layers(g)] == SEED_G
    assert [m.weight.numel() for _, m in prunable_layers(d)] == SEED_D
    # and the layer order/kinds of the seed's printout: ConvT, BN, ReLU blocks; Tanh / Sigmoid last
    assert [type(m).__name__ for m in g.main][:3] == ["ConvTranspose2d", "BatchNorm2d", "ReLU"]
    assert type(g.main[-1]).__name__ == "Tanh" and type(d.main[-1]).__name__ == "Sigmoid"
    assert len(g.main) == 14 and len(d.main) == 13


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("nc", [1, 3])
def test_output_shapes(size, nc):
    g, d = Generator(nz=100, ngf=8, nc=nc, image_size=size), Discriminator(ndf=8, nc=nc, image_size=size)
    x = g(torch.randn(5, 100, 1, 1))
    assert x.shape == (5, nc, size, size)
    assert x.min() >= -1 and x.max() <= 1
    p = d(x)
    assert p.shape == (5,) and ((p > 0) & (p < 1)).all()


def test_32px_variant_has_one_fewer_block():
    assert len(prunable_layers(Generator(image_size=32))) == 4
    assert len(prunable_layers(Discriminator(image_size=32))) == 4


def test_dcgan_initialisation_and_seeding():
    cfg = TrainConfig(image_size=64).resolved()
    torch.manual_seed(cfg.seed)
    g, _ = build_models(cfg)
    w = g.main[3].weight.detach()
    assert abs(float(w.mean())) < 1e-3 and abs(float(w.std()) - 0.02) < 1e-3
    bn = g.main[1]
    bn_w = bn.weight.detach()
    assert abs(float(bn_w.mean()) - 1.0) < 0.01 and float(bn.bias.detach().abs().max()) == 0.0
    torch.manual_seed(cfg.seed)
    g2, _ = build_models(cfg)
    assert torch.equal(g.main[0].weight, g2.main[0].weight)
