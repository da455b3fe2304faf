"""Sample grids: ganlab's own tiling equals torchvision's make_grid (the reference) exactly."""

import pytest
import torch
from torchvision.utils import make_grid

from ganlab.gan.images import grid_tensor, to_pil_grid


@pytest.mark.parametrize("n, c, size, nrow", [(64, 1, 32, 8), (10, 3, 16, 4), (3, 1, 8, 8), (7, 3, 64, 3)])
def test_grid_equals_torchvisions_make_grid(n, c, size, nrow):
    images = torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(n)) * 2.4 - 1.2  # beyond [-1, 1]
    expected = make_grid(images, nrow=nrow, padding=2, normalize=True, value_range=(-1, 1))
    if expected.shape[0] == 1:
        expected = expected.expand(3, -1, -1)
    assert torch.equal(grid_tensor(images, nrow), expected)
    picture = to_pil_grid(images, nrow)
    assert (picture.width, picture.height) == (expected.shape[2], expected.shape[1]) and picture.mode == "RGB"


def test_a_trial_worker_imports_neither_torchvision_nor_dynamo():
    import subprocess
    import sys

    code = ("import sys, sweeps.trials, ganlab.runs.train, ganlab.runs.prune\n"
            "print(sorted(m for m in ('torchvision', 'torch._dynamo') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr  # a second of every trial's start
