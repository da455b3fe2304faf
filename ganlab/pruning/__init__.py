"""Pruning and recovery, pure torch (no MLflow, no Ray): ``config`` (``PruneConfig``, no torch), ``magnitude``
(sensitivity and percentage pruning through torch.nn.utils.prune, sparsity and sizes), ``channel`` (whole
channels removed with Torch-Pruning), ``recovery`` (the training hooks of recovery: distillation, AGP, sparse
masks, holding D), ``compress`` (the Deep-Compression file)."""
