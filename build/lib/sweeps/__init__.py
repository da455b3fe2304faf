"""Ray Tune sweeps over ganlab: training-hyperparameter search and s/q pruning grids."""
