"""Training: recipes, data loading, optimizers (incl. muP groups), Trainer and Accelerate entry points."""
