"""Read ganlab's MLflow runs and draw the Pareto front of sparsity against image quality."""
