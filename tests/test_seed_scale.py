"""The seed's scale (64 px, ngf = ndf = 64) on the CPU: slow, left out of `make test` (`make test-slow`)."""

import math

import pytest
import torch

from ganlab.config import TrainConfig
from ganlab.gan.data import TensorBatcher, load_images
from ganlab.gan.loop import create_state, train_gan
from ganlab.pruning.magnitude import sensitivity_prune, sparsity_table, total_sparsity


@pytest.mark.slow
def test_64px_training_then_sensitivity_pruning_near_the_seeds_table():
    cfg = TrainConfig(image_size=64, limit=1024, epochs=1).resolved()  # the seed's nets and optimizer
    state = create_state(cfg, torch.device("cpu"))
    images = load_images(cfg.dataset, 64, limit=cfg.limit).images
    report = list(train_gan(state, TensorBatcher(images, cfg.batch_size, state.device, cfg.seed), 1, progress=False))[0]
    assert all(math.isfinite(v) for v in report.metrics.values())
    assert sparsity_table(state.generator)["parameters"].iloc[-1] == 3_572_736
    # the seed: s = 0.75 -> 0.566 on its trained generator; Gaussian-like weights give erf(0.75/sqrt 2) = 0.547
    assert total_sparsity(sensitivity_prune(state.generator, 0.75)) == pytest.approx(0.56, abs=0.03)
