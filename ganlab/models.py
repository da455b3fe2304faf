"""The seed's DCGAN: Generator and Discriminator, for 64x64 images and a 32x32 variant.

At 64x64 these are exactly the seed's networks (pytorch/examples dcgan). For nc=1 the conv
weights total 3,572,736 (G) and 2,761,728 (D). The 32x32 variant drops the widest block of each
network (one fewer up/down-sampling step), so CPU runs stay practical.
"""

from __future__ import annotations

import torch
from torch import nn

from ganlab.config import TrainConfig

PRUNABLE_TYPES = (nn.Conv2d, nn.ConvTranspose2d)


class Generator(nn.Module):
    def __init__(self, nz: int = 100, ngf: int = 64, nc: int = 1, image_size: int = 64):
        super().__init__()
        self.nz, self.image_size = nz, image_size
        if image_size == 64:
            layers = [
                # input is Z, going into a transposed convolution
                nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False),
                nn.BatchNorm2d(ngf * 8),
                nn.ReLU(True),
                # state size. (ngf*8) x 4 x 4
                nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ngf * 4),
                nn.ReLU(True),
                # state size. (ngf*4) x 8 x 8
            ]
        elif image_size == 32:
            layers = [
                nn.ConvTranspose2d(nz, ngf * 4, 4, 1, 0, bias=False),
                nn.BatchNorm2d(ngf * 4),
                nn.ReLU(True),
                # state size. (ngf*4) x 4 x 4
            ]
        else:
            raise ValueError(f"image_size must be 32 or 64, got {image_size}")
        layers += [
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),
            # state size. (ngf*2) x 16 x 16   (8 x 8 at 32 px)
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf),
            nn.ReLU(True),
            # state size. (ngf) x 32 x 32     (16 x 16 at 32 px)
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),
            nn.Tanh(),
            # state size. (nc) x 64 x 64      (32 x 32 at 32 px), values in [-1, 1]
        ]
        self.main = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z)


class Discriminator(nn.Module):
    def __init__(self, ndf: int = 64, nc: int = 1, image_size: int = 64):
        super().__init__()
        self.image_size = image_size
        layers = [
            # input is (nc) x 64 x 64   (32 x 32 at 32 px)
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
            # state size. (ndf) x 32 x 32
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 2),
            nn.LeakyReLU(0.2, inplace=True),
            # state size. (ndf*2) x 16 x 16
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 4),
            nn.LeakyReLU(0.2, inplace=True),
            # state size. (ndf*4) x 8 x 8   (4 x 4 at 32 px)
        ]
        if image_size == 64:
            layers += [
                nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ndf * 8),
                nn.LeakyReLU(0.2, inplace=True),
                # state size. (ndf*8) x 4 x 4
                nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False),
            ]
        elif image_size == 32:
            layers += [nn.Conv2d(ndf * 4, 1, 4, 1, 0, bias=False)]
        else:
            raise ValueError(f"image_size must be 32 or 64, got {image_size}")
        layers += [nn.Sigmoid()]  # state size. 1 x 1 x 1: probability the input is real
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).view(-1)


def weights_init(module: nn.Module) -> None:
    """DCGAN initialisation (Radford et al.): conv N(0, 0.02); BatchNorm weight N(1, 0.02), bias 0."""
    if isinstance(module, PRUNABLE_TYPES):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def build_models(cfg: TrainConfig) -> tuple[Generator, Discriminator]:
    """Fresh, DCGAN-initialised (G, D) for ``cfg``; draws from torch's global RNG."""
    g = Generator(cfg.nz, cfg.ngf, cfg.nc, cfg.image_size)
    d = Discriminator(cfg.ndf, cfg.nc, cfg.image_size)
    g.apply(weights_init)
    d.apply(weights_init)
    return g, d


def prunable_layers(model: nn.Module) -> list[tuple[int, nn.Module]]:
    """(index in model.main, module) of every conv / transposed-conv layer, in forward order."""
    return [(i, m) for i, m in enumerate(model.main) if isinstance(m, PRUNABLE_TYPES)]


# Seed offsets of the two fixed noise sets, so neither repeats the training noise (seed + 1).
FIXED_NOISE_OFFSET = 7919  # sample grids of a training run
EVALUATION_NOISE_OFFSET = 104729  # images scored by FCD/KID and compared dense vs pruned


def fixed_noise(nz: int, seed: int, n: int = 64) -> torch.Tensor:
    """The noise behind a run's sample grids; the same on every device."""
    return torch.randn(n, nz, 1, 1, generator=torch.Generator().manual_seed(seed + FIXED_NOISE_OFFSET))


def evaluation_noise(n: int, nz: int, seed: int) -> torch.Tensor:
    """The ``n`` noise vectors every evaluation of a model from run seed ``seed`` uses (CPU tensor)."""
    return torch.randn(n, nz, 1, 1, generator=torch.Generator().manual_seed(seed + EVALUATION_NOISE_OFFSET))


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
