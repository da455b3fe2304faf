"""One module per command's MLflow run, where the GAN core meets the tracking store: ``train``, ``prune``,
``evaluate``, ``compress``; ``finetune`` (a prune run's recovery: prune, rewind, fine-tune, sparse training),
``source`` (the model a run starts from), ``tracking_hooks`` (the training hooks that log), ``register`` (the Model
Registry entry of a generator). The CLI and the sweeps call these."""
