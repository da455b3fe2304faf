"""One module per command's MLflow run: ``train``, ``prune``, ``evaluate``. The CLI and the sweeps call these."""
