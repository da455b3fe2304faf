"""Image quality, pure torch (no MLflow, no Ray): ``pairwise`` (UQI, SSIM, MS-SSIM against the dense generator's
images, sewar-exact) and ``distribution`` (FCD, KID, class coverage and KL in a small classifier's features:
the ``Evaluator``)."""
