"""ganlab: train DCGANs, prune them, and measure what pruning costs in image quality."""

__version__ = "0.1.0"
