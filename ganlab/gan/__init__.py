"""The GAN itself, pure torch (no MLflow, no Ray): ``models`` (the seed's DCGAN, its noise), ``data`` (datasets
through torchvision, on-device batches), ``loop`` (the one training loop, its state and the ``Hook`` base),
``checkpoint`` (checkpoints as data, never code), ``images`` (grids), ``health`` (collapse and divergence)."""
