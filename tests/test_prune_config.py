"""ganlab/pruning/config.py: a pruned point's config round-trips through a real MLflow store's string params."""

from __future__ import annotations

import pytest

from ganlab.pruning.config import PruneConfig

CONFIGS = {
    "sensitivity one-shot": dict(method="sensitivity", s=0.75),
    "percentage fine-tuned": dict(method="percentage", q=80.0, finetune_epochs=2, lr_scale=0.722, d_lr_scale=0.919),
    "percentage distilled, adversarial term off": dict(method="percentage", q=90.0, finetune_epochs=1,
                                                        distill_out=11.0, adv_weight=0.0, lr_schedule="cosine"),
    "percentage AGP + distillation": dict(method="percentage", q=80.0, finetune_epochs=3, schedule="agp",
                                          prune_steps=4, prune_every=25, distill_out=11.1, adv_weight=0.81),
    "percentage AGP, cuts spaced automatically": dict(method="percentage", q=50.0, finetune_epochs=2, schedule="agp"),
    "percentage rewound, iterative": dict(method="percentage", q=80.0, finetune_epochs=1, iterative_steps=3,
                                          rewind_epoch=1),
    "channel": dict(method="channel", ratio=0.25, target="both", bn_recalibrate=False, samples=500, eval_draws=3),
    "sparse from scratch, ERK": dict(method="sparse", sparsity=0.8, mask_update="set", density="erk"),
    "dense control": dict(method="percentage", q=0.0, finetune_epochs=1, control=True, distill_out=5.0),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_a_prune_config_round_trips_through_mlflow_params(store, name):
    from mlflow.tracking import MlflowClient

    config = PruneConfig(**CONFIGS[name])
    client = MlflowClient(store)
    run = client.create_run(client.create_experiment("round-trip"))
    for key, value in config.to_params().items():
        client.log_param(run.info.run_id, key, value)
    logged = client.get_run(run.info.run_id).data.params  # strings, as every reader sees them
    assert PruneConfig.from_params(logged) == config
    assert PruneConfig.from_params(logged).to_params() == config.to_params()
