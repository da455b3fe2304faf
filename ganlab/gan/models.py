"""The seed's DCGAN: Generator and Discriminator, for 64x64 images and a 32x32 variant.

At 64x64 these are exactly the seed's networks (pytorch/examples dcgan). For nc=1 the conv
weights total 3,572,736 (G) and 2,761,728 (D). The 32x32 variant drops the widest block of each
network (one fewer up/down-sampling step), so CPU runs stay practical.
"""

from __future__ import annotations

import torch
from torch import nn

from ganlab.config import TrainConfig, default_widths  # noqa: F401  (default_widths: re-exported)

PRUNABLE_TYPES = (nn.Conv2d, nn.ConvTranspose2d)


class Generator(nn.Module):
    def __init__(self, nz: int = 100, ngf: int = 64, nc: int = 1, image_size: int = 64,
                 widths: list[int] | None = None):
        super().__init__()
        self.nz, self.image_size = nz, image_size
        w = list(widths or default_widths(ngf, image_size, generator=True))
        # input is Z, going into a transposed convolution
        layers = [nn.ConvTranspose2d(nz, w[0], 4, 1, 0, bias=False), nn.BatchNorm2d(w[0]), nn.ReLU(True)]
        # state size. (ngf*8) x 4 x 4 at 64 px; (ngf*4) x 4 x 4 at 32 px
        for c_in, c_out in zip(w, w[1:]):
            # each block doubles the side: 4 -> 8 -> 16 -> 32 (64 px), 4 -> 8 -> 16 (32 px)
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]
        layers += [
            nn.ConvTranspose2d(w[-1], nc, 4, 2, 1, bias=False),
            nn.Tanh(),
            # state size. (nc) x 64 x 64      (32 x 32 at 32 px), values in [-1, 1]
        ]
        self.main = nn.Sequential(*layers)

    @property
    def widths(self) -> list[int]:
        """Hidden channel counts as the layers are now (channel pruning changes them)."""
        return [m.out_channels for _, m in prunable_layers(self)][:-1]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z)


class Discriminator(nn.Module):
    def __init__(self, ndf: int = 64, nc: int = 1, image_size: int = 64, widths: list[int] | None = None):
        super().__init__()
        self.image_size = image_size
        w = list(widths or default_widths(ndf, image_size, generator=False))
        layers = [
            # input is (nc) x 64 x 64   (32 x 32 at 32 px)
            nn.Conv2d(nc, w[0], 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
            # state size. (ndf) x 32 x 32
        ]
        for c_in, c_out in zip(w, w[1:]):
            # each block halves the side: 32 -> 16 -> 8 -> 4 (64 px), 16 -> 8 -> 4 (32 px)
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out),
                       nn.LeakyReLU(0.2, inplace=True)]
        layers += [
            nn.Conv2d(w[-1], 1, 4, 1, 0, bias=False),
            nn.Sigmoid(),  # state size. 1 x 1 x 1: probability the input is real
        ]
        self.main = nn.Sequential(*layers)

    @property
    def widths(self) -> list[int]:
        """Hidden channel counts as the layers are now (channel pruning changes them)."""
        return [m.out_channels for _, m in prunable_layers(self)][:-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).view(-1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The score before the final Sigmoid (what the training loss reads: BCEWithLogits)."""
        return self.main[:-1](x).reshape(-1)


def weights_init(module: nn.Module) -> None:
    """DCGAN initialisation (Radford et al.): conv N(0, 0.02); BatchNorm weight N(1, 0.02), bias 0."""
    if isinstance(module, PRUNABLE_TYPES):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def build_models(cfg: TrainConfig, widths: dict[str, list[int]] | None = None) -> tuple[Generator, Discriminator]:
    """Fresh, DCGAN-initialised (G, D) for ``cfg``; draws from torch's global RNG.

    ``widths`` ({"generator": [...], "discriminator": [...]}) rebuilds channel-pruned nets.
    """
    widths = widths or {}
    g = Generator(cfg.nz, cfg.ngf, cfg.nc, cfg.image_size, widths.get("generator"))
    d = Discriminator(cfg.ndf, cfg.nc, cfg.image_size, widths.get("discriminator"))
    g.apply(weights_init)
    d.apply(weights_init)
    return g, d


def prunable_layers(model: nn.Module) -> list[tuple[int, nn.Module]]:
    """(index in model.main, module) of every conv / transposed-conv layer, in forward order."""
    return [(i, m) for i, m in enumerate(model.main) if isinstance(m, PRUNABLE_TYPES)]


# Seed offsets: each random stream of a run is seeded seed + its own offset, so no two streams repeat each other.
TRAINING_NOISE_OFFSET = 1  # the noise G trains on (reseeded seed + offset + epoch at each epoch of a resumed run)
SPARSE_MASK_OFFSET = 3571  # sparse training's random initial masks and regrowth (pruning/recovery.SparseMasks)
FIXED_NOISE_OFFSET = 7919  # sample grids of a training run
EVALUATION_NOISE_OFFSET = 104729  # images scored by FCD/KID and compared dense vs pruned


def fixed_noise(nz: int, seed: int, n: int = 64) -> torch.Tensor:
    """The noise behind a run's sample grids; the same on every device."""
    return torch.randn(n, nz, 1, 1, generator=torch.Generator().manual_seed(seed + FIXED_NOISE_OFFSET))


EVALUATION_DRAW_STRIDE = 7654321  # draw k's seed: seed + offset + k * stride (draw 0 is every run's usual noise)


def evaluation_noise(n: int, nz: int, seed: int, draw: int = 0) -> torch.Tensor:
    """The ``n`` noise vectors of evaluation draw ``draw`` of a model from run seed ``seed`` (CPU tensor): the
    draws are independent, and the same for a dense generator and every net pruned from it (paired)."""
    rng = torch.Generator().manual_seed(seed + EVALUATION_NOISE_OFFSET + draw * EVALUATION_DRAW_STRIDE)
    return torch.randn(n, nz, 1, 1, generator=rng)


@torch.no_grad()
def generate(generator: Generator, noise: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Images in [-1, 1] for ``noise`` (N, nz, 1, 1), in eval mode (BatchNorm running stats).

    Eval mode makes each image depend on its own noise vector only, so a dense and a pruned
    generator can be compared image by image on the same noise.
    """
    was_training = generator.training
    generator.eval()
    try:
        return torch.cat([generator(noise[i:i + batch_size]) for i in range(0, len(noise), batch_size)])
    finally:
        generator.train(was_training)
