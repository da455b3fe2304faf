"""ganlab: train DCGANs, prune them, and measure what pruning costs in image quality.

The top level holds what every layer uses — ``cli`` (the ``ganlab`` command; ``__main__`` for ``python -m
ganlab``), ``config`` (``TrainConfig`` and validation), ``errors`` (the errors that exit 2), ``files`` (the one
atomic writer), ``device`` (devices, cores and threads), ``faults``
(named moments a test can stop a process at) — and the sub-packages by concern, lowest first:
``gan``, ``pruning`` and ``metrics`` (pure torch), ``tracking`` (MLflow, no model code), ``runs`` (each command's
MLflow run). tests/test_layout.py holds the rules: no upward import, no cycle.
"""

__version__ = "0.1.0"
