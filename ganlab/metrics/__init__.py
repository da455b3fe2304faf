"""Image quality, pure torch (no MLflow, no Ray): ``pairwise`` (UQI, SSIM, MS-SSIM against the dense generator's
images, sewar-exact), ``distribution`` (FCD, KID, class coverage and KL in a small classifier's features: the
``Evaluator``) and ``verdict`` (a pruned generator against its reference over sources: the t interval and
within / worse / cannot tell, numpy and scipy only)."""
