"""Everything MLflow, and no model code: ``schema`` (the contract: tag, artifact and metric names), ``store``
(stores, runs, ``RunContext``), ``run_logger`` (``RunLogger``: what a run writes), ``storage`` (bucket, path and
store checks), ``server`` and ``server_cli`` (MLflow servers that die with their starter, ``ganlab server``),
``mlflow_app`` (the server app that opens the UI on runs), ``provenance`` (a run's source, user and commit tags;
system metrics)."""
