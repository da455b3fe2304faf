"""Fine-tuning with the masks held: pruned weights stay exactly zero and quality recovers."""

import pytest
import torch

from ganlab.config import TrainConfig
from ganlab.gan.data import TensorBatcher, load_images
from ganlab.gan.loop import create_state, train_gan
from ganlab.gan.models import prunable_layers
from ganlab.pruning.magnitude import make_permanent, percentage_prune


@pytest.mark.slow  # ~20 s of real fine-tuning; test_recovery fine-tunes with masks held at tiny scale
def test_finetuning_recovers_quality_and_keeps_zeros(evaluator_32):
    # the demo's scale (32 px, ngf 32): big enough that the dense model makes recognisable garments
    cfg = TrainConfig(image_size=32, ngf=32, ndf=32, batch_size=64, limit=4096, epochs=3, lr_d=2.5e-4,
                      lr_g=6e-4).resolved()
    images = load_images(cfg.dataset, 32, limit=cfg.limit).images
    state = create_state(cfg, torch.device("cpu"))
    batcher = TensorBatcher(images, cfg.batch_size, state.device, cfg.seed)
    for _ in train_gan(state, batcher, cfg.epochs, progress=False):
        pass
    dense = evaluator_32.evaluate_generator(state.generator, 500)["fcd"]
    percentage_prune(state.generator, 80)
    pruned = evaluator_32.evaluate_generator(state.generator, 500)["fcd"]
    zeros = [(layer.weight == 0).clone() for _, layer in prunable_layers(state.generator)]
    state.make_optimizers()
    for _ in train_gan(state, batcher, cfg.epochs + 3, progress=False):
        pass
    make_permanent(state.generator)
    for z, (_, layer) in zip(zeros, prunable_layers(state.generator)):
        assert torch.equal(layer.weight == 0, z)  # exactly the pruned weights are zero, still
    finetuned = evaluator_32.evaluate_generator(state.generator, 500)["fcd"]
    assert pruned > dense * 1.5, (dense, pruned)  # 80 % pruning hurt...
    # ...and 3 epochs of fine-tuning won much of it back. Measured on seeds 0, 1, 2 (1 thread): fine-tuned /
    # pruned FCD = 0.33, 0.35, 0.39 at q = 80 (0.32-0.38 at q = 70), but 0.52-0.88 at q = 90, where a GAN
    # fine-tuned against its trained discriminator often collapses (docs/results.md sees the same): a bar
    # at q = 90 tested one chaotic trajectory, not the mechanism
    assert finetuned < pruned * 0.75, (dense, pruned, finetuned)
