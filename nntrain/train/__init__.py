"""The training loop and what surrounds it: run directory, logging, checkpoints."""
